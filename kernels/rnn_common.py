"""What the fused LSTM and GRU scans (lstm_scan.py, gru_scan.py) share: the Triton helpers their kernels call, the
tile a launch uses, input checks, the op registration switch, and the recurrent weight's gradient.

Both kernels have one design. A program owns BLOCK_B batch rows and walks time in one launch. Each step's
recurrent GEMM `[BLOCK_B, H] x [H, G*H]` is tiled BLOCK_H output units by BLOCK_K inputs: the previous h is read
back from global memory (its own h_seq row, written the step before, so L1/L2-resident), and W_hh tiles are
reloaded from L2 every step, so registers and shared memory hold one tile at a time whatever H is. A CTA barrier
ends each step, because the next step reads what other threads of the program stored. The backward walks time in
reverse the same way and writes d(gates). dW_hh is then one GEMM over all B*L rows (`recurrent_weight_grad`),
rather than per-program partial sums or atomics inside the kernel: d(gates) must be written anyway (it is
d(gates_x)), so the reduction adds no traffic to the kernel and runs at cuBLAS speed, where atomics would add
L * G*H * H of them per program.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRETING", "Tile", "backprop_gate", "check_scan_inputs", "dot", "dot_options", "grad_or_zeros",
           "kept_previous_states", "launch", "load_keep", "program_rows", "recurrent_operands", "recurrent_weight_grad",
           "register_op", "scan_tile", "state_before", "state_dtype", "tanh", "use_reference", "wrap_triton"]

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"

# On CUDA a triton_op, which torch.compile traces into (inductor sees the kernels; CUDA graphs capture them). Under
# TRITON_INTERPRET=1 the kernels are Python functions that cannot run on compile's fake tensors, so there the ops
# are opaque custom ops with fake implementations (as in gae.py).
register_op = torch.library.custom_op if INTERPRETING else torch.library.triton_op
wrap_triton = (lambda kernel: kernel) if INTERPRETING else torch.library.wrap_triton


@triton.jit
def tanh(x):
    # Triton has no tanh outside libdevice, which the interpreter cannot run; exp of a non-positive argument
    # cannot overflow, and the absolute error stays at an ulp of 1.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def program_rows(batch, BLOCK_B: tl.constexpr):
    """This program's batch rows (int64, for offsets into [B, L, ...] tensors) and which of them exist."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)  # [BB]
    return rows.to(tl.int64), rows < batch


@triton.jit
def load_keep(keep_ptr, rows, row_mask, seq_len, t, dtype: tl.constexpr):
    """keep[rows, t] as a [BLOCK_B, 1] column of `dtype` (keep may be bool or float)."""
    return tl.load(keep_ptr + rows * seq_len + t, mask=row_mask, other=0).to(dtype)[:, None]


@triton.jit
def state_before(initial_ptr, seq_ptr, rows, t, seq_len, hidden):
    """Row pointers [BLOCK_B, 1] to the state before step t: the initial state at t = 0, else step t - 1 of the
    sequence output. Both must have the state dtype (the launchers cast h0, c0)."""
    if t == 0:
        ptrs = initial_ptr + rows[:, None] * hidden
    else:
        ptrs = seq_ptr + (rows * seq_len + t - 1)[:, None] * hidden
    return ptrs


