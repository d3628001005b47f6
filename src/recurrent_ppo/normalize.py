"""Running normalization on the device: rewards by the std of the discounted return, observations by their
running mean and std, as gymnasium's NormalizeReward / NormalizeObservation (and CleanRL) do.

The statistics are device tensors updated in place, so a compiled (CUDA-graphed) rollout step updates them with
no host involvement; checkpoints carry them (`snapshot.save_tensors`).
"""

from __future__ import annotations

import torch

from recurrent_ppo import spaces
from recurrent_ppo.spaces import Obs


class RunningMeanStd:
    """Mean and variance of every sample seen so far, per feature of `shape`, merged batch by batch (Chan et al.'s
    parallel update, as gymnasium's RunningMeanStd); starts from count `epsilon`, mean 0, var 1 as gymnasium does."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str, epsilon: float = 1e-4) -> None:
        # Never 0-dim: AOTAutograd drops in-place updates of 0-dim float64 CPU tensors that a compiled function
        # reads from an object's attributes (torch 2.13, aot_eager and inductor), so scalars are kept as [1].
        shape = shape or (1,)
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.full((1,), epsilon, dtype=torch.float64, device=device)

    def update(self, batch: torch.Tensor) -> None:
        """Merge `batch [B, *shape]` into the statistics, in place."""
        batch = batch.to(torch.float64)
        batch_count = batch.shape[0]
        batch_mean = batch.mean(0)
        batch_var = batch.var(0, unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)


class RewardNormalizer:
    """Scales each env's rewards by the running std of its discounted return, as gymnasium's vector
    NormalizeReward does with same-step autoreset: the return accumulates `gamma * return * (1 - terminated)
    + reward` per env, its variance is tracked over all envs and steps, rewards are divided by
    sqrt(var + epsilon), and an env's return starts again from 0 after its episode ends. Value targets then stay
    near unit scale whatever the env's reward scale."""

    def __init__(self, num_envs: int, gamma: float, device: torch.device | str, epsilon: float = 1e-8) -> None:
        self.gamma, self.epsilon = gamma, epsilon
        self.returns = torch.zeros(num_envs, dtype=torch.float64, device=device)  # [N]
        self.stats = RunningMeanStd((), device)

    def __call__(self, reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
        """The scaled `reward [N]` of this step; updates the statistics in place."""
        returns = self.returns * self.gamma * (~terminated).to(torch.float64) + reward
        self.stats.update(returns)
        self.returns.copy_(returns * (~(terminated | truncated)).to(torch.float64))
        return (reward / torch.sqrt(self.stats.var + self.epsilon)).to(reward.dtype)


class BoxNormalizer:
    """`(obs - mean) / sqrt(var + epsilon)`, clipped to +-clip, with the running statistics of every observation
    seen (gymnasium's NormalizeObservation with CleanRL's clip), for one Box leaf of `shape`."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str, *, clip: float = 10.0,
                 epsilon: float = 1e-8) -> None:
        self.clip, self.epsilon = clip, epsilon
        self.stats = RunningMeanStd(shape, device)

    def __call__(self, obs: torch.Tensor, update: bool = True) -> torch.Tensor:
        """The normalized `obs [N, *shape]`; with `update`, first merges it into the statistics."""
        if update:
            self.stats.update(obs)
        normalized = (obs - self.stats.mean) / torch.sqrt(self.stats.var + self.epsilon)
        return normalized.clamp(-self.clip, self.clip).to(obs.dtype)



def normalized_leaves(space: spaces.Space) -> list[str]:
    """The paths of the leaves that observation normalization standardizes: every floating-point Box but the
    action mask. Integer Boxes, uint8 images, Discrete, MultiDiscrete and MultiBinary leaves are counts, pixels,
    ids and flags, which their encoders scale already and whose values the policy may compare exactly."""
    return [path for path, leaf in spaces.leaves(space).items()
            if isinstance(leaf, spaces.Box) and leaf.torch_dtype.is_floating_point and path != spaces.ACTION_MASK]


class ObservationNormalizer:
    """Observations of `space` with every floating-point Box leaf (`normalized_leaves`) standardized by its own
    running statistics (BoxNormalizer); the other leaves pass through untouched. Raises ValueError when `space`
    has no such leaf."""

    def __init__(self, space: spaces.Space, device: torch.device | str, *, clip: float = 10.0,
                 epsilon: float = 1e-8) -> None:
        self.paths = normalized_leaves(space)
        if not self.paths:
            raise ValueError(f"observation normalization standardizes floating-point Box observations, and the "
                             f"observation space {space} has none; turn normalize_obs off for this env")
        leaves = spaces.leaves(space)
        self.norms = [BoxNormalizer(spaces.storage(leaves[path])[0], device, clip=clip, epsilon=epsilon)
                      for path in self.paths]

    def __call__(self, obs: Obs, update: bool = False) -> Obs:
        """`obs` (a tensor, or a `{path: tensor}` dict) normalized; with `update`, each normalized leaf is first
        merged into its statistics. Frozen unless asked: training updates with `update=True`, and whatever applies
        a trained run's statistics (evaluation, a deployed agent) leaves them as the run saved them."""
        if not isinstance(obs, dict):  # a lone Box leaf
            return self.norms[0](obs, update)
        normalized = dict(obs)
        for path, norm in zip(self.paths, self.norms):
            normalized[path] = norm(obs[path], update)
        return normalized
