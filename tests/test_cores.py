"""Our LSTM and GRU against nn.LSTM / nn.GRU (no resets), and resets exactly where episode_starts says."""

import pytest
import torch
from torch import nn

from recurrent_ppo.models.cores import GRU, LSTM, make_core
from tests.helpers import assert_close

SHAPES = [(1, 1, 3, 4, 1), (5, 7, 3, 8, 1), (4, 9, 6, 5, 2), (3, 4, 2, 16, 3)]
IDS = [f"B{b}-L{length}-in{i}-H{h}-layers{n}" for b, length, i, h, n in SHAPES]
PAIRS = {"lstm": (LSTM, nn.LSTM), "gru": (GRU, nn.GRU)}  # ours, torch's (reference only, never compiled)


def pair(kind, in_dim, hidden, layers):
    ours, theirs = PAIRS[kind]
    return ours(in_dim, hidden, layers).double(), theirs(in_dim, hidden, layers, batch_first=True).double()


def run_reference(ref, x, state):
    """torch's module with our state tuple: (h, c) for nn.LSTM, (h,) for nn.GRU."""
    if isinstance(ref, nn.LSTM):
        out, (h, c) = ref(x, state)
        return out, (h, c)
    out, h = ref(x, state[0])
    return out, (h,)


def random_state(ours, layers, batch, hidden):
    return tuple(torch.randn(layers, batch, hidden, dtype=torch.float64) for _ in ours.state_names)


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("batch,seq,in_dim,hidden,layers", SHAPES, ids=IDS)
def test_matches_torch_without_resets(kind, batch, seq, in_dim, hidden, layers):
    ours, ref = pair(kind, in_dim, hidden, layers)
    ref.load_state_dict(ours.state_dict())  # same names and shapes both ways
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(batch, seq, in_dim, dtype=torch.float64, requires_grad=True)
    state = random_state(ours, layers, batch, hidden)
    starts = torch.zeros(batch, seq, dtype=torch.bool)

    out, final = ours(x, starts, state)
    ref_out, ref_final = run_reference(ref, x, state)
    assert_close(out, ref_out, "output")
    for name, got, want in zip(ours.state_names, final, ref_final, strict=True):
        assert_close(got, want, f"final {name}")

    def loss(out, final):
        return out.sum() + sum((i + 1) * part.square().sum() for i, part in enumerate(final))

    grads = torch.autograd.grad(loss(out, final), [x, *ours.parameters()])
    ref_grads = torch.autograd.grad(loss(ref_out, ref_final), [x, *ref.parameters()])
    names = ["x", *(name for name, _ in ours.named_parameters())]
    for name, g, rg in zip(names, grads, ref_grads):
        assert_close(g, rg, f"grad of {name}")


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("layers", [1, 2])
def test_resets_exactly_at_episode_starts(kind, layers):
    torch.manual_seed(3)
    batch, seq, in_dim, hidden = 3, 12, 4, 6
    core, ref = pair(kind, in_dim, hidden, layers)
    ref.load_state_dict(core.state_dict())
    x = torch.randn(batch, seq, in_dim, dtype=torch.float64)
    state0 = random_state(core, layers, batch, hidden)
    starts = torch.zeros(batch, seq, dtype=torch.bool)
    starts[0, [0, 5, 6]] = True  # a reset at the first step, and two back to back
    starts[1, 11] = True  # a reset at the last step
    # env 2: no reset at all

    out, final = core(x, starts, state0)

    # Oracle: torch's module run separately over each segment between resets, from zeros after a reset.
    for b in range(batch):
        bounds = [0, *starts[b].nonzero().flatten().tolist(), seq]
        state = tuple(part[:, b:b + 1] for part in state0)
        for lo, hi in zip(bounds, bounds[1:]):
            if lo == hi:
                continue
            if starts[b, lo]:
                state = tuple(torch.zeros_like(part) for part in state)
            seg_out, state = run_reference(ref, x[b:b + 1, lo:hi], state)
            assert_close(out[b, lo:hi], seg_out[0], f"output of env {b}, steps {lo}:{hi}")
        for name, got, want in zip(core.state_names, final, state):
            assert_close(got[:, b], want[:, 0], f"final {name} of env {b}")


@pytest.mark.parametrize("kind", PAIRS)
def test_reset_changes_only_marked_envs(kind):
    core = make_core(kind, 2, 3)
    x = torch.randn(2, 4, 2)
    state = tuple(torch.randn(1, 2, 3) for _ in core.state_names)
    starts = torch.zeros(2, 4, dtype=torch.bool)
    base, _ = core(x, starts, state)
    starts[1, 2] = True
    reset, _ = core(x, starts, state)
    assert torch.equal(reset[0], base[0]), "env 0 was not reset and must not change"
    assert torch.equal(reset[1, :2], base[1, :2]), "steps before the reset must not change"
    assert not torch.allclose(reset[1, 2:], base[1, 2:]), "steps from the reset on must change"


@pytest.mark.parametrize("kind", PAIRS)
def test_step_by_step_equals_unrolled(kind):
    core = make_core(kind, 3, 5, 2)
    x = torch.randn(4, 10, 3)
    starts = torch.rand(4, 10) < 0.3
    state0 = tuple(torch.randn(2, 4, 5) for _ in core.state_names)
    out, final = core(x, starts, state0)
    state = state0
    for t in range(10):
        step_out, state = core(x[:, t:t + 1], starts[:, t:t + 1], state)
        assert_close(step_out[:, 0], out[:, t], f"output at step {t}", rtol=1e-6, atol=1e-6)
    for name, got, want in zip(core.state_names, state, final, strict=True):
        assert_close(got, want, f"final {name}", rtol=1e-6, atol=1e-6)


def test_rejects_bad_sizes_and_kinds():
    with pytest.raises(ValueError, match="LSTM needs positive sizes"):
        LSTM(3, 0)
    with pytest.raises(ValueError, match="GRU needs positive sizes"):
        GRU(0, 3)
    with pytest.raises(ValueError, match=r"core='rnn' is not one of \['gru', 'lstm'\]"):
        make_core("rnn", 3, 3)
