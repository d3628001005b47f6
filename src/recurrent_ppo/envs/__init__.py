"""GPU-native vectorized environments, by name."""

from __future__ import annotations

from collections.abc import Callable

import torch

from recurrent_ppo.envs.base import StepResult, VectorEnv
from recurrent_ppo.envs.cartpole import CartPole

ENVS: dict[str, Callable[[int, torch.device], VectorEnv]] = {
    "cartpole": lambda num_envs, device: CartPole(num_envs, device),
    "stateless-cartpole": lambda num_envs, device: CartPole(num_envs, device, stateless=True),
}


def make_env(name: str, num_envs: int, device: torch.device | str) -> VectorEnv:
    """Build the vectorized env `name` (one of `ENVS`) with `num_envs` copies on `device`."""
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; choose one of {sorted(ENVS)}")
    return ENVS[name](num_envs, torch.device(device))


__all__ = ["ENVS", "CartPole", "StepResult", "VectorEnv", "make_env"]
