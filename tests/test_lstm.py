"""Our LSTM against nn.LSTM (no resets), and resets exactly where episode_starts says."""

import pytest
import torch
from torch import nn

from recurrent_ppo.lstm import LSTM
from tests.helpers import assert_close

SHAPES = [(1, 1, 3, 4, 1), (5, 7, 3, 8, 1), (4, 9, 6, 5, 2), (3, 4, 2, 16, 3)]
IDS = [f"B{b}-L{length}-in{i}-H{h}-layers{n}" for b, length, i, h, n in SHAPES]


@pytest.mark.parametrize("batch,seq,in_dim,hidden,layers", SHAPES, ids=IDS)
def test_matches_nn_lstm_without_resets(batch, seq, in_dim, hidden, layers):
    ours = LSTM(in_dim, hidden, layers).double()
    ref = nn.LSTM(in_dim, hidden, layers, batch_first=True).double()  # reference only, never compiled
    ref.load_state_dict(ours.state_dict())  # same names and shapes both ways
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(batch, seq, in_dim, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, batch, hidden, dtype=torch.float64)
    c0 = torch.randn(layers, batch, hidden, dtype=torch.float64)
    starts = torch.zeros(batch, seq, dtype=torch.bool)

    out, (h, c) = ours(x, starts, (h0, c0))
    ref_out, (ref_h, ref_c) = ref(x, (h0, c0))
    assert_close(out, ref_out, "output")
    assert_close(h, ref_h, "final h")
    assert_close(c, ref_c, "final c")

    grads = torch.autograd.grad((out.sum() + h.sum() + c.square().sum()), [x, *ours.parameters()])
    ref_grads = torch.autograd.grad((ref_out.sum() + ref_h.sum() + ref_c.square().sum()), [x, *ref.parameters()])
    names = ["x", *(name for name, _ in ours.named_parameters())]
    for name, g, rg in zip(names, grads, ref_grads):
        assert_close(g, rg, f"grad of {name}")


@pytest.mark.parametrize("layers", [1, 2])
def test_resets_exactly_at_episode_starts(layers):
    torch.manual_seed(3)
    batch, seq, in_dim, hidden = 3, 12, 4, 6
    lstm = LSTM(in_dim, hidden, layers).double()
    ref = nn.LSTM(in_dim, hidden, layers, batch_first=True).double()
    ref.load_state_dict(lstm.state_dict())
    x = torch.randn(batch, seq, in_dim, dtype=torch.float64)
    h0 = torch.randn(layers, batch, hidden, dtype=torch.float64)
    c0 = torch.randn(layers, batch, hidden, dtype=torch.float64)
    starts = torch.zeros(batch, seq, dtype=torch.bool)
    starts[0, [0, 5, 6]] = True  # a reset at the first step, and two back to back
    starts[1, 11] = True  # a reset at the last step
    # env 2: no reset at all

    out, (h, c) = lstm(x, starts, (h0, c0))

    # Oracle: nn.LSTM run separately over each segment between resets, from zeros after a reset.
    for b in range(batch):
        bounds = [0, *starts[b].nonzero().flatten().tolist(), seq]
        state = (h0[:, b:b + 1], c0[:, b:b + 1])
        for lo, hi in zip(bounds, bounds[1:]):
            if lo == hi:
                continue
            if starts[b, lo]:
                state = (torch.zeros_like(state[0]), torch.zeros_like(state[1]))
            seg_out, state = ref(x[b:b + 1, lo:hi], state)
            assert_close(out[b, lo:hi], seg_out[0], f"output of env {b}, steps {lo}:{hi}")
        assert_close(h[:, b], state[0][:, 0], f"final h of env {b}")
        assert_close(c[:, b], state[1][:, 0], f"final c of env {b}")


def test_reset_changes_only_marked_envs():
    lstm = LSTM(2, 3)
    x = torch.randn(2, 4, 2)
    hidden = (torch.randn(1, 2, 3), torch.randn(1, 2, 3))
    starts = torch.zeros(2, 4, dtype=torch.bool)
    base, _ = lstm(x, starts, hidden)
    starts[1, 2] = True
    reset, _ = lstm(x, starts, hidden)
    assert torch.equal(reset[0], base[0]), "env 0 was not reset and must not change"
    assert torch.equal(reset[1, :2], base[1, :2]), "steps before the reset must not change"
    assert not torch.allclose(reset[1, 2:], base[1, 2:]), "steps from the reset on must change"


def test_step_by_step_equals_unrolled():
    lstm = LSTM(3, 5, 2)
    x = torch.randn(4, 10, 3)
    starts = torch.rand(4, 10) < 0.3
    hidden = (torch.randn(2, 4, 5), torch.randn(2, 4, 5))
    out, final = lstm(x, starts, hidden)
    state = hidden
    for t in range(10):
        step_out, state = lstm(x[:, t:t + 1], starts[:, t:t + 1], state)
        assert_close(step_out[:, 0], out[:, t], f"output at step {t}", rtol=1e-6, atol=1e-6)
    assert_close(state[0], final[0], "final h", rtol=1e-6, atol=1e-6)
    assert_close(state[1], final[1], "final c", rtol=1e-6, atol=1e-6)


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive sizes"):
        LSTM(3, 0)
