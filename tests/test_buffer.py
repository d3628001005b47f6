"""RolloutBuffer: static preallocated storage, one vectorized write per step, whole-sequence minibatches."""

import pytest
import torch
from recurrent_ppo.kernels.gae import gae_reference
from torch.utils._python_dispatch import TorchDispatchMode

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.models import RecurrentPolicy, reset_state
from recurrent_ppo.spaces import Box, Dict, Discrete, MultiBinary, MultiDiscrete, Tuple
from tests.helpers import assert_close

OBS_DIM, LAYERS, HIDDEN = 3, 2, 5


def make_buffer(num_envs=4, num_steps=8, core="lstm"):
    return RolloutBuffer(num_envs, num_steps, Box((OBS_DIM,)), Discrete(2), LAYERS, HIDDEN, "cpu", core=core)


def make_policy():
    return RecurrentPolicy(Box((OBS_DIM,)), Discrete(2), hidden_dim=HIDDEN, num_layers=LAYERS)


def step_fields(num_envs, t, hidden=None):
    """Step t's fields with values that encode (env, step), so misplaced writes are visible."""
    env = torch.arange(num_envs, dtype=torch.float32)
    code = env * 100 + t
    if hidden is None:
        hidden = (code[None, :, None].expand(LAYERS, num_envs, HIDDEN) + 0.5,
                  code[None, :, None].expand(LAYERS, num_envs, HIDDEN) + 0.25)
    return dict(
        obs=code[:, None].expand(num_envs, OBS_DIM), actions=code.long(), log_probs=-code, values=code + 0.1,
        rewards=code + 0.2, terminated=(env + t) % 3 == 0, truncated=(env + t) % 5 == 0,
        final_obs=code[:, None].expand(num_envs, OBS_DIM) + 0.3, episode_starts=(env + t) % 4 == 0, hidden=hidden,
    )


def fill(buffer):
    for t in range(buffer.num_steps):
        buffer.add(**step_fields(buffer.num_envs, t))


def test_shapes_are_static_and_env_major():
    buffer = make_buffer(4, 8)
    assert buffer.obs.shape == (4, 8, OBS_DIM)
    assert buffer.hidden_h.shape == buffer.hidden_c.shape == (4, 8, LAYERS, HIDDEN)
    for name in ("actions", "log_probs", "values", "rewards", "terminated", "truncated", "truncated_values",
                 "episode_starts", "advantages"):
        assert getattr(buffer, name).shape == (4, 8), name
    storage = {name: t.data_ptr() for name, t in vars(buffer).items() if isinstance(t, torch.Tensor)}
    fill(buffer)
    buffer.compute_advantages(torch.zeros(4), 0.99, 0.95)
    for name, ptr in storage.items():
        assert getattr(buffer, name).data_ptr() == ptr, f"{name} was reallocated"


def test_add_writes_each_step_at_its_place():
    buffer = make_buffer()
    fill(buffer)
    for t in range(buffer.num_steps):
        expected = step_fields(buffer.num_envs, t)
        for name in ("obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated",
                     "episode_starts"):
            assert torch.equal(getattr(buffer, name)[:, t], expected[name]), f"{name} at step {t}"
        assert torch.equal(buffer.hidden_h[:, t], expected["hidden"][0].transpose(0, 1)), f"hidden_h at step {t}"
        assert torch.equal(buffer.hidden_c[:, t], expected["hidden"][1].transpose(0, 1)), f"hidden_c at step {t}"


def test_the_final_observations_of_truncated_envs_are_kept_in_order_with_their_env_and_step():
    buffer = make_buffer()
    fill(buffer)
    truncated = [(t, env) for t in range(buffer.num_steps) for env in range(buffer.num_envs) if (env + t) % 5 == 0]
    assert int(buffer.final_count) == len(truncated) == buffer.truncated.sum()
    for row, (t, env) in enumerate(truncated):
        assert (int(buffer.final_env[row]), int(buffer.final_step[row])) == (env, t), f"row {row}"
        assert torch.equal(buffer.final_obs[row], step_fields(buffer.num_envs, t)["final_obs"][env]), f"row {row}"
    buffer.reset()
    assert int(buffer.final_count) == 0, "a new rollout fills the rows from the first"


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def ops_of_one_add(num_envs):
    buffer = make_buffer(num_envs)
    with _CountOps() as counter:
        buffer.add(**step_fields(num_envs, 0))
    return counter.ops


@pytest.mark.parametrize("num_envs", [3, 64])
def test_add_is_one_write_per_field_whatever_the_env_count(num_envs):
    ops = ops_of_one_add(num_envs)
    copies = [op for op in ops if "copy_" in op]
    # 8 step fields + hidden_h + hidden_c, and the truncated envs' final observations with their env and step:
    # each one copy for all envs.
    assert len(copies) == 13, ops
    assert ops == ops_of_one_add(1), "nothing scales with num_envs"


