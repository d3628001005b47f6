"""The PPO objective over a minibatch of sequences, and one optimisation step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from recurrent_ppo import spaces
from recurrent_ppo.buffer import RolloutBuffer, SequenceBatch, check_sequences
from recurrent_ppo.compile import compile_fn, cuda_graph_step_begin
from recurrent_ppo.models.cores import RecurrentState, reset_state
from recurrent_ppo.models.policy import EvaluateOutput, RecurrentPolicy
from recurrent_ppo.spaces import Obs

if TYPE_CHECKING:
    from recurrent_ppo.config import TrainConfig


class LossTerms(NamedTuple):
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor
    recall_error: torch.Tensor


def ppo_loss(
    out: EvaluateOutput,
    batch: SequenceBatch,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_vloss: bool = True,
    norm_adv: bool = True,
    recall_coef: float = 0.0,
) -> LossTerms:
    """Clipped surrogate + (optionally clipped) value loss - entropy bonus, averaged over all `[B, L]` steps, +
    `recall_coef` x the policy's recall error where it has a recall head."""
    log_ratio = out.log_prob - batch.log_probs
    ratio = log_ratio.exp()
    advantages = batch.advantages
    if norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    returns = batch.returns  # A + V of the rollout, before normalization (as CleanRL's b_returns)
    value_error = (out.value - returns).square()
    if clip_vloss:
        clipped_value = batch.values + (out.value - batch.values).clamp(-clip_coef, clip_coef)
        value_error = torch.max(value_error, (clipped_value - returns).square())
    value_loss = 0.5 * value_error.mean()
    entropy = out.entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    recall_error = out.recall_error if out.recall_error is not None else torch.zeros_like(entropy)
    if recall_coef:
        loss = loss + recall_coef * recall_error
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance k3 estimator
        clip_fraction = ((ratio - 1).abs() > clip_coef).float().mean()
    return LossTerms(loss, policy_loss, value_loss, entropy, approx_kl, clip_fraction, recall_error.detach())


UPDATE_METRICS = (*LossTerms._fields, "grad_norm", "kl_stopped")
"""What `PPOUpdater.update` returns the mean of; kl_stopped is the share of minibatches that did not change the
weights because the approx KL had passed target_kl."""


@dataclass(frozen=True)
class PPOSettings:
    """What an update does with a rollout, beside the schedule (epochs, minibatches, sequence length) it is given."""

    clip_coef: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    clip_vloss: bool = True
    norm_adv: bool = True
    target_kl: float | None = None
    bf16: bool = False
    """The policy's forward under bf16 autocast; the log-ratios, the loss, the gradients and Adam stay fp32."""
    refresh_hidden: bool = False
    recall_coef: float = 0.0

    @classmethod
    def of(cls, cfg: TrainConfig) -> PPOSettings:
        """The settings of a run's configuration (each field the TrainConfig field of its name)."""
        names = [field.name for field in dataclasses.fields(cls) if field.name != "bf16"]
        return cls(**{name: getattr(cfg, name) for name in names}, bf16=cfg.precision == "bf16")

    def loss_terms(self) -> dict[str, float | bool]:
        """`ppo_loss`'s keyword arguments."""
        return dict(clip_coef=self.clip_coef, vf_coef=self.vf_coef, ent_coef=self.ent_coef,
                    clip_vloss=self.clip_vloss, norm_adv=self.norm_adv, recall_coef=self.recall_coef)


