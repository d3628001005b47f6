"""The fused LSTM and GRU scans (kernels/lstm_scan.py, gru_scan.py; the interpreter on CPU) against their pure-torch
references in float64, the references against our LSTM and nn.GRU, gradcheck, and torch.compile."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

from recurrent_ppo.kernels.gru_scan import gru_scan, gru_scan_backward, gru_scan_forward
from recurrent_ppo.kernels.lstm_scan import lstm_scan, lstm_scan_backward, lstm_scan_forward
from recurrent_ppo.kernels.rnn_common import INTERPRETING, Tile
from recurrent_ppo.kernels.rnn_reference import gru_scan_reference, lstm_scan_reference
from recurrent_ppo.models.cores import GRU, LSTM
from tests.helpers import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Cell:
    name: str
    gates: int
    states: tuple[str, ...]  # the initial states, in argument order after the weights
    scan: Callable
    reference: Callable
    forward: Callable  # the launchers
    backward: Callable


LSTM_CELL = Cell("lstm", 4, ("h0", "c0"), lstm_scan, lstm_scan_reference, lstm_scan_forward, lstm_scan_backward)
GRU_CELL = Cell("gru", 3, ("h0",), gru_scan, gru_scan_reference, gru_scan_forward, gru_scan_backward)
CELLS = [pytest.param(LSTM_CELL, id="lstm"), pytest.param(GRU_CELL, id="gru")]


def make_inputs(cell: Cell, batch: int, seq_len: int, hidden: int, dtype=torch.float32, seed: int = 0):
    """The scan's tensor inputs before keep, by name in argument order: weights in `dtype`, states float32."""
    g = torch.Generator().manual_seed(seed)
    width = cell.gates * hidden
    inputs = {"gates_x": torch.randn(batch, seq_len, width, generator=g).to(dtype),
              "w_hh": (torch.randn(width, hidden, generator=g) / math.sqrt(hidden)).to(dtype)}
    if cell is GRU_CELL:
        inputs["b_hh"] = (0.5 * torch.randn(width, generator=g)).to(dtype)
    inputs.update({state: torch.randn(batch, hidden, generator=g) for state in cell.states})
    return {name: tensor.to(DEVICE) for name, tensor in inputs.items()}


