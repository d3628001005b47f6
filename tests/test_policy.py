"""RecurrentPolicy on flat Box observations and Discrete actions, both cores: rollout and training paths agree;
sampling; the inference-mode contract in eager mode."""

from types import SimpleNamespace

import pytest
import torch

from recurrent_ppo.models import RecurrentPolicy, reset_state
from recurrent_ppo.ppo import LossTerms, PPOSettings, PPOUpdater, ppo_loss
from recurrent_ppo.spaces import Box, Discrete
from tests.helpers import assert_close

CORES = ["lstm", "gru"]
STATE_SIZE = {"lstm": 2, "gru": 1}


def make_policy(obs_dim=3, num_actions=4, hidden_dim=8, num_layers=2, core="lstm", skip_core=False, recall=False):
    return RecurrentPolicy(Box((obs_dim,)), Discrete(num_actions), hidden_dim, num_layers, core, skip_core=skip_core,
                           recall=recall)


def random_state(core, layers, batch, hidden):
    return tuple(torch.randn(layers, batch, hidden) for _ in range(STATE_SIZE[core]))


@pytest.mark.parametrize("core", CORES)
def test_initial_hidden_is_zero_inference_tensors(core):
    policy = make_policy(core=core)
    state = policy.initial_hidden(5)
    assert len(state) == STATE_SIZE[core]
    for part in state:
        assert part.shape == (2, 5, 8)
        assert part.is_inference()
        assert not part.any()


@pytest.mark.parametrize("core", CORES)
def test_get_action_shapes_and_reset(core):
    policy = make_policy(core=core)
    obs = torch.randn(6, 3)
    hidden = random_state(core, 2, 6, 8)
    starts = torch.tensor([True, False, True, False, False, False])
    out = policy.get_action(obs, hidden, starts)
    assert out.action.shape == out.log_prob.shape == out.value.shape == (6,)
    assert out.action.dtype == torch.int64
    assert out.hidden[0].shape == (2, 6, 8)
    # A reset env behaves exactly as if it had started from zeros.
    zeros = tuple(torch.zeros(2, 6, 8) for _ in hidden)
    torch.manual_seed(1)
    from_reset = policy.get_action(obs, hidden, starts)
    torch.manual_seed(1)
    from_zeros = policy.get_action(obs, zeros, torch.zeros(6, dtype=torch.bool))
    for env in (0, 2):
        assert_close(from_reset.value[env], from_zeros.value[env], f"value of reset env {env}")
        assert_close(from_reset.hidden[0][:, env], from_zeros.hidden[0][:, env], f"h of reset env {env}")


@pytest.mark.parametrize("skip_core", [False, True], ids=["", "skip"])
@pytest.mark.parametrize("core", CORES)
def test_step_by_step_get_action_equals_evaluate_actions(core, skip_core):
    torch.manual_seed(2)
    policy = make_policy(core=core, skip_core=skip_core)
    batch, seq = 5, 11
    obs = torch.randn(batch, seq, 3)
    starts = torch.rand(batch, seq) < 0.25
    h0 = random_state(core, 2, batch, 8)
    actions, log_probs, values, hidden = [], [], [], h0
    with torch.no_grad():
        for t in range(seq):
            out = policy.get_action(obs[:, t], hidden, starts[:, t])
            actions.append(out.action)
            log_probs.append(out.log_prob)
            values.append(out.value)
            hidden = out.hidden
    actions = torch.stack(actions, 1)
    ev = policy.evaluate_actions(obs, h0, starts, actions)
    assert ev.log_prob.shape == ev.value.shape == ev.entropy.shape == (batch, seq)
    assert_close(ev.log_prob, torch.stack(log_probs, 1), "log_prob", rtol=1e-5, atol=1e-6)
    assert_close(ev.value, torch.stack(values, 1), "value", rtol=1e-5, atol=1e-6)
    for i, (got, want) in enumerate(zip(ev.hidden, hidden, strict=True)):
        assert_close(got, want, f"final state tensor {i}", rtol=1e-5, atol=1e-6)


def test_skip_core_adds_the_encoders_features_to_the_core_output():
    """The same parameters as without it (a policy saved either way loads into the other); only the heads' input
    differs, by the encoder's features."""
    torch.manual_seed(3)
    plain, skip = make_policy(), make_policy(skip_core=True)
    skip.load_state_dict(plain.state_dict())
    obs, starts, h0 = torch.randn(4, 5, 3), torch.rand(4, 5) < 0.3, random_state("lstm", 2, 4, 8)
    (out, state), (skip_out, skip_state) = plain.features(obs, h0, starts), skip.features(obs, h0, starts)
    assert_close(skip_out, out + plain.encoder(obs), "core output plus encoder features")
    for got, want in zip(skip_state, state, strict=True):
        assert torch.equal(got, want), "the recurrent state is the core's alone"
    assert skip.spec() == {**plain.spec(), "skip_core": True}
    assert RecurrentPolicy.from_spec(skip.spec()).skip_core


