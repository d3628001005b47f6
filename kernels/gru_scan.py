"""A fused GRU layer over `[B, L]` sequences with resets inside them: the forward over all L steps in one launch,
the backward in one reverse-time launch plus GEMMs for dW_hh and a sum for db_hh.

Semantics: `gru_scan_reference` (rnn_reference.py), the GRU core's step (`rnn_cells.gru_cell`) over the
sequence: nn.GRU's math, gate order r, z, n, with the previous h masked by keep in both the W_hh h term and z * h,
and b_hn inside r * (W_hn h + b_hn) even after a reset. How the kernels are tiled: rnn_common.py. The forward
saves r, z, n and W_hn h + b_hn (`acts [B, L, 4H]`, float32) for the backward instead of recomputing the recurrent
GEMM there.

Inputs may be float32 or bfloat16 (gates_x, w_hh, b_hh); the GEMM accumulates in float32 and the state is
float32. float64 inputs run in float64 (for gradcheck under the interpreter).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from recurrent_ppo.kernels.rnn_common import (INTERPRETING, Tile, backprop_gate, check_scan_inputs, dot, dot_options,
                                              grad_or_zeros, kept_previous_states, launch, load_keep, program_rows,
                                              recurrent_operands, recurrent_weight_grad, register_op, scan_tile,
                                              state_before, state_dtype, tanh, use_reference, wrap_triton)
from recurrent_ppo.kernels.rnn_reference import gru_scan_reference

__all__ = ["gru_scan", "gru_scan_backward", "gru_scan_forward", "gru_scan_reference"]


@triton.jit
def _gru_forward_kernel(
    gates_x_ptr, w_hh_ptr, b_hh_ptr, h0_ptr, keep_ptr,  # [B, L, 3H], [3H, H], [3H], [B, H], [B, L]
    h_seq_ptr, acts_ptr, h_n_ptr,  # [B, L, H], [B, L, 4H], [B, H]
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
        for n0 in range(0, hidden, BLOCK_H):
            cols = n0 + tl.arange(0, BLOCK_H)
            col_mask = cols < hidden
            mask = row_mask[:, None] & col_mask[None, :]  # [BB, BH]
            acc_r = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            acc_z = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            acc_n = tl.zeros([BLOCK_B, BLOCK_H], dtype=state)
            for k0 in range(0, hidden, BLOCK_K):  # one h tile feeds the three gates' dots
                a, w, w_mask = recurrent_operands(h_prev, keep, row_mask, w_hh_ptr, k0, cols, hidden, BLOCK_K)
                acc_r = dot(acc_r, a, tl.load(w, mask=w_mask, other=0.0), IEEE, UPCAST)
                acc_z = dot(acc_z, a, tl.load(w + gate_rows, mask=w_mask, other=0.0), IEEE, UPCAST)
                acc_n = dot(acc_n, a, tl.load(w + 2 * gate_rows, mask=w_mask, other=0.0), IEEE, UPCAST)
            b = b_hh_ptr + cols
            gh_r = acc_r + tl.load(b, mask=col_mask, other=0.0).to(state)[None, :]
            gh_z = acc_z + tl.load(b + hidden, mask=col_mask, other=0.0).to(state)[None, :]
            gh_n = acc_n + tl.load(b + 2 * hidden, mask=col_mask, other=0.0).to(state)[None, :]
            x = gates_x_ptr + step * (3 * hidden) + cols[None, :]
            r = tl.sigmoid(tl.load(x, mask=mask, other=0.0).to(state) + gh_r)
            z = tl.sigmoid(tl.load(x + hidden, mask=mask, other=0.0).to(state) + gh_z)
            n = tanh(tl.load(x + 2 * hidden, mask=mask, other=0.0).to(state) + r * gh_n)
            h = (1.0 - z) * n + z * (tl.load(h_prev + cols[None, :], mask=mask, other=0.0) * keep)
            tl.store(h_seq_ptr + step * hidden + cols[None, :], h, mask=mask)
            act = acts_ptr + step * (4 * hidden) + cols[None, :]
            tl.store(act, r, mask=mask)
            tl.store(act + hidden, z, mask=mask)
            tl.store(act + 2 * hidden, n, mask=mask)
            tl.store(act + 3 * hidden, gh_n, mask=mask)
            if t == seq_len - 1:
                tl.store(h_n_ptr + rows[:, None] * hidden + cols[None, :], h, mask=mask)
        tl.debug_barrier()  # the next step reads this step's h, stored by other threads


@triton.jit
def _gru_backward_kernel(
    w_hh_ptr, h0_ptr, keep_ptr, h_seq_ptr, acts_ptr, dh_seq_ptr,  # [3H, H], [B, H], [B, L], [B, L, H], [B, L, 4H], ..
    d_gates_ptr, d_hn_ptr, dh_ptr,  # [B, L, 3H], [B, L, H] out; [B, H]: dh_n in, the carry, dh0 out
    batch, seq_len, hidden,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    state: tl.constexpr = dh_ptr.dtype.element_ty
    rows, row_mask = program_rows(batch, BLOCK_B)  # [BB]
    carry = rows[:, None] * hidden  # [BB, 1], rows of dh
    for s in range(seq_len):
        t = seq_len - 1 - s
        keep = load_keep(keep_ptr, rows, row_mask, seq_len, t, state)  # [BB, 1]
        step = (rows * seq_len + t)[:, None]
        h_prev = state_before(h0_ptr, h_seq_ptr, rows, t, seq_len, hidden)
        d_rows = d_gates_ptr + step * (3 * hidden)
        d_hn_rows = d_hn_ptr + step * hidden
        # Through the cell, tile by tile: d(gates_x)_t, d(W_hn h + b_hn)_t, and in dh the direct path dh * z.
        for n0 in range(0, hidden, BLOCK_H):
            cols = n0 + tl.arange(0, BLOCK_H)
            mask = row_mask[:, None] & (cols < hidden)[None, :]  # [BB, BH]
            act = acts_ptr + step * (4 * hidden) + cols[None, :]
            r = tl.load(act, mask=mask, other=0.0)
            z = tl.load(act + hidden, mask=mask, other=0.0)
            n = tl.load(act + 2 * hidden, mask=mask, other=0.0)
            gh_n = tl.load(act + 3 * hidden, mask=mask, other=0.0)
            h_kept = tl.load(h_prev + cols[None, :], mask=mask, other=0.0) * keep
            carried = carry + cols[None, :]
            dh = tl.load(dh_seq_ptr + step * hidden + cols[None, :], mask=mask, other=0.0) + \
                tl.load(dh_ptr + carried, mask=mask, other=0.0)
            dn = dh * (1.0 - z) * (1.0 - n * n)
            d = d_rows + cols[None, :]
            tl.store(d, dn * gh_n * r * (1.0 - r), mask=mask)
            tl.store(d + hidden, dh * (h_kept - n) * z * (1.0 - z), mask=mask)
            tl.store(d + 2 * hidden, dn, mask=mask)
            tl.store(d_hn_rows + cols[None, :], dn * r, mask=mask)
            tl.store(dh_ptr + carried, dh * z, mask=mask)
        tl.debug_barrier()  # the gate gradients are read whole below
        # Through the recurrent GEMM: dh_{t-1} = keep_t * (dh * z + d(W_hh h)_t @ W_hh), output tile by tile.
        for m0 in range(0, hidden, BLOCK_H):
            cols = m0 + tl.arange(0, BLOCK_H)
            mask = row_mask[:, None] & (cols < hidden)[None, :]
            acc = tl.load(dh_ptr + carry + cols[None, :], mask=mask, other=0.0)
            acc = backprop_gate(acc, d_rows, row_mask, w_hh_ptr, 0, cols, hidden, BLOCK_K, IEEE, UPCAST)
            acc = backprop_gate(acc, d_rows + hidden, row_mask, w_hh_ptr, 1, cols, hidden, BLOCK_K, IEEE, UPCAST)
            acc = backprop_gate(acc, d_hn_rows, row_mask, w_hh_ptr, 2, cols, hidden, BLOCK_K, IEEE, UPCAST)
            tl.store(dh_ptr + carry + cols[None, :], acc * keep, mask=mask)
        tl.debug_barrier()  # the next (earlier) step reads dh whole


def gru_scan_forward(gates_x: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, h0: torch.Tensor,
                     keep: torch.Tensor, *, tf32: bool = False, tile: Tile | None = None, empty=torch.empty,
                     wrap=lambda kernel: kernel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward kernel. Returns `(h_seq, h_n, acts)`: [B, L, H], [B, H], and what the backward reads,
    [B, L, 4H]; all in the state dtype. `empty` allocates the outputs (tests pass one that fills NaN); `tile`
    overrides `scan_tile`'s."""
    batch, seq_len, _ = gates_x.shape
    hidden = w_hh.shape[1]
    dtype = state_dtype(gates_x)
    new = lambda *shape: empty(shape, dtype=dtype, device=gates_x.device)  # noqa: E731
    h_seq, h_n, acts = new(batch, seq_len, hidden), new(batch, hidden), new(batch, seq_len, 4 * hidden)
    tile = tile or scan_tile(batch, hidden, w_hh.dtype)
    launch(_gru_forward_kernel, tile, batch, wrap,
           gates_x.contiguous(), w_hh.contiguous(), b_hh.contiguous(), h0.to(dtype).contiguous(), keep.contiguous(),
           h_seq, acts, h_n, batch, seq_len, hidden, **dot_options(w_hh, tf32))
    return h_seq, h_n, acts


