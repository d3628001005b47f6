"""Pure-torch references of the fused scans in lstm_scan.py and gru_scan.py: one layer, a loop over time that
steps the cell the cores run (rnn_cells.py), the recurrent state reset where keep is 0 (keep = 1 - episode_starts).
They define the scans' semantics, serve as the test oracle (in float64) and are the scans' CPU path.

Outputs are float32 whatever the input dtype (the state is carried in float32), float64 for float64 inputs.
"""

from __future__ import annotations

import torch

from recurrent_ppo.kernels.rnn_cells import gru_cell, lstm_cell

__all__ = ["gru_scan_reference", "lstm_scan_reference"]


def _accumulation_dtype(gates_x: torch.Tensor) -> torch.dtype:
    return torch.float64 if gates_x.dtype == torch.float64 else torch.float32


def lstm_scan_reference(
    gates_x: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM layer over `gates_x [B, L, 4H]` (both biases folded in) from `(h0, c0)` (each [B, H]) with
    `w_hh [4H, H]`, the state reset where `keep [B, L]` (bool or float) is 0. Returns `h_seq [B, L, H]` and the final
    `(h_n, c_n)`."""
    acc = _accumulation_dtype(gates_x)
    gates_x, w_hh, h, c = gates_x.to(acc), w_hh.to(acc), h0.to(acc), c0.to(acc)
    keep = keep.to(acc).unsqueeze(-1)  # [B, L, 1]
    outputs = []
    for t in range(gates_x.shape[1]):
        h, c = lstm_cell(gates_x[:, t], h, c, keep[:, t], w_hh)
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
        h = gru_cell(gates_x[:, t], h, keep[:, t], w_hh, b_hh)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h
