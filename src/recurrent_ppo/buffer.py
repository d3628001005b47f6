"""Static-shape rollout storage, preallocated once on the device, env-major `[num_envs, num_steps, ...]`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from recurrent_ppo.kernels.gae import gae
from recurrent_ppo.lstm import HiddenState


class SequenceBatch(NamedTuple):
    """A minibatch of `B` whole sequences of `L` steps, each field `[B, L, ...]` but `hidden`."""

    obs: torch.Tensor  # [B, L, obs_dim]
    actions: torch.Tensor  # [B, L]
    episode_starts: torch.Tensor  # [B, L] bool
    log_probs: torch.Tensor  # [B, L]
    values: torch.Tensor  # [B, L]
    advantages: torch.Tensor  # [B, L]
    hidden: HiddenState  # (h0, c0) fed into each sequence's first step, each [num_layers, B, H]

    @property
    def returns(self) -> torch.Tensor:
        """The value targets, A + V: formed where the loss reads both (fused into its graph when compiled), so
        GAE writes advantages alone and no minibatch gathers a returns tensor."""
        return self.advantages + self.values


class RolloutBuffer:
    """One rollout of `num_steps` steps for `num_envs` envs; every tensor is allocated here, once.

    Step t holds: `obs[:, t]` the observation the policy saw, `actions`/`log_probs`/`values` its outputs,
    `rewards`/`terminated`/`truncated` what the env returned for that action, `truncated_values[:, t]`
    V(final observation) of an episode cut by the time limit at t (read only where `truncated`), `final_obs`
    that final observation where the rollout bootstraps truncations after the fact (else left unwritten),
    `episode_starts[:, t]` whether obs t begins an episode, and `hidden_h`/`hidden_c[:, t]`
    (`[num_envs, num_steps, num_layers, hidden_dim]`) the LSTM state fed INTO step t, after the reset.

    Writes copy values into these preallocated normal tensors, so inference-mode tensors from the rollout
    (e.g. `initial_hidden()`) come out of the buffer as normal tensors that autograd can use.
    """

    def __init__(
        self,
        num_envs: int,
        num_steps: int,
        obs_dim: int,
        num_layers: int,
        hidden_dim: int,
        device: torch.device | str,
    ) -> None:
        if min(num_envs, num_steps, obs_dim, num_layers, hidden_dim) < 1:
            raise ValueError(
                f"RolloutBuffer sizes must be positive, got {num_envs=}, {num_steps=}, {obs_dim=}, {num_layers=}, "
                f"{hidden_dim=}"
            )
        self.num_envs, self.num_steps = num_envs, num_steps
        self.device = torch.device(device)
        n, t = num_envs, num_steps

        def alloc(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=self.device)

        self.obs = alloc(n, t, obs_dim)
        self.actions = alloc(n, t, dtype=torch.int64)
        self.log_probs = alloc(n, t)
        self.values = alloc(n, t)
        self.rewards = alloc(n, t)
        self.terminated = alloc(n, t, dtype=torch.bool)
        self.truncated = alloc(n, t, dtype=torch.bool)
        self.truncated_values = alloc(n, t)
        self.final_obs = alloc(n, t, obs_dim)
        self.episode_starts = alloc(n, t, dtype=torch.bool)
        self.hidden_h = alloc(n, t, num_layers, hidden_dim)
        self.hidden_c = alloc(n, t, num_layers, hidden_dim)
        self.advantages = alloc(n, t)  # returns are advantages + values: SequenceBatch.returns
        self.pos = 0
        # The step `write` fills, on the device: a compiled (CUDA-graphed) rollout step writes the buffer without
        # the host, which keeps its own count in `pos`.
        self.step_index = alloc(1, dtype=torch.int64)

    def reset(self) -> None:
        """Start a new rollout; the old contents are overwritten step by step."""
        self.pos = 0
        self.step_index.zero_()

    @property
    def full(self) -> bool:
        return self.pos == self.num_steps

    def add(self, **step: torch.Tensor | HiddenState) -> None:
        """Write step `pos` for all envs at once; the fields are `write`'s: each `[num_envs, ...]`, and `hidden`
        the (h, c) fed into this step (after its reset), each `[num_layers, num_envs, hidden_dim]`.

        Every write is one copy into a preallocated slice: no per-env loop, no host synchronisation.
        """
        self.claim_step()
        self.write(**step)

    def claim_step(self) -> None:
        """Count the next step on the host, refusing a step past the end; `write` then fills it."""
        if self.pos >= self.num_steps:
            raise RuntimeError(f"RolloutBuffer is full ({self.num_steps} steps): call reset() before the next rollout")
        self.pos += 1

    def write(
        self,
        *,
        obs: torch.Tensor,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        truncated_values: torch.Tensor | None,
        episode_starts: torch.Tensor,
        hidden: HiddenState,
        final_obs: torch.Tensor | None = None,
    ) -> None:
        """`add` without the host: writes at the device-side `step_index` and advances it, touching no Python
        state, so a compiled step can call it (the rollout's does, and calls `claim_step` outside). A rollout
        that bootstraps truncations after the fact passes `final_obs` and no `truncated_values`."""
        index = self.step_index
        fields = ((self.obs, obs), (self.actions, actions), (self.log_probs, log_probs), (self.values, values),
                  (self.rewards, rewards), (self.terminated, terminated), (self.truncated, truncated),
                  (self.truncated_values, truncated_values), (self.episode_starts, episode_starts),
                  (self.hidden_h, hidden[0].transpose(0, 1)), (self.hidden_c, hidden[1].transpose(0, 1)),
                  (self.final_obs, final_obs))
        for stored, step in fields:
            if step is None:  # truncated_values filled after the rollout, from final_obs
                continue
            if step.dtype != stored.dtype:  # e.g. float masks into the bool ones
                step = step.to(stored.dtype)
            stored.index_copy_(1, index, step.unsqueeze(1))
        index.add_(1)

    def compute_advantages(self, last_values: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """Fill `advantages` by GAE; `last_values [num_envs]` = V(obs after the last step)."""
        if not self.full:
            raise RuntimeError(f"compute_advantages needs a full rollout: {self.pos} of {self.num_steps} steps written")
        gae(rewards=self.rewards, values=self.values, terminated=self.terminated, truncated=self.truncated,
            truncated_values=self.truncated_values, last_values=last_values, gamma=gamma, lam=gae_lambda,
            out=(self.advantages, None), returns=False)

    def get_batched_sequences(
        self, seq_len: int, num_minibatches: int, generator: torch.Generator | None = None
    ) -> Iterator[SequenceBatch]:
        """Yield `num_minibatches` minibatches of whole `seq_len`-step sequences in random order.

        The rollout of each env is cut into `num_steps // seq_len` consecutive sequences; every minibatch holds
        `num_envs * num_steps // seq_len // num_minibatches` of them, so every minibatch has the same shape.
        """
        if seq_len < 1 or self.num_steps % seq_len:
            raise ValueError(f"seq_len={seq_len} must divide num_steps={self.num_steps}")
        num_seqs = self.num_envs * (self.num_steps // seq_len)
        if num_minibatches < 1 or num_seqs % num_minibatches:
            raise ValueError(
                f"num_minibatches={num_minibatches} must divide the {num_seqs} sequences "
                f"(num_envs * num_steps / seq_len)"
            )

        def seqs(x: torch.Tensor) -> torch.Tensor:  # [N, T, ...] -> [S, L, ...]
            return x.reshape(num_seqs, seq_len, *x.shape[2:])

        def starts(x: torch.Tensor) -> torch.Tensor:  # [N, T, layers, H] -> [S, layers, H]
            return x[:, ::seq_len].reshape(num_seqs, *x.shape[2:])

        fields = (seqs(self.obs), seqs(self.actions), seqs(self.episode_starts), seqs(self.log_probs),
                  seqs(self.values), seqs(self.advantages))
        h0, c0 = starts(self.hidden_h), starts(self.hidden_c)
        order = torch.randperm(num_seqs, device=self.device, generator=generator)
        for idx in order.view(num_minibatches, -1):
            hidden = (h0[idx].transpose(0, 1).contiguous(), c0[idx].transpose(0, 1).contiguous())
            yield SequenceBatch(*(f[idx] for f in fields), hidden)
