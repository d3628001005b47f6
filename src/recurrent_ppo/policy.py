"""The recurrent actor-critic: observation encoder -> our LSTM -> categorical policy head and value head."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from recurrent_ppo.compile import compile_fn
from recurrent_ppo.lstm import LSTM, HiddenState


class ActionOutput(NamedTuple):
    action: torch.Tensor  # [N] int64
    log_prob: torch.Tensor  # [N]
    value: torch.Tensor  # [N]
    hidden: HiddenState  # (h, c) after this step, each [num_layers, N, H]


class EvaluateOutput(NamedTuple):
    log_prob: torch.Tensor  # [B, L]
    value: torch.Tensor  # [B, L]
    entropy: torch.Tensor  # [B, L]
    hidden: HiddenState  # (h, c) after the last step, each [num_layers, B, H]


def reset_hidden(hidden: HiddenState, episode_starts: torch.Tensor) -> HiddenState:
    """Zero h and c of the envs whose episode starts now (`episode_starts [N]` bool)."""
    keep = (~episode_starts).to(hidden[0].dtype)[None, :, None]  # [1, N, 1]
    return hidden[0] * keep, hidden[1] * keep


def _layer(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class LSTMPolicyBundle(nn.Module):
    """Recurrent actor-critic for discrete actions, written to compile with `torch.compile(fullgraph=True)`.

    The rollout calls `get_action` one step at a time for all envs; the update calls `evaluate_actions` over
    `[B, L]` sequences, starting from the hidden state stored in the rollout buffer at each sequence start.
    Both reset h and c where an episode starts, so the two paths compute the same function.
    """

    def __init__(self, obs_dim: int, num_actions: int, hidden_dim: int = 256, num_layers: int = 1) -> None:
        super().__init__()
        if obs_dim < 1 or num_actions < 2:
            raise ValueError(f"LSTMPolicyBundle needs obs_dim >= 1 and num_actions >= 2, "
                             f"got {obs_dim=}, {num_actions=}")
        self.obs_dim = obs_dim
        self.num_actions = num_actions
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.encoder = nn.Sequential(_layer(obs_dim, hidden_dim, 2**0.5), nn.Tanh())
        self.lstm = LSTM(hidden_dim, hidden_dim, num_layers)
        self.actor = _layer(hidden_dim, num_actions, 0.01)
        self.critic = _layer(hidden_dim, 1, 1.0)

    def compile(self, mode: str = "default", *, backend: str | Callable = "inductor") -> LSTMPolicyBundle:
        """Compile `get_action`, `get_value` and `evaluate_actions` of this instance with `fullgraph=True`.

        `nn.Module.compile()` compiles only `forward()`, which a bundle called through these methods never runs;
        here each method is replaced on the instance by its compiled version, so every call goes through it.
        `mode` is a torch.compile mode ("default", "reduce-overhead", "max-autotune") or "off". Returns self.
        """
        for name in ("get_action", "get_value", "evaluate_actions"):
            setattr(self, name, compile_fn(getattr(type(self), name).__get__(self), mode, backend))
        return self

    @torch.inference_mode()
    def initial_hidden(self, batch_size: int) -> HiddenState:
        """Zero `(h, c)`, each `[num_layers, batch_size, hidden_dim]`, created under `torch.inference_mode()`.

        These are inference tensors: they can feed the rollout (which runs without autograd), but autograd
        cannot save them, so passing them straight to `evaluate_actions` with grad enabled raises
        `RuntimeError: Inference tensors cannot be saved for backward`. Training never sees them: the rollout
        copies each step's hidden state into the RolloutBuffer's preallocated normal tensors, a copy of values
        that leaves the buffer a normal tensor, and `get_batched_sequences` hands those to `evaluate_actions`.
        """
        param = self.critic.weight
        shape = (self.num_layers, batch_size, self.hidden_dim)
        return (torch.zeros(shape, dtype=param.dtype, device=param.device),
                torch.zeros(shape, dtype=param.dtype, device=param.device))

    def _core(
        self, obs: torch.Tensor, episode_starts: torch.Tensor, hidden: HiddenState
    ) -> tuple[torch.Tensor, HiddenState]:
        features = self.encoder(obs)  # [B, L, H]
        return self.lstm(features, episode_starts, hidden)

    def get_action(
        self,
        obs: torch.Tensor,
        hidden: HiddenState,
        episode_starts: torch.Tensor,
        deterministic: bool = False,
    ) -> ActionOutput:
        """One step for all envs: `obs [N, obs_dim]`, `episode_starts [N]` bool (h, c reset where true).

        Samples with the exponential-race form of the Gumbel-max trick (argmax of p / Exp(1) noise), which
        needs no host synchronisation; `deterministic=True` takes the most likely action.
        """
        out, hidden = self._core(obs[:, None], episode_starts[:, None], hidden)
        out = out[:, 0]  # [N, H]
        logits = self.actor(out)  # [N, A]
        log_probs = torch.log_softmax(logits, dim=-1)
        if deterministic:
            action = log_probs.argmax(dim=-1)
        else:
            noise = torch.empty_like(log_probs).exponential_()
            action = (log_probs.exp() / noise).argmax(dim=-1)
        log_prob = log_probs.gather(-1, action[:, None])[:, 0]
        return ActionOutput(action, log_prob, self.critic(out)[:, 0], hidden)

    def get_value(self, obs: torch.Tensor, hidden: HiddenState, episode_starts: torch.Tensor) -> torch.Tensor:
        """V(obs) for one step of all envs, `[N]`, from `hidden` (reset where `episode_starts`)."""
        out, _ = self._core(obs[:, None], episode_starts[:, None], hidden)
        return self.critic(out[:, 0])[:, 0]

    def value_after_step(self, obs: torch.Tensor, hidden: HiddenState, episode_starts: torch.Tensor,
                         next_obs: torch.Tensor) -> torch.Tensor:
        """V(next_obs) `[N]` from the state after one step on `obs [N, obs_dim]` from `hidden` (reset where
        `episode_starts`), with no reset in between: the truncation bootstrap, recomputed from a stored step."""
        _, after = self._core(obs[:, None], episode_starts[:, None], hidden)
        out, _ = self._core(next_obs[:, None], torch.zeros_like(episode_starts)[:, None], after)
        return self.critic(out[:, 0])[:, 0]

    def evaluate_actions(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        episode_starts: torch.Tensor,
        hidden: HiddenState,
    ) -> EvaluateOutput:
        """BPTT over sequences: `obs [B, L, obs_dim]`, `actions [B, L]`, `episode_starts [B, L]` bool, from
        `hidden` = the (h0, c0) stored at each sequence start, each `[num_layers, B, hidden_dim]`.

        Returns log-probabilities of `actions`, values and policy entropy, each `[B, L]`.
        """
        out, hidden = self._core(obs, episode_starts, hidden)  # [B, L, H]
        log_probs = torch.log_softmax(self.actor(out), dim=-1)  # [B, L, A]
        log_prob = log_probs.gather(-1, actions.long()[..., None])[..., 0]
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return EvaluateOutput(log_prob, self.critic(out)[..., 0], entropy, hidden)
