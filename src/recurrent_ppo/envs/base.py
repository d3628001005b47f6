"""The interface of a vectorized, device-resident environment."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from recurrent_ppo.spaces import ActionSpace, Obs, Space


class StepResult(NamedTuple):
    """What `step` returns for all envs; envs that finished are already reset."""

    obs: Obs  # [N, ...] per leaf: the next observation (the reset observation where the episode ended)
    reward: torch.Tensor  # [N] float32
    terminated: torch.Tensor  # [N] bool: the episode reached a terminal state
    truncated: torch.Tensor  # [N] bool: the episode was cut by the time limit (never both)
    final_obs: Obs  # [N, ...] per leaf: the observation after this step, before any reset


class VectorEnv(Protocol):
    """`num_envs` copies of an env stepped together. Observations follow `observation_space`: a tensor
    `[N, *shape]` for a leaf space, a flat `{path: tensor}` dict for a Dict/Tuple space (`spaces.leaves`), each
    leaf in its storage dtype (`spaces.storage`: uint8 images stay uint8, Discrete int64, MultiBinary bool).
    An `"action_mask"` leaf of a Dict observation (bool, true = legal) masks the policy's actions."""

    num_envs: int
    observation_space: Space
    action_space: ActionSpace
    device: torch.device
    steps_on_host: bool
    """False for envs whose step is torch ops on `device` (compiled into the rollout step); True for envs that
    step on the host (gymnasium), which the compiled rollout calls between its graphs."""
    max_episode_steps: int | None
    """A bound on truncations: an episode is truncated only once it has run this many steps. None when the env
    may truncate at any step. With a bound, the rollout bootstraps truncations once per rollout (few rows)
    instead of at every step (all envs)."""

    def reset(self) -> Obs:
        """Reset every env; returns the observation, `[N, ...]` per leaf."""
        ...

    def step(self, actions: torch.Tensor) -> StepResult:
        """Advance every env by one step; finished envs reset themselves. `actions` are in the action space's
        terms: `[N]` int64 (Discrete, start included), `[N, K]` int64 (MultiDiscrete), `[N, *shape]` float32
        within the bounds (Box)."""
        ...
