"""POPGym's Pendulum variants on the device: the repository's Pendulum-v1 dynamics without the velocity.

PositionOnlyPendulum observes `[cos th, sin th]`; NoisyPositionOnlyPendulum adds Gaussian noise to them, clipped
to [-1, 1]. Pendulum-v1's reward (-16.27..0 per step) is rescaled as POPGym does, to `(r + 8.137) / 8.137 / L`,
so an episode of L steps returns between -1 and 1. Episodes are never terminated, only truncated after L steps.
Position only: Easy L = 200, Medium 150, Hard 100. Noisy: L = 200 and noise sigma 0.1, 0.2, 0.3.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.envs.pendulum import MAX_TORQUE, Pendulum
from recurrent_ppo.envs.popgym.core import NoisyObservations, PopGymEnv
from recurrent_ppo.spaces import Box

REWARD_LOW = -16.2736044
"""The lowest Pendulum-v1 reward, as POPGym states it: its rescaling maps [REWARD_LOW, 0] onto [-1, 1] / L."""

LENGTHS = {"Easy": {"max_episode_length": 200}, "Medium": {"max_episode_length": 150},
           "Hard": {"max_episode_length": 100}}


class PositionOnlyPendulum(PopGymEnv):
    """`num_envs` copies; observation `[cos th, sin th]`, action a torque `[N, 1]` in [-2, 2]. The dynamics and
    their state are `self.pendulum`'s (a stateless Pendulum-v1)."""

    action_space = Box((1,), -MAX_TORQUE, MAX_TORQUE)
    observation_space = Box((2,), -1.0, 1.0)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, max_episode_length: int = 200) -> None:
        if max_episode_length < 1:
            raise ValueError(f"{type(self).__name__} needs max_episode_length >= 1, got {max_episode_length}")
        super().__init__(num_envs, device)
        self.pendulum = Pendulum(num_envs, self.device, stateless=True, max_episode_steps=max_episode_length)
        self.max_episode_steps = max_episode_length

    def observe(self, obs: torch.Tensor) -> torch.Tensor:
        """The observation `[N, 2]` given the pendulum's `[cos th, sin th]`."""
        return obs

    def reset(self) -> torch.Tensor:
        return self.observe(self.pendulum.reset())

    def step(self, actions: torch.Tensor) -> StepResult:
        result = self.pendulum.step(actions)
        half = -REWARD_LOW / 2
        reward = (result.reward + half) / half / self.max_episode_steps
        return StepResult(self.observe(result.obs), reward, result.terminated, result.truncated,
                          self.observe(result.final_obs))

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Full torque against the angle's sine, `-2 sign(sin th)`: towards upright from either side."""
        return -MAX_TORQUE * torch.sign(obs[:, 1:2])


class NoisyPositionOnlyPendulum(NoisyObservations, PositionOnlyPendulum):
    """`num_envs` copies (`noise_sigma`, `max_episode_length`); observation `[cos th, sin th]` plus N(0,
    noise_sigma^2) noise per entry, clipped to [-1, 1]."""

    def observe(self, obs: torch.Tensor) -> torch.Tensor:
        return self.add_noise(obs, -1.0, 1.0)

NOISES = {"Easy": {"noise_sigma": 0.1}, "Medium": {"noise_sigma": 0.2}, "Hard": {"noise_sigma": 0.3}}