def make_keep(pattern: str, batch: int, seq_len: int, dtype=torch.bool, seed: int = 0) -> torch.Tensor:
    """keep = 1 - episode_starts [B, L] for a reset pattern."""
    starts = torch.zeros(batch, seq_len, dtype=torch.bool)
    if pattern == "start":
        starts[:, 0] = True
    elif pattern == "mid":
        starts[::2, seq_len // 2] = True
    elif pattern == "every":
        starts[:] = True
    elif pattern == "random":
        starts = torch.rand(batch, seq_len, generator=torch.Generator().manual_seed(seed)) < 0.3
    elif pattern != "never":
        raise ValueError(pattern)
    return (~starts).to(dtype).to(DEVICE)


def flat(outputs) -> list[torch.Tensor]:
    """(h_seq, (h_n, c_n)) or (h_seq, h_n) as a list."""
    h_seq, final = outputs
    return [h_seq, *final] if isinstance(final, tuple) else [h_seq, final]


def upstream_grads(cell: Cell, batch: int, seq_len: int, hidden: int, seed: int = 1) -> list[torch.Tensor]:
    """Random gradients of h_seq and the final states."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, seq_len, hidden)] + [(batch, hidden)] * len(cell.states)
    return [torch.randn(shape, generator=g).to(DEVICE) for shape in shapes]


def oracle(cell: Cell, inputs: dict, keep: torch.Tensor, grads: list[torch.Tensor]):
    """The reference in float64 on the same values: outputs and the gradients of every input."""
    leaves = {name: tensor.detach().double().requires_grad_() for name, tensor in inputs.items()}
    outputs = flat(cell.reference(*leaves.values(), keep))
    torch.autograd.backward(outputs, [g.double() for g in grads])
    return outputs, {name: leaf.grad for name, leaf in leaves.items()}


def fused_with_autograd(cell: Cell, inputs: dict, keep: torch.Tensor, grads: list[torch.Tensor]):
    """The public function on the Triton path, backward through the registered autograd."""
    leaves = {name: tensor.detach().clone().requires_grad_() for name, tensor in inputs.items()}
    outputs = flat(cell.scan(*leaves.values(), keep, kernel="triton"))
    torch.autograd.backward(outputs, grads)
    return outputs, {name: leaf.grad for name, leaf in leaves.items()}


OUTPUT_NAMES = ("h_seq", "h_n", "c_n")


def assert_matches(cell: Cell, actual, expected, tol: float, scaled: bool) -> None:
    """Outputs and gradients against the oracle's: within `tol` relative (elementwise, plus `tol` of the
    tensor's largest magnitude where `scaled`, else 0.1 tol of it, for elements near zero)."""
    (outputs, grads), (ref_outputs, ref_grads) = actual, expected
    pairs = list(zip(OUTPUT_NAMES, outputs, ref_outputs)) + [(f"d{n}", grads[n], ref_grads[n]) for n in ref_grads]
    for name, got, want in pairs:
        assert torch.isfinite(got).all(), f"{cell.name} {name} has non-finite values"
        scale = want.abs().max().item() or 1.0
        assert_close(got.double(), want, f"{cell.name} {name}", rtol=0 if scaled else tol,
                     atol=(tol if scaled else 0.1 * tol) * scale)


# (B, L, H, resets): every value of each axis at least once, the largest of all together.
SIZES = [(1, 1, 8, "never"), (7, 5, 24, "mid"), (33, 16, 128, "random"), (7, 5, 8, "every"), (33, 5, 24, "start"),
         (1, 5, 128, "mid")]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}-L{}-H{}-{}".format(*s))
def test_fused_matches_reference_fp32(cell, size):
    batch, seq_len, hidden, resets = size
    inputs = make_inputs(cell, batch, seq_len, hidden)
    keep = make_keep(resets, batch, seq_len, dtype=torch.float32 if batch == 7 else torch.bool)
    grads = upstream_grads(cell, batch, seq_len, hidden)
    expected = oracle(cell, inputs, keep, grads)
    outputs, input_grads = fused_with_autograd(cell, inputs, keep, grads)
    assert all(out.dtype == torch.float32 for out in outputs)
    # 1e-5 relative, elementwise; elements near zero within 1e-6 of the tensor's largest magnitude.
    assert_matches(cell, (outputs, input_grads), expected, tol=1e-5, scaled=False)


@pytest.mark.parametrize("cell", CELLS)
def test_fused_matches_reference_bf16(cell):
    # bf16 keeps 8 significant bits, so each rounding is within 2^-9 = 0.2% relative. The kernels round h to
    # bf16 before every recurrent GEMM and d(gates) when they store it (an output, and the backward GEMM's
    # operand), and dW_hh is a bf16 GEMM of those; the oracle computes in float64 from the same bf16 inputs.
    # Errors pass through L steps of the recurrence; the largest seen (0.6% here, 0.9% at H = 24) is under 1% of
    # a tensor's largest magnitude, so the bound is 3% of it.
    batch, seq_len, hidden = 33, 16, 128
    inputs = make_inputs(cell, batch, seq_len, hidden, dtype=torch.bfloat16)
    keep = make_keep("random", batch, seq_len)
    grads = upstream_grads(cell, batch, seq_len, hidden)
    outputs, input_grads = fused_with_autograd(cell, inputs, keep, grads)
    assert input_grads["gates_x"].dtype == input_grads["w_hh"].dtype == torch.bfloat16
    assert_matches(cell, (outputs, input_grads), oracle(cell, inputs, keep, grads), tol=3e-2, scaled=True)


def nan_empty(*shape, **kwargs) -> torch.Tensor:
    """torch.empty filled with NaN: an element a kernel should write and did not fails the comparison."""
    return torch.empty(*shape, **kwargs).fill_(float("nan"))


