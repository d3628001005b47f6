"""Gymnasium environments as a `VectorEnv`: `make_env("gym:CartPole-v1", ...)`, or `--env gym:CartPole-v1`.

The envs step on the host (gymnasium's vector env, synchronous or in subprocesses), so the compiled rollout
calls them between its graphs: the policy step, then `step` here (actions to the host, results to the device),
then the bookkeeping and buffer write. Spaces are converted by `spaces.from_gym` / `action_from_gym`
(observations: Box, Discrete, MultiDiscrete, MultiBinary, Dict/Tuple of them; actions: Discrete, MultiDiscrete,
bounded Box); observations reach the device leaf by leaf in their storage dtype (uint8 stays uint8, integers
int64, MultiBinary bool). An env that puts an `action_mask` in its info (gymnasium's convention, e.g. Taxi)
gets it moved into the observation under `"action_mask"` (a leaf observation space becomes
Dict{"obs": ..., "action_mask": MultiBinary}), so masks flow downstream as one convention.
Episodes end and restart within one step (gymnasium's same-step autoreset), matching `StepResult`: `obs` is the
reset observation where an episode ended and `final_obs` the observation it ended on.
"""

from __future__ import annotations

import numpy as np
import torch

from recurrent_ppo import spaces
from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.spaces import ACTION_MASK, Obs

PREFIX = "gym:"


def gym_leaves(obs, space, path: str = "") -> dict[str, np.ndarray]:
    """The leaves of a gymnasium observation (one env's or a vector env's batch) by `spaces.leaves` path."""
    from gymnasium import spaces as gs

    if isinstance(space, gs.Dict):
        items = [(key, obs[key], sub) for key, sub in space.spaces.items()]
    elif isinstance(space, gs.Tuple):
        items = [(str(i), obs[i], sub) for i, sub in enumerate(space.spaces)]
    else:
        return {path: np.asarray(obs)}
    found: dict[str, np.ndarray] = {}
    for key, value, sub in items:
        found.update(gym_leaves(value, sub, f"{path}/{key}" if path else key))
    return found


def leaf_problem(value: np.ndarray, leaf: spaces.Leaf) -> str | None:
    """What is wrong with one env's observation leaf `value` for `leaf`, or None."""
    shape, _ = spaces.storage(leaf)
    kind = value.dtype.kind
    if isinstance(leaf, spaces.Box):
        expected = "uint8" if leaf.dtype == "uint8" else "a float dtype" if leaf.dtype == "float32" else "integers"
        dtype_ok = (value.dtype == np.uint8 if leaf.dtype == "uint8" else kind == "f" if leaf.dtype == "float32"
                    else kind in "iub")
    else:
        expected = "integers" if not isinstance(leaf, spaces.MultiBinary) else "0/1 integers or bools"
        dtype_ok = kind in ("iub" if isinstance(leaf, spaces.MultiBinary) else "iu")
    if value.shape != shape or not dtype_ok:
        return f"shape {value.shape} and dtype {value.dtype}; expected shape {shape} and {expected}"
    low, high = integer_bounds(leaf)
    if low is not None and ((value < low) | (value >= high)).any():
        return f"values {value.tolist()} outside [{low.tolist()}, {(high - 1).tolist()}]"
    return None


def integer_bounds(leaf: spaces.Leaf) -> tuple[np.ndarray | None, np.ndarray | None]:
    """`[low, high)` of an integer space's values (None for a Box)."""
    if isinstance(leaf, spaces.Discrete):
        return np.array(leaf.start), np.array(leaf.start + leaf.n)
    if isinstance(leaf, spaces.MultiDiscrete):
        start = np.array(leaf.start or [0] * len(leaf.nvec))
        return start, start + np.array(leaf.nvec)
    if isinstance(leaf, spaces.MultiBinary):
        return np.array(0), np.array(2)
    return None, None


