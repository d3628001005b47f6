"""POPGym's MineSweeper on the device: clear a hidden minefield, told only each clicked square's mine count.

A `dims` grid hides `num_mines` mines, placed uniformly. Clicking a square shows how many mines lie in its 3x3
block (itself included). A new square earns 1 / L, L being the number of free squares; a square already cleared
earns -0.5 / (L - 2); a mine earns -0.5 - 1 / L and ends the episode (terminated), as does clearing every free
square. Otherwise the episode is truncated after L steps. Easy: 4x4, 2 mines; Medium: 6x6, 6; Hard: 8x8, 10.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.popgym.core import AutoResetEnv, BlankStart, random_keys, take
from recurrent_ppo.spaces import Discrete, MultiDiscrete

DIFFICULTIES = {"Easy": {"dims": (4, 4), "num_mines": 2}, "Medium": {"dims": (6, 6), "num_mines": 6},
                "Hard": {"dims": (8, 8), "num_mines": 10}}


def block_counts(mines: torch.Tensor) -> torch.Tensor:
    """`[N, H, W]` int64: the number of mines in each square's 3x3 block (itself included) of `mines [N, H, W]`."""
    padded = torch.nn.functional.pad(mines.long(), (1, 1, 1, 1))
    height, width = mines.shape[1:]
    return sum(padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3))


class MineSweeper(BlankStart, AutoResetEnv):
    """`num_envs` copies; observation the clicked square's count (Discrete(min(num_mines + 1, 10)), 0 at the
    start), action a square `[row, column]` (MultiDiscrete(dims)). State: `mines`, `cleared [N, H * W]` bool,
    `counts [N, H * W]`, `elapsed [N]`."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, dims: tuple[int, int] = (4, 4),
                 num_mines: int = 2) -> None:
        height, width = dims
        if height < 1 or width < 1 or not 1 <= num_mines <= height * width - 3:
            raise ValueError(f"MineSweeper needs dims >= 1 and 1 <= num_mines <= squares - 3, "
                             f"got {dims}, {num_mines}")
        self.dims, self.num_mines = (height, width), num_mines
        self.max_episode_steps = free = height * width - num_mines
        self.success_reward = 1 / free
        self.mine_reward = -0.5 - self.success_reward
        self.repeat_reward = -0.5 / (free - 2)
        self.observation_space = Discrete(min(num_mines + 1, 10))
        self.action_space = MultiDiscrete((height, width))
        super().__init__(num_envs, device)

    def _initial(self) -> dict[str, torch.Tensor]:
        height, width = self.dims
        chosen = random_keys(self.num_envs, height * width, self.device).topk(self.num_mines, dim=1).indices
        mines = torch.zeros(self.num_envs, height * width, dtype=torch.bool, device=self.device)
        mines = mines.scatter(1, chosen, True)
        counts = block_counts(mines.view(self.num_envs, height, width)).view(self.num_envs, -1)
        return {"mines": mines, "cleared": torch.zeros_like(mines), "counts": counts,
                "elapsed": torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)}

    def _advance(self, state, actions):
        square = actions[:, 0] * self.dims[1] + actions[:, 1]  # [N]
        mine, seen = take(state["mines"], square), take(state["cleared"], square)
        reward = torch.where(mine, self.mine_reward, torch.where(seen, self.repeat_reward, self.success_reward))
        squares = torch.arange(state["mines"].shape[1], device=square.device)
        cleared = state["cleared"] | ((squares == square.unsqueeze(1)) & ~state["mines"])
        elapsed = state["elapsed"] + 1
        terminated = mine | (cleared | state["mines"]).all(dim=1)
        truncated = (elapsed == self.max_episode_steps) & ~terminated
        next_state = {**state, "cleared": cleared, "elapsed": elapsed}
        return next_state, take(state["counts"], square), reward, terminated, truncated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Click a uniformly random square."""
        return torch.stack([torch.randint(n, obs.shape, device=obs.device) for n in self.dims], dim=1)