def test_add_past_the_end_fails():
    buffer = make_buffer(2, 3)
    fill(buffer)
    with pytest.raises(RuntimeError, match="full"):
        buffer.add(**step_fields(2, 3))
    buffer.reset()
    buffer.add(**step_fields(2, 0))


def test_compute_advantages_needs_a_full_rollout():
    buffer = make_buffer(2, 3)
    buffer.add(**step_fields(2, 0))
    with pytest.raises(RuntimeError, match="1 of 3 steps"):
        buffer.compute_advantages(torch.zeros(2), 0.99, 0.95)


@pytest.mark.parametrize("value_lambda", [None, 0.95, 0.5])
def test_advantages_and_batch_returns_match_the_reference(value_lambda):
    """The buffer's GAE writes advantages alone; each minibatch's returns are advantages + values, as
    gae_reference computes them, at the value targets' own lambda where it is given one (the advantages stay at
    gae_lambda's)."""
    num_envs, num_steps = 4, 8
    buffer = make_buffer(num_envs, num_steps)
    fill(buffer)
    last_values = torch.tensor([0.5, -1.0, 2.0, 0.0])
    buffer.compute_advantages(last_values, 0.99, 0.95, value_lambda)

    def reference(lam):
        return gae_reference(rewards=buffer.rewards, values=buffer.values, terminated=buffer.terminated,
                             truncated=buffer.truncated, truncated_values=buffer.truncated_values,
                             last_values=last_values, gamma=0.99, lam=lam)

    advantages, _ = reference(0.95)
    _, returns = reference(0.95 if value_lambda is None else value_lambda)
    assert_close(buffer.advantages, advantages, "advantages")
    assert (buffer.value_advantages is None) == (value_lambda in (None, 0.95))
    [batch] = buffer.get_batched_sequences(num_steps, 1)
    for i in range(num_envs):
        env = int(batch.actions[i, 0]) // 100
        assert_close(batch.advantages[i], advantages[env], f"advantages of env {env}")
        assert_close(batch.returns[i], returns[env], f"returns of env {env}")
    if value_lambda == 0.5:  # the two lambdas give other targets here, so the test can tell them apart
        assert not torch.allclose(returns, reference(0.95)[1])


def test_inference_tensors_become_normal_tensors_in_the_buffer():
    policy = make_policy()
    buffer = make_buffer(4, 2)
    hidden = policy.initial_hidden(4)
    assert hidden[0].is_inference()
    with torch.inference_mode():
        buffer.add(**step_fields(4, 0, hidden=hidden))
    buffer.add(**step_fields(4, 1, hidden=hidden))
    assert not buffer.hidden_h.is_inference() and not buffer.hidden_c.is_inference()
    batch = next(buffer.get_batched_sequences(seq_len=2, num_minibatches=1))
    assert not batch.hidden[0].is_inference() and not batch.hidden[1].is_inference()


def test_hidden_stored_is_the_state_fed_into_each_step():
    torch.manual_seed(0)
    policy = make_policy()
    num_envs, num_steps = 3, 6
    buffer = make_buffer(num_envs, num_steps)
    obs = torch.randn(num_envs, num_steps, OBS_DIM)
    starts = torch.zeros(num_envs, num_steps, dtype=torch.bool)
    starts[:, 0] = True
    starts[1, 3] = True
    hidden = policy.initial_hidden(num_envs)
    fed = []
    with torch.inference_mode():
        for t in range(num_steps):
            hidden = reset_state(hidden, starts[:, t])
            fed.append(hidden)
            out = policy.get_action(obs[:, t], hidden, starts[:, t])
            buffer.add(**{**step_fields(num_envs, t), "obs": obs[:, t], "actions": out.action,
                          "episode_starts": starts[:, t], "hidden": hidden})
            hidden = out.hidden
    for t in range(num_steps):
        assert_close(buffer.hidden_h[:, t], fed[t][0].transpose(0, 1), f"hidden_h at step {t}")
        assert_close(buffer.hidden_c[:, t], fed[t][1].transpose(0, 1), f"hidden_c at step {t}")
    assert not buffer.hidden_h[1, 3].any(), "the state fed into an episode's first step is the reset state"
    # Restarting from the stored state at step 2 reproduces the rollout from there on.
    ev = policy.evaluate_actions(obs[:, 2:], (buffer.hidden_h[:, 2].transpose(0, 1),
                                              buffer.hidden_c[:, 2].transpose(0, 1)), starts[:, 2:],
                                 buffer.actions[:, 2:])
    with torch.inference_mode():
        direct = policy.evaluate_actions(obs, policy.initial_hidden(num_envs), starts, buffer.actions)
    assert_close(ev.value, direct.value[:, 2:], "values from the stored state")