class PPOUpdater:
    """Epochs x minibatches of PPO over a full RolloutBuffer.

    Per minibatch: the compiled forward (BPTT over the sequences + PPO loss, `fullgraph=True`), its compiled
    backward (AOTAutograd), then gradient clipping and the optimizer step. The optimizer stays outside the
    compiled graph: `Optimizer.step` graph-breaks by design, and compiling it gained little on CPU
    (docs/measurements.md). Loss terms are summed on the device and read once.

    `settings.refresh_hidden` recomputes the buffer's sequence-start states before every epoch after the first
    (`refresh`).
    """

    def __init__(self, policy: RecurrentPolicy, optimizer: torch.optim.Optimizer,
                 settings: PPOSettings = PPOSettings(), *, compile_mode: str = "off",
                 compile_backend: str = "inductor",
                 grad_sync: Callable[[list[torch.nn.Parameter]], None] | None = None) -> None:
        self.policy, self.optimizer, self.settings = policy, optimizer, settings
        self.grad_sync = grad_sync  # data-parallel: averages the gradients over processes before clipping
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.device = self.params[0].device
        self.compile_mode = compile_mode
        self.loss = compile_fn(self._loss, compile_mode, compile_backend)
        # Compiled per chunk of seq_len steps, not over the whole rollout: the graph is one sequence's forward
        # whatever num_steps, and every chunk of the rollout replays it.
        self._refresh_chunk = compile_fn(self._chunk_state, compile_mode, compile_backend)
        # target_kl: once a minibatch's approx KL passes it, the rest of the update runs with learning rate 0.
        # Decided on the device, so no minibatch waits for the host; those minibatches are still computed, and
        # Adam's moment estimates still see their gradients.
        self.target_kl = settings.target_kl
        self.kl_stopped = torch.zeros((1,), dtype=torch.bool, device=self.params[0].device)
        if settings.target_kl is not None:
            self.lr = optimizer.param_groups[0]["lr"]
            if not isinstance(self.lr, torch.Tensor) or len(optimizer.param_groups) != 1:
                raise ValueError("target_kl needs one optimizer param group whose lr is a tensor (updated in place)")
            self.base_lr = self.lr.detach().clone()

    def _loss(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.settings.bf16:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self.policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
            # The loss in fp32: autocast leaves the value head's output bf16 (the heads' log-probs are fp32 already).
            out = out._replace(log_prob=out.log_prob.float(), value=out.value.float(), entropy=out.entropy.float())
        else:
            out = self.policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        terms = ppo_loss(out, batch, **self.settings.loss_terms())
        return terms.loss, torch.stack([t.detach() for t in terms])

    def step(self, batch: SequenceBatch) -> torch.Tensor:
        """One optimisation step on `batch`; returns its UPDATE_METRICS `[9]` (loss terms, pre-clip gradient norm,
        whether target_kl had stopped the update)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.loss(batch)
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self.params)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.max_grad_norm, foreach=True)
        if self.target_kl is not None:
            self.kl_stopped |= terms[LossTerms._fields.index("approx_kl")] > self.target_kl
            self.lr.copy_(self.base_lr * (~self.kl_stopped).reshape(()))
        self.optimizer.step()
        return torch.cat([terms, grad_norm[None], self.kl_stopped.to(terms.dtype)])

    def update(self, buffer: RolloutBuffer, *, seq_len: int, num_minibatches: int, epochs: int) -> dict[str, float]:
        """`epochs` passes over the buffer in shuffled sequence minibatches; returns the mean of each metric."""
        totals = torch.zeros(len(UPDATE_METRICS), device=buffer.device)
        if self.target_kl is not None:
            self.kl_stopped.zero_()
            self.base_lr.copy_(self.lr)
        for epoch in range(epochs):
            if self.settings.refresh_hidden and epoch > 0:  # the first epoch's states came from these very weights
                self.refresh(buffer, seq_len)
            for batch in buffer.get_batched_sequences(seq_len, num_minibatches):
                totals += self.step(batch)
        if self.target_kl is not None:
            self.lr.copy_(self.base_lr)
        means = (totals / (epochs * num_minibatches)).tolist()  # the update's one host read
        return dict(zip(UPDATE_METRICS, means))

    @torch.no_grad()
    def refresh(self, buffer: RolloutBuffer, seq_len: int) -> None:
        """Recompute the state stored at each sequence start of `buffer` with the current weights: from the
        state stored at step 0, run the policy over the rollout one seq_len chunk at a time, and store the state
        fed into each next chunk's first step, after its reset, as the rollout stores it. The first chunk's state
        stays (it came from the previous rollout). Training then starts each sequence from the state these
        weights would reach, not the one the rollout's weights reached. No host sync; in fp32 whatever the
        precision, as the rollout computed the states."""
        check_sequences(buffer.num_envs, buffer.num_steps, seq_len)
        for start in range(seq_len, buffer.num_steps, seq_len):
            chunk = slice(start - seq_len, start)
            hidden = buffer.state_at(slice(None), chunk.start)
            cuda_graph_step_begin(self.compile_mode, self.device)
            state = self._refresh_chunk(spaces.map_obs(lambda x: x[:, chunk], buffer.obs), hidden,
                                        buffer.episode_starts[:, chunk], buffer.episode_starts[:, start])
            for stored, column in zip(buffer.hidden, buffer.state_columns(state)):
                stored[:, start] = column

    def _chunk_state(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor,
                     next_starts: torch.Tensor) -> RecurrentState:
        """The state fed into the step after `obs` (`[N, L, ...]`) from `hidden`, reset where `next_starts`."""
        _, after = self.policy.features(obs, hidden, episode_starts)
        return reset_state(after, next_starts)
