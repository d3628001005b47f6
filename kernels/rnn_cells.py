"""One time step of one LSTM or GRU layer, in pure torch: the cell math, written once. The cores
(recurrent_ppo.models.cores) run it per step, in the rollout and in the unrolled BPTT; rnn_reference.py steps it
over a sequence as the reference of the fused scans (lstm_scan.py, gru_scan.py), which compute the same.

`gates_x` is the input's share of the step's gates (x @ W_ih^T plus the biases below), `h` and `c` are `[B, H]`,
and `keep [B, 1]` is 0 where the episode starts (keep = 1 - episode_starts), 1 elsewhere. The reset masks what the
state contributes, not the state itself (docs/design.md, "Resets"): the incoming state then reaches autograd as it
is, as in nn.LSTM, so an inference tensor passed to a step that trains fails loudly instead of being laundered
into a normal tensor by the mask.
"""

from __future__ import annotations

import torch

__all__ = ["gru_cell", "lstm_cell"]


def lstm_cell(gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, keep: torch.Tensor,
              w_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTM's step, gate order i, f, g, o, with both biases folded into `gates_x [B, 4H]`; `w_hh [4H, H]`.
    Returns the new `(h, c)`."""
    gates = gates_x + (h @ w_hh.t()) * keep  # [B, 4H]
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c * keep + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_cell(gates_x: torch.Tensor, h: torch.Tensor, keep: torch.Tensor, w_hh: torch.Tensor,
             b_hh: torch.Tensor) -> torch.Tensor:
    """nn.GRU's step, gate order r, z, n: `gates_x [B, 3H]` = x @ W_ih^T + b_ih; `w_hh [3H, H]`, `b_hh [3H]` apart,
    since b_hn sits inside r * (h W_hn + b_hn). Returns the new h:

        r = sigmoid(gx_r + h W_hr + b_hr),  z likewise,  n = tanh(gx_n + r * (h W_hn + b_hn)),  h' = (1 - z) * n + z * h

    with h's terms masked by keep. A reset state is zero: h W_hh vanishes and b_hh still counts, as it does for a
    zero initial state in nn.GRU.
    """
    gates_h = (h @ w_hh.t()) * keep + b_hh  # [B, 3H]
    x_r, x_z, x_n = gates_x.chunk(3, dim=-1)
    h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h * keep
