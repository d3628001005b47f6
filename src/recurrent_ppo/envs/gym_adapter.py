"""Gymnasium environments as a `VectorEnv`: `make_env("gym:CartPole-v1", ...)`, or `--env gym:CartPole-v1`;
`gym:<module>:<id>` imports `<module>` (which registers `<id>`) first, and `gym:<module>:<function>` makes each
copy with `<function>()`, a gymnasium env with the wrappers it needs (e.g. one dropping an unsupported leaf).

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

import difflib
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from recurrent_ppo import spaces
from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.envs.host_workers import WorkerPool, choose_workers
from recurrent_ppo.envs.sources import describe
from recurrent_ppo.spaces import ACTION_MASK, Obs

PREFIX = "gym:"


def cannot_make(env_id: str, name: str, error: Exception) -> str:
    """Why `gymnasium.make(env_id)` failed, in words: for an id gymnasium does not know, whether the package
    naming it imported and the registered ids close to it; otherwise gymnasium's own reason."""
    import gymnasium as gym

    module, _, gym_id = env_id.rpartition(":")
    if not isinstance(error, gym.error.UnregisteredEnv):  # unknown names, namespaces and versions
        return f"env {name!r} cannot be made: {error} (install the package the env needs)"
    close = difflib.get_close_matches(gym_id, list(gym.registry), n=5, cutoff=0.6)
    nearby = (f"registered ids close to it: {', '.join(close)}" if close else
              "no registered id is close to it (gymnasium.pprint_registry() lists them)")
    if module:
        where = f"module {module!r} imported, but registered no env {gym_id!r}"
    else:
        where = (f"gymnasium has no env {gym_id!r} registered; if a package registers it when imported, name the "
                 f"package too: gym:<package>:{gym_id}")
    return f"env {name!r} cannot be made: {where} ({error}); {nearby}"


def observation_fix(gym_space) -> str:
    """What makes a gymnasium observation space with an unsupported part trainable: the wrapper that drops (a Dict's
    or Tuple's entry) or converts it, applied in a function of one's own named as gym:<module>:<function>."""
    from gymnasium import spaces as gs

    factory = ("in a function of your own that returns the wrapped env, and train it as --env "
               "gym:<module>:<function> (docs/envs.md)")
    if isinstance(gym_space, (gs.Dict, gs.Tuple)):
        keys = list(gym_space.spaces) if isinstance(gym_space, gs.Dict) else list(range(len(gym_space.spaces)))
        bad = [key for key in keys if not supported(gym_space[key])]
        kept = [key for key in keys if key not in bad]
        if bad and kept:
            return (f"drop {bad} with gymnasium.wrappers.FilterObservation(env, {kept}) (or convert it with "
                    f"gymnasium.wrappers.TransformObservation) {factory}")
    return f"convert it to one with gymnasium.wrappers.TransformObservation (or an ObservationWrapper) {factory}"


def supported(gym_space) -> bool:
    try:
        spaces.from_gym(gym_space)
    except ValueError:
        return False
    return True


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
    """Checks one env's outputs against the declared spaces, raising one ValueError naming the env, the call, the
    field, what was expected and what came. The vector env's copies run every reset and step through it
    (`checked`): numpy checks of a few leaves cost little beside a gymnasium step."""

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


def checked(env, check: OutputCheck, index: int = 0):
    """`env`, copy `index` of a vector env, wrapped so that each of its resets and steps goes through `check`,
    which names the copy and its step."""
    import gymnasium as gym

    class OutputsChecked(gym.Wrapper):
        def __init__(self, env) -> None:
            super().__init__(env)
            self.steps = 0  # step() calls of this copy

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            after = f" after its step() number {self.steps}" if self.steps else ""
            check(obs, info, f"env {index}'s reset(){after}")
            return obs, info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.steps += 1
            check(obs, info, f"env {index}'s step() number {self.steps}")
            return obs, reward, terminated, truncated, info

    return OutputsChecked(env)


def checked_copy(make_one, check: OutputCheck, index: int):
    """Copy `index` of a vector env: `make_one()` with its outputs checked (a module-level function, so that
    the async vector env can send it to its worker process)."""
    return checked(make_one(), check, index)


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


class HostStep(NamedTuple):
    """One step of some copies, batched on the host: what `GymVectorEnv` moves to the device."""

    leaves: dict[str, np.ndarray]  # [n, ...] per observation leaf path: the next observation (reset where one ended)
    mask: np.ndarray | None  # [n, mask_dim]: the info's action mask, when the env puts one there
    final: dict[str, np.ndarray]  # [n, ...] per leaf path: the observation each copy's step ended on
    final_mask: np.ndarray | None
    reward: np.ndarray  # [n]
    terminated: np.ndarray  # [n] bool
    truncated: np.ndarray  # [n] bool, never where terminated


