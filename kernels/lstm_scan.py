"""A fused LSTM layer over `[B, L]` sequences with resets inside them: the forward over all L steps in one launch,
the backward in one reverse-time launch plus one GEMM for dW_hh.

Semantics: `lstm_scan_reference` (rnn_reference.py), the LSTM core's step (`rnn_cells.lstm_cell`) over the
sequence. How the kernels are tiled: rnn_common.py. The forward saves what the backward needs instead of
recomputing it: the activated gates i, f, g, o (`acts [B, L, 4H]`) and the cell states `c_seq [B, L, H]`,
float32. Recomputing them would add the recurrent GEMM again to every backward step, the one part of the backward
that cannot overlap.

Inputs may be float32 or bfloat16 (gates_x, w_hh); the GEMM accumulates in float32 and the state is float32.
float64 inputs run in float64 (for gradcheck under the interpreter).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from recurrent_ppo.kernels.rnn_common import (INTERPRETING, Tile, backprop_gate, check_scan_inputs, dot, dot_options,
                                              grad_or_zeros, kept_previous_states, launch, load_keep, program_rows,
                                              recurrent_operands, recurrent_weight_grad, register_op, scan_tile,
                                              state_before, state_dtype, tanh, use_reference, wrap_triton)
from recurrent_ppo.kernels.rnn_reference import lstm_scan_reference

__all__ = ["lstm_scan", "lstm_scan_backward", "lstm_scan_forward", "lstm_scan_reference"]


@triton.jit
def _lstm_forward_kernel(
    gates_x_ptr, w_hh_ptr, h0_ptr, c0_ptr, keep_ptr,  # [B, L, 4H], [4H, H], [B, H], [B, H], [B, L]
    h_seq_ptr, c_seq_ptr, acts_ptr, h_n_ptr, c_n_ptr,  # [B, L, H], [B, L, H], [B, L, 4H], [B, H], [B, H]
    batch, seq_len, hidden,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    state: tl.constexpr = h_seq_ptr.dtype.element_ty
    gate_rows = hidden * hidden  # W_hh elements per gate
    rows, row_mask = program_rows(batch, BLOCK_B)  # [BB]
    for t in range(seq_len):
        keep = load_keep(keep_ptr, rows, row_mask, seq_len, t, state)  # [BB, 1]
        step = (rows * seq_len + t)[:, None]  # [BB, 1], the (b, t) row of [B, L, ...] tensors
        h_prev = state_before(h0_ptr, h_seq_ptr, rows, t, seq_len, hidden)
        c_prev = state_before(c0_ptr, c_seq_ptr, rows, t, seq_len, hidden)
        for n0 in range(0, hidden, BLOCK_H):
            cols = n0 + tl.arange(0, BLOCK_H)
            mask = row_mask[:, None] & (cols < hidden)[None, :]  # [BB, BH]
            acc_i = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            acc_f = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            acc_g = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            acc_o = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            for k0 in range(0, hidden, BLOCK_K):  # one h tile feeds the four gates' dots
                a, w, w_mask = recurrent_operands(h_prev, keep, row_mask, w_hh_ptr, k0, cols, hidden, BLOCK_K)
                acc_i = dot(acc_i, a, tl.load(w, mask=w_mask, other=0.0), IEEE, UPCAST)
                acc_f = dot(acc_f, a, tl.load(w + gate_rows, mask=w_mask, other=0.0), IEEE, UPCAST)
                acc_g = dot(acc_g, a, tl.load(w + 2 * gate_rows, mask=w_mask, other=0.0), IEEE, UPCAST)
                acc_o = dot(acc_o, a, tl.load(w + 3 * gate_rows, mask=w_mask, other=0.0), IEEE, UPCAST)
            x = gates_x_ptr + step * (4 * hidden) + cols[None, :]
            i = tl.sigmoid(tl.load(x, mask=mask, other=0.0).to(state) + acc_i)
            f = tl.sigmoid(tl.load(x + hidden, mask=mask, other=0.0).to(state) + acc_f)
            g = tanh(tl.load(x + 2 * hidden, mask=mask, other=0.0).to(state) + acc_g)
            o = tl.sigmoid(tl.load(x + 3 * hidden, mask=mask, other=0.0).to(state) + acc_o)
            c = f * tl.load(c_prev + cols[None, :], mask=mask, other=0.0) * keep + i * g
            h = o * tanh(c)
            out = step * hidden + cols[None, :]
            tl.store(h_seq_ptr + out, h, mask=mask)
            tl.store(c_seq_ptr + out, c, mask=mask)
            act = acts_ptr + step * (4 * hidden) + cols[None, :]
            tl.store(act, i, mask=mask)
            tl.store(act + hidden, f, mask=mask)
            tl.store(act + 2 * hidden, g, mask=mask)
            tl.store(act + 3 * hidden, o, mask=mask)
            if t == seq_len - 1:
                tl.store(h_n_ptr + rows[:, None] * hidden + cols[None, :], h, mask=mask)
                tl.store(c_n_ptr + rows[:, None] * hidden + cols[None, :], c, mask=mask)
        tl.debug_barrier()  # the next step reads this step's h and c, stored by other threads


@triton.jit
def _lstm_backward_kernel(
    w_hh_ptr, c0_ptr, keep_ptr, c_seq_ptr, acts_ptr, dh_seq_ptr,  # [4H, H], [B, H], [B, L], [B, L, H], [B, L, 4H], ..
    d_gates_ptr, dh_ptr, dc_ptr,  # [B, L, 4H] out; [B, H] each: dh_n, dc_n in, the carry, dh0, dc0 out
    batch, seq_len, hidden,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    state: tl.constexpr = dh_ptr.dtype.element_ty
    rows, row_mask = program_rows(batch, BLOCK_B)  # [BB]
    carry = rows[:, None] * hidden  # [BB, 1], rows of dh, dc
    for s in range(seq_len):
        t = seq_len - 1 - s
        keep = load_keep(keep_ptr, rows, row_mask, seq_len, t, state)  # [BB, 1]
        step = (rows * seq_len + t)[:, None]
        c_prev = state_before(c0_ptr, c_seq_ptr, rows, t, seq_len, hidden)
        d_rows = d_gates_ptr + step * (4 * hidden)
        # Through the cell, tile by tile: dh, dc carried from step t + 1 -> d(gates)_t, and dc_{t-1} in place.
        for n0 in range(0, hidden, BLOCK_H):
            cols = n0 + tl.arange(0, BLOCK_H)
            mask = row_mask[:, None] & (cols < hidden)[None, :]  # [BB, BH]
            act = acts_ptr + step * (4 * hidden) + cols[None, :]
            i = tl.load(act, mask=mask, other=0.0)
            f = tl.load(act + hidden, mask=mask, other=0.0)
            g = tl.load(act + 2 * hidden, mask=mask, other=0.0)
            o = tl.load(act + 3 * hidden, mask=mask, other=0.0)
            tanh_c = tanh(tl.load(c_seq_ptr + step * hidden + cols[None, :], mask=mask, other=0.0))
            carried = carry + cols[None, :]
            dh = tl.load(dh_seq_ptr + step * hidden + cols[None, :], mask=mask, other=0.0) + \
                tl.load(dh_ptr + carried, mask=mask, other=0.0)
            dc = tl.load(dc_ptr + carried, mask=mask, other=0.0) + dh * o * (1.0 - tanh_c * tanh_c)
            c_kept = tl.load(c_prev + cols[None, :], mask=mask, other=0.0) * keep
            d = d_rows + cols[None, :]
            tl.store(d, dc * g * i * (1.0 - i), mask=mask)
            tl.store(d + hidden, dc * c_kept * f * (1.0 - f), mask=mask)
            tl.store(d + 2 * hidden, dc * i * (1.0 - g * g), mask=mask)
            tl.store(d + 3 * hidden, dh * tanh_c * o * (1.0 - o), mask=mask)
            tl.store(dc_ptr + carried, dc * f * keep, mask=mask)
        tl.debug_barrier()  # d(gates)_t is read whole below; dh is overwritten only after every tile read it
        # Through the recurrent GEMM: dh_{t-1} = keep_t * d(gates)_t @ W_hh, output tile by output tile.
        for m0 in range(0, hidden, BLOCK_H):
            cols = m0 + tl.arange(0, BLOCK_H)
            acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            for gate in range(4):
                acc = backprop_gate(acc, d_rows + gate * hidden, row_mask, w_hh_ptr, gate, cols, hidden, BLOCK_K,
                                    IEEE, UPCAST)
            tl.store(dh_ptr + carry + cols[None, :], acc * keep, mask=row_mask[:, None] & (cols < hidden)[None, :])
        tl.debug_barrier()  # the next (earlier) step reads dh whole


def lstm_scan_forward(gates_x: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                      keep: torch.Tensor, *, tf32: bool = False, tile: Tile | None = None, empty=torch.empty,
                      wrap=lambda kernel: kernel) -> tuple[torch.Tensor, ...]:
    """Launch the forward kernel. Returns `(h_seq, h_n, c_n, c_seq, acts)`: [B, L, H], [B, H], [B, H], and what
    the backward reads, [B, L, H] and [B, L, 4H]; all in the state dtype. `empty` allocates the outputs (tests
    pass one that fills NaN); `tile` overrides `scan_tile`'s."""
    batch, seq_len, _ = gates_x.shape
    hidden = w_hh.shape[1]
    dtype = state_dtype(gates_x)
    new = lambda *shape: empty(shape, dtype=dtype, device=gates_x.device)  # noqa: E731
    h_seq, c_seq, acts = new(batch, seq_len, hidden), new(batch, seq_len, hidden), new(batch, seq_len, 4 * hidden)
    h_n, c_n = new(batch, hidden), new(batch, hidden)
    tile = tile or scan_tile(batch, hidden, w_hh.dtype)
    launch(_lstm_forward_kernel, tile, batch, wrap,
           gates_x.contiguous(), w_hh.contiguous(), h0.to(dtype).contiguous(), c0.to(dtype).contiguous(),
           keep.contiguous(), h_seq, c_seq, acts, h_n, c_n, batch, seq_len, hidden,
           **dot_options(w_hh, tf32))
    return h_seq, h_n, c_n, c_seq, acts