@pytest.mark.parametrize("skip_core", [False, True], ids=["", "skip"])
def test_the_recall_head_predicts_the_previous_steps_features_within_an_episode(skip_core):
    """From the core's own output (not the skip's sum) at step t, the encoder's features at t-1, a fixed target;
    the first step of each sequence and of each episode have no previous step and are left out."""
    torch.manual_seed(4)
    policy = make_policy(skip_core=skip_core, recall=True)
    obs, h0 = torch.randn(3, 6, 3), random_state("lstm", 2, 3, 8)
    starts = torch.zeros(3, 6, dtype=torch.bool)
    starts[0, 2] = starts[1, 4] = starts[2, 1] = True
    actions = torch.randint(0, 4, (3, 6))
    got = policy.evaluate_actions(obs, h0, starts, actions).recall_error
    encoded = policy.encoder(obs)
    core_out, _ = policy.core(encoded, starts, h0)
    errors = [(policy.recall(core_out[b, t]) - encoded[b, t - 1]).square().mean()
              for b in range(3) for t in range(1, 6) if not starts[b, t]]
    assert len(errors) == 12
    assert_close(got, torch.stack(errors).mean(), "recall error over the kept steps")

    # The target is fixed: the error's gradient reaches the encoder only through the core's input.
    encoder_weight = policy.encoder[0].weight
    (through_target,) = torch.autograd.grad(torch.stack(errors).mean(), encoder_weight, retain_graph=True)
    (as_trained,) = torch.autograd.grad(policy.evaluate_actions(obs, h0, starts, actions).recall_error,
                                        encoder_weight)
    assert not torch.allclose(through_target, as_trained)
    detached = [(policy.recall(core_out[b, t]) - encoded[b, t - 1].detach()).square().mean()
                for b in range(3) for t in range(1, 6) if not starts[b, t]]
    (want,) = torch.autograd.grad(torch.stack(detached).mean(), encoder_weight)
    assert_close(as_trained, want, "gradient with the target detached")

    every_step_a_start = policy.evaluate_actions(obs, h0, torch.ones_like(starts), actions).recall_error
    assert every_step_a_start.item() == 0.0


def test_the_recall_loss_alone_teaches_the_state_to_keep_the_last_observation():
    """Observations drawn independently each step: nothing but the recurrent state can know the previous one, so a
    predictor without memory errs by at least the target features' variance. Trained on the recall error alone,
    the policy's must fall far below it."""
    torch.manual_seed(6)
    policy = make_policy(hidden_dim=16, num_layers=1, recall=True)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    starts, actions = torch.zeros(32, 16, dtype=torch.bool), torch.zeros(32, 16, dtype=torch.int64)
    h0 = tuple(torch.zeros(1, 32, 16) for _ in range(2))
    for _ in range(200):
        error = policy.evaluate_actions(torch.randn(32, 16, 3), h0, starts, actions).recall_error
        optimizer.zero_grad()
        error.backward()
        optimizer.step()
    obs = torch.randn(32, 16, 3)
    with torch.no_grad():
        error = policy.evaluate_actions(obs, h0, starts, actions).recall_error
        memoryless = policy.encoder(obs).var(dim=(0, 1)).mean()
    assert memoryless > 0.01, "the encoder's features did not collapse"
    assert error < 0.1 * memoryless, (error, memoryless)


def test_the_recall_head_is_the_only_change_and_adds_its_error_to_the_loss():
    """A seeded policy draws the same weights with the head as without it (the head is built last), acts the same,
    and the spec carries it; ppo_loss adds recall_coef x the error, and reports it either way."""
    torch.manual_seed(5)
    plain = make_policy()
    torch.manual_seed(5)
    recall = make_policy(recall=True)
    weights = recall.state_dict()
    assert {name for name in weights if name.startswith("recall.")} == {"recall.weight", "recall.bias"}
    for name, value in plain.state_dict().items():
        assert torch.equal(weights[name], value), name
    assert recall.spec() == {**plain.spec(), "recall": True}
    assert RecurrentPolicy.from_spec(recall.spec()).recall is not None and plain.recall is None

    obs, starts, h0 = torch.randn(4, 5, 3), torch.rand(4, 5) < 0.3, random_state("lstm", 2, 4, 8)
    actions = torch.randint(0, 4, (4, 5))
    out, plain_out = recall.evaluate_actions(obs, h0, starts, actions), plain.evaluate_actions(obs, h0, starts, actions)
    assert plain_out.recall_error is None
    assert torch.equal(out.log_prob, plain_out.log_prob) and torch.equal(out.value, plain_out.value)
    batch = SimpleNamespace(log_probs=out.log_prob.detach() - 0.1, advantages=torch.randn(4, 5),
                            returns=torch.randn(4, 5), values=out.value.detach() + 0.05)
    without = ppo_loss(out, batch, clip_coef=0.2, vf_coef=0.5, ent_coef=0.01)
    weighted = ppo_loss(out, batch, clip_coef=0.2, vf_coef=0.5, ent_coef=0.01, recall_coef=3.0)
    assert out.recall_error > 0 and torch.equal(weighted.recall_error, out.recall_error.detach())
    assert_close(weighted.loss, without.loss + 3.0 * out.recall_error, "loss with the recall term")
    assert ppo_loss(plain_out, batch, clip_coef=0.2, vf_coef=0.5, ent_coef=0.01).recall_error.item() == 0.0