def concatenate(steps: list[HostStep]) -> HostStep:
    """The steps of consecutive groups of copies as one step of all of them."""
    if len(steps) == 1:
        return steps[0]
    first = steps[0]
    return HostStep(*(
        {path: np.concatenate([step[i][path] for step in steps]) for path in field} if isinstance(field, dict)
        else None if field is None else np.concatenate([step[i] for step in steps])
        for i, field in enumerate(first)))


class HostCopies:
    """Copies `copies` of a gymnasium env stepped together by gymnasium's vector env (same-step autoreset), their
    outputs batched as `GymVectorEnv` takes them (`HostStep`). It holds numpy and gymnasium only, so it runs in the
    trainer's process or in a worker (`host_workers`). `make_copy(i)` makes copy i (`checked_copy`)."""

    def __init__(self, make_copy: Callable[[int], Any], gym_obs_space, obs_prefix: str, masked: bool, copies: range,
                 asynchronous: bool = False) -> None:
        import gymnasium as gym

        self.gym_obs_space, self.obs_prefix, self.masked = gym_obs_space, obs_prefix, masked
        vector = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
        self.envs = vector([functools.partial(make_copy, i) for i in copies],
                           autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.action_dtype = self.envs.single_action_space.dtype

    def _info_mask(self, info: dict) -> np.ndarray | None:
        return info.get(ACTION_MASK) if self.masked else None

    def reset(self, seed: int | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Reset every copy (copy i of these with `seed + i`, unless None); the observation leaves and the mask."""
        obs, info = self.envs.reset(seed=seed)
        return gym_leaves(obs, self.gym_obs_space, self.obs_prefix), self._info_mask(info)

    def step(self, actions: np.ndarray) -> HostStep:
        obs, reward, terminated, truncated, info = self.envs.step(actions.astype(self.action_dtype, copy=False))
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
        return HostStep(leaves, mask, final, final_mask, np.asarray(reward), np.asarray(terminated), truncated)

    def close(self) -> None:
        self.envs.close()


def time_steps(probe, info: dict, budget: float = 0.05, most: int = 16) -> float | None:
    """Seconds of one `probe.step`, the median of up to `most` steps within `budget` seconds, episodes reset as
    they end; None when none could be timed. An exception ends the timing: the env's copies raise it in their
    own time."""
    times: list[float] = []
    started = time.perf_counter()
    try:
        while len(times) < most and time.perf_counter() - started < budget:
            action = legal_action(probe.action_space, info.get(ACTION_MASK))
            start = time.perf_counter()
            _, _, terminated, truncated, info = probe.step(action)
            times.append(time.perf_counter() - start)
            if terminated or truncated:
                _, info = probe.reset()
    except Exception:
        pass
    return statistics.median(times) if times else None


class GymVectorEnv:
    """`num_envs` copies of a gymnasium env, seeded from `seed` (env i gets seed + i). `env` is a registered id
    (`CartPole-v1`; `module:id` imports `module` first, as `gymnasium.make` does) or a function of no arguments
    returning a gymnasium env, wrappers and all; `name` is how messages call it (default `gym:<env>`).

    Before any vector env exists, one more copy of the env is made, its spaces converted (an unsupported one
    raises, naming it and its path and the wrapper that would drop or convert it), and its first reset and step
    checked against them (shapes, dtypes, the bounds of integer spaces, the action mask); then every reset and
    step of every copy is checked the same way, naming the copy and its step.
    `workers=N` steps the copies in N worker processes (`host_workers.WorkerPool`, at most one per copy), laid out
    in `parts` (`parts=2`: two halves, each steppable on its own while the trainer works on the other: `part`);
    `workers="auto"` times the probe's steps and starts workers where they pay (`host_workers.choose_workers`,
    its reason in `workers_note`). `asynchronous=True` runs each copy in its own process instead (gymnasium's
    AsyncVectorEnv, one message per copy and step). Keyword arguments go to `gymnasium.make` (e.g.
    max_episode_steps).
    """

    steps_on_host = True
    workers_note = ""
    """Why `workers="auto"` chose what it did, in words (empty when the workers were given)."""

    def __init__(self, env: str | Callable[[], Any], num_envs: int, device: torch.device | str = "cpu", *,
                 seed: int = 0, asynchronous: bool = False, workers: int | Literal["auto"] = 0, parts: int = 1,
                 name: str | None = None, **make_kwargs) -> None:
        self.name = name or f"{PREFIX}{env if isinstance(env, str) else describe(env)}"
        try:
            import gymnasium as gym
        except ImportError as error:
            raise ImportError(f"env {self.name!r} needs gymnasium: pip install 'gymnasium>=1.1'") from error
        if num_envs < 1:
            raise ValueError(f"GymVectorEnv needs num_envs >= 1, got {num_envs}")
        if workers != "auto" and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
            raise ValueError(f"{self.name}: workers={workers!r} must be 0 (in-process), a number of worker "
                             f"processes, or 'auto'")
        if workers and asynchronous:
            raise ValueError(f"{self.name}: asynchronous=True gives each copy a process of its own; it cannot go "
                             f"with workers={workers!r}: choose one")
        self.num_envs, self.seed = num_envs, seed
        self.device = torch.device(device)
        if isinstance(env, str):
            make_one = functools.partial(gym.make, env, **make_kwargs)
        elif make_kwargs:
            raise ValueError(f"{self.name}: keyword arguments {sorted(make_kwargs)} go to gymnasium.make, which a "
                             f"function making the env does not use; pass them inside it")
        else:
            make_one = env
        probe = self._probe(make_one, env)
        try:
            obs_space, check, workers = self._inspect(probe, workers, parts)
        finally:
            probe.close()
        # A masked leaf observation goes under "obs" (spaces.with_action_mask), a Dict's leaves keep their paths.
        self.obs_prefix = "obs" if self.masked and not isinstance(obs_space, spaces.Dict) else ""
        self.storage = {path: spaces.storage(leaf) for path, leaf in spaces.leaves(self.observation_space).items()}
        copies = functools.partial(HostCopies, functools.partial(checked_copy, make_one, check), self.gym_obs_space,
                                   self.obs_prefix, self.masked)
        self.workers = min(workers, num_envs)
        self.pool = WorkerPool(copies, num_envs, self.workers, min(parts, num_envs), name=self.name) \
            if self.workers else None
        self.host = None if self.pool else copies(range(num_envs), asynchronous=asynchronous)
        self.max_episode_steps = None  # a gymnasium env may truncate for reasons of its own, at any step
        self._seeded = False

    def _inspect(self, probe, workers: int | Literal["auto"], parts: int) -> tuple[spaces.Space, OutputCheck, int]:
        """Read the env's spaces from `probe` (one copy), check its first reset and step against them, and for
        `workers="auto"` time its steps; the observation space as the env gives it (before the info's mask
        joins it), the check of every copy's outputs, and the workers to start."""
        self.gym_obs_space, self.gym_action_space = probe.observation_space, probe.action_space
        try:
            obs_space = spaces.from_gym(self.gym_obs_space)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}; {observation_fix(self.gym_obs_space)}") from None
        try:
            self.action_space = spaces.action_from_gym(self.gym_action_space)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None
        obs_space = mask_leaf_as_binary(obs_space)
        probe_obs, info = probe.reset(seed=self.seed)
        # The info's mask moves into the observation, unless the observation holds one already.
        self.masked = ACTION_MASK in info and not (isinstance(obs_space, spaces.Dict)
                                                   and ACTION_MASK in dict(obs_space.spaces))
        self.observation_space = spaces.with_action_mask(obs_space, self.action_space) if self.masked else obs_space
        check = OutputCheck(self.name, self.gym_obs_space, spaces.mask_dim(self.action_space) if self.masked else None)
        check(probe_obs, info, "reset()")
        probe.action_space.seed(self.seed)
        start = time.perf_counter()
        step = probe.step(legal_action(probe.action_space, info.get(ACTION_MASK)))
        first_step = time.perf_counter() - start
        check(step[0], step[4], "step()")
        if workers == "auto":  # later steps: the first may pay for lazy set-up
            info = probe.reset()[1] if step[2] or step[3] else step[4]
            workers, self.workers_note = choose_workers(self.num_envs, time_steps(probe, info) or first_step, parts)
        return obs_space, check, workers

    def _probe(self, make_one: Callable[[], Any], env: str | Callable[[], Any]):
        """One copy of the env, made before the vector env to check it; ValueError naming what went wrong."""
        import gymnasium as gym

        try:
            probe = make_one()
        except gym.error.Error as error:  # an unknown id or version, a missing package (DependencyNotInstalled)
            if isinstance(env, str):
                raise ValueError(cannot_make(env, self.name, error)) from error
            raise
        except ModuleNotFoundError as error:  # gymnasium imports the module of a `module:id`
            if isinstance(env, str) and ":" in env:
                raise ImportError(f"env {self.name!r}: cannot import module {env.split(':')[0]!r} ({error}); "
                                  f"install the package that provides it") from error
            raise
        if not all(hasattr(probe, name) for name in ("reset", "step", "observation_space", "action_space")):
            raise ValueError(f"env {self.name!r}: {describe(env)}() returned a {type(probe).__name__}, not a "
                             f"gymnasium env (reset, step, observation_space, action_space)")
        return probe

    def _to_device(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array)).to(self.device, dtype)

    def _obs(self, leaves: dict[str, np.ndarray], mask: np.ndarray | None, num: int) -> Obs:
        """Batched leaf arrays of `num` copies (and the action mask) as the observation pytree on the device."""
        if mask is not None:
            leaves = {**leaves, ACTION_MASK: mask}
        obs = {path: self._to_device(np.reshape(leaves[path], (num, *shape)), dtype)
               for path, (shape, dtype) in self.storage.items()}
        return obs[""] if "" in obs else obs

    def _result(self, step: HostStep) -> StepResult:
        num = len(step.reward)
        return StepResult(self._obs(step.leaves, step.mask, num), self._to_device(step.reward, torch.float32),
                          self._to_device(step.terminated, torch.bool), self._to_device(step.truncated, torch.bool),
                          self._obs(step.final, step.final_mask, num))

    def reset(self) -> Obs:
        # Seeded on the first reset only: later resets continue each env's random stream.
        seed = None if self._seeded else self.seed
        if self.pool is None:
            leaves, mask = self.host.reset(seed)
        else:  # each group of copies from its first copy's seed: copy i still gets seed + i
            for part, groups in enumerate(self.pool.parts):
                self.pool.request(part, "reset", [None if seed is None else seed + g.copies.start for g in groups])
            resets = [reset for part in range(len(self.pool.parts)) for reset in self.pool.replies(part)]
            leaves = {path: np.concatenate([reset[0][path] for reset in resets]) for path in resets[0][0]}
            mask = None if resets[0][1] is None else np.concatenate([reset[1] for reset in resets])
        self._seeded = True
        return self._obs(leaves, mask, self.num_envs)

    def _host_actions(self, actions: torch.Tensor) -> np.ndarray:
        return actions.cpu().numpy().astype(self.gym_action_space.dtype, copy=False)

    def step(self, actions: torch.Tensor) -> StepResult:
        if self.pool is None:
            return self._result(self.host.step(self._host_actions(actions)))
        for part, copies in enumerate(self.pool.part_copies):
            self.step_async(part, actions[copies.start:copies.stop])
        return self._result(concatenate([step for part in range(len(self.pool.parts))
                                         for step in self.pool.replies(part)]))

    def step_async(self, part: int, actions: torch.Tensor) -> None:
        """Start the step of the copies of `part` (workers only) with their `actions`, and return at once."""
        actions = self._host_actions(actions)
        start = self.pool.part_copies[part].start
        self.pool.request(part, "step", [actions[g.copies.start - start:g.copies.stop - start]
                                         for g in self.pool.parts[part]])

    def step_wait(self, part: int) -> StepResult:
        """The result of the step of `part` started last (`step_async`): its copies' outputs, in copy order."""
        return self._result(concatenate(self.pool.replies(part)))

    def part(self, index: int) -> HostEnvPart:
        """Part `index` of the copies in workers, as a VectorEnv of its own (`HostEnvPart`)."""
        if self.pool is None:
            raise ValueError(f"{self.name}: its copies step in the trainer's process, in one part; parts need "
                             f"workers")
        return HostEnvPart(self, index)

    @property
    def num_parts(self) -> int:
        """The parts the copies are laid out in: 1 in-process, else as the workers were started."""
        return 1 if self.pool is None else len(self.pool.parts)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        else:
            self.host.close()


