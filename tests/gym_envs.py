"""Gymnasium envs for the adapter's tests: declared spaces, and outputs that may break them."""

import gymnasium as gym
import numpy as np


class SpecEnv(gym.Env):
    """Declares `observation_space` and `action_space`; observations are samples of the declared space unless
    `reset_obs` / `step_obs` (callables of the step count) give others; `mask`, when given, is put in the info
    as gymnasium's `action_mask`. Episodes last 5 steps, reward 1 per step."""

    def __init__(self, observation_space, action_space, reset_obs=None, step_obs=None, mask=None):
        self.observation_space, self.action_space = observation_space, action_space
        self.reset_obs, self.step_obs, self.mask = reset_obs, step_obs, mask
        self.t = 0

    def _outputs(self, make):
        obs = make(self.t) if make else self.observation_space.sample()
        return obs, ({} if self.mask is None else {"action_mask": np.asarray(self.mask)})

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self._outputs(self.reset_obs)

    def step(self, action):
        self.t += 1
        obs, info = self._outputs(self.step_obs)
        return obs, 1.0, self.t >= 5, False, info


def register(name: str, **kwargs) -> str:
    """Register SpecEnv(**kwargs) as `rppo-test/<name>-v0` (once) and return that id."""
    env_id = f"rppo-test/{name}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=SpecEnv, kwargs=kwargs)
    return env_id
