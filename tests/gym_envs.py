"""Gymnasium envs for the adapter's tests: declared spaces, and outputs that may break them."""

import multiprocessing
import os
import signal
import time

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


MISSION_SPACE = gym.spaces.Dict({"pos": gym.spaces.Discrete(5), "mission": gym.spaces.Text(8)})
"""A Dict observation with a Text leaf (as MiniGrid's "mission"), which the policy cannot encode."""


def with_mission():
    """The env with its Text leaf: `gym:tests.gym_envs:with_mission` is refused, naming the wrapper that drops it."""
    return SpecEnv(MISSION_SPACE, gym.spaces.Discrete(2))


def mission_dropped():
    """The env with its Text leaf dropped by gymnasium's FilterObservation: `gym:tests.gym_envs:mission_dropped`."""
    return gym.wrappers.FilterObservation(with_mission(), ["pos"])


class BreaksAt(gym.Env):
    """Observation {"pos": Discrete(5), "x": Box(2)}, reward 1 per step, episodes of 5 steps. At its `at`-th step
    (counted over episodes, from its creation) it raises RuntimeError, or returns an "x" of shape (3,) when
    `wrong_shape`."""

    observation_space = gym.spaces.Dict({"pos": gym.spaces.Discrete(5), "x": gym.spaces.Box(-1.0, 1.0, (2,))})
    action_space = gym.spaces.Discrete(2)

    def __init__(self, at: int, wrong_shape: bool = False):
        self.at, self.wrong_shape = at, wrong_shape
        self.t, self.steps = 0, 0

    def _obs(self, x_size: int = 2):
        return {"pos": np.int64(self.t), "x": np.zeros(x_size, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t, self.steps = self.t + 1, self.steps + 1
        if self.steps == self.at and not self.wrong_shape:
            raise RuntimeError(f"the simulator crashed at its step {self.steps}")
        obs = self._obs(3 if self.steps == self.at else 2)
        return obs, 1.0, self.t >= 4, False, {}


def register_breaking(name: str, at: int, wrong_shape: bool = False) -> str:
    """Register BreaksAt(at, wrong_shape) as `rppo-test/<name>-v0` (once) and return that id."""
    env_id = f"rppo-test/{name}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=BreaksAt, kwargs={"at": at, "wrong_shape": wrong_shape})
    return env_id


def short_cartpole():
    """CartPole-v1 truncated at 10 steps: episodes end by termination and by truncation within a short rollout."""
    return gym.make("CartPole-v1", max_episode_steps=10)


class DiesAt(BreaksAt):
    """BreaksAt whose `at`-th step kills its own process with SIGKILL, as a crash in native code ends it, when it
    runs in a worker process (never in the process that runs the tests: there it steps on)."""

    def step(self, action):
        if self.steps + 1 == self.at and multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)


def register_dying(name: str, at: int) -> str:
    """Register DiesAt(at) as `rppo-test/<name>-v0` (once) and return that id."""
    env_id = f"rppo-test/{name}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=DiesAt, kwargs={"at": at, "wrong_shape": False})
    return env_id


class SlowCartPole(gym.Wrapper):
    """CartPole-v1 whose every step takes at least `seconds` longer (a sleep: a simulator another process runs)."""

    def __init__(self, seconds: float = 0.002):
        super().__init__(gym.make("CartPole-v1"))
        self.seconds = seconds

    def step(self, action):
        time.sleep(self.seconds)
        return self.env.step(action)
