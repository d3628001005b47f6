"""A trained agent for a loop of one's own: `load_agent(run)`, then `act(obs, state, episode_start)` as
stable-baselines3's `predict`, on observations as the env gives them.

    agent = load_agent("runs/<run>")
    obs, info = env.reset(seed=0)
    action, state = agent.act(obs, action_mask=info.get("action_mask"))  # no state: a fresh episode
    while ...:
        obs, reward, terminated, truncated, info = env.step(action)
        action, state = agent.act(obs, state, action_mask=info.get("action_mask"))

`act` does what evaluation does each step (`rollout.Evaluator`): the run's observation statistics applied frozen,
the previous action shown to a policy trained with `previous_action`, the recurrent state carried and reset at
episode starts, the deterministic action mapped to the env's (`PolicyStep`, which `recurrent-ppo export` writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from recurrent_ppo import spaces
from recurrent_ppo.envs.gym_adapter import PREFIX as GYM_PREFIX
from recurrent_ppo.envs.previous_action import IS_FIRST, PREVIOUS_ACTION
from recurrent_ppo.export import PolicyStep, load_step
from recurrent_ppo.models.cores import RecurrentState
from recurrent_ppo.spaces import ACTION_MASK

ADDED_BY_THE_STEP = (PREVIOUS_ACTION, IS_FIRST)
"""Leaves an env wrapped in envs.previous_action.PreviousAction shows, which the agent computes itself."""


class AgentState(NamedTuple):
    """What one `act` hands the next, for every env of the batch: pass the state `act` returned back with the
    next observation (None starts fresh episodes). Its tensors are on the agent's device."""

    hidden: RecurrentState
    """The core's state after the last step: `(h, c)` for an LSTM, `(h,)` for a GRU, each
    `[num_layers, N, hidden_dim]`."""
    previous_action: torch.Tensor | None
    """The env's action at the last step, `[N, *action shape]`, which a policy trained with `previous_action`
    sees next; None for the others."""


def leaf_space_of(space: spaces.Space) -> spaces.Space | None:
    """The space a non-dict observation fills: `space` itself unless it is a Dict, the `"obs"` subspace of a Dict
    whose only other key is the action mask (an observation that the action mask or the previous action put
    under "obs"), else None."""
    if not isinstance(space, spaces.Dict):
        return space
    own = [(key, sub) for key, sub in space.spaces if key != ACTION_MASK]
    return own[0][1] if [key for key, _ in own] == ["obs"] else None


def gather_leaves(value: Any, space: spaces.Space, path: str, found: dict[str, Any]) -> None:
    """The leaves of a nested observation (dicts and tuples, as gymnasium gives them) by their `spaces.leaves`
    path, into `found`."""
    where = f"observation {path!r}" if path else "the observation"
    if isinstance(space, spaces.Dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} is a {type(value).__name__}; its space {space} needs a dict")
        for key, sub in space.spaces:
            if key not in value:
                raise ValueError(f"{where} has no {key!r}; its space needs the keys "
                                 f"{[key for key, _ in space.spaces]}")
            gather_leaves(value[key], sub, f"{path}/{key}" if path else key, found)
    elif isinstance(space, spaces.Tuple):
        if not isinstance(value, (tuple, list)) or len(value) != len(space.spaces):
            raise ValueError(f"{where} is a {type(value).__name__}; its space {space} needs a tuple of "
                             f"{len(space.spaces)}")
        for i, sub in enumerate(space.spaces):
            gather_leaves(value[i], sub, f"{path}/{i}" if path else str(i), found)
    else:
        found[path] = value


def gym_action_dtype(env: str) -> np.dtype | None:
    """The numpy dtype of the action space of the gymnasium env `gym:<id>`, read from one copy of it; None for
    other envs, and where gymnasium or the env cannot be had here (a deployment without them)."""
    if not env.startswith(GYM_PREFIX):
        return None
    try:
        import gymnasium as gym
    except ImportError:
        return None
    try:
        probe = gym.make(env[len(GYM_PREFIX):])
    except gym.error.Error:  # an id not registered in this process, a package the env needs missing
        return None
    try:
        return np.dtype(probe.action_space.dtype)
    finally:
        probe.close()


