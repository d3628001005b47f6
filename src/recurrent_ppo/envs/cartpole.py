"""CartPole-v1 for many envs at once, all state on the device, static shapes, automatic reset.

Dynamics, thresholds and the 500-step limit follow gymnasium's CartPole-v1 (Euler integration). The stateless
variant observes only cart position and pole angle, so an agent must remember to infer the velocities.
Random numbers come from torch's global generator (seed it with `torch.manual_seed`), which keeps the step free
of host synchronisation and traceable by torch.compile.
"""

from __future__ import annotations

import math

import torch

from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.spaces import Box, Discrete

GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
HALF_POLE_LENGTH = 0.5
POLE_MASS_LENGTH = MASS_POLE * HALF_POLE_LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_LIMIT = 12 * 2 * math.pi / 360
X_LIMIT = 2.4
INIT_RANGE = 0.05


class CartPole:
    """`num_envs` CartPole-v1 envs; observation [x, x_dot, theta, theta_dot], or [x, theta] when stateless."""

    action_space = Discrete(2)
    steps_on_host = False

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, stateless: bool = False,
                 max_episode_steps: int = 500) -> None:
        if num_envs < 1 or max_episode_steps < 1:
            raise ValueError(f"CartPole needs num_envs >= 1 and max_episode_steps >= 1, "
                             f"got {num_envs}, {max_episode_steps}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.stateless = stateless
        self.max_episode_steps = max_episode_steps
        self.observation_space = Box((2 if stateless else 4,))
        self.state = torch.zeros(num_envs, 4, device=self.device)  # [N, 4]: x, x_dot, theta, theta_dot
        self.elapsed = torch.zeros(num_envs, dtype=torch.int32, device=self.device)  # [N]

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        # A copy, never a view: self.state is updated in place by the next step.
        return (state[:, 0::2] if self.stateless else state).clone()

    def reset(self) -> torch.Tensor:
        self.state.uniform_(-INIT_RANGE, INIT_RANGE)
        self.elapsed.zero_()
        return self._observe(self.state)

    def step(self, actions: torch.Tensor) -> StepResult:
        x, x_dot, theta, theta_dot = self.state.unbind(-1)
        force = torch.where(actions.bool(), FORCE_MAG, -FORCE_MAG)
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + POLE_MASS_LENGTH * theta_dot.square() * sin) / TOTAL_MASS
        pole_inertia = HALF_POLE_LENGTH * (4.0 / 3.0 - MASS_POLE * cos.square() / TOTAL_MASS)
        theta_acc = (GRAVITY * sin - cos * temp) / pole_inertia
        x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
        state = torch.stack(
            [x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc], dim=-1
        )
        elapsed = self.elapsed + 1
        terminated = (state[:, 0].abs() > X_LIMIT) | (state[:, 2].abs() > THETA_LIMIT)
        truncated = (elapsed >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        final_obs = self._observe(state)
        fresh = torch.empty_like(state).uniform_(-INIT_RANGE, INIT_RANGE)
        self.state.copy_(torch.where(done[:, None], fresh, state))
        self.elapsed.copy_(torch.where(done, 0, elapsed))
        reward = torch.ones(self.num_envs, device=self.device)
        return StepResult(self._observe(self.state), reward, terminated, truncated, final_obs)
