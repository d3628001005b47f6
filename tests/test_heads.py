"""Action heads against torch.distributions (log-prob, entropy, masks included), sync-free masked sampling, the
deterministic mode and the map to the env's actions."""

import math

import pytest
import torch
from torch.distributions import Categorical, Normal

from recurrent_ppo.models.heads import CategoricalHead, GaussianHead, MultiDiscreteHead, make_head
from recurrent_ppo.spaces import Box, Discrete, MultiBinary, MultiDiscrete
from tests.helpers import assert_close

H = 6


def random_mask(batch, sizes):
    """`[*batch, sum(sizes)]` bool with at least one legal action per sub-action."""
    mask = torch.rand(*batch, sum(sizes)) < 0.5
    offset = 0
    for size in sizes:
        forced = offset + torch.randint(0, size, (*batch, 1))
        mask.scatter_(-1, forced, True)
        offset += size
    return mask


def scrambled(head):
    """Far from uniform, so that the checks see real distributions."""
    with torch.no_grad():
        head.linear.weight.normal_(0, 1.0)
        head.linear.bias.normal_(0, 1.0)
    return head


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_categorical_matches_torch(masked):
    head = scrambled(CategoricalHead(H, Discrete(5)))
    features = torch.randn(7, 3, H)
    mask = random_mask((7, 3), [5]) if masked else None
    logits = head.linear(features)
    ref = Categorical(logits=logits if mask is None else logits.masked_fill(~mask, -math.inf))
    actions = ref.sample()
    log_prob, entropy = head.evaluate(features, actions, mask)
    assert_close(log_prob, ref.log_prob(actions), "log_prob")
    assert_close(entropy, ref.entropy(), "entropy")
    assert torch.isfinite(entropy).all()


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_multidiscrete_is_a_product_of_categoricals(masked):
    nvec = (3, 2, 5)
    head = scrambled(MultiDiscreteHead(H, MultiDiscrete(nvec)))
    features = torch.randn(4, 6, H)
    mask = random_mask((4, 6), nvec) if masked else None
    logits = head.linear(features).split(nvec, dim=-1)
    masks = mask.split(nvec, dim=-1) if masked else [None] * len(nvec)
    refs = [Categorical(logits=lg if m is None else lg.masked_fill(~m, -math.inf)) for lg, m in zip(logits, masks)]
    actions = torch.stack([ref.sample() for ref in refs], dim=-1)  # [4, 6, K]
    log_prob, entropy = head.evaluate(features, actions, mask)
    assert_close(log_prob, sum(ref.log_prob(actions[..., k]) for k, ref in enumerate(refs)), "log_prob")
    assert_close(entropy, sum(ref.entropy() for ref in refs), "entropy")
    sampled, sampled_log_prob = head.sample(features, mask)
    assert sampled.shape == (4, 6, 3) and sampled.dtype == torch.int64
    assert_close(sampled_log_prob, head.evaluate(features, sampled, mask)[0], "log_prob of the sample")


def test_gaussian_matches_torch_normal():
    head = scrambled(GaussianHead(H, Box((2, 2), -1.0, 1.0)))
    with torch.no_grad():
        head.log_std.normal_(0, 0.5)
    features = torch.randn(5, 3, H)
    mean = head.linear(features)
    ref = Normal(mean, head.log_std.exp())
    actions = ref.sample() * 3  # also far outside the bounds: the log-prob is of the unclipped sample
    log_prob, entropy = head.evaluate(features, actions, None)
    assert_close(log_prob, ref.log_prob(actions).sum(-1), "log_prob")
    assert_close(entropy, ref.entropy().sum(-1), "entropy")
    sampled, sampled_log_prob = head.sample(features, None)
    assert sampled.shape == (5, 3, 4)
    assert_close(sampled_log_prob, ref.log_prob(sampled).sum(-1), "log_prob of the sample")
    deterministic, _ = head.sample(features, None, deterministic=True)
    assert torch.equal(deterministic, mean)