class Agent:
    """A trained policy acting on observations as the env gives them (see the module); `load_agent` makes one.

    `observation_space` is what `act` takes (the run's env's observation, the action mask included for a masked
    policy), `action_space` what it returns. Numpy actions have `action_dtype`: the gymnasium action space's dtype
    for a `gym:<id>` run, else the action space's storage dtype (int64, or float32 for a Box)."""

    def __init__(self, step: PolicyStep, config: dict[str, Any]) -> None:
        self.step, self.config = step, config
        self.env: str = config.get("env", "")
        self.policy = step.policy
        self.obs_normalizer = step.obs_norm
        self.observation_space, self.action_space = step.obs_space, step.policy.action_space
        self.device = step.policy.critic.weight.device
        self.leaves = spaces.leaves(self.observation_space)
        self.masked = self.policy.masked
        self.leaf_space = leaf_space_of(self.observation_space)
        gym_dtype = gym_action_dtype(self.env)
        storage_dtype = str(spaces.action_storage(self.action_space)[1]).removeprefix("torch.")
        self.action_dtype = np.dtype(storage_dtype) if gym_dtype is None else gym_dtype

    def initial_state(self, batch_size: int = 1) -> AgentState:
        """The state of `batch_size` fresh episodes (what `act` starts from when given none)."""
        tensors = self.step.initial_state(batch_size)
        hidden = tensors[:self.step.num_hidden]
        return AgentState(hidden, tensors[-1] if self.step.previous_action else None)

    @torch.inference_mode()
    def act(self, obs: Any, state: AgentState | None = None, episode_start: Any = None, deterministic: bool = True,
            action_mask: Any = None) -> tuple[Any, AgentState]:
        """The action for `obs` and the state to pass back with the next observation.

        `obs`: one env's observation or a batch `[N, ...]`, numpy or torch, as the env gives it: an array (or
        number) for a leaf space, nested dicts and tuples for a Dict or Tuple space (or the flat `{path: tensor}`
        dict of the device envs), a Dict's own `"action_mask"` included. `action_mask`: gymnasium's
        `info["action_mask"]`, for a policy trained with masks whose env puts them in the info.
        `state`: what the last `act` returned; None starts every env afresh. `episode_start` (a bool, or `[N]`):
        where true, `obs` begins a new episode and that env's state starts afresh (None: no env does).
        `deterministic=False` samples the action from torch's global generator instead of taking the most
        likely one.

        Returns the env's action (a single action for a single observation, `[N, ...]` for a batch): a tensor on
        the agent's device for torch input, else numpy of `action_dtype`; and the next `AgentState`.
        """
        leaves, batched, as_torch = self._observation(obs, action_mask)
        n = next(iter(leaves.values())).shape[0]
        starts = self._episode_start(episode_start, state, n)
        if state is None:
            state = self.initial_state(n)
        elif state.hidden[0].shape[1] != n:
            raise ValueError(f"the state holds {state.hidden[0].shape[1]} envs and the observation {n}; pass the "
                             f"state act returned for this batch, or None to start afresh")
        tensors = (*state.hidden, *(() if state.previous_action is None else (state.previous_action,)))
        step_obs = leaves[""] if "" in leaves else leaves
        action, tensors = self.step(step_obs, tensors, starts, deterministic)
        hidden = tuple(tensors[:self.step.num_hidden])
        next_state = AgentState(hidden, tensors[-1] if self.step.previous_action else None)
        if as_torch:
            return (action if batched else action[0]), next_state
        array = action.cpu().numpy().astype(self.action_dtype, copy=False)
        return (array if batched else array[0]), next_state

    def _observation(self, obs: Any, action_mask: Any) -> tuple[dict[str, torch.Tensor], bool, bool]:
        """`obs` (and `action_mask`) as the step's leaves `[N, ...]` on the device; whether it was a batch;
        whether it came as torch tensors."""
        found: dict[str, Any] = {}
        if isinstance(obs, Mapping):
            keys = set(obs) - set(ADDED_BY_THE_STEP)
            if keys <= set(self.leaves):  # the flat {path: tensor} form (or a Dict of leaves only)
                found = {path: obs[path] for path in keys}
            elif isinstance(self.observation_space, spaces.Dict):
                own = spaces.Dict(tuple((k, s) for k, s in self.observation_space.spaces if k != ACTION_MASK))
                unknown = keys - {key for key, _ in self.observation_space.spaces}
                if unknown:
                    raise ValueError(f"the observation has keys {sorted(unknown)} that its space "
                                     f"{self.observation_space} does not")
                gather_leaves({k: v for k, v in obs.items() if k != ACTION_MASK}, own, "", found)
                if ACTION_MASK in obs:
                    found[ACTION_MASK] = obs[ACTION_MASK]
            else:
                raise ValueError(f"the observation is a dict with keys {sorted(obs)}, but the policy observes "
                                 f"{self.observation_space}")
        elif self.leaf_space is self.observation_space:
            gather_leaves(obs, self.observation_space, "", found)
        elif self.leaf_space is not None:
            gather_leaves(obs, self.leaf_space, "obs", found)
        else:
            raise ValueError(f"the observation is a {type(obs).__name__}, but the policy observes "
                             f"{self.observation_space}: pass a dict")
        self._add_mask(found, action_mask)
        missing = set(self.leaves) - set(found)
        if missing:
            raise ValueError(f"the observation lacks {sorted(missing)} of its space {self.observation_space}")
        as_torch = any(isinstance(value, torch.Tensor) for value in found.values())
        tensors, batched = {}, None
        for path, leaf in self.leaves.items():
            tensor, leaf_batched = self._leaf(found[path], leaf, path)
            if batched is None:
                batched = leaf_batched
            elif leaf_batched != batched:
                raise ValueError(f"observation {path!r} has shape {list(tensor.shape)} and the others "
                                 f"{'do not ' if leaf_batched else ''}have a batch dimension: give every leaf of "
                                 f"one observation, or every leaf of a batch")
            tensors[path] = tensor if leaf_batched else tensor[None]
        return tensors, bool(batched), as_torch

    def _add_mask(self, found: dict[str, Any], action_mask: Any) -> None:
        if action_mask is None:
            if self.masked and ACTION_MASK not in found:
                raise ValueError(f"the policy was trained with action masks: pass the env's info['action_mask'] "
                                 f"as action_mask=, or an observation holding {ACTION_MASK!r}")
            return
        if not self.masked:
            raise ValueError(f"action_mask= was given, but the policy was trained without action masks "
                             f"(its observation space is {self.observation_space})")
        if ACTION_MASK in found:
            raise ValueError(f"the action mask was given twice, in the observation's {ACTION_MASK!r} and as "
                             f"action_mask=: give it once")
        found[ACTION_MASK] = action_mask

    def _leaf(self, value: Any, leaf: spaces.Leaf, path: str) -> tuple[torch.Tensor, bool]:
        """One leaf as a tensor in its storage dtype on the device, and whether it holds a batch."""
        if isinstance(value, torch.Tensor):
            tensor = value
        else:  # torch takes no negative strides (a flipped image); np.ascontiguousarray would make a number 1-D
            array = np.asarray(value)
            tensor = torch.as_tensor(array if array.flags.c_contiguous else np.ascontiguousarray(array))
        shape, dtype = spaces.storage(leaf)
        name = f"observation {path!r}" if path else "the observation"
        if tensor.dtype.is_floating_point and not dtype.is_floating_point:
            raise ValueError(f"{name} is {tensor.dtype}, but its space {leaf} holds {dtype} values; pass them "
                             f"as integers (or bools)")
        if tuple(tensor.shape) == shape:
            batched = False
        elif tensor.dim() == len(shape) + 1 and tuple(tensor.shape[1:]) == shape:
            batched = True
        else:
            raise ValueError(f"{name} has shape {list(tensor.shape)}; its space {leaf} needs {list(shape)} for one "
                             f"env or [N, {', '.join(map(str, shape))}] for a batch".replace(", ]", "]"))
        return tensor.to(self.device, dtype), batched

    def _episode_start(self, episode_start: Any, state: AgentState | None, n: int) -> torch.Tensor:
        """`[n]` bool: all true without a state (fresh episodes), else `episode_start` (none true when None)."""
        if state is None:
            return torch.ones(n, dtype=torch.bool, device=self.device)
        if episode_start is None:
            return torch.zeros(n, dtype=torch.bool, device=self.device)
        starts = episode_start if isinstance(episode_start, torch.Tensor) else torch.as_tensor(
            np.asarray(episode_start))
        if starts.numel() != n:
            raise ValueError(f"episode_start has {starts.numel()} flags for {n} envs; give one per env")
        return starts.reshape(n).to(self.device, torch.bool)


def load_agent(run_dir_or_checkpoint: str | Path, device: torch.device | str = "cpu") -> Agent:
    """The agent a training run saved (a run folder, or its checkpoint.pt) on `device`: its policy, its frozen
    observation statistics and the previous-action input it was trained with (see `Agent.act`)."""
    step, config = load_step(run_dir_or_checkpoint, device)
    return Agent(step, config)