def test_batched_sequences_cover_every_sequence_once():
    num_envs, num_steps, seq_len, minibatches = 4, 8, 2, 4
    buffer = make_buffer(num_envs, num_steps)
    fill(buffer)
    buffer.compute_advantages(torch.zeros(num_envs), 0.99, 0.95)
    batches = list(buffer.get_batched_sequences(seq_len, minibatches))
    assert len(batches) == minibatches
    seen = []
    for batch in batches:
        b = num_envs * num_steps // seq_len // minibatches
        assert batch.obs.shape == (b, seq_len, OBS_DIM)
        for name in ("actions", "episode_starts", "log_probs", "values", "advantages", "returns"):
            assert getattr(batch, name).shape == (b, seq_len), name
        assert batch.hidden[0].shape == batch.hidden[1].shape == (LAYERS, b, HIDDEN)
        assert batch.hidden[0].is_contiguous()
        for i in range(b):
            code = int(batch.actions[i, 0])  # env * 100 + first step
            env, t0 = divmod(code, 100)
            assert t0 % seq_len == 0, "sequences start at multiples of seq_len"
            assert torch.equal(batch.actions[i], buffer.actions[env, t0:t0 + seq_len])
            assert torch.equal(batch.advantages[i], buffer.advantages[env, t0:t0 + seq_len])
            assert torch.equal(batch.hidden[0][:, i], buffer.hidden_h[env, t0]), "h0 is the state at the start"
            assert torch.equal(batch.hidden[1][:, i], buffer.hidden_c[env, t0]), "c0 is the state at the start"
            seen.append((env, t0))
    assert sorted(seen) == [(e, t) for e in range(num_envs) for t in range(0, num_steps, seq_len)]


@pytest.mark.parametrize("seq_len,minibatches,match", [(3, 1, "seq_len=3 must divide"),
                                                       (2, 3, "num_minibatches=3 must divide")])
def test_batched_sequences_reject_ragged_shapes(seq_len, minibatches, match):
    buffer = make_buffer(4, 8)
    with pytest.raises(ValueError, match=match):
        next(buffer.get_batched_sequences(seq_len, minibatches))


OBS_SPACE = Dict((("image", Box((6, 5, 3), 0, 255, "uint8")), ("pos", Discrete(7, start=-3)),
                  ("grid", MultiDiscrete((3, 4))), ("seen", MultiBinary((2, 2))),
                  ("inner", Tuple((Box((2,), dtype="int64"), Box((1,)))))))


def random_obs(batch):
    return {"image": torch.randint(0, 256, (*batch, 6, 5, 3), dtype=torch.uint8),
            "pos": torch.randint(-3, 4, batch), "grid": torch.randint(0, 3, (*batch, 2)),
            "seen": torch.rand(*batch, 2, 2) < 0.5, "inner/0": torch.randint(-10**12, 10**12, (*batch, 2)),
            "inner/1": torch.randn(*batch, 1)}


@pytest.mark.parametrize("action_space,action_shape,action_dtype", [
    (Discrete(3), (), torch.int64), (MultiDiscrete((2, 5)), (2,), torch.int64),
    (Box((2, 3), -1, 1), (6,), torch.float32)])
def test_obs_leaves_and_actions_round_trip_in_their_own_dtypes(action_space, action_shape, action_dtype):
    """uint8 images stay uint8 and integer observations int64, values unchanged (beyond float32's integers
    too), through the buffer's writes and the minibatches; actions are stored as the head samples them."""
    num_envs, num_steps = 3, 4
    buffer = RolloutBuffer(num_envs, num_steps, OBS_SPACE, action_space, 1, 4, "cpu", core="gru")
    assert buffer.hidden_names == ("hidden_h",) and not hasattr(buffer, "hidden_c")
    assert buffer.actions.shape == (num_envs, num_steps, *action_shape) and buffer.actions.dtype == action_dtype
    written = random_obs((num_envs, num_steps))
    for path, leaf in written.items():
        assert buffer.obs[path].dtype == leaf.dtype == buffer.final_obs[path].dtype, path
    for t in range(num_steps):
        step = {path: x[:, t] for path, x in written.items()}
        buffer.add(**{**step_fields(num_envs, t, hidden=(torch.zeros(1, num_envs, 4),)), "obs": step,
                      "final_obs": step, "actions": torch.zeros(num_envs, *action_shape, dtype=action_dtype)})
    kept = int(buffer.final_count)
    for path, leaf in written.items():
        assert torch.equal(buffer.obs[path], leaf), path
        assert torch.equal(buffer.final_obs[path][:kept], leaf[buffer.final_env[:kept], buffer.final_step[:kept]]), path
    buffer.compute_advantages(torch.zeros(num_envs), 0.99, 0.95)
    [batch] = buffer.get_batched_sequences(num_steps, 1)
    assert len(batch.hidden) == 1 and batch.actions.shape == (num_envs, num_steps, *action_shape)
    order = [int(code) // 100 for code in batch.log_probs[:, 0].neg()]  # env of each sequence
    for path, leaf in written.items():
        assert batch.obs[path].dtype == leaf.dtype and torch.equal(batch.obs[path], leaf[order]), path