def test_gaussian_samples_unclipped_and_the_env_gets_them_clipped_in_its_shape():
    head = GaussianHead(H, Box((2, 1), (-1.0, 0.0), (1.0, 0.5)))
    with torch.no_grad():
        head.log_std.fill_(2.0)  # std 7.4: most samples leave the bounds
    action, _ = head.sample(torch.randn(1000, H), None)
    assert (action.abs() > 1).any(), "the buffer keeps the sample itself"
    env_action = head.env_action(action)
    assert env_action.shape == (1000, 2, 1)
    assert env_action[:, 0].min() == -1 and env_action[:, 0].max() == 1
    assert env_action[:, 1].min() == 0 and env_action[:, 1].max() == 0.5


@pytest.mark.parametrize("space", [Discrete(6), MultiDiscrete((4, 3, 2))], ids=["discrete", "multidiscrete"])
def test_masked_sampling_never_picks_an_illegal_action(space):
    head = scrambled(make_head(space, H))
    sizes = [space.n] if isinstance(space, Discrete) else list(space.nvec)
    draws = 100_000
    # The most likely actions are the illegal ones: sampling must still never pick them.
    features = torch.randn(1, H).expand(draws, H)
    mask = random_mask((1,), sizes).expand(draws, -1)
    with torch.no_grad():
        head.linear.bias.add_(torch.where(mask[0], 0.0, 20.0))
        action, log_prob = head.sample(features, mask)
    action = action[:, None] if action.dim() == 1 else action
    offsets = torch.tensor([sum(sizes[:k]) for k in range(len(sizes))])
    assert mask.gather(1, action + offsets).all(), "an illegal action was sampled"
    assert torch.isfinite(log_prob).all()
    legal_per_sub = [int(m.sum()) for m in mask[0].split(sizes)]
    for k, legal in enumerate(legal_per_sub):  # and every legal action does get drawn
        assert action[:, k].unique().numel() == legal
    deterministic, _ = head.sample(features[:3], mask[:3], deterministic=True)
    deterministic = deterministic[:, None] if deterministic.dim() == 1 else deterministic
    assert mask[:3].gather(1, deterministic + offsets).all(), "the deterministic action must be legal"


def test_a_row_with_no_legal_action_is_flagged_and_stays_finite():
    for space in (Discrete(3), MultiDiscrete((2, 3))):
        head = make_head(space, H)
        mask = torch.ones(4, head.mask_dim, dtype=torch.bool)
        mask[2] = False
        if isinstance(space, MultiDiscrete):
            mask[1, :2] = False  # one sub-action without a legal choice is enough
        flagged = head.no_legal_action(mask)
        assert flagged.tolist() == ([False, False, True, False] if isinstance(space, Discrete)
                                    else [False, True, True, False])
        action, log_prob = head.sample(torch.randn(4, H), mask)
        log_prob2, entropy = head.evaluate(torch.randn(4, H), action, mask)
        assert torch.isfinite(log_prob).all() and torch.isfinite(log_prob2).all() and torch.isfinite(entropy).all()


def test_env_actions_carry_the_spaces_start():
    categorical = make_head(Discrete(3, start=-1), H)
    assert torch.equal(categorical.env_action(torch.tensor([0, 2])), torch.tensor([-1, 1]))
    plain = make_head(Discrete(3), H)
    actions = torch.tensor([0, 2])
    assert plain.env_action(actions) is actions, "start 0: the sampled tensor itself, no op"
    multi = make_head(MultiDiscrete((2, 3), start=(1, -2)), H)
    assert torch.equal(multi.env_action(torch.tensor([[0, 2]])), torch.tensor([[1, 0]]))


@pytest.mark.parametrize("space,match", [
    (Discrete(1), r"unsupported space Discrete\(n=1, start=0\) as the action space"),
    (Box((2,)), r"unsupported space Box\(shape=\(2,\), low=-inf"),
    (MultiBinary((3,)), r"actions may be Discrete, MultiDiscrete"),
])
def test_unsupported_action_spaces_are_refused_by_name(space, match):
    with pytest.raises(ValueError, match=match):
        make_head(space, H)
