"""The recurrent actor-critic: observation encoder -> recurrent core -> action head, and a value head.

Every method takes its arguments in one order: `(obs, hidden, episode_starts, ...)`. Nothing here is compiled:
whoever puts the parts together compiles the methods it calls (`compile_fn(policy.get_action, ...)`).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import nn

from recurrent_ppo import spaces
from recurrent_ppo.models.cores import CoreKind, RecurrentState, make_core
from recurrent_ppo.models.encoders import make_encoder
from recurrent_ppo.models.heads import linear_layer, make_head
from recurrent_ppo.spaces import ACTION_MASK, ActionSpace, Obs, Space


class ActionOutput(NamedTuple):
    action: torch.Tensor  # [N, *action_shape] as stored (spaces.action_storage)
    log_prob: torch.Tensor  # [N]
    value: torch.Tensor  # [N]
    hidden: RecurrentState  # after this step, each [num_layers, N, H]


class EvaluateOutput(NamedTuple):
    log_prob: torch.Tensor  # [B, L]
    value: torch.Tensor  # [B, L]
    entropy: torch.Tensor  # [B, L]
    hidden: RecurrentState  # after the last step, each [num_layers, B, H]
    recall_error: torch.Tensor | None = None  # [] the recall head's error (a policy with `recall`), else None


def add_time(obs: Obs) -> Obs:
    """`[N, ...]` per leaf -> `[N, 1, ...]`: one step as a sequence of length 1."""
    return spaces.map_obs(lambda x: x[:, None], obs)


class RecurrentPolicy(nn.Module):
    """Recurrent actor-critic for any observation space of `recurrent_ppo.spaces` and a Discrete,
    MultiDiscrete or Box action space, written to compile with `torch.compile(fullgraph=True)`.

    The rollout calls `get_action` one step at a time for all envs; the update calls `evaluate_actions` over
    `[B, L]` sequences, from the state stored in the rollout buffer at each sequence start. Both reset the
    state where an episode starts, so the two paths compute the same function. An `"action_mask"` leaf at the
    top of a Dict observation space masks the actions (true = legal) in both.
    """

    def __init__(self, obs_space: Space, action_space: ActionSpace, hidden_dim: int = 256, num_layers: int = 1,
                 core: CoreKind = "lstm", *, skip_core: bool = False, recall: bool = False) -> None:
        super().__init__()
        self.obs_space, self.action_space = obs_space, action_space
        self.hidden_dim, self.num_layers, self.core_kind, self.skip_core = hidden_dim, num_layers, core, skip_core
        self.masked = isinstance(obs_space, spaces.Dict) and ACTION_MASK in dict(obs_space.spaces)
        # Built in this order, as the first policy (flat Box, Discrete, LSTM) was: a seeded policy of those spaces
        # draws the same initial weights.
        self.encoder = make_encoder(obs_space, hidden_dim)
        self.core = make_core(core, hidden_dim, hidden_dim, num_layers)
        self.head = make_head(action_space, hidden_dim)
        self.critic = linear_layer(hidden_dim, 1, 1.0)
        # Built last, so that a seeded policy without it draws the same weights as before it existed.
        self.recall = linear_layer(hidden_dim, hidden_dim, 1.0) if recall else None
        if self.masked:
            self._check_mask_space(dict(obs_space.spaces)[ACTION_MASK])

    def _check_mask_space(self, mask_space: Space) -> None:
        width = self.head.mask_dim
        if width is None:
            raise ValueError(f"the observation has an {ACTION_MASK!r}, but the action space {self.action_space} "
                             f"cannot be masked: masks apply to Discrete and MultiDiscrete actions")
        if mask_space != spaces.MultiBinary((width,)):
            raise ValueError(f"the observation's {ACTION_MASK!r} is {mask_space}; the action space "
                             f"{self.action_space} needs MultiBinary(shape=({width},)), one flag per action")

    def spec(self) -> dict[str, Any]:
        """What rebuilds this policy (`from_spec`), as plain data: checkpoints store it."""
        return {"obs_space": spaces.to_data(self.obs_space), "action_space": spaces.to_data(self.action_space),
                "hidden_dim": self.hidden_dim, "num_layers": self.num_layers, "core": self.core_kind,
                "skip_core": self.skip_core, "recall": self.recall is not None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RecurrentPolicy:
        return RecurrentPolicy(spaces.from_data(spec["obs_space"]), spaces.from_data(spec["action_space"]),
                               spec["hidden_dim"], spec["num_layers"], spec["core"], skip_core=spec["skip_core"],
                               recall=spec["recall"])

    @torch.inference_mode()
    def initial_hidden(self, batch_size: int) -> RecurrentState:
        """The zero state, one `[num_layers, batch_size, hidden_dim]` tensor per state tensor of the core
        ((h, c) or (h,)), created under `torch.inference_mode()`.

        These are inference tensors: they can feed the rollout (which runs without autograd), but autograd
        cannot save them, so passing them straight to `evaluate_actions` with grad enabled raises
        `RuntimeError: Inference tensors cannot be saved for backward`. Training never sees them: the rollout
        copies each step's state into the RolloutBuffer's preallocated normal tensors, a copy of values that
        leaves the buffer a normal tensor, and `get_batched_sequences` hands those to `evaluate_actions`.
        """
        param = self.critic.weight
        shape = (self.num_layers, batch_size, self.hidden_dim)
        return tuple(torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in self.core.state_names)

    def mask(self, obs: Obs) -> torch.Tensor | None:
        """The action mask of `obs` (`[..., mask_dim]` bool), or None without one; a wrong one raises."""
        if not self.masked:
            return None
        mask = obs[ACTION_MASK]
        if mask.dtype != torch.bool or mask.shape[-1] != self.head.mask_dim:
            raise ValueError(f"{ACTION_MASK} must be bool [..., {self.head.mask_dim}] (true = legal) for "
                             f"{self.action_space}, got {mask.dtype} {list(mask.shape)}")
        return mask

    def no_legal_action(self, obs: Obs) -> torch.Tensor | None:
        """`[N]` bool: rows whose mask leaves no legal action (per sub-action), or None without masks."""
        mask = self.mask(obs)
        return None if mask is None else self.head.no_legal_action(mask)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """The action the env takes for a stored one: offset by the space's start, or clipped to its bounds."""
        return self.head.env_action(action)

    def features(self, obs: Obs, hidden: RecurrentState,
                 episode_starts: torch.Tensor) -> tuple[torch.Tensor, RecurrentState]:
        """Core outputs `[B, L, H]` (plus the encoder's with `skip_core`) and the state after `obs` (`[B, L, ...]`
        per leaf) from `hidden`."""
        encoded = self.encoder(obs)
        out, hidden = self.core(encoded, episode_starts, hidden)
        return self._combine(out, encoded), hidden

    def _combine(self, out: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        return out + encoded if self.skip_core else out

    def recall_error(self, out: torch.Tensor, encoded: torch.Tensor, episode_starts: torch.Tensor) -> torch.Tensor:
        """The recall head's mean squared error: from the core's output at each step (`out [B, L, H]`), predict the
        encoder's features of the step before (`encoded`, a fixed target: no gradient flows into it), over the
        steps that have one in their episode and their sequence. It asks the recurrent state to keep the last
        observation, a direct gradient for the short recall that reward alone teaches slowly. In fp32 under
        autocast too, as the rest of the loss."""
        prediction = self.recall(out[:, 1:]).float()
        target = encoded[:, :-1].detach().float()
        kept = (~episode_starts[:, 1:]).float()  # [B, L-1]
        error = (prediction - target).square().mean(dim=-1)
        return (error * kept).sum() / kept.sum().clamp(min=1.0)

    def get_action(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor,
                   deterministic: bool = False) -> ActionOutput:
        """One step for all envs: `obs` `[N, ...]` per leaf, `episode_starts [N]` bool (the state is reset where
        true). `deterministic=True` takes the most likely action (the mean of a Gaussian)."""
        out, hidden = self.features(add_time(obs), hidden, episode_starts[:, None])
        out = out[:, 0]  # [N, H]
        action, log_prob = self.head.sample(out, self.mask(obs), deterministic)
        return ActionOutput(action, log_prob, self.critic(out)[:, 0], hidden)

    def get_value(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor) -> torch.Tensor:
        """V(obs) for one step of all envs, `[N]`, from `hidden` (reset where `episode_starts`)."""
        out, _ = self.features(add_time(obs), hidden, episode_starts[:, None])
        return self.critic(out[:, 0])[:, 0]

    def value_after_step(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor,
                         next_obs: Obs) -> torch.Tensor:
        """V(next_obs) `[N]` from the state after one step on `obs` from `hidden` (reset where `episode_starts`),
        with no reset in between: the truncation bootstrap, recomputed from a stored step."""
        _, after = self.features(add_time(obs), hidden, episode_starts[:, None])
        out, _ = self.features(add_time(next_obs), after, torch.zeros_like(episode_starts)[:, None])
        return self.critic(out[:, 0])[:, 0]

    def evaluate_actions(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor,
                         actions: torch.Tensor) -> EvaluateOutput:
        """BPTT over sequences: `obs` `[B, L, ...]` per leaf, `episode_starts [B, L]` bool, `actions`
        `[B, L, *action_shape]`, from `hidden` = the state stored at each sequence start.

        Returns log-probabilities of `actions`, values and policy entropy, each `[B, L]`.
        """
        encoded = self.encoder(obs)
        core_out, hidden = self.core(encoded, episode_starts, hidden)  # [B, L, H]
        out = self._combine(core_out, encoded)
        log_prob, entropy = self.head.evaluate(out, actions, self.mask(obs))
        recall = None if self.recall is None else self.recall_error(core_out, encoded, episode_starts)
        return EvaluateOutput(log_prob, self.critic(out)[..., 0], entropy, hidden, recall)



class LSTMPolicyBundle(RecurrentPolicy):
    """The old name of an LSTM policy over `obs_dim` float observations with `num_actions` discrete actions, kept so
    that code written against it still runs; it warns. Build `RecurrentPolicy(spaces.Box((obs_dim,)),
    spaces.Discrete(num_actions), hidden_dim, num_layers)` instead: the same module and parameters."""

    def __init__(self, obs_dim: int, num_actions: int, hidden_dim: int = 256, num_layers: int = 1) -> None:
        warnings.warn("LSTMPolicyBundle(obs_dim, num_actions, ...) is the old name of RecurrentPolicy(Box((obs_dim,)), "
                      "Discrete(num_actions), ...): build that instead", DeprecationWarning, stacklevel=2)
        super().__init__(spaces.Box((obs_dim,)), spaces.Discrete(num_actions), hidden_dim, num_layers)