class OutputCheck:
    """Checks one env's first reset and first step against the declared spaces, raising one ValueError naming
    the env, the call, the field, what was expected and what came."""

    def __init__(self, name: str, gym_space, mask_dim: int | None) -> None:
        self.name, self.gym_space, self.mask_dim = name, gym_space, mask_dim
        self.leaves = spaces.leaves(spaces.from_gym(gym_space))

    def __call__(self, obs, info: dict, where: str) -> None:
        for path, value in gym_leaves(obs, self.gym_space).items():
            problem = leaf_problem(value, self.leaves[path])
            if problem:
                field = f"observation {path!r}" if path else "observation"
                raise ValueError(f"{self.name}: {where} returned an {field} of {problem}, against its declared "
                                 f"space {self.leaves[path]}; make the env and its observation_space agree")
        if self.mask_dim is not None:
            mask = np.asarray(info.get(ACTION_MASK))
            if mask.shape != (self.mask_dim,) or mask.dtype.kind not in "iub" or ((mask != 0) & (mask != 1)).any():
                raise ValueError(f"{self.name}: {where} returned info[{ACTION_MASK!r}] of shape {mask.shape} and "
                                 f"dtype {mask.dtype}; the actions need shape ({self.mask_dim},) of 0/1 (int8 or "
                                 f"bool), 1 where the action is legal")


def checked(env, check: OutputCheck):
    """`env` wrapped so that its first reset and first step go through `check`."""
    import gymnasium as gym

    class FirstOutputsChecked(gym.Wrapper):
        def __init__(self, env) -> None:
            super().__init__(env)
            self.unchecked = {"reset()", "step()"}

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            self._check(obs, info, "reset()")
            return obs, info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._check(obs, info, "step()")
            return obs, reward, terminated, truncated, info

        def _check(self, obs, info, where: str) -> None:
            if where in self.unchecked:
                self.unchecked.discard(where)
                check(obs, info, where)

    return FirstOutputsChecked(env)


def legal_action(space, mask: np.ndarray | None):
    """An action of the gymnasium `space`, legal under `mask` (the first legal one per sub-action) if given."""
    from gymnasium import spaces as gs

    if mask is None:
        return space.sample()
    if isinstance(space, gs.Discrete):
        return space.start + int(np.flatnonzero(mask)[0])
    splits = np.split(mask, np.cumsum(space.nvec)[:-1])
    return space.start + np.array([int(np.flatnonzero(part)[0]) for part in splits])


def mask_leaf_as_binary(space: spaces.Space) -> spaces.Space:
    """A Dict observation's own `"action_mask"` leaf as MultiBinary, bool on the device, however the env declares
    it (gymnasium's envs often use a 0/1 int8 Box)."""
    if not isinstance(space, spaces.Dict) or ACTION_MASK not in dict(space.spaces):
        return space
    mask = dict(space.spaces)[ACTION_MASK]
    if not isinstance(mask, (spaces.Box, spaces.MultiBinary)) or len(mask.shape) != 1:
        raise ValueError(f"the observation's {ACTION_MASK!r} is {mask}; it must be one flag per action, a 1-D 0/1 "
                         f"Box or MultiBinary")
    return spaces.Dict(tuple((key, spaces.MultiBinary(mask.shape) if key == ACTION_MASK else sub)
                             for key, sub in space.spaces))