def gru_scan_backward(dh_seq: torch.Tensor, dh_n: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                      h0: torch.Tensor, keep: torch.Tensor, h_seq: torch.Tensor, acts: torch.Tensor,
                      gates_dtype: torch.dtype, *, tf32: bool = False, tile: Tile | None = None, empty=torch.empty,
                      wrap=lambda kernel: kernel
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernel, then reduce dW_hh and db_hh. Takes the gradients of h_seq and h_n and the
    forward's saved tensors; returns the gradients of `(gates_x, w_hh, b_hh, h0)` in their dtypes."""
    batch, seq_len, hidden = h_seq.shape
    dtype = h_seq.dtype
    d_gates = empty((batch, seq_len, 3 * hidden), dtype=gates_dtype, device=h_seq.device)
    d_hn = empty((batch, seq_len, hidden), dtype=gates_dtype, device=h_seq.device)  # d(W_hn h + b_hn) = dn * r
    dh = empty((batch, hidden), dtype=dtype, device=h_seq.device).copy_(dh_n)  # dh_n in, the carry, dh0 out
    tile = tile or scan_tile(batch, hidden, w_hh.dtype)
    launch(_gru_backward_kernel, tile, batch, wrap,
           w_hh.contiguous(), h0.to(dtype).contiguous(), keep.contiguous(), h_seq, acts,
           dh_seq.to(dtype).contiguous(), d_gates, d_hn, dh, batch, seq_len, hidden,
           **dot_options(w_hh, tf32))
    # d(W_hh h + b_hh) is d(gates_x) for r and z, d_hn for n: dW from both without concatenating them.
    d_rz = d_gates[..., :2 * hidden]
    h_kept = kept_previous_states(h0, h_seq, keep)
    d_w_hh = torch.cat([recurrent_weight_grad(d_rz, h_kept), recurrent_weight_grad(d_hn, h_kept)]).to(w_hh.dtype)
    d_b_hh = torch.cat([d_rz.sum((0, 1), dtype=dtype), d_hn.sum((0, 1), dtype=dtype)]).to(b_hh.dtype)
    return d_gates, d_w_hh, d_b_hh, dh.to(h0.dtype)


@register_op("recurrent_ppo::gru_scan_forward", mutates_args=())
def _gru_scan_forward_op(gates_x: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, h0: torch.Tensor,
                         keep: torch.Tensor, tf32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return gru_scan_forward(gates_x, w_hh, b_hh, h0, keep, tf32=tf32, wrap=wrap_triton)


@register_op("recurrent_ppo::gru_scan_backward", mutates_args=())
def _gru_scan_backward_op(dh_seq: torch.Tensor, dh_n: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                          h0: torch.Tensor, keep: torch.Tensor, h_seq: torch.Tensor, acts: torch.Tensor,
                          gates_dtype: torch.dtype, tf32: bool
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return gru_scan_backward(dh_seq, dh_n, w_hh, b_hh, h0, keep, h_seq, acts, gates_dtype, tf32=tf32,
                             wrap=wrap_triton)


if INTERPRETING:

    @_gru_scan_forward_op.register_fake
    def _(gates_x, w_hh, b_hh, h0, keep, tf32):
        batch, seq_len, width = gates_x.shape
        hidden = width // 3
        new = lambda *shape: gates_x.new_empty(shape, dtype=state_dtype(gates_x))  # noqa: E731
        return new(batch, seq_len, hidden), new(batch, hidden), new(batch, seq_len, 4 * hidden)

    @_gru_scan_backward_op.register_fake
    def _(dh_seq, dh_n, w_hh, b_hh, h0, keep, h_seq, acts, gates_dtype, tf32):
        batch, seq_len, hidden = h_seq.shape
        return h_seq.new_empty((batch, seq_len, 3 * hidden), dtype=gates_dtype), torch.empty_like(w_hh), \
            torch.empty_like(b_hh), torch.empty_like(h0)


def _setup_context(ctx, inputs, output):
    gates_x, w_hh, b_hh, h0, keep, tf32 = inputs
    h_seq, _, acts = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # so the unused gradient of acts is None, not zeros to fill
    ctx.save_for_backward(w_hh, b_hh, h0, keep, h_seq, acts)
    ctx.gates_dtype, ctx.tf32 = gates_x.dtype, tf32


def _backward(ctx, dh_seq, dh_n, _acts):
    w_hh, b_hh, h0, keep, h_seq, acts = ctx.saved_tensors
    grads = torch.ops.recurrent_ppo.gru_scan_backward(
        grad_or_zeros(dh_seq, h_seq, h_seq.dtype), grad_or_zeros(dh_n, h0, h_seq.dtype), w_hh, b_hh, h0, keep, h_seq,
        acts, ctx.gates_dtype, ctx.tf32)
    return *grads, None, None


_gru_scan_forward_op.register_autograd(_backward, setup_context=_setup_context)


def gru_scan(
    gates_x: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    keep: torch.Tensor,
    *,
    kernel: str = "auto",
    tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer over a sequence, the state reset where `keep` is 0.

    gates_x [B, L, 3H]: x @ W_ih^T + b_ih for every step (gate order r, z, n); w_hh [3H, H]; b_hh [3H], kept
    apart because b_hn sits inside r * (W_hn h + b_hn); h0 [B, H]; keep [B, L], bool or float
    (1 - episode_starts). gates_x, w_hh and b_hh may be float32 or bfloat16. Returns `h_seq [B, L, H]` and
    `h_n [B, H]`, float32 (float64 for float64 inputs).

    kernel and tf32: as for lstm_scan (the fused kernels, the reference loop, or by device; TF32 GEMMs). Differentiable
    in every tensor input but keep, once.
    """
    check_scan_inputs("gru_scan", 3, gates_x, w_hh, keep, b_hh=b_hh, h0=h0)
    if use_reference("gru_scan", kernel, gates_x):
        return gru_scan_reference(gates_x, w_hh, b_hh, h0, keep)
    h_seq, h_n, _ = torch.ops.recurrent_ppo.gru_scan_forward(gates_x, w_hh, b_hh, h0, keep, tf32)
    return h_seq, h_n