def test_the_updater_weighs_the_recall_error_in_fp32_and_bf16():
    torch.manual_seed(7)
    policy = make_policy(recall=True)
    obs, starts, h0 = torch.randn(4, 5, 3), torch.rand(4, 5) < 0.3, random_state("lstm", 2, 4, 8)
    actions = torch.randint(0, 4, (4, 5))
    with torch.no_grad():
        out = policy.evaluate_actions(obs, h0, starts, actions)
    batch = SimpleNamespace(obs=obs, hidden=h0, episode_starts=starts, actions=actions, log_probs=out.log_prob,
                            advantages=torch.randn(4, 5), returns=torch.randn(4, 5), values=out.value)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert policy.evaluate_actions(obs, h0, starts, actions).recall_error.dtype == torch.float32
    for bf16 in (False, True):
        updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters()), PPOSettings(recall_coef=2.0, bf16=bf16))
        loss, terms = updater._loss(batch)
        assert loss.dtype == terms.dtype == torch.float32
        recall = terms[LossTerms._fields.index("recall_error")]
        assert_close(recall, out.recall_error, f"recall error (bf16={bf16})", rtol=0.05, atol=1e-3)
        if not bf16:
            without = ppo_loss(policy.evaluate_actions(obs, h0, starts, actions), batch, clip_coef=0.2, vf_coef=0.5,
                               ent_coef=0.01).loss
            assert_close(loss, without + 2.0 * recall, "the updater's loss with the recall term")


@pytest.mark.parametrize("core", CORES)
def test_get_value_equals_get_action_value(core):
    policy = make_policy(core=core)
    obs, starts = torch.randn(4, 3), torch.tensor([True, False, False, True])
    hidden = random_state(core, 2, 4, 8)
    assert_close(policy.get_value(obs, hidden, starts), policy.get_action(obs, hidden, starts).value, "value")


def test_sampling_follows_the_policy_distribution():
    policy = make_policy(num_actions=3, num_layers=1)
    with torch.no_grad():
        policy.head.linear.weight.normal_(0, 1.0)  # a policy far from uniform
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
        logits = policy.head.linear(policy.features(obs[:, None], hidden, starts[:, None])[0][:, 0])
    assert torch.equal(out.action, logits.argmax(-1))


@pytest.mark.parametrize("parts", [1, 2])
def test_reset_state_zeroes_only_starting_envs(parts):
    state = tuple(torch.ones(2, 3, 4) for _ in range(parts))
    reset = reset_state(state, torch.tensor([False, True, False]))
    assert len(reset) == parts
    for part in reset:
        assert not part[:, 1].any()
        assert part[:, [0, 2]].eq(1).all()


@pytest.mark.parametrize("core", CORES)
def test_initial_hidden_straight_to_training_fails_loudly(core):
    policy = make_policy(core=core)
    hidden = policy.initial_hidden(2)
    obs, actions = torch.randn(2, 3, 3), torch.zeros(2, 3, dtype=torch.long)
    starts = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        policy.evaluate_actions(obs, hidden, starts, actions).log_prob.sum().backward()


def test_rejects_bad_sizes_and_cores():
    with pytest.raises(ValueError, match=r"unsupported space Discrete\(n=1, start=0\) as the action space"):
        make_policy(num_actions=1)
    with pytest.raises(ValueError, match="core='rnn' is not one of"):
        make_policy(core="rnn")


def test_a_flat_box_policy_keeps_the_first_policys_weights_layout():
    """A flat Box and Discrete actions with an LSTM: the first policy's parameters, its Linear + Tanh encoder."""
    policy = make_policy(num_layers=1)
    assert isinstance(policy.encoder, torch.nn.Sequential) and len(policy.encoder) == 2
    assert isinstance(policy.encoder[0], torch.nn.Linear) and isinstance(policy.encoder[1], torch.nn.Tanh)
    assert sorted(policy.state_dict()) == sorted(
        ["encoder.0.weight", "encoder.0.bias", "core.weight_ih_l0", "core.weight_hh_l0", "core.bias_ih_l0",
         "core.bias_hh_l0", "head.linear.weight", "head.linear.bias", "critic.weight", "critic.bias"])


def test_the_old_policy_name_warns_and_builds_the_same_policy():
    from recurrent_ppo.models import LSTMPolicyBundle

    with pytest.warns(DeprecationWarning, match=r"RecurrentPolicy\(Box\(\(obs_dim,\)\)"):
        old = LSTMPolicyBundle(3, 2, hidden_dim=8)
    new = RecurrentPolicy(Box((3,)), Discrete(2), hidden_dim=8)
    assert old.spec() == new.spec() and old.state_dict().keys() == new.state_dict().keys()