class GymVectorEnv:
    """`num_envs` copies of the gymnasium env `env_id`, seeded from `seed` (env i gets seed + i).

    Before any vector env exists, one more copy of the env is made, its spaces converted (an unsupported one
    raises, naming it and its path), and its first reset and step checked against them (shapes, dtypes, the
    bounds of integer spaces, the action mask); the vector envs' own first reset and step are checked too.
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
        self.env_id, self.num_envs, self.seed = env_id, num_envs, seed
        self.name = f"{PREFIX}{env_id}"
        self.device = torch.device(device)
        try:
            probe = gym.make(env_id, **make_kwargs)
        except gym.error.Error as error:  # an unknown id or version, a missing package (DependencyNotInstalled)
            raise ValueError(f"env 'gym:{env_id}' cannot be made: {error} (check the id with "
                             f"gymnasium.pprint_registry(), or install the package the env needs)") from error
        try:
            self.gym_obs_space, self.gym_action_space = probe.observation_space, probe.action_space
            try:
                obs_space = spaces.from_gym(self.gym_obs_space)
                self.action_space = spaces.action_from_gym(self.gym_action_space)
            except ValueError as error:
                raise ValueError(f"{self.name}: {error}") from None
            obs_space = mask_leaf_as_binary(obs_space)
            probe_obs, info = probe.reset(seed=seed)
            # The info's mask moves into the observation, unless the observation holds one already.
            self.masked = ACTION_MASK in info and not (isinstance(obs_space, spaces.Dict)
                                                       and ACTION_MASK in dict(obs_space.spaces))
            self.observation_space = spaces.with_action_mask(obs_space, self.action_space) if self.masked \
                else obs_space
            check = OutputCheck(self.name, self.gym_obs_space,
                                spaces.mask_dim(self.action_space) if self.masked else None)
            check(probe_obs, info, "reset()")
            probe.action_space.seed(seed)
            step = probe.step(legal_action(probe.action_space, info.get(ACTION_MASK)))
            check(step[0], step[4], "step()")
        finally:
            probe.close()
        # A masked leaf observation goes under "obs" (spaces.with_action_mask), a Dict's leaves keep their paths.
        self.obs_prefix = "obs" if self.masked and not isinstance(obs_space, spaces.Dict) else ""
        self.storage = {path: spaces.storage(leaf) for path, leaf in spaces.leaves(self.observation_space).items()}
        self.envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="async" if asynchronous else "sync",
                                 vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                                 wrappers=[lambda env: checked(env, check)], **make_kwargs)
        self.max_episode_steps = None  # a gymnasium env may truncate for reasons of its own, at any step
        self._seeded = False

    def _to_device(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array)).to(self.device, dtype)

    def _obs(self, leaves: dict[str, np.ndarray], mask: np.ndarray | None) -> Obs:
        """Batched leaf arrays (and the action mask) as the observation pytree on the device."""
        if mask is not None:
            leaves = {**leaves, ACTION_MASK: mask}
        obs = {path: self._to_device(np.reshape(leaves[path], (self.num_envs, *shape)), dtype)
               for path, (shape, dtype) in self.storage.items()}
        return obs[""] if "" in obs else obs

    def reset(self) -> Obs:
        # Seeded on the first reset only: later resets continue each env's random stream.
        obs, info = self.envs.reset(seed=None if self._seeded else self.seed)
        self._seeded = True
        return self._obs(gym_leaves(obs, self.gym_obs_space, self.obs_prefix), self._info_mask(info))

    def _info_mask(self, info: dict) -> np.ndarray | None:
        return info.get(ACTION_MASK) if self.masked else None

    def step(self, actions: torch.Tensor) -> StepResult:
        actions = actions.cpu().numpy().astype(self.gym_action_space.dtype, copy=False)
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        leaves = gym_leaves(obs, self.gym_obs_space, self.obs_prefix)
        mask = self._info_mask(info)
        final = {path: np.array(array, copy=True) for path, array in leaves.items()}
        final_mask = None if mask is None else np.array(mask, copy=True)
        if "_final_obs" in info:  # episodes that ended in this step: their last observation (and mask)
            final_info = info.get("final_info", {})
            for i in np.flatnonzero(info["_final_obs"]):
                for path, value in gym_leaves(info["final_obs"][i], self.gym_obs_space, self.obs_prefix).items():
                    final[path][i] = value
                if final_mask is not None and ACTION_MASK in final_info:
                    final_mask[i] = final_info[ACTION_MASK][i]
        truncated = np.asarray(truncated) & ~np.asarray(terminated)  # never both, as StepResult promises
        return StepResult(self._obs(leaves, mask), self._to_device(reward, torch.float32),
                          self._to_device(terminated, torch.bool), self._to_device(truncated, torch.bool),
                          self._obs(final, final_mask))

    def close(self) -> None:
        self.envs.close()
