"""The PPO objective over a minibatch of sequences, and one optimisation step."""

from __future__ import annotations

from typing import NamedTuple

import torch

from recurrent_ppo.buffer import SequenceBatch
from recurrent_ppo.policy import EvaluateOutput, LSTMPolicyBundle


class LossTerms(NamedTuple):
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def ppo_loss(
    out: EvaluateOutput,
    batch: SequenceBatch,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_vloss: bool = True,
    norm_adv: bool = True,
) -> LossTerms:
    """Clipped surrogate + (optionally clipped) value loss - entropy bonus, averaged over all `[B, L]` steps."""
    log_ratio = out.log_prob - batch.log_probs
    ratio = log_ratio.exp()
    advantages = batch.advantages
    if norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    value_error = (out.value - batch.returns).square()
    if clip_vloss:
        clipped_value = batch.values + (out.value - batch.values).clamp(-clip_coef, clip_coef)
        value_error = torch.max(value_error, (clipped_value - batch.returns).square())
    value_loss = 0.5 * value_error.mean()
    entropy = out.entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance k3 estimator
        clip_fraction = ((ratio - 1).abs() > clip_coef).float().mean()
    return LossTerms(loss, policy_loss, value_loss, entropy, approx_kl, clip_fraction)


def update_step(
    policy: LSTMPolicyBundle,
    optimizer: torch.optim.Optimizer,
    batch: SequenceBatch,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    max_grad_norm: float,
    clip_vloss: bool = True,
    norm_adv: bool = True,
) -> torch.Tensor:
    """BPTT over one minibatch, PPO loss, backward, gradient clipping, optimizer step.

    Returns the detached loss terms and the pre-clip gradient norm stacked in one tensor `[7]`, on the device,
    so the caller can average them without a host sync.
    """
    out = policy.evaluate_actions(batch.obs, batch.actions, batch.episode_starts, batch.hidden)
    terms = ppo_loss(out, batch, clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef,
                     clip_vloss=clip_vloss, norm_adv=norm_adv)
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    return torch.stack([*(t.detach() for t in terms), grad_norm])


UPDATE_METRICS = (*LossTerms._fields, "grad_norm")