class HostEnvPart:
    """Part `index` of a GymVectorEnv in workers: copies `copies`, as a VectorEnv of their own whose step can be
    started ahead. `send(actions)` starts it and returns at once; `step(actions)` with the same actions then waits
    for it (a step not sent ahead is sent first). So a wrapper of the whole env (PreviousAction) wraps a part as
    it is, and the rollout steps one part while the policy acts on the other."""

    steps_on_host = True

    def __init__(self, env: GymVectorEnv, index: int) -> None:
        self.env, self.index = env, index
        self.copies = env.pool.part_copies[index]
        self.num_envs, self.device = len(self.copies), env.device
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.max_episode_steps = env.max_episode_steps
        self.sent: torch.Tensor | None = None

    def reset(self) -> Obs:
        raise RuntimeError(f"{self.env.name}: part {self.index} of its copies cannot reset alone; reset the whole env "
                           f"(every copy's seed comes from it)")

    def send(self, actions: torch.Tensor) -> None:
        self.env.step_async(self.index, actions)
        self.sent = actions

    def step(self, actions: torch.Tensor) -> StepResult:
        if self.sent is None:
            self.send(actions)
        elif self.sent is not actions:
            raise RuntimeError(f"{self.env.name}: part {self.index} was sent other actions than it is stepped with")
        self.sent = None
        return self.env.step_wait(self.index)
