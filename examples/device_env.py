"""A device env of one's own, in torch: remember the first symbol of an episode and repeat it at every step.

Train it by its import path, from this folder (the command line imports modules from the current directory):

    recurrent-ppo train --env device_env:RepeatFirst --total-steps 200000
    recurrent-ppo eval runs/<the run>            # rebuilt from config.json's "env": "device_env:RepeatFirst"

Or from Python: `Trainer(cfg, env=RepeatFirst)` (a class taking (num_envs, device) is a factory).
It follows the VectorEnv contract of docs/envs.md: declared spaces, every tensor on `device`, state kept in
tensors updated in place, finished episodes reset within the same step, random numbers from torch's global
generator, no reads back to the host: so the rollout step compiles into one graph (and one CUDA graph).
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs import StepResult
from recurrent_ppo.spaces import Box, Discrete


class RepeatFirst:
    """`num_envs` copies. Each step shows a random symbol of `num_symbols` (one-hot); the action earns
    1 / `length` when it names the episode's first symbol. Episodes end (terminated) after `length` steps, so the
    best memoryless policy earns (1 + (length - 1) / num_symbols) / length and only memory earns 1."""

    steps_on_host = False  # torch ops on the device: traced into the compiled rollout step

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_symbols: int = 4,
                 length: int = 8) -> None:
        self.num_envs, self.num_symbols, self.length = num_envs, num_symbols, length
        self.device = torch.device(device)
        self.observation_space = Box((num_symbols,), 0.0, 1.0)
        self.action_space = Discrete(num_symbols)
        self.max_episode_steps = length  # a bound on when an episode may be truncated (these never are)
        # The state: tensors allocated once, updated in place (CUDA graphs read them at fixed addresses).
        self.first = torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # [N] the symbol to repeat
        self.shown = torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # [N] the symbol shown now
        self.elapsed = torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # [N] steps taken

    def _observe(self, shown: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(shown, self.num_symbols).float()  # [N, num_symbols], a new tensor

    def reset(self) -> torch.Tensor:
        self.first.random_(0, self.num_symbols)
        self.shown.copy_(self.first)
        self.elapsed.zero_()
        return self._observe(self.shown)

    def step(self, actions: torch.Tensor) -> StepResult:
        reward = (actions == self.first).float() / self.length  # [N]
        elapsed = self.elapsed + 1
        terminated = elapsed >= self.length  # [N] bool; no branch on it: every env computes both outcomes
        shown = torch.randint_like(self.shown, self.num_symbols)
        final_obs = self._observe(shown)  # what the step led to, before any reset
        first = torch.randint_like(self.first, self.num_symbols)  # a new episode's first symbol, where one ended
        self.first.copy_(torch.where(terminated, first, self.first))
        self.shown.copy_(torch.where(terminated, first, shown))
        self.elapsed.copy_(torch.where(terminated, 0, elapsed))
        return StepResult(self._observe(self.shown), reward, terminated, torch.zeros_like(terminated), final_obs)