@triton.jit
def dot(acc, a, w, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ w, accumulated in acc's dtype (fp32, or fp64 for fp64 operands)."""
    if UPCAST:  # the interpreter multiplies bf16 bit patterns (it stores bf16 as uint16): exact fp32 products instead
        a, w = a.to(tl.float32), w.to(tl.float32)
    if IEEE:
        acc = tl.dot(a, w, acc, input_precision="ieee")
    else:  # TF32 for fp32 operands, the operands' own type otherwise
        acc = tl.dot(a, w, acc)
    return acc


@triton.jit
def recurrent_operands(h_prev, keep, row_mask, w_ptr, k0, cols, hidden, BLOCK_K: tl.constexpr):
    """One K tile of the recurrent GEMM (h * keep) @ W^T for the output units `cols`: the h tile [BLOCK_B, BLOCK_K]
    in W's dtype, and the pointers and mask of gate 0's W^T tile [BLOCK_K, BLOCK_H] (gate q's: + q * H * H)."""
    ks = k0 + tl.arange(0, BLOCK_K)
    k_mask = ks < hidden
    a = tl.load(h_prev + ks[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0) * keep
    w_mask = k_mask[:, None] & (cols < hidden)[None, :]
    return a.to(w_ptr.dtype.element_ty), w_ptr + cols[None, :] * hidden + ks[:, None], w_mask


@triton.jit
def backprop_gate(acc, d_rows, row_mask, w_ptr, gate, cols, hidden, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
                  UPCAST: tl.constexpr):
    """acc + d @ W[gate * H : (gate + 1) * H, cols]: what one gate's pre-activation gradients d ([BLOCK_B, H] at
    row pointers d_rows, stored this step) send back to columns `cols` of the previous h."""
    for k0 in range(0, hidden, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < hidden
        d = tl.load(d_rows + ks[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptr + (gate * hidden + ks)[:, None] * hidden + cols[None, :],
                    mask=k_mask[:, None] & (cols < hidden)[None, :], other=0.0)
        acc = dot(acc, d.to(w.dtype), w, IEEE, UPCAST)
    return acc


class Tile(NamedTuple):
    """How a scan launch is cut: batch rows per program, hidden units per output tile, inputs per K tile
    (each at least 16, tl.dot's minimum), and Triton's launch options."""

    block_b: int
    block_h: int
    block_k: int
    num_warps: int
    num_stages: int


def scan_tile(batch: int, hidden: int, dtype: torch.dtype) -> Tile:
    """The tile a scan launches with. On a GPU an unmeasured first guess: 16 rows per program so B = 2048 fills
    an H100's SMs, 64-unit output tiles (4 gate tiles of [BLOCK_K, 64] in shared memory at once), and K tiles of
    32 fp32 or 64 bf16 values (128 bytes a row); bench/rnn_compare.py --sweep measures alternatives. Under the
    interpreter, whose cost is per operation more than per element: one tile as large as the sizes need, up to
    64 x 128 (tests that cross tile and program boundaries pass small tiles to the launchers)."""
    if INTERPRETING:
        units = min(128, max(16, triton.next_power_of_2(hidden)))
        return Tile(min(64, max(16, triton.next_power_of_2(batch))), units, units, 1, 1)
    block_h = min(64, max(16, triton.next_power_of_2(hidden)))
    block_k = min(32 if dtype.itemsize >= 4 else 64, block_h)
    return Tile(16, block_h, block_k, 4, 2)


@functools.cache
def _tiled(kernel, tile: Tile):
    # One config, launched untimed: the autotuner carries num_warps/num_stages in a form torch.compile traces.
    config = triton.Config({"BLOCK_B": tile.block_b, "BLOCK_H": tile.block_h, "BLOCK_K": tile.block_k},
                           num_warps=tile.num_warps, num_stages=tile.num_stages)
    return triton.autotune(configs=[config], key=["hidden"])(kernel)


def launch(kernel, tile: Tile, batch: int, wrap, *args, **constexprs) -> None:
    """Run `kernel` over cdiv(batch, BLOCK_B) programs with `tile`."""
    grid = lambda meta: (triton.cdiv(batch, meta["BLOCK_B"]),)  # noqa: E731
    wrap(_tiled(kernel, tile))[grid](*args, **constexprs)


def state_dtype(gates_x: torch.Tensor) -> torch.dtype:
    """The dtype of the recurrent state and the outputs: float32, or float64 for float64 inputs (an oracle and
    gradcheck run in float64)."""
    return torch.float64 if gates_x.dtype == torch.float64 else torch.float32


def dot_options(w_hh: torch.Tensor, tf32: bool) -> dict[str, bool]:
    """The kernels' tl.dot constexprs: IEEE, exact products for fp32 (unless TF32 tensor cores are asked for) and
    fp64 weights; UPCAST, bf16 operands computed in fp32 under the interpreter (which cannot multiply bf16)."""
    ieee = w_hh.dtype == torch.float64 or (w_hh.dtype == torch.float32 and not tf32)
    return {"IEEE": ieee, "UPCAST": INTERPRETING and w_hh.dtype == torch.bfloat16}


def use_reference(name: str, kernel: str, gates_x: torch.Tensor) -> bool:
    """Whether a scan called with `kernel` ("auto", "triton" or "reference") runs the reference; raises where the
    Triton path cannot run (CPU tensors without the interpreter)."""
    if kernel not in ("auto", "triton", "reference"):
        raise ValueError(f"{name}: kernel must be 'auto', 'triton' or 'reference', got {kernel!r}")
    if kernel == "reference" or (kernel == "auto" and not gates_x.is_cuda):
        return True
    if not gates_x.is_cuda and not INTERPRETING:
        raise RuntimeError(f"{name}: the triton kernel got CPU tensors; use kernel='reference', or set "
                           "TRITON_INTERPRET=1 before import")
    return False


def check_scan_inputs(name: str, gates: int, gates_x: torch.Tensor, w_hh: torch.Tensor, keep: torch.Tensor,
                      **states: torch.Tensor) -> None:
    """Shapes and devices of a scan's inputs: gates_x [B, L, gates*H], w_hh [gates*H, H], keep [B, L], each
    state (h0, c0) [B, H], b_hh (GRU) [gates*H]."""
    if gates_x.dim() != 3 or w_hh.dim() != 2:
        raise ValueError(f"{name}: gates_x must be [B, L, {gates}H] and w_hh [{gates}H, H], got "
                         f"{tuple(gates_x.shape)} and {tuple(w_hh.shape)}")
    batch, seq_len, width = gates_x.shape
    hidden = w_hh.shape[1]
    if w_hh.shape[0] != gates * hidden or width != gates * hidden:
        raise ValueError(f"{name}: w_hh [{gates}H, H] and gates_x [B, L, {gates}H] disagree on H: "
                         f"{tuple(w_hh.shape)}, {tuple(gates_x.shape)}")
    if keep.shape != (batch, seq_len):
        raise ValueError(f"{name}: keep must be [B, L] = {(batch, seq_len)}, got {tuple(keep.shape)}")
    expected = {"b_hh": (gates * hidden,)}
    for state, tensor in states.items():
        if tensor.shape != expected.get(state, (batch, hidden)):
            raise ValueError(f"{name}: {state} must be {expected.get(state, (batch, hidden))}, "
                             f"got {tuple(tensor.shape)}")
    for other, tensor in {"w_hh": w_hh, "keep": keep, **states}.items():
        if tensor.device != gates_x.device:
            raise ValueError(f"{name}: {other} is on {tensor.device}, gates_x on {gates_x.device}")


def grad_or_zeros(grad: torch.Tensor | None, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An output's gradient, or zeros of `like`'s shape where autograd passed None (an output the loss ignored)."""
    return torch.zeros(like.shape, dtype=dtype, device=like.device) if grad is None else grad


def kept_previous_states(h0: torch.Tensor, h_seq: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The h each step's recurrent GEMM read, after its reset: h_{t-1} * keep_t, h0 before step 0."""
    previous = torch.cat([h0.to(h_seq.dtype)[:, None], h_seq[:, :-1]], dim=1)  # [B, L, H]
    return previous * keep.to(h_seq.dtype)[..., None]


def recurrent_weight_grad(d_gates_h: torch.Tensor, h_kept: torch.Tensor) -> torch.Tensor:
    """dW_hh = sum over (b, t) of d(W_hh h)_t^T h_kept_t, one GEMM over all B*L rows (in d_gates_h's dtype, fp32
    accumulation). d_gates_h [B, L, n] may be a slice along the last dim; returns [n, H]."""
    rows = d_gates_h.shape[0] * d_gates_h.shape[1]
    return d_gates_h.reshape(rows, -1).t() @ h_kept.reshape(rows, -1).to(d_gates_h.dtype)
