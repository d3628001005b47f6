"""POPGym's Battleship on the device: sink hidden ships, told only hit or miss.

Ships of `ship_sizes` lie on a `board_size` square board, each in a uniformly random free straight line
(POPGym's rejection sampling is uniform over the free placements). A shot at a ship square not shot before hits
(observation 1, reward 1 / S, S the ship squares); anything else misses (observation 0, reward -1 / (L - S)), so
an episode returns 1 at best. The episode ends terminated when every ship square is hit, else truncated after
L = board_size^2 shots. Easy: 8x8; Medium: 10x10; Hard: 12x12; ships of 2, 3, 3 and 4 squares.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.popgym.core import AutoResetEnv, BlankStart, random_keys, take
from recurrent_ppo.spaces import Discrete, MultiDiscrete

SHIPS = (2, 3, 3, 4)
DIFFICULTIES = {"Easy": {"board_size": 8}, "Medium": {"board_size": 10}, "Hard": {"board_size": 12}}


class Battleship(BlankStart, AutoResetEnv):
    """`num_envs` copies; observation hit (1) or miss (0) (Discrete(2), 0 at the start), action a square `[row,
    column]` (MultiDiscrete([board_size] * 2)). State: `ships`, `shot [N, board_size^2]` bool, `hits [N]`,
    `elapsed [N]`, and the next episodes' boards `ready` with the turn `tick` of their refresh."""

    observation_space = Discrete(2)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, board_size: int = 10,
                 ship_sizes: tuple[int, ...] = SHIPS) -> None:
        if not ship_sizes or min(ship_sizes) < 2 or max(ship_sizes) > board_size or \
                sum(ship_sizes) >= board_size**2:
            raise ValueError(f"Battleship needs ships of 2 to board_size squares, fewer than board_size^2 in all, "
                             f"got board_size={board_size}, ship_sizes={ship_sizes}")
        self.board_size, self.ship_sizes = board_size, tuple(ship_sizes)
        self.ship_squares = sum(ship_sizes)
        self.max_episode_steps = board_size**2
        self.hit_reward = 1 / self.ship_squares
        self.miss_reward = -1 / (self.max_episode_steps - self.ship_squares)
        self.action_space = MultiDiscrete((board_size, board_size))
        # The next episodes' boards (`ready`, padded to whole turns) are drawn a share at a time (`_refreshed`).
        self.refresh_every = min(8, self.ship_squares)  # no episode is shorter: it needs every ship square hit
        self.refreshed_per_step = -(-num_envs // self.refresh_every)
        super().__init__(num_envs, device)

    def _boards(self, count: int) -> torch.Tensor:
        """`[count, B * B]` bool: `count` fresh boards, the ships placed one after another."""
        b = self.board_size
        ships = torch.zeros(count, b, b, dtype=torch.bool, device=self.device)
        for size in self.ship_sizes:
            ships = self._place(ships, size)
        return ships.view(count, b * b)

    def _place(self, ships: torch.Tensor, size: int) -> torch.Tensor:
        """`ships [N, B, B]` with one more ship of `size` squares, at a uniformly random free placement.

        Placements are numbered vertical first (top square (r, c) at r * B + c, r < n = B - size + 1), then
        horizontal (left square (r, c) at n * B + r * n + c, c < n); sliding sums of the board count the ship
        squares under each."""
        b, n = self.board_size, self.board_size - size + 1
        down = torch.nn.functional.pad(ships.long().cumsum(1), (0, 0, 1, 0))  # [N, B + 1, B]
        across = torch.nn.functional.pad(ships.long().cumsum(2), (1, 0))  # [N, B, B + 1]
        under = torch.cat([(down[:, size:] - down[:, :n]).flatten(1), (across[:, :, size:] - across[:, :, :n]).flatten(1)],
                          dim=1)  # [N, 2 n B]
        keys = torch.where(under == 0, random_keys(ships.shape[0], 2 * n * b, self.device), -1)
        choice = keys.argmax(dim=1)  # [N]
        vertical = choice < n * b
        index = torch.where(vertical, choice, choice - n * b)
        row = torch.where(vertical, index // b, index // n)[:, None, None]  # [N, 1, 1]: the first square
        col = torch.where(vertical, index % b, index % n)[:, None, None]
        rows = torch.arange(b, device=ships.device)[:, None]  # [B, 1]
        cols = torch.arange(b, device=ships.device)[None, :]  # [1, B]
        along = torch.where(vertical[:, None, None], rows - row, cols - col)  # [N, B, B]: offset along the ship
        across_ok = torch.where(vertical[:, None, None], cols == col, rows == row)
        return ships | (across_ok & (along >= 0) & (along < size))

    def _initial(self) -> dict[str, torch.Tensor]:
        ships = self._boards(self.num_envs)
        zeros = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        return {"ships": ships, "shot": torch.zeros_like(ships), "hits": zeros, "elapsed": zeros.clone(),
                "ready": self._boards(self.refresh_every * self.refreshed_per_step),
                "tick": torch.zeros((), dtype=torch.int64, device=self.device)}

    def _fresh(self, state):
        return {"ships": state["ready"][:self.num_envs], "shot": torch.zeros_like(state["shot"]),
                "hits": torch.zeros_like(state["hits"]), "elapsed": torch.zeros_like(state["elapsed"])}

    def _refreshed(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        """The next episodes' boards with the rows of this step's turn drawn anew, and the next turn. Placing ships
        is most of a step's work, so each step draws boards for one env in `refresh_every` (env i at the turns
        i mod refresh_every) rather than for all. An episode runs at least `refresh_every` steps, so no board
        starts two episodes, and every board is drawn as the first was."""
        rows = torch.arange(self.refreshed_per_step, device=self.device) * self.refresh_every + state["tick"]
        ready = state["ready"].index_copy(0, rows, self._boards(self.refreshed_per_step))
        return ready, (state["tick"] + 1) % self.refresh_every

    def _advance(self, state, actions):
        square = actions[:, 0] * self.board_size + actions[:, 1]  # [N]
        hit = take(state["ships"], square) & ~take(state["shot"], square)
        squares = torch.arange(self.board_size**2, device=square.device)
        shot = state["shot"] | (squares == square.unsqueeze(1))
        hits, elapsed = state["hits"] + hit.long(), state["elapsed"] + 1
        terminated = hits == self.ship_squares
        truncated = (elapsed >= self.max_episode_steps) & ~terminated
        reward = torch.where(hit, self.hit_reward, self.miss_reward)
        ready, tick = self._refreshed(state)
        next_state = {**state, "shot": shot, "hits": hits, "elapsed": elapsed, "ready": ready, "tick": tick}
        return next_state, hit.long(), reward, terminated, truncated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Shoot a uniformly random square."""
        return torch.randint(self.board_size, (obs.shape[0], 2), device=obs.device)