# Small tiles: at H = 40, 2 programs (the second with one row), 3 K tiles and 2 output tiles per step, each last
# one partial; at H = 256, 4 x 4 tiles, the GPU benchmark's H.
TILED = [pytest.param((17, 3, 40), Tile(16, 32, 16, 1, 1), id="B17-L3-H40"),
         pytest.param((2, 2, 256), Tile(16, 64, 64, 1, 1), id="B2-L2-H256")]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("size", "tile"), TILED)
def test_launchers_write_every_output_across_tiles(cell, size, tile):
    # Every output starts as NaN, so an element a kernel should write and does not fails the comparison.
    batch, seq_len, hidden = size
    inputs = make_inputs(cell, batch, seq_len, hidden)
    keep = make_keep("random", batch, seq_len)
    forward = cell.forward(*inputs.values(), keep, tile=tile, empty=nan_empty)
    num_outputs = 1 + len(cell.states)
    outputs, saved = list(forward[:num_outputs]), forward[num_outputs:]
    grads = upstream_grads(cell, batch, seq_len, hidden)
    expected = oracle(cell, inputs, keep, grads)
    assert all(torch.isfinite(tensor).all() for tensor in saved), "a saved tensor has unwritten elements"
    weights = {name: inputs[name] for name in ("w_hh", "b_hh") if name in inputs}
    states = {name: inputs[name] for name in cell.states}
    backward = cell.backward(*grads, *weights.values(), *states.values(), keep, outputs[0], *saved,
                             inputs["gates_x"].dtype, tile=tile, empty=nan_empty)
    assert_matches(cell, (outputs, dict(zip(inputs, backward))), expected, tol=1e-5, scaled=False)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_graph_replays_forward_and_backward(cell):
    batch, seq_len, hidden = 64, 16, 256
    inputs = {name: tensor.requires_grad_() for name, tensor in make_inputs(cell, batch, seq_len, hidden).items()}
    keep = make_keep("random", batch, seq_len)
    grads = upstream_grads(cell, batch, seq_len, hidden)

    def step():
        outputs = flat(cell.scan(*inputs.values(), keep, kernel="triton"))
        return [*outputs, *torch.autograd.grad(outputs, list(inputs.values()), grads)]

    eager = step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # JIT and allocator warm-up stay out of the capture
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for index, (got, want) in enumerate(zip(captured, eager)):
        assert_close(got, want, f"{cell.name} replayed tensor {index}", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_the_reference_is_our_cores_layer_bit_for_bit(cell):
    """Both step the one cell (kernels/rnn_cells.py): the unrolled core's layer and the scan's reference agree to
    the bit, resets included."""
    torch.manual_seed(0)
    model = {"lstm": LSTM, "gru": GRU}[cell.name](6, 16).to(DEVICE)
    x = torch.randn(5, 9, 6, device=DEVICE)
    episode_starts = torch.rand(5, 9, device=DEVICE) < 0.3
    state = tuple(torch.randn(1, 5, 16, device=DEVICE) for _ in cell.states)
    expected, finals = model(x, episode_starts, state)
    w_ih, w_hh, b_ih, b_hh = model.layer_weights(0)
    gates_x = model.input_gates(x, w_ih, b_ih, b_hh)
    if cell is LSTM_CELL:
        h_seq, ref_finals = lstm_scan_reference(gates_x, w_hh, state[0][0], state[1][0], ~episode_starts)
    else:
        h_seq, ref_h = gru_scan_reference(gates_x, w_hh, b_hh, state[0][0], ~episode_starts)
        ref_finals = (ref_h,)
    assert_close(h_seq, expected, "h_seq", rtol=0, atol=0)
    for name, got, want in zip(cell.states, ref_finals, finals, strict=True):
        assert_close(got, want[0], f"final state from {name}", rtol=0, atol=0)


def test_gru_reference_is_nn_gru_without_resets():
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 16, batch_first=True).to(DEVICE)
    x, h0 = torch.randn(5, 9, 6, device=DEVICE), torch.randn(1, 5, 16, device=DEVICE)
    expected, h_n = gru(x, h0)
    gates_x = torch.nn.functional.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)
    keep = torch.ones(5, 9, device=DEVICE)
    h_seq, ref_h = gru_scan_reference(gates_x, gru.weight_hh_l0, gru.bias_hh_l0, h0[0], keep)
    assert_close(h_seq, expected, "h_seq", rtol=1e-5, atol=1e-6)
    assert_close(ref_h, h_n[0], "h_n", rtol=1e-5, atol=1e-6)


