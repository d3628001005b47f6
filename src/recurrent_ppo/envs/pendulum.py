"""Pendulum-v1 for many envs at once, all state on the device, static shapes, automatic reset.

Dynamics, costs, the initial-state distribution and the 200-step limit follow gymnasium's Pendulum-v1: swing a
pole up and hold it upright with a torque in [-2, 2]; episodes are never terminated, only truncated. The stateless
variant observes only [cos th, sin th], hiding the angular velocity, so an agent must remember earlier angles to
infer it. Random numbers come from torch's global generator (seed it with `torch.manual_seed`), which keeps the
step free of host synchronisation and traceable by torch.compile.
"""

from __future__ import annotations

import math

import torch

from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.spaces import Box

MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05
MASS = 1.0
LENGTH = 1.0
INIT_THDOT = 1.0  # initial th ~ U(-pi, pi), thdot ~ U(-INIT_THDOT, INIT_THDOT)


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """The angle `x` wrapped into [-pi, pi), as gymnasium's Pendulum computes it (remainder takes the divisor's
    sign, as numpy's % does)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class Pendulum:
    """`num_envs` Pendulum-v1 envs; observation [cos th, sin th, thdot], or [cos th, sin th] when stateless.

    The action is a torque `[N, 1]` (clipped to [-2, 2]); the reward is
    `-(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)` of the state before the step, so -16.27..0 per step.
    """

    steps_on_host = False

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, stateless: bool = False,
                 max_episode_steps: int = 200, g: float = 10.0) -> None:
        if num_envs < 1 or max_episode_steps < 1 or g <= 0:
            raise ValueError(f"Pendulum needs num_envs >= 1, max_episode_steps >= 1 and g > 0, "
                             f"got {num_envs}, {max_episode_steps}, {g}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.stateless = stateless
        self.max_episode_steps = max_episode_steps
        self.g = g
        if stateless:
            self.observation_space = Box((2,), -1.0, 1.0)
        else:
            self.observation_space = Box((3,), (-1.0, -1.0, -MAX_SPEED), (1.0, 1.0, MAX_SPEED))
        self.action_space = Box((1,), -MAX_TORQUE, MAX_TORQUE)
        # [N, 2]: th, thdot. th is kept wrapped into [-pi, pi) (gymnasium lets it grow): the same dynamics, since
        # everything reads th through sin, cos and angle_normalize, but float32 keeps its precision.
        self.state = torch.zeros(num_envs, 2, device=self.device)
        self.elapsed = torch.zeros(num_envs, dtype=torch.int32, device=self.device)  # [N]

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        th = state[:, 0]
        parts = [torch.cos(th), torch.sin(th)] if self.stateless else [torch.cos(th), torch.sin(th), state[:, 1]]
        return torch.stack(parts, dim=-1)  # a new tensor, never a view of self.state

    def _initial_state(self) -> torch.Tensor:
        th = torch.empty(self.num_envs, device=self.device).uniform_(-math.pi, math.pi)
        thdot = torch.empty(self.num_envs, device=self.device).uniform_(-INIT_THDOT, INIT_THDOT)
        return torch.stack([th, thdot], dim=-1)

    def reset(self) -> torch.Tensor:
        self.state.copy_(self._initial_state())
        self.elapsed.zero_()
        return self._observe(self.state)

    def step(self, actions: torch.Tensor) -> StepResult:
        th, thdot = self.state.unbind(-1)
        u = actions.reshape(self.num_envs).clamp(-MAX_TORQUE, MAX_TORQUE)
        costs = angle_normalize(th).square() + 0.1 * thdot.square() + 0.001 * u.square()
        thdot = thdot + (3 * self.g / (2 * LENGTH) * torch.sin(th) + 3.0 / (MASS * LENGTH**2) * u) * DT
        thdot = thdot.clamp(-MAX_SPEED, MAX_SPEED)
        state = torch.stack([angle_normalize(th + thdot * DT), thdot], dim=-1)
        elapsed = self.elapsed + 1
        truncated = elapsed >= self.max_episode_steps
        final_obs = self._observe(state)
        self.state.copy_(torch.where(truncated[:, None], self._initial_state(), state))
        self.elapsed.copy_(torch.where(truncated, 0, elapsed))
        return StepResult(self._observe(self.state), -costs, torch.zeros_like(truncated), truncated, final_obs)
