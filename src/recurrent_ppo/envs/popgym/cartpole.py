"""POPGym's CartPole variants on the device: the repository's CartPole dynamics, seen partially.

PositionOnlyCartPole observes `[x, theta]`, VelocityOnlyCartPole `[x_dot, theta_dot]` (except at an episode's
first step, where POPGym shows `[x, theta]`, and so does this port), NoisyPositionOnlyCartPole `[x, theta]` plus
Gaussian noise, clipped to the observation bounds. Episodes end as gymnasium's CartPole-v1 ends them (terminated)
or after `max_episode_length` steps (truncated; POPGym may report both at once, this port reports terminated);
every step earns 1 / max_episode_length, so surviving the whole episode returns 1. Position/velocity: Easy 200
steps, Medium 400, Hard 600. Noisy: 200 steps and noise sigma 0.1, 0.2, 0.3.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.envs.cartpole import THETA_LIMIT, X_LIMIT, CartPole
from recurrent_ppo.envs.popgym.core import NoisyObservations, PopGymEnv
from recurrent_ppo.spaces import Box, Discrete

POSITIONS, VELOCITIES = [0, 2], [1, 3]  # of the state [x, x_dot, theta, theta_dot]
POSITION_BOUND = tuple(torch.tensor([2 * X_LIMIT, 2 * THETA_LIMIT], dtype=torch.float32).tolist())
"""POPGym's observation bounds of `[x, theta]` (twice the termination thresholds, as float32)."""

LENGTHS = {"Easy": {"max_episode_length": 200}, "Medium": {"max_episode_length": 400},
           "Hard": {"max_episode_length": 600}}


class PositionOnlyCartPole(PopGymEnv):
    """`num_envs` copies; observation `[x, theta]` (a Box within +-POSITION_BOUND), actions push left (0) or
    right (1). The dynamics and their state are `self.cartpole`'s, a CartPole of all 4 state variables."""

    action_space = Discrete(2)
    observation_space = Box((2,), tuple(-b for b in POSITION_BOUND), POSITION_BOUND)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, max_episode_length: int = 200) -> None:
        if max_episode_length < 1:
            raise ValueError(f"{type(self).__name__} needs max_episode_length >= 1, got {max_episode_length}")
        super().__init__(num_envs, device)
        self.cartpole = CartPole(num_envs, self.device, max_episode_steps=max_episode_length)
        self.max_episode_steps = max_episode_length
        self.reward_scale = 1 / max_episode_length

    def observe(self, full: torch.Tensor, started: torch.Tensor | None = None) -> torch.Tensor:
        """The observation `[N, 2]` of CartPole observations `full [N, 4]`; `started [N]` marks those that begin
        an episode (all of them when None)."""
        return full[:, POSITIONS]

    def reset(self) -> torch.Tensor:
        return self.observe(self.cartpole.reset())

    def step(self, actions: torch.Tensor) -> StepResult:
        result = self.cartpole.step(actions)
        started = result.terminated | result.truncated
        reward = result.reward * self.reward_scale
        return StepResult(self.observe(result.obs, started), reward, result.terminated, result.truncated,
                          self.observe(result.final_obs, torch.zeros_like(started)))

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Push the way the pole leans."""
        return (obs[:, 1] > 0).long()


class VelocityOnlyCartPole(PositionOnlyCartPole):
    """`num_envs` copies; observation `[x_dot, theta_dot]`, or `[x, theta]` at an episode's first step (POPGym's
    reset shows the positions)."""

    observation_space = Box((2,))

    def observe(self, full: torch.Tensor, started: torch.Tensor | None = None) -> torch.Tensor:
        if started is None:
            return full[:, POSITIONS]
        return torch.where(started.unsqueeze(1), full[:, POSITIONS], full[:, VELOCITIES])

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Push the way the pole and, less, the cart move: `theta_dot + 0.3 x_dot > 0` (it nearly always
        survives: velocities are most of the state)."""
        return (obs[:, 1] + 0.3 * obs[:, 0] > 0).long()


class NoisyPositionOnlyCartPole(NoisyObservations, PositionOnlyCartPole):
    """`num_envs` copies (`noise_sigma`, `max_episode_length`); observation `[x, theta]` plus N(0,
    noise_sigma^2) noise per entry, clipped to the observation bounds."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", **settings) -> None:
        super().__init__(num_envs, device, **settings)
        self.bound = torch.tensor(POSITION_BOUND, device=self.device)  # [2]

    def observe(self, full: torch.Tensor, started: torch.Tensor | None = None) -> torch.Tensor:
        return self.add_noise(full[:, POSITIONS], -self.bound, self.bound)

NOISES = {"Easy": {"noise_sigma": 0.1}, "Medium": {"noise_sigma": 0.2}, "Hard": {"noise_sigma": 0.3}}