def test_gru_reset_means_a_zero_state_with_b_hh_still_counted():
    # A reset at step t: the rest of the sequence is what nn.GRU computes from a zero state at t.
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 16, batch_first=True).to(DEVICE)
    x, h0 = torch.randn(2, 7, 6, device=DEVICE), torch.randn(1, 2, 16, device=DEVICE)
    keep = torch.ones(2, 7, device=DEVICE)
    keep[:, 3] = 0
    gates_x = torch.nn.functional.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)
    h_seq, _ = gru_scan_reference(gates_x, gru.weight_hh_l0, gru.bias_hh_l0, h0[0], keep)
    after_reset, _ = gru(x[:, 3:], torch.zeros_like(h0))
    assert_close(h_seq[:, 3:], after_reset, "h_seq after the reset", rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kernel", ["reference", "triton"])
def test_gradcheck_float64(cell, kernel):
    # The interpreter runs the kernels in float64 (state and GEMMs), so gradcheck checks the Triton path too;
    # fast mode (one random projection) keeps its finite differences to a few dozen launches.
    batch, seq_len, hidden = 1, 2, 4
    inputs = [t.double().requires_grad_() for t in make_inputs(cell, batch, seq_len, hidden).values()]
    keep = make_keep("mid", batch, seq_len)  # a reset at step 1
    fn = lambda *args: tuple(flat(cell.scan(*args, keep, kernel=kernel)))  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=kernel == "triton")


