"""An LSTM that torch.compile can trace with fullgraph=True, with h/c resets at episode starts.

`nn.LSTM` is a graph break under torch.compile (Dynamo does not trace RNN modules) and cannot reset the state
inside a sequence, so the recurrent core is written out here: per layer, the input projection for all time steps
is one GEMM and each step adds one `[B, H] x [H, 4H]` GEMM. Parameter names, shapes and gate order (i, f, g, o)
match `nn.LSTM(batch_first=True)`, so state dicts load either way and, with no resets, outputs agree.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HiddenState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [num_layers, B, H]


class LSTM(nn.Module):
    """Multi-layer LSTM over `[B, L, input_dim]` sequences; the state is zeroed where `episode_starts` is true."""

    def __init__(self, input_dim: int, hidden_dim: int, num_layers: int = 1) -> None:
        super().__init__()
        if input_dim < 1 or hidden_dim < 1 or num_layers < 1:
            raise ValueError(f"LSTM needs positive sizes, got {input_dim=}, {hidden_dim=}, {num_layers=}")
        self.input_size = input_dim
        self.hidden_size = hidden_dim
        self.num_layers = num_layers
        for layer in range(num_layers):
            in_dim = input_dim if layer == 0 else hidden_dim
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_dim, in_dim)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_dim, hidden_dim)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_dim)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_dim)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: every parameter uniform in +-1/sqrt(hidden_dim)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def layer_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}"),
                getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}"))

    def forward(
        self, x: torch.Tensor, episode_starts: torch.Tensor, hidden: HiddenState
    ) -> tuple[torch.Tensor, HiddenState]:
        """Run `x [B, L, input_dim]` from `hidden` ((h, c), each [num_layers, B, H]).

        Where `episode_starts[b, t]` is true, h and c of every layer are zeroed before step t.
        Returns the last layer's outputs `[B, L, H]` and the final `(h, c)`.
        """
        h0, c0 = hidden
        seq_len = x.shape[1]
        keep = (~episode_starts).to(x.dtype).unsqueeze(-1)  # [B, L, 1]
        final_h, final_c = [], []
        layer_input = x
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer)
            gates_x = torch.nn.functional.linear(layer_input, w_ih, b_ih + b_hh)  # [B, L, 4H], all steps at once
            h, c = h0[layer], c0[layer]  # [B, H]
            outputs = []
            for t in range(seq_len):
                # The reset masks what h and c contribute, not h and c themselves: the incoming state then
                # reaches autograd as it is (as in nn.LSTM), so an inference tensor passed here for training
                # fails loudly instead of being laundered into a normal tensor by the mask.
                gates = gates_x[:, t] + (h @ w_hh.t()) * keep[:, t]  # [B, 4H]
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c * keep[:, t] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            layer_input = torch.stack(outputs, dim=1)  # [B, L, H]
            final_h.append(h)
            final_c.append(c)
        return layer_input, (torch.stack(final_h), torch.stack(final_c))
