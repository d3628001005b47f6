"""The previous action in the observation, on the device: POPGym's `PreviousAction` and `Antialias` wrappers,
which its baselines put around every env.

A recurrent policy does not see what it sampled: on tasks whose observation says little about the agent's own
move (Battleship shows only hit or miss, a bandit only the reward), it has to be told. The wrapped observation is
a Dict: the env's own leaves (under `"obs"` unless the env's space is a Dict already), `"prev_action"` (the action
the env took at the previous step, a null action at an episode's first step) and `"is_t0"` (Discrete(2): 1 at an
episode's first step, telling the null action from a real one). The null action is POPGym's: zero where the space
holds it, else its lowest value.
"""

from __future__ import annotations

import torch

from recurrent_ppo import spaces
from recurrent_ppo.envs.base import StepResult, VectorEnv
from recurrent_ppo.spaces import ActionSpace, Obs, Space

PREVIOUS_ACTION = "prev_action"
IS_FIRST = "is_t0"


def action_as_observation(space: ActionSpace) -> spaces.Leaf:
    """The observation leaf that holds an action of `space` as the env receives it."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return space
    return spaces.Box(space.shape, space.low, space.high)


def with_previous_action(space: Space, action_space: ActionSpace) -> spaces.Dict:
    """`space` with the `"prev_action"` and `"is_t0"` leaves added at its top (a non-Dict space goes under
    `"obs"`)."""
    items = space.spaces if isinstance(space, spaces.Dict) else (("obs", space),)
    taken = {PREVIOUS_ACTION, IS_FIRST} & {key for key, _ in items}
    if taken:
        raise ValueError(f"the observation space already has {sorted(taken)}; the previous action cannot be added")
    return spaces.Dict((*items, (PREVIOUS_ACTION, action_as_observation(action_space)),
                        (IS_FIRST, spaces.Discrete(2))))


def null_action(space: ActionSpace, device: torch.device) -> torch.Tensor:
    """POPGym's null action: 0 where the space holds it, else the space's lowest value (per element)."""
    def nearest_to_zero(start: int, n: int) -> int:
        return max(start, min(0, start + n - 1))

    if isinstance(space, spaces.Discrete):
        return torch.tensor(nearest_to_zero(space.start, space.n), device=device)
    if isinstance(space, spaces.MultiDiscrete):
        starts = space.start or (0,) * len(space.nvec)
        return torch.tensor([nearest_to_zero(s, n) for s, n in zip(starts, space.nvec)], device=device)
    low = torch.as_tensor(space.low, dtype=torch.float32, device=device).expand(space.shape)
    high = torch.as_tensor(space.high, dtype=torch.float32, device=device).expand(space.shape)
    return torch.zeros(space.shape, device=device).clamp(low, high)


class PreviousAction:
    """`env` with the previous action and a first-step flag added to its observation (see the module)."""

    def __init__(self, env: VectorEnv) -> None:
        self.env = env
        self.num_envs, self.device = env.num_envs, env.device
        self.action_space = env.action_space
        self.steps_on_host, self.max_episode_steps = env.steps_on_host, env.max_episode_steps
        self.observation_space = with_previous_action(env.observation_space, env.action_space)
        self.inner_is_dict = isinstance(env.observation_space, spaces.Dict)
        self.null = null_action(env.action_space, env.device)

    def _observation(self, obs: Obs, previous: torch.Tensor, first: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.inner_is_dict:
            wrapped = dict(obs)
        elif isinstance(obs, dict):  # a Tuple space's leaves: "0", "1/pos", ...
            wrapped = {f"obs/{path}": x for path, x in obs.items()}
        else:
            wrapped = {"obs": obs}
        wrapped[PREVIOUS_ACTION] = previous
        wrapped[IS_FIRST] = first.to(torch.int64)
        return wrapped

    def reset(self) -> dict[str, torch.Tensor]:
        nulls = self.null.expand(self.num_envs, *self.null.shape).clone()
        return self._observation(self.env.reset(), nulls,
                                 torch.ones(self.num_envs, dtype=torch.bool, device=self.device))

    def step(self, actions: torch.Tensor) -> StepResult:
        result = self.env.step(actions)
        done = result.terminated | result.truncated
        taken = actions.reshape(self.num_envs, *self.null.shape).to(self.null.dtype)
        done_rows = done.reshape(-1, *(1,) * self.null.dim())
        # After an auto-reset the observation is a new episode's first: the null action, flagged.
        previous = torch.where(done_rows, self.null, taken)
        return StepResult(self._observation(result.obs, previous, done), result.reward, result.terminated,
                          result.truncated, self._observation(result.final_obs, taken, torch.zeros_like(done)))