def recording_backend(graphs: dict[str, torch.fx.GraphModule]):
    """aot_autograd (as aot_eager) that keeps the forward and backward FX graphs it compiles."""
    def keep_graph(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = gm
            return make_boxed_func(gm.forward)
        return compiler
    return aot_autograd(fw_compiler=keep_graph("forward"), bw_compiler=keep_graph("backward"))


def compiled_loss(cell: Cell, kernel: str, graphs: dict):
    def loss(inputs: dict, keep: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
        outputs = flat(cell.scan(*inputs.values(), keep, kernel=kernel))
        return sum((out * g).sum() for out, g in zip(outputs, grads))
    return torch.compile(loss, fullgraph=True, backend=recording_backend(graphs))


def op_calls(gm: torch.fx.GraphModule) -> list[str]:
    return [str(node.target) for node in gm.graph.nodes if "recurrent_ppo" in str(node.target)]


@pytest.mark.parametrize("cell", CELLS)
def test_compiles_without_graph_breaks_forward_and_backward(cell):
    torch._dynamo.reset()
    batch, seq_len, hidden = 3, 4, 8
    inputs = {k: v.requires_grad_() for k, v in make_inputs(cell, batch, seq_len, hidden).items()}
    keep = make_keep("mid", batch, seq_len)
    grads = upstream_grads(cell, batch, seq_len, hidden)
    graphs = {}
    loss = compiled_loss(cell, "triton", graphs)(inputs, keep, grads)  # fullgraph=True: a break raises
    loss.backward()
    if INTERPRETING:  # an opaque custom op; on CUDA a triton_op, which tracing may open up into its kernels
        assert op_calls(graphs["forward"]) == [f"recurrent_ppo.{cell.name}_scan_forward.default"]
        assert op_calls(graphs["backward"]) == [f"recurrent_ppo.{cell.name}_scan_backward.default"]
    expected = oracle(cell, inputs, keep, grads)
    reference_loss = sum((out * g.double()).sum() for out, g in zip(expected[0], grads))
    assert_close(loss.double(), reference_loss, "compiled loss", rtol=1e-5, atol=1e-5)
    for name, tensor in inputs.items():
        assert_close(tensor.grad.double(), expected[1][name], f"compiled d{name}", rtol=1e-5, atol=1e-6)


def graph_sizes(cell: Cell, kernel: str, seq_len: int) -> tuple[int, int, float]:
    """Nodes of the compiled forward and backward graphs of a loss over the scan at `seq_len`, and the seconds
    the first call took. Under the interpreter on meta tensors: the op's fake implementation stands in for the
    kernels, so nothing but compilation runs."""
    torch._dynamo.reset()
    batch, hidden = 4, 8
    device = "meta" if INTERPRETING else DEVICE
    inputs = {k: v.to(device).requires_grad_() for k, v in make_inputs(cell, batch, seq_len, hidden).items()}
    keep = make_keep("mid", batch, seq_len).to(device)
    grads = [grad.to(device) for grad in upstream_grads(cell, batch, seq_len, hidden)]
    graphs = {}
    start = time.perf_counter()
    compiled_loss(cell, kernel, graphs)(inputs, keep, grads).backward()
    seconds = time.perf_counter() - start
    return len(graphs["forward"].graph.nodes), len(graphs["backward"].graph.nodes), seconds


@pytest.mark.parametrize("cell", CELLS)
def test_compiled_graph_does_not_grow_with_seq_len(cell, capsys):
    # Why compile time does not grow with L: the op is one node whatever L, while the reference unrolls L steps
    # (shown at L = 2 and 8, which compile in seconds; at 16 and 64 it takes tens).
    fused = {seq_len: graph_sizes(cell, "triton", seq_len) for seq_len in (16, 64)}
    reference = {seq_len: graph_sizes(cell, "reference", seq_len) for seq_len in (2, 8)}
    with capsys.disabled():
        for name, sizes in (("fused", fused), ("reference", reference)):
            print(f"\n{cell.name} {name}: " + ", ".join(
                f"L={seq_len}: {fw} forward + {bw} backward nodes, compiled in {s:.2f} s (aot_eager)"
                for seq_len, (fw, bw, s) in sizes.items()), end="")
    assert fused[16][:2] == fused[64][:2]
    assert reference[8][0] > 3 * reference[2][0], "the unrolled reference should grow with L"


def test_inputs_are_checked():
    inputs = make_inputs(LSTM_CELL, 2, 3, 8)
    keep = make_keep("never", 2, 3)
    with pytest.raises(ValueError, match="keep must be"):
        lstm_scan(*inputs.values(), keep[:, :2])
    with pytest.raises(ValueError, match="disagree on H"):
        lstm_scan(inputs["gates_x"][..., :-1], *list(inputs.values())[1:], keep)
    with pytest.raises(ValueError, match="b_hh must be"):
        gru = make_inputs(GRU_CELL, 2, 3, 8)
        gru_scan(gru["gates_x"], gru["w_hh"], gru["b_hh"][:-1], gru["h0"], keep)
    with pytest.raises(ValueError, match="kernel must be"):
        lstm_scan(*inputs.values(), keep, kernel="cudnn")


def _load_bench_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_rnn_compare_dry_run_writes_its_table(tmp_path, capsys):
    out = tmp_path / "rnn.json"
    status = _load_bench_script("rnn_compare").main(["--dry-run", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert status == 0, [row["check"] for row in rows]  # every provider ran and matched the reference
    assert {row["provider"] for row in rows} == {"fused", "nn", "reference", "compiled_loop"}
    assert {row["cell"] for row in rows} == {"lstm", "gru"}
    assert {row["dtype"] for row in rows} == {"float32", "bfloat16"}
    assert all(row["ms"] > 0 for row in rows)
    assert "fused" in capsys.readouterr().out
