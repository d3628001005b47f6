"""POPGym's MultiarmedBandit on the device: find and exploit the best of a fresh set of bandits per episode.

Each episode draws `num_bandits` payout chances uniformly in [0, 1). Pulling arm a pays (observation 1, reward
+1 / L) with its chance, else observation 0 and reward -1 / L, so an episode of L steps returns between -1 and 1.
Episodes are truncated after L steps. The observation does not say which arm was pulled (POPGym marks the task
as needing the previous action, which a wrapper or the policy must supply). Easy: 10 arms, 200 steps; Medium:
20, 400; Hard: 30, 600.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.popgym.core import AutoResetEnv, BlankStart, take
from recurrent_ppo.spaces import Discrete

DIFFICULTIES = {"Easy": {"num_bandits": 10, "episode_length": 200},
                "Medium": {"num_bandits": 20, "episode_length": 400},
                "Hard": {"num_bandits": 30, "episode_length": 600}}


class MultiarmedBandit(BlankStart, AutoResetEnv):
    """`num_envs` copies; observation whether the last pull paid (Discrete(2), 0 at the start), action an arm
    (Discrete(num_bandits)). State: `bandits [N, B]` float32 payout chances, `elapsed [N]`."""

    observation_space = Discrete(2)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_bandits: int = 10,
                 episode_length: int = 200) -> None:
        if num_bandits < 2 or episode_length < 1:
            raise ValueError(f"MultiarmedBandit needs num_bandits >= 2 and episode_length >= 1, "
                             f"got {num_bandits}, {episode_length}")
        self.num_bandits = num_bandits
        self.action_space = Discrete(num_bandits)
        self.max_episode_steps = episode_length
        self.reward_scale = 1 / episode_length
        super().__init__(num_envs, device)

    def _initial(self) -> dict[str, torch.Tensor]:
        return {"bandits": torch.rand(self.num_envs, self.num_bandits, device=self.device),
                "elapsed": torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)}

    def _advance(self, state, actions):
        paid = torch.rand(self.num_envs, device=self.device) < take(state["bandits"], actions)  # [N]
        reward = torch.where(paid, self.reward_scale, -self.reward_scale)
        elapsed = state["elapsed"] + 1
        truncated = elapsed >= self.max_episode_steps
        return {**state, "elapsed": elapsed}, paid.long(), reward, torch.zeros_like(truncated), truncated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Always pull arm 0. Its chance has mean 1/2, so it earns 0; no policy blind to its own last arm that we
        tried does better. Pulling arm i after a miss and arm j after a payout pays at the rate
        p_i / (1 + p_i - p_j) in the long run, 1/2 in the mean (swap p_i <-> 1 - p_j); random switches earn about
        0 too (Monte Carlo)."""
        return torch.zeros_like(obs)

    def exact_memoryless_return(self) -> float:
        return 0.0
