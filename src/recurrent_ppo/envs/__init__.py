"""Vectorized environments by name: the GPU-native ones in `ENVS`, and any gymnasium env as `gym:<id>`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from recurrent_ppo.envs.base import StepResult, VectorEnv
from recurrent_ppo.envs.cartpole import CartPole
from recurrent_ppo.envs.gym_adapter import PREFIX as GYM_PREFIX
from recurrent_ppo.envs.gym_adapter import GymVectorEnv
from recurrent_ppo.envs.masked_choice import MaskedChoice
from recurrent_ppo.envs.memory import CueMemory
from recurrent_ppo.envs.pendulum import Pendulum
from recurrent_ppo.envs.popgym import POPGYM_ENVS
from recurrent_ppo.envs.previous_action import PreviousAction

ENVS: dict[str, Callable[[int, torch.device], VectorEnv]] = {
    "cartpole": lambda num_envs, device: CartPole(num_envs, device),
    "stateless-cartpole": lambda num_envs, device: CartPole(num_envs, device, stateless=True),
    "memory": lambda num_envs, device: CueMemory(num_envs, device),
    "stateless-pendulum": lambda num_envs, device: Pendulum(num_envs, device, stateless=True),
    "masked-choice": lambda num_envs, device: MaskedChoice(num_envs, device),
}
ENVS.update(POPGYM_ENVS)  # popgym/<Task><Level>


ENV_CHOICES = (f"one of {sorted(name for name in ENVS if name not in POPGYM_ENVS)}, popgym/<Task><Easy|Medium|Hard> "
               f"(e.g. popgym/RepeatPreviousEasy), or gym:<id> for a gymnasium env (e.g. gym:CartPole-v1)")


def is_env_name(name: str) -> bool:
    """Whether `name` is one of `ENVS` or `gym:<id>`."""
    return name in ENVS or (name.startswith(GYM_PREFIX) and len(name) > len(GYM_PREFIX))


def make_env(name: str, num_envs: int, device: torch.device | str, *, previous_action: bool = False) -> VectorEnv:
    """Build the vectorized env `name` with `num_envs` copies on `device`: one of `ENVS`, or `gym:<id>` for the
    gymnasium env `<id>`, seeded from torch's global generator (so `torch.manual_seed` fixes its episodes too).
    `previous_action` adds the previous action and a first-step flag to its observation (`PreviousAction`)."""
    if not is_env_name(name):
        raise ValueError(f"unknown env {name!r}; choose {ENV_CHOICES}")
    if name.startswith(GYM_PREFIX):
        seed = int(torch.randint(0, 2**31 - num_envs, ()))
        env = GymVectorEnv(name[len(GYM_PREFIX):], num_envs, torch.device(device), seed=seed)
    else:
        env = ENVS[name](num_envs, torch.device(device))
    return PreviousAction(env) if previous_action else env


__all__ = ["ENVS", "ENV_CHOICES", "CartPole", "CueMemory", "GymVectorEnv", "PreviousAction", "StepResult", "VectorEnv",
           "is_env_name", "make_env"]
