"""One LSTM or GRU layer, forward + backward, with resets inside the sequences: the fused scans against the
per-step reference compiled by inductor and against cuDNN without resets.

    python bench/rnn_compare.py --out rnn_compare.json [--sweep]       # on a GPU
    TRITON_INTERPRET=1 python bench/rnn_compare.py --dry-run --out /tmp/rnn.json  # CPU smoke test, tiny sizes

Each step is x [B, L, H] -> input projection -> the recurrence -> backward from a random d(h_seq) to x, the
weights and h0 (c0), 2% of the steps starting an episode. Providers:
    fused          lstm_scan / gru_scan on the Triton kernels, exact fp32 GEMMs (or bf16 ones)
    fused_tf32     the same with fp32 GEMMs on TF32 tensor cores (fp32 only)
    reference      the reference's per-step loop, eager (what runs without compile)
    compiled_loop  the same loop under torch.compile(fullgraph=True), unrolled over L
    nn             nn.LSTM / nn.GRU (cuDNN on a GPU) with no resets: it cannot reset inside a sequence, so it is
                   the speed to reach, not the same function (cuDNN uses TF32 in fp32 unless told otherwise)
Sizes: H = 256, (B, L) = (2048, 16) and (512, 64); fp32 and bf16 weights and inputs. Every provider is checked
against the eager reference (float64 for the checks' oracle) before it is timed, and a failed check is reported
instead of a time. Times are triton.testing.do_bench medians on CUDA; the first call's seconds (compilation, JIT)
and the peak memory of a call are recorded too. `--sweep` also times the fused launchers over a few tiles at
each size (the op uses `scan_tile`'s). The JSON at --out is rewritten after every row, so a run cut short keeps
what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).parent)]
import machine  # noqa: E402

from recurrent_ppo.kernels.gru_scan import gru_scan, gru_scan_backward, gru_scan_forward  # noqa: E402
from recurrent_ppo.kernels.lstm_scan import lstm_scan, lstm_scan_backward, lstm_scan_forward  # noqa: E402
from recurrent_ppo.kernels.rnn_common import Tile, scan_tile  # noqa: E402

HIDDEN, SIZES = 256, ((2048, 16), (512, 64))
DRY_HIDDEN, DRY_SIZES = 16, ((4, 3),)
RESET_PROB = 0.02
PROVIDERS = ("fused", "fused_tf32", "nn", "reference", "compiled_loop")  # compiled_loop last: its compile is long
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Checked against the float64 oracle, relative to each tensor's largest magnitude: exact fp32 paths differ only
# in summation order; TF32 and bf16 round GEMM operands to 10 and 7 stored mantissa bits (about 1% seen in the
# CPU tests at L = 16); cuDNN rounds in its own way, so its check only says it is the same layer.
TOLERANCE = {"exact": 1e-4, "rounded": 5e-2, "nn": 1e-1}
SWEEP_TILES = (Tile(16, 64, 32, 4, 2), Tile(16, 64, 64, 4, 2), Tile(16, 32, 32, 4, 2), Tile(16, 128, 32, 8, 2),
               Tile(32, 64, 32, 4, 2), Tile(32, 64, 64, 8, 2), Tile(64, 64, 32, 8, 2), Tile(16, 64, 32, 4, 3))


class Layer:
    """One layer's weights (an nn.LSTM / nn.GRU, so every provider computes with the same ones) and a batch."""

    def __init__(self, cell: str, batch: int, seq_len: int, hidden: int, dtype: torch.dtype, device: torch.device):
        torch.manual_seed(0)
        self.cell, self.dtype = cell, dtype
        module = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        self.module = module(hidden, hidden, batch_first=True).to(device=device, dtype=dtype)
        self.x = torch.randn(batch, seq_len, hidden, device=device, dtype=dtype, requires_grad=True)
        self.states = [torch.randn(batch, hidden, device=device, requires_grad=True)
                       for _ in range(2 if cell == "lstm" else 1)]
        self.keep = torch.rand(batch, seq_len, device=device) >= RESET_PROB
        self.d_h_seq = torch.randn(batch, seq_len, hidden, device=device)
        self.params = list(self.module.parameters())  # w_ih, w_hh, b_ih, b_hh

    def leaves(self) -> list[torch.Tensor]:
        return [self.x, *self.params, *self.states]

    def scan(self, kernel: str, keep: torch.Tensor, tf32: bool = False, x=None, params=None, states=None):
        """h_seq of our layer: the input projection, then lstm_scan / gru_scan (the fused kernels or the loop)."""
        x, (w_ih, w_hh, b_ih, b_hh) = self.x if x is None else x, self.params if params is None else params
        states = self.states if states is None else states
        if self.cell == "lstm":
            return lstm_scan(F.linear(x, w_ih, b_ih + b_hh), w_hh, *states, keep, kernel=kernel, tf32=tf32)[0]
        return gru_scan(F.linear(x, w_ih, b_ih), w_hh, b_hh, *states, keep, kernel=kernel, tf32=tf32)[0]

    def nn(self) -> torch.Tensor:
        states = tuple(s.to(self.dtype)[None] for s in self.states)
        return self.module(self.x, states if self.cell == "lstm" else states[0])[0]

    def backward(self, h_seq: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad(h_seq, self.leaves(), self.d_h_seq.to(h_seq.dtype)))

    def oracle(self, keep: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves = [leaf.detach().double().requires_grad_() for leaf in self.leaves()]
        x, params, states = leaves[0], leaves[1:5], leaves[5:]
        h_seq = self.scan("reference", keep, x=x, params=params, states=states)
        return h_seq, list(torch.autograd.grad(h_seq, leaves, self.d_h_seq.double()))


def provider_fn(layer: Layer, provider: str, compile_backend: str) -> Callable[[], list]:
    """A forward + backward step returning [h_seq, *grads] (nn's without resets, the others with layer.keep)."""
    if provider in ("fused", "fused_tf32"):
        tf32 = provider == "fused_tf32"
        return lambda: [h := layer.scan("triton", layer.keep, tf32), *layer.backward(h)]
    if provider == "reference":
        return lambda: [h := layer.scan("reference", layer.keep), *layer.backward(h)]
    if provider == "compiled_loop":
        torch._dynamo.reset()  # every configuration compiles afresh: no recompile limit, no cache hits
        forward = torch.compile(lambda keep: layer.scan("reference", keep), fullgraph=True, dynamic=False,
                                backend=compile_backend)
        return lambda: [h := forward(layer.keep), *layer.backward(h)]
    if provider == "nn":
        return lambda: [h := layer.nn(), *layer.backward(h)]
    raise ValueError(f"unknown provider {provider!r}")


def tolerance(provider: str, dtype: torch.dtype) -> float:
    if provider == "nn":
        return TOLERANCE["nn"]
    return TOLERANCE["exact" if dtype == torch.float32 and provider != "fused_tf32" else "rounded"]


def check(result: list[torch.Tensor], expected: tuple[torch.Tensor, list[torch.Tensor]], tol: float) -> dict:
    """The largest error of any output or gradient, relative to that tensor's largest magnitude, and the verdict:
    'ok', or which tensor is off by more than `tol`."""
    names = ["h_seq", "dx", "dw_ih", "dw_hh", "db_ih", "db_hh", "dh0", "dc0"]
    errors = {}
    for name, got, want in zip(names, result, [expected[0], *expected[1]]):
        error = (got.double() - want).abs().max().item() / (want.abs().max().item() or 1.0)
        errors[name] = error if math.isfinite(error) else math.inf
    worst = max(errors, key=errors.get)
    verdict = "ok" if errors[worst] <= tol else f"{worst} off by {errors[worst]:.2e} of its scale (tolerance {tol:.0e})"
    return {"check": verdict, "max_error": errors[worst], "max_error_in": worst}


def measure(fn: Callable[[], list], expected, tol: float, device: torch.device, dry_run: bool) -> dict:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()  # compiles or JITs
    if device.type == "cuda":
        torch.cuda.synchronize()
    row = {"first_call_s": time.perf_counter() - start, **check(result, expected, tol), "peak_memory_mb": None}
    del result
    if device.type == "cuda":  # of a warm call: what a training step holds, the benchmark's inputs included
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if row["check"] != "ok":
        row["ms"] = None
    elif dry_run:  # the first call stands for the timing: a dry run checks that everything runs
        row["ms"] = 1e3 * row["first_call_s"]
    else:
        import triton.testing

        row["ms"] = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    return row


def sweep_fn(layer: Layer, tile: Tile) -> Callable[[], list]:
    """What `fused` computes, through the launchers at `tile` instead of the op (no autograd): the input
    projection's gradients formed from d(gates_x) by hand. Returns [h_seq, *grads] as provider_fn's do."""
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in layer.params)
    x, states = layer.x.detach(), [s.detach() for s in layer.states]
    d_h_n = torch.zeros_like(states[0])

    def projection_grads(d_gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = d_gates.shape[0] * d_gates.shape[1]
        d_flat = d_gates.reshape(rows, -1)
        return (d_gates @ w_ih, d_flat.t() @ x.reshape(rows, -1), d_flat.sum(0, dtype=torch.float32).to(x.dtype))

    def step() -> list[torch.Tensor]:
        if layer.cell == "lstm":
            h_seq, _, _, c_seq, acts = lstm_scan_forward(F.linear(x, w_ih, b_ih + b_hh), w_hh, *states, layer.keep,
                                                         tile=tile)
            d_gates, d_w_hh, *d_states = lstm_scan_backward(layer.d_h_seq, d_h_n, d_h_n, w_hh, *states, layer.keep,
                                                            h_seq, c_seq, acts, x.dtype, tile=tile)
            dx, d_w_ih, d_b = projection_grads(d_gates)
            return [h_seq, dx, d_w_ih, d_w_hh, d_b, d_b, *d_states]
        h_seq, _, acts = gru_scan_forward(F.linear(x, w_ih, b_ih), w_hh, b_hh, *states, layer.keep, tile=tile)
        d_gates, d_w_hh, d_b_hh, d_h0 = gru_scan_backward(layer.d_h_seq, d_h_n, w_hh, b_hh, *states, layer.keep,
                                                          h_seq, acts, x.dtype, tile=tile)
        dx, d_w_ih, d_b_ih = projection_grads(d_gates)
        return [h_seq, dx, d_w_ih, d_w_hh, d_b_ih, d_b_hh, d_h0]

    return step


def print_header() -> None:
    print(f"{'cell':<5} {'dtype':<9} {'B':>5} {'L':>3} {'provider':<14} {'tile':<18} {'ms':>9} {'first s':>8} "
          f"{'peak MB':>8}  check")


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        ms = f"{r['ms']:9.3f}" if r["ms"] is not None else f"{'-':>9}"
        mem = f"{r['peak_memory_mb']:8.0f}" if r["peak_memory_mb"] is not None else f"{'-':>8}"
        tile = "" if r["tile"] is None else "x".join(map(str, r["tile"]))
        print(f"{r['cell']:<5} {r['dtype']:<9} {r['batch']:>5} {r['seq_len']:>3} {r['provider']:<14} {tile:<18} "
              f"{ms} {r['first_call_s']:8.2f} {mem}  {r['check']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON written here (rewritten after every row)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes, the first call timed, aot_eager for compiled_loop: a smoke test (on CPU "
                             "with TRITON_INTERPRET=1 for the fused provider)")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--sizes", default=None, help="BxL,BxL (default 2048x16,512x64; dry run 4x3)")
    parser.add_argument("--hidden", type=int, default=None, help=f"default {HIDDEN} ({DRY_HIDDEN} dry run)")
    parser.add_argument("--compile-backend", default=None, help="compiled_loop's (inductor; aot_eager dry run)")
    parser.add_argument("--sweep", action="store_true", help="also time the fused launchers at SWEEP_TILES")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.dry_run:
        raise SystemExit("rnn_compare: no GPU; run with --dry-run for the CPU smoke test")
    sizes = (tuple(tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")) if args.sizes
             else DRY_SIZES if args.dry_run else SIZES)
    hidden = args.hidden or (DRY_HIDDEN if args.dry_run else HIDDEN)
    backend = args.compile_backend or ("aot_eager" if args.dry_run else "inductor")
    providers = [p for p in args.providers.split(",") if p != "fused_tf32" or device.type == "cuda"]
    rows: list[dict] = []
    info = {"machine": machine.machine_info(), "hidden": hidden, "reset_prob": RESET_PROB, "dry_run": args.dry_run,
            "compile_backend": backend, "rows": rows}

    def record(layer: Layer, provider: str, tile: Tile | None, result: dict) -> None:
        batch, seq_len = layer.keep.shape
        rows.append({"cell": layer.cell, "dtype": str(layer.dtype).removeprefix("torch."), "batch": batch,
                     "seq_len": seq_len, "hidden": hidden, "provider": provider,
                     "tile": None if tile is None else list(tile), **result})
        args.out.write_text(json.dumps(info, indent=1))
        print_rows(rows[-1:])

    def run(layer: Layer, provider: str, make_fn: Callable[[], Callable[[], list]], keep: torch.Tensor,
            tile: Tile | None) -> None:
        try:
            resets = bool((~keep).any())
            if resets not in oracles:
                oracles[resets] = layer.oracle(keep)
            result = measure(make_fn(), oracles[resets], tolerance(provider, layer.dtype), device, args.dry_run)
        except Exception as error:  # a provider that fails to run is reported, the others still run
            result = {"first_call_s": 0.0, "check": f"error: {type(error).__name__}: {error}"[:300],
                      "peak_memory_mb": None, "ms": None}
        record(layer, provider, tile, result)

    # The providers that compile in seconds run at every size first; compiled_loop's compiles (minutes at L = 64)
    # come last, so a run cut short by a time limit has everything else.
    groups = [[p for p in providers if p != "compiled_loop"], [p for p in providers if p == "compiled_loop"]]
    print_header()
    for group in groups:
        for batch, seq_len in sizes if group else ():
            for cell in args.cells.split(","):
                for dtype_name in args.dtypes.split(","):
                    dtype = DTYPES[dtype_name]
                    layer = Layer(cell, batch, seq_len, hidden, dtype, device)
                    oracles = {}  # by whether keep resets (nn's does not)
                    for provider in group:
                        tile = scan_tile(batch, hidden, dtype) if provider.startswith("fused") else None
                        keep = torch.ones_like(layer.keep) if provider == "nn" else layer.keep
                        run(layer, provider, lambda: provider_fn(layer, provider, backend), keep, tile)
                    for tile in SWEEP_TILES if args.sweep and "fused" in group else ():
                        run(layer, "fused_launch", lambda: sweep_fn(layer, tile), layer.keep, tile)
    print(f"\nwrote {args.out}")
    return 0 if all(r["check"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
