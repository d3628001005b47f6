"""LSTMPolicyBundle: rollout and training paths agree; sampling; the inference-mode contract in eager mode."""

import pytest
import torch

from recurrent_ppo.policy import LSTMPolicyBundle, reset_hidden
from tests.helpers import assert_close


def make_policy(obs_dim=3, num_actions=4, hidden_dim=8, num_layers=2):
    return LSTMPolicyBundle(obs_dim=obs_dim, num_actions=num_actions, hidden_dim=hidden_dim, num_layers=num_layers)


def test_initial_hidden_is_zero_inference_tensors():
    policy = make_policy()
    h, c = policy.initial_hidden(5)
    assert h.shape == c.shape == (2, 5, 8)
    assert h.is_inference() and c.is_inference()
    assert not h.any() and not c.any()


def test_get_action_shapes_and_reset():
    policy = make_policy()
    obs = torch.randn(6, 3)
    hidden = (torch.randn(2, 6, 8), torch.randn(2, 6, 8))
    starts = torch.tensor([True, False, True, False, False, False])
    out = policy.get_action(obs, hidden, starts)
    assert out.action.shape == out.log_prob.shape == out.value.shape == (6,)
    assert out.action.dtype == torch.int64
    assert out.hidden[0].shape == (2, 6, 8)
    # A reset env behaves exactly as if it had started from zeros.
    zeros = (torch.zeros(2, 6, 8), torch.zeros(2, 6, 8))
    torch.manual_seed(1)
    from_reset = policy.get_action(obs, hidden, starts)
    torch.manual_seed(1)
    from_zeros = policy.get_action(obs, zeros, torch.zeros(6, dtype=torch.bool))
    for env in (0, 2):
        assert_close(from_reset.value[env], from_zeros.value[env], f"value of reset env {env}")
        assert_close(from_reset.hidden[0][:, env], from_zeros.hidden[0][:, env], f"h of reset env {env}")


def test_step_by_step_get_action_equals_evaluate_actions():
    torch.manual_seed(2)
    policy = make_policy()
    batch, seq = 5, 11
    obs = torch.randn(batch, seq, 3)
    starts = torch.rand(batch, seq) < 0.25
    h0 = (torch.randn(2, batch, 8), torch.randn(2, batch, 8))
    actions, log_probs, values, hidden = [], [], [], h0
    with torch.no_grad():
        for t in range(seq):
            out = policy.get_action(obs[:, t], hidden, starts[:, t])
            actions.append(out.action)
            log_probs.append(out.log_prob)
            values.append(out.value)
            hidden = out.hidden
    actions = torch.stack(actions, 1)
    ev = policy.evaluate_actions(obs, actions, starts, h0)
    assert ev.log_prob.shape == ev.value.shape == ev.entropy.shape == (batch, seq)
    assert_close(ev.log_prob, torch.stack(log_probs, 1), "log_prob", rtol=1e-5, atol=1e-6)
    assert_close(ev.value, torch.stack(values, 1), "value", rtol=1e-5, atol=1e-6)
    assert_close(ev.hidden[0], hidden[0], "final h", rtol=1e-5, atol=1e-6)
    assert_close(ev.hidden[1], hidden[1], "final c", rtol=1e-5, atol=1e-6)


def test_get_value_equals_get_action_value():
    policy = make_policy()
    obs, starts = torch.randn(4, 3), torch.tensor([True, False, False, True])
    hidden = (torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    assert_close(policy.get_value(obs, hidden, starts), policy.get_action(obs, hidden, starts).value, "value")


def test_sampling_follows_the_policy_distribution():
    policy = make_policy(num_actions=3, num_layers=1)
    with torch.no_grad():
        policy.actor.weight.normal_(0, 1.0)  # a policy far from uniform
    n = 40_000
    obs = torch.randn(1, 3).expand(n, 3)
    hidden = policy.initial_hidden(n)
    with torch.inference_mode():
        out = policy.get_action(obs, hidden, torch.zeros(n, dtype=torch.bool))
    probs = out.log_prob.exp()
    freq = torch.bincount(out.action, minlength=3).double() / n
    expected = torch.zeros(3, dtype=torch.float64)
    expected[out.action] = probs.double()  # each sampled action's own probability
    assert expected.sum().item() == pytest.approx(1.0, abs=1e-5), "every action should have been sampled"
    # Binomial standard error at n=40k is < 0.0025; 4 sigma.
    assert_close(freq, expected, "action frequencies", rtol=0, atol=0.01)


def test_deterministic_takes_the_argmax():
    policy = make_policy()
    obs, starts = torch.randn(7, 3), torch.zeros(7, dtype=torch.bool)
    hidden = policy.initial_hidden(7)
    with torch.inference_mode():
        out = policy.get_action(obs, hidden, starts, deterministic=True)
        logits = policy.actor(policy._core(obs[:, None], starts[:, None], hidden)[0][:, 0])
    assert torch.equal(out.action, logits.argmax(-1))


def test_reset_hidden_zeroes_only_starting_envs():
    h, c = torch.ones(2, 3, 4), torch.ones(2, 3, 4)
    rh, rc = reset_hidden((h, c), torch.tensor([False, True, False]))
    assert not rh[:, 1].any() and not rc[:, 1].any()
    assert rh[:, [0, 2]].eq(1).all() and rc[:, [0, 2]].eq(1).all()


def test_initial_hidden_straight_to_training_fails_loudly():
    policy = make_policy()
    hidden = policy.initial_hidden(2)
    obs, actions = torch.randn(2, 3, 3), torch.zeros(2, 3, dtype=torch.long)
    starts = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        policy.evaluate_actions(obs, actions, starts, hidden).log_prob.sum().backward()


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_actions"):
        LSTMPolicyBundle(obs_dim=3, num_actions=1)
