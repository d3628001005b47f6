"""Action heads, chosen from the action space: each owns its distribution's sampling, log-prob, entropy, the
deterministic mode and the map from a stored action to the env's action, so the loss and the buffer only see
tensors and never branch on the action type.

Sampling is free of host synchronisation (no `.item()`, no `torch.multinomial`): categoricals use the
exponential race (argmax of p / Exp(1) noise, the Gumbel-max trick), the Gaussian `mean + std * randn`.
Action masks (true = legal, sub-actions' masks concatenated, as sb3-contrib's MaskablePPO) set illegal logits
to the lowest float, so their probability is exactly 0: they are never sampled, they add nothing to the
entropy, and a row with no legal action yields finite numbers (the rollout flags it; see `no_legal_action`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recurrent_ppo.spaces import ActionSpace, Box, Discrete, MultiDiscrete, action_storage, check_action_space

MASKED = torch.finfo(torch.float32).min
"""The logit of an illegal action: finite, so 0 * log p stays 0 and an all-illegal row gives no NaN. Logits are
float32 whatever the features' dtype: in bf16 this value rounds to -inf, and 0 * -inf is NaN."""


def linear_layer(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    """A Linear with orthogonal weights of `gain` and zero bias (the PPO implementations' initialisation)."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def sample_categorical(log_probs: torch.Tensor, legal: torch.Tensor | None, deterministic: bool) -> torch.Tensor:
    """An index of the last dim of `log_probs` per row: the most likely, or drawn by the exponential race.
    `legal` (same shape, bool) excludes the rest even where the noise is 0 (p / 0 of an illegal p = 0 is NaN)."""
    if deterministic:
        return log_probs.argmax(dim=-1)
    noise = torch.empty_like(log_probs).exponential_()
    scores = log_probs.exp() / noise
    if legal is not None:
        scores = scores.masked_fill(~legal, -1.0)
    return scores.argmax(dim=-1)


def categorical_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    return -(log_probs.exp() * log_probs).sum(-1)


class CategoricalHead(nn.Module):
    """Discrete(n, start): logits from one Linear; actions `[...]` int64 in `[0, n)`, the env gets + start."""

    def __init__(self, hidden_dim: int, space: Discrete) -> None:
        super().__init__()
        self.space = space
        self.mask_dim = space.n
        self.linear = linear_layer(hidden_dim, space.n, 0.01)

    def log_probs(self, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        logits = self.linear(features).float()  # [..., n], float32 under bf16 autocast too (see MASKED)
        if mask is not None:
            logits = logits.masked_fill(~mask, MASKED)
        return torch.log_softmax(logits, dim=-1)

    def sample(self, features: torch.Tensor, mask: torch.Tensor | None,
               deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """`(action [...], its log-prob [...])` from `features [..., H]`."""
        log_probs = self.log_probs(features, mask)
        action = sample_categorical(log_probs, mask, deterministic)
        return action, log_probs.gather(-1, action[..., None])[..., 0]

    def evaluate(self, features: torch.Tensor, action: torch.Tensor,
                 mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(log-prob of action, entropy)`, each `[...]`."""
        log_probs = self.log_probs(features, mask)
        return log_probs.gather(-1, action.long()[..., None])[..., 0], categorical_entropy(log_probs)

    def no_legal_action(self, mask: torch.Tensor) -> torch.Tensor:
        return ~mask.any(-1)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        return action + self.space.start if self.space.start else action


class MultiDiscreteHead(nn.Module):
    """MultiDiscrete(nvec, start): factored categoricals, one per sub-action, whose logits (one Linear of
    sum(nvec) outputs) are packed into one padded `[..., K, max_n]` tensor, so every shape is static.
    Actions `[..., K]` int64 in `[0, nvec[k])`; the env gets + start."""

    def __init__(self, hidden_dim: int, space: MultiDiscrete) -> None:
        super().__init__()
        self.space = space
        self.mask_dim = total = sum(space.nvec)
        self.linear = linear_layer(hidden_dim, total, 0.01)
        max_n = max(space.nvec)
        offsets = [sum(space.nvec[:k]) for k in range(len(space.nvec))]
        # Position j of sub-action k reads flat logit offsets[k] + j; padding reads slot `total` (illegal).
        index = torch.tensor([[offset + j if j < n else total for j in range(max_n)]
                              for offset, n in zip(offsets, space.nvec)])  # [K, max_n]
        self.register_buffer("index", index.flatten(), persistent=False)
        self.register_buffer("padding", index == total, persistent=False)
        self.packed_shape = index.shape
        start = torch.tensor(space.start or [0] * len(space.nvec))
        self.register_buffer("start", start, persistent=False)

    def pack(self, flat: torch.Tensor, pad_value: float | bool) -> torch.Tensor:
        """`[..., sum(nvec)]` -> `[..., K, max_n]`, padding filled with `pad_value`."""
        pad = flat.new_full((*flat.shape[:-1], 1), pad_value)
        return torch.cat([flat, pad], dim=-1).index_select(-1, self.index).unflatten(-1, self.packed_shape)

    def legal(self, mask: torch.Tensor | None) -> torch.Tensor:
        """`[..., K, max_n]` bool: legal and not padding."""
        return ~self.padding if mask is None else self.pack(mask, False)

    def log_probs(self, features: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
        logits = self.pack(self.linear(features).float(), MASKED).masked_fill(~legal, MASKED)  # [..., K, max_n]
        return torch.log_softmax(logits, dim=-1)

    def sample(self, features, mask, deterministic=False):
        legal = self.legal(mask)
        log_probs = self.log_probs(features, legal)
        action = sample_categorical(log_probs, legal, deterministic)  # [..., K]
        return action, log_probs.gather(-1, action[..., None])[..., 0].sum(-1)

    def evaluate(self, features, action, mask):
        log_probs = self.log_probs(features, self.legal(mask))
        log_prob = log_probs.gather(-1, action.long()[..., None])[..., 0].sum(-1)
        return log_prob, categorical_entropy(log_probs).sum(-1)

    def no_legal_action(self, mask: torch.Tensor) -> torch.Tensor:
        return ~self.legal(mask).any(-1).all(-1)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        return action + self.start if self.space.start else action


class GaussianHead(nn.Module):
    """Box(shape, low, high): a diagonal Gaussian with its mean from a Linear and a state-independent log-std
    (CleanRL's continuous PPO). Actions `[..., D]` float32 (D = prod(shape)), sampled unclipped: the buffer keeps
    the sample its log-prob belongs to, the env gets it clipped to the bounds, in the space's shape."""

    mask_dim = None

    def __init__(self, hidden_dim: int, space: Box) -> None:
        super().__init__()
        self.space = space
        (dim,), _ = action_storage(space)
        self.linear = linear_layer(hidden_dim, dim, 0.01)
        self.log_std = nn.Parameter(torch.zeros(dim))
        self.register_buffer("low", torch.tensor(space.low, dtype=torch.float32).expand(dim).clone(),
                             persistent=False)
        self.register_buffer("high", torch.tensor(space.high, dtype=torch.float32).expand(dim).clone(),
                             persistent=False)

    def log_prob(self, mean: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        # Normal(mean, std).log_prob(action).sum(-1), written out
        var = (2 * self.log_std).exp()
        return (-(action - mean).square() / (2 * var) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, features, mask, deterministic=False):
        mean = self.linear(features)  # [..., D]
        action = mean if deterministic else mean + self.log_std.exp() * torch.randn_like(mean)
        return action, self.log_prob(mean, action)

    def evaluate(self, features, action, mask):
        mean = self.linear(features)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum(-1)
        return self.log_prob(mean, action), entropy.expand(mean.shape[:-1])

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        return torch.clamp(action, self.low, self.high).reshape(*action.shape[:-1], *self.space.shape)


ActionHead = CategoricalHead | MultiDiscreteHead | GaussianHead


def make_head(space: ActionSpace, hidden_dim: int) -> ActionHead:
    """The head of `space` (Discrete, MultiDiscrete or Box); any other space raises, naming what is supported."""
    check_action_space(space)
    head = {Discrete: CategoricalHead, MultiDiscrete: MultiDiscreteHead, Box: GaussianHead}[type(space)]
    return head(hidden_dim, space)
