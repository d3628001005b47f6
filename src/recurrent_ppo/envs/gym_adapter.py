"""Gymnasium environments as a `VectorEnv`: `make_env("gym:CartPole-v1", ...)`, or `--env gym:CartPole-v1`.

The envs step on the host (gymnasium's vector env, synchronous or in subprocesses), so the compiled rollout
calls them between its graphs: the policy step, then `step` here (actions to the host, results to the device),
then the bookkeeping and buffer write. Observations must be a Box (flattened to `obs_dim` floats) and actions
Discrete, which is what the categorical policy samples. Episodes end and restart within one step (gymnasium's
same-step autoreset), matching `StepResult`: `obs` is the reset observation where an episode ended and
`final_obs` the observation it ended on.
"""

from __future__ import annotations

import numpy as np
import torch

from recurrent_ppo.envs.base import StepResult

PREFIX = "gym:"


class GymVectorEnv:
    """`num_envs` copies of the gymnasium env `env_id`, seeded from `seed` (env i gets seed + i).

    `asynchronous=True` runs each copy in its own process (gymnasium's AsyncVectorEnv), worth it when one env
    step costs more than the pipe round trip; keyword arguments go to `gymnasium.make` (e.g. max_episode_steps).
    """

    steps_on_host = True

    def __init__(self, env_id: str, num_envs: int, device: torch.device | str = "cpu", *, seed: int = 0,
                 asynchronous: bool = False, **make_kwargs) -> None:
        try:
            import gymnasium as gym
        except ImportError as error:
            raise ImportError(f"env 'gym:{env_id}' needs gymnasium: pip install 'gymnasium>=1.1'") from error
        if num_envs < 1:
            raise ValueError(f"GymVectorEnv needs num_envs >= 1, got {num_envs}")
        self.envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="async" if asynchronous else "sync",
                                 vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                                 **make_kwargs)
        obs_space, action_space = self.envs.single_observation_space, self.envs.single_action_space
        if not isinstance(obs_space, gym.spaces.Box):
            self.envs.close()
            raise ValueError(f"gym:{env_id}: observations must be a Box, got {obs_space}")
        if not isinstance(action_space, gym.spaces.Discrete) or action_space.start != 0:
            self.envs.close()
            raise ValueError(f"gym:{env_id}: actions must be Discrete(n) starting at 0 (the policy is categorical), "
                             f"got {action_space}")
        self.env_id, self.num_envs, self.seed = env_id, num_envs, seed
        self.device = torch.device(device)
        self.obs_dim = int(np.prod(obs_space.shape))
        self.num_actions = int(action_space.n)
        self.max_episode_steps = None  # a gymnasium env may truncate for reasons of its own, at any step
        self._seeded = False

    def _to_device(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array)).to(self.device, dtype)

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(self.num_envs, self.obs_dim)).to(self.device)

    def reset(self) -> torch.Tensor:
        # Seeded on the first reset only: later resets continue each env's random stream.
        obs, _ = self.envs.reset(seed=None if self._seeded else self.seed)
        self._seeded = True
        return self._obs(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.envs.step(actions.cpu().numpy())
        final_obs = np.array(obs, dtype=np.float32, copy=True).reshape(self.num_envs, self.obs_dim)
        if "_final_obs" in info:  # episodes that ended in this step: their last observation
            for i in np.flatnonzero(info["_final_obs"]):
                final_obs[i] = np.asarray(info["final_obs"][i], dtype=np.float32).reshape(self.obs_dim)
        truncated = np.asarray(truncated) & ~np.asarray(terminated)  # never both, as StepResult promises
        return StepResult(self._obs(obs), self._to_device(reward, torch.float32),
                          self._to_device(terminated, torch.bool), self._to_device(truncated, torch.bool),
                          self._obs(final_obs))

    def close(self) -> None:
        self.envs.close()
