"""Running normalization on the device equals gymnasium's NormalizeReward / NormalizeObservation arithmetic."""

import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd as GymRunningMeanStd

from recurrent_ppo.normalize import BoxNormalizer, RewardNormalizer, RunningMeanStd
from tests.helpers import assert_close


def test_running_mean_std_merges_batches_as_gymnasium_does():
    ours, theirs = RunningMeanStd((3,), "cpu"), GymRunningMeanStd(shape=(3,))
    for _ in range(5):
        batch = torch.randn(7, 3, dtype=torch.float64) * 4 + 2
        ours.update(batch)
        theirs.update(batch.numpy())
    assert_close(ours.mean, torch.from_numpy(theirs.mean), "mean")
    assert_close(ours.var, torch.from_numpy(theirs.var), "var")
    assert float(ours.count) == pytest.approx(theirs.count, rel=1e-12)


def test_reward_normalizer_follows_gymnasium_same_step_autoreset():
    """gymnasium's vector NormalizeReward (same-step autoreset), written out in numpy as it reads."""
    num_envs, gamma, eps = 4, 0.9, 1e-8
    ours = RewardNormalizer(num_envs, gamma, "cpu", eps)
    rms, accumulated = GymRunningMeanStd(shape=()), np.zeros(num_envs)
    for _ in range(30):
        reward = torch.randn(num_envs) * 10
        terminated, truncated = torch.rand(num_envs) < 0.2, torch.rand(num_envs) < 0.1
        truncated &= ~terminated
        accumulated = accumulated * gamma * (1 - terminated.numpy()) + reward.numpy()
        rms.update(accumulated)
        accumulated[(terminated | truncated).numpy()] = 0
        expected = reward.numpy() / np.sqrt(rms.var + eps)
        assert_close(ours(reward, terminated, truncated), torch.from_numpy(expected).float(), "scaled reward")
    assert_close(ours.returns, torch.from_numpy(accumulated), "accumulated returns")


def test_box_normalizer_standardizes_and_clips():
    norm = BoxNormalizer((2,), "cpu", clip=3.0)
    for _ in range(50):
        out = norm(torch.randn(64, 2) * torch.tensor([5.0, 0.1]) + torch.tensor([10.0, -1.0]))
    assert out.abs().max() <= 3.0
    assert_close(norm.stats.mean.float(), torch.tensor([10.0, -1.0]), "mean", atol=0.2, rtol=0)
    assert_close(norm.stats.var.sqrt().float(), torch.tensor([5.0, 0.1]), "std", atol=0.2, rtol=0.05)
    frozen = norm.state_dict()
    assert_close(norm(torch.ones(1, 2), update=False), norm(torch.ones(1, 2), update=False), "no update")
    assert all(torch.equal(frozen[k], v) for k, v in norm.state_dict().items()), "update=False keeps the statistics"


def test_state_round_trips():
    first = RewardNormalizer(3, 0.99, "cpu")
    first(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([False, True, False]), torch.zeros(3, dtype=torch.bool))
    second = RewardNormalizer(3, 0.99, "cpu")
    second.load_state_dict(first.state_dict())
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


def test_the_reward_normalizer_compiles_without_graph_breaks():
    compiled_norm, eager_norm = RewardNormalizer(4, 0.99, "cpu"), RewardNormalizer(4, 0.99, "cpu")
    step = torch.compile(compiled_norm.__call__, fullgraph=True, backend="aot_eager")
    for _ in range(3):
        reward, terminated = torch.randn(4), torch.rand(4) < 0.3
        truncated = ~terminated & (torch.rand(4) < 0.2)
        assert_close(step(reward, terminated, truncated), eager_norm(reward, terminated, truncated), "scaled reward")
    for key, value in eager_norm.state_dict().items():
        assert_close(compiled_norm.state_dict()[key], value, key)
