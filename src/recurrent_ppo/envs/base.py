"""The interface of a vectorized, device-resident environment (docs/envs.md), and the check of an env that a
user hands over against it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from recurrent_ppo import spaces
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


EnvFactory = Callable[[int, torch.device], VectorEnv]
"""What builds a VectorEnv: `factory(num_envs, device)`; a VectorEnv class taking those two is one."""


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether `a` and `b` are one device (`cuda` is the current CUDA device, as torch places tensors)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    return (a.index if a.index is not None else torch.cuda.current_device()) == \
        (b.index if b.index is not None else torch.cuda.current_device())


def contract_problems(env: object, num_envs: int, device: torch.device) -> list[str]:
    """What `env` lacks of the VectorEnv contract for `num_envs` copies on `device`, in words (none: it fits)."""
    problems = [f"no {name}() method" for name in ("reset", "step") if not callable(getattr(env, name, None))]
    missing = object()
    found = {name: getattr(env, name, missing) for name in
             ("num_envs", "device", "observation_space", "action_space", "steps_on_host", "max_episode_steps")}
    described = {"num_envs": "an int, the copies stepped together", "device": "the torch.device its tensors are on",
                 "observation_space": "a recurrent_ppo.spaces space", "action_space": "a recurrent_ppo.spaces space",
                 "steps_on_host": "a bool: False for torch ops on the device",
                 "max_episode_steps": "an int bound on when it truncates, or None"}
    problems += [f"no {name} attribute ({described[name]})" for name, value in found.items() if value is missing]
    if found["num_envs"] is not missing and found["num_envs"] != num_envs:
        problems.append(f"num_envs={found['num_envs']!r}, but the run steps {num_envs} (its num_envs setting): "
                        f"make the two agree")
    if found["device"] is not missing:
        try:
            if not same_device(found["device"], device):
                problems.append(f"device={found['device']}, but the run is on {device}")
        except (RuntimeError, TypeError):
            problems.append(f"device={found['device']!r} is not a torch device")
    obs_space = found["observation_space"]
    if obs_space is not missing:
        bad = [path or "(root)" for path, leaf in _leaves(obs_space).items() if not isinstance(leaf, LEAF_TYPES)]
        if bad:
            problems.append(f"observation_space {obs_space!r} is not made of recurrent_ppo.spaces "
                            f"({spaces.OBSERVATION_SPACES}) at {bad}; a gymnasium env goes in as gym:<id> or "
                            f"gym:<module>:<factory>")
    if found["action_space"] is not missing:
        try:
            spaces.check_action_space(found["action_space"])
        except ValueError as error:
            problems.append(str(error))
    if found["steps_on_host"] is not missing and not isinstance(found["steps_on_host"], bool):
        problems.append(f"steps_on_host={found['steps_on_host']!r} is not a bool")
    limit = found["max_episode_steps"]
    if limit is not missing and limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                                       or limit < 1):
        problems.append(f"max_episode_steps={limit!r} is neither None nor an int >= 1")
    return problems


LEAF_TYPES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _leaves(space: object) -> dict[str, object]:
    """`spaces.leaves` of anything: a Dict or Tuple of ours is walked, anything else is a leaf to judge."""
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        items = space.spaces if isinstance(space, spaces.Dict) else tuple(enumerate(space.spaces))
        return {f"{key}/{path}".rstrip("/"): leaf for key, sub in items for path, leaf in _leaves(sub).items()}
    return {"": space}


def check_vector_env(env: object, num_envs: int, device: torch.device, source: str) -> VectorEnv:
    """`env` if it fits the VectorEnv contract for `num_envs` copies on `device`; else one ValueError naming
    `source` (where the env came from) and every piece that is missing or wrong."""
    problems = contract_problems(env, num_envs, device)
    if problems:
        raise ValueError(f"{source} ({type(env).__name__}) does not fit the VectorEnv contract (docs/envs.md): "
                         f"{'; '.join(problems)}")
    return env  # type: ignore[return-value]
