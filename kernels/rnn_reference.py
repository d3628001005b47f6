"""Pure-torch references of the fused scans in lstm_scan.py and gru_scan.py: a loop over time, one layer, the
recurrent state reset where keep is 0 (keep = 1 - episode_starts). They define the semantics, serve as the
test oracle (in float64) and are the CPU path.

The reset masks what the state contributes, not the state itself (docs/design.md, "Resets"):
    LSTM (gate order i, f, g, o; both biases folded into gates_x, as src/recurrent_ppo/lstm.py does):
        gates = gates_x_t + (h @ W_hh^T) * keep_t
        c = sigmoid(f) * c * keep_t + sigmoid(i) * tanh(g);   h = sigmoid(o) * tanh(c)
    GRU (nn.GRU's math, gate order r, z, n; gates_x = x @ W_ih^T + b_ih, b_hh apart since b_hn sits inside r * ...):
        h_kept = h * keep_t;   gh = h_kept @ W_hh^T + b_hh
        r = sigmoid(gx_r + gh_r);   z = sigmoid(gx_z + gh_z);   n = tanh(gx_n + r * gh_n)
        h = (1 - z) * n + z * h_kept
So after a reset b_hh still counts, as it does for a zero initial state in nn.GRU.

Outputs are float32 whatever the input dtype (the state is carried in float32), float64 for float64 inputs.
"""

from __future__ import annotations

import torch

__all__ = ["gru_scan_reference", "lstm_scan_reference"]


def _accumulation_dtype(gates_x: torch.Tensor) -> torch.dtype:
    return torch.float64 if gates_x.dtype == torch.float64 else torch.float32


def lstm_scan_reference(
    gates_x: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM layer over `gates_x [B, L, 4H]` from `(h0, c0)` (each [B, H]) with `w_hh [4H, H]`, the state reset
    where `keep [B, L]` (bool or float) is 0. Returns `h_seq [B, L, H]` and the final `(h_n, c_n)`."""
    acc = _accumulation_dtype(gates_x)
    gates_x, w_hh, h, c = gates_x.to(acc), w_hh.to(acc), h0.to(acc), c0.to(acc)
    keep = keep.to(acc).unsqueeze(-1)  # [B, L, 1]
    outputs = []
    for t in range(gates_x.shape[1]):
        gates = gates_x[:, t] + (h @ w_hh.t()) * keep[:, t]  # [B, 4H]
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c * keep[:, t] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h, c)


def gru_scan_reference(
    gates_x: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, h0: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer over `gates_x [B, L, 3H]` (x @ W_ih^T + b_ih) from `h0 [B, H]` with `w_hh [3H, H]` and
    `b_hh [3H]`, the state reset where `keep [B, L]` (bool or float) is 0. Returns `h_seq [B, L, H]` and `h_n`."""
    acc = _accumulation_dtype(gates_x)
    gates_x, w_hh, b_hh, h = gates_x.to(acc), w_hh.to(acc), b_hh.to(acc), h0.to(acc)
    keep = keep.to(acc).unsqueeze(-1)  # [B, L, 1]
    outputs = []
    for t in range(gates_x.shape[1]):
        h = h * keep[:, t]
        gx_r, gx_z, gx_n = gates_x[:, t].chunk(3, dim=-1)  # [B, H] each
        gh_r, gh_z, gh_n = (h @ w_hh.t() + b_hh).chunk(3, dim=-1)
        r = torch.sigmoid(gx_r + gh_r)
        z = torch.sigmoid(gx_z + gh_z)
        n = torch.tanh(gx_n + r * gh_n)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1), h