def lstm_scan_backward(dh_seq: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor, w_hh: torch.Tensor,
                       h0: torch.Tensor, c0: torch.Tensor, keep: torch.Tensor, h_seq: torch.Tensor,
                       c_seq: torch.Tensor, acts: torch.Tensor, gates_dtype: torch.dtype, *, tf32: bool = False,
                       tile: Tile | None = None, empty=torch.empty, wrap=lambda kernel: kernel
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernel, then reduce dW_hh. Takes the gradients of h_seq, h_n, c_n and the forward's
    saved tensors; returns the gradients of `(gates_x, w_hh, h0, c0)` in their dtypes."""
    batch, seq_len, hidden = h_seq.shape
    dtype = h_seq.dtype
    d_gates = empty((batch, seq_len, 4 * hidden), dtype=gates_dtype, device=h_seq.device)
    # dh and dc carry the gradient from step to step inside the kernel: they start as dh_n, dc_n, end as dh0, dc0.
    dh = empty((batch, hidden), dtype=dtype, device=h_seq.device).copy_(dh_n)
    dc = empty((batch, hidden), dtype=dtype, device=h_seq.device).copy_(dc_n)
    tile = tile or scan_tile(batch, hidden, w_hh.dtype)
    launch(_lstm_backward_kernel, tile, batch, wrap,
           w_hh.contiguous(), c0.to(dtype).contiguous(), keep.contiguous(), c_seq, acts,
           dh_seq.to(dtype).contiguous(), d_gates, dh, dc, batch, seq_len, hidden,
           **dot_options(w_hh, tf32))
    d_w_hh = recurrent_weight_grad(d_gates, kept_previous_states(h0, h_seq, keep)).to(w_hh.dtype)
    return d_gates, d_w_hh, dh.to(h0.dtype), dc.to(c0.dtype)


@register_op("recurrent_ppo::lstm_scan_forward", mutates_args=())
def _lstm_scan_forward_op(gates_x: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                          keep: torch.Tensor, tf32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor, torch.Tensor]:
    return lstm_scan_forward(gates_x, w_hh, h0, c0, keep, tf32=tf32, wrap=wrap_triton)


@register_op("recurrent_ppo::lstm_scan_backward", mutates_args=())
def _lstm_scan_backward_op(dh_seq: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor, w_hh: torch.Tensor,
                           h0: torch.Tensor, c0: torch.Tensor, keep: torch.Tensor, h_seq: torch.Tensor,
                           c_seq: torch.Tensor, acts: torch.Tensor, gates_dtype: torch.dtype, tf32: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return lstm_scan_backward(dh_seq, dh_n, dc_n, w_hh, h0, c0, keep, h_seq, c_seq, acts, gates_dtype, tf32=tf32,
                              wrap=wrap_triton)


if INTERPRETING:

    @_lstm_scan_forward_op.register_fake
    def _(gates_x, w_hh, h0, c0, keep, tf32):
        batch, seq_len, width = gates_x.shape
        new = lambda *shape: gates_x.new_empty(shape, dtype=state_dtype(gates_x))  # noqa: E731
        hidden = width // 4
        return (new(batch, seq_len, hidden), new(batch, hidden), new(batch, hidden), new(batch, seq_len, hidden),
                new(batch, seq_len, width))

    @_lstm_scan_backward_op.register_fake
    def _(dh_seq, dh_n, dc_n, w_hh, h0, c0, keep, h_seq, c_seq, acts, gates_dtype, tf32):
        return acts.new_empty(acts.shape, dtype=gates_dtype), torch.empty_like(w_hh), torch.empty_like(h0), \
            torch.empty_like(c0)


def _setup_context(ctx, inputs, output):
    gates_x, w_hh, h0, c0, keep, tf32 = inputs
    h_seq, _, _, c_seq, acts = output
    ctx.mark_non_differentiable(c_seq, acts)
    ctx.set_materialize_grads(False)  # so the unused gradients of c_seq and acts are None, not zeros to fill
    ctx.save_for_backward(w_hh, h0, c0, keep, h_seq, c_seq, acts)
    ctx.gates_dtype, ctx.tf32 = gates_x.dtype, tf32


def _backward(ctx, dh_seq, dh_n, dc_n, _dc_seq, _acts):
    w_hh, h0, c0, keep, h_seq, c_seq, acts = ctx.saved_tensors
    grads = torch.ops.recurrent_ppo.lstm_scan_backward(
        grad_or_zeros(dh_seq, h_seq, h_seq.dtype), grad_or_zeros(dh_n, h0, h_seq.dtype),
        grad_or_zeros(dc_n, c0, h_seq.dtype), w_hh, h0, c0, keep, h_seq, c_seq, acts, ctx.gates_dtype, ctx.tf32)
    return *grads, None, None


_lstm_scan_forward_op.register_autograd(_backward, setup_context=_setup_context)


def lstm_scan(
    gates_x: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    keep: torch.Tensor,
    *,
    kernel: str = "auto",
    tf32: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM layer over a sequence, the state reset where `keep` is 0.

    gates_x [B, L, 4H]: the input projection of every step, both biases folded in (gate order i, f, g, o);
    w_hh [4H, H]; h0, c0 [B, H]; keep [B, L], bool or float (1 - episode_starts). gates_x and w_hh may be
    float32 or bfloat16. Returns `h_seq [B, L, H]` and `(h_n, c_n)`, float32 (float64 for float64 inputs).

    kernel: "triton" (the fused kernels; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1), "reference"
    (the per-step loop), or "auto": triton on CUDA, the reference elsewhere. tf32: fp32 GEMMs on TF32 tensor
    cores (faster, about 1e-3 relative error) instead of exact fp32. Differentiable in every tensor input but
    keep, once (no double backward).
    """
    check_scan_inputs("lstm_scan", 4, gates_x, w_hh, keep, h0=h0, c0=c0)
    if use_reference("lstm_scan", kernel, gates_x):
        return lstm_scan_reference(gates_x, w_hh, h0, c0, keep)
    h_seq, h_n, c_n, _, _ = torch.ops.recurrent_ppo.lstm_scan_forward(gates_x, w_hh, h0, c0, keep, tf32)
    return h_seq, (h_n, c_n)
