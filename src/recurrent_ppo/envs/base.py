"""The interface of a vectorized, device-resident environment."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch


class StepResult(NamedTuple):
    """What `step` returns for all envs; envs that finished are already reset."""

    obs: torch.Tensor  # [N, obs_dim] next observation (the reset observation where the episode ended)
    reward: torch.Tensor  # [N] float32
    terminated: torch.Tensor  # [N] bool: the episode reached a terminal state
    truncated: torch.Tensor  # [N] bool: the episode was cut by the time limit (never both)
    final_obs: torch.Tensor  # [N, obs_dim] observation after this step, before any reset


class VectorEnv(Protocol):
    num_envs: int
    obs_dim: int
    num_actions: int
    device: torch.device
    steps_on_host: bool
    """False for envs whose step is torch ops on `device` (compiled into the rollout step); True for envs that
    step on the host (gymnasium), which the compiled rollout calls between its graphs."""
    max_episode_steps: int | None
    """A bound on truncations: an episode is truncated only once it has run this many steps. None when the env
    may truncate at any step. With a bound, the rollout bootstraps truncations once per rollout (few rows)
    instead of at every step (all envs)."""

    def reset(self) -> torch.Tensor:
        """Reset every env; returns `obs [N, obs_dim]`."""
        ...

    def step(self, actions: torch.Tensor) -> StepResult:
        """Advance every env by one step with `actions [N]`; finished envs reset themselves."""
        ...
