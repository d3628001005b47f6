"""Recurrent cores that torch.compile can trace with fullgraph=True, with state resets at episode starts.

`nn.LSTM` and `nn.GRU` are graph breaks under torch.compile (Dynamo does not trace RNN modules) and cannot reset
the state inside a sequence, so the cores are written out here: per layer, the input projection for all time
steps is one GEMM and each step adds one `[B, H] x [H, gates * H]` GEMM. Parameter names, shapes and gate order
match `nn.LSTM` / `nn.GRU` (`batch_first=True`), so state dicts load either way and, with no resets, outputs
agree. Both take and return the recurrent state as a tuple of `[num_layers, B, H]` tensors: `(h, c)` for the
LSTM, `(h,)` for the GRU.

A core runs a sequence in one of two ways (`RecurrentCore.kernel`, a runtime choice outside the state dict):
"unrolled", the per-step loop, the reference and the CPU path; or "fused", each layer's recurrence over all L
steps in one Triton launch with the resets inside (recurrent_ppo.kernels.lstm_scan / gru_scan). One step (the
rollout's) always runs the cell. The cell math is recurrent_ppo.kernels.rnn_cells, which the fused scans'
reference steps too.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from recurrent_ppo.kernels import rnn_common
from recurrent_ppo.kernels.gru_scan import gru_scan
from recurrent_ppo.kernels.lstm_scan import lstm_scan
from recurrent_ppo.kernels.rnn_cells import gru_cell, lstm_cell

RecurrentState = tuple[torch.Tensor, ...]
"""The state of a core: `(h, c)` (LSTM) or `(h,)` (GRU), each `[num_layers, B, H]`."""

CoreKind = Literal["lstm", "gru"]
"""The recurrent cores (CORES), by name."""
RnnKernel = Literal["unrolled", "fused"]
"""How a core runs a sequence: the per-step loop, or the fused Triton scan of each layer."""
RNN_KERNELS: tuple[str, ...] = get_args(RnnKernel)


def fused_kernel_error(device: torch.device) -> str | None:
    """Why the fused kernels cannot run on `device`, or None where they can (CUDA; CPU under TRITON_INTERPRET=1,
    which runs Triton kernels in Python for tests)."""
    if device.type == "cuda" or rnn_common.INTERPRETING:
        return None
    return (f"the fused recurrence runs Triton kernels, which need a CUDA device (or TRITON_INTERPRET=1 set before "
            f"import, a slow test mode), and the device is {device}")


class RecurrentCore(nn.Module):
    """Multi-layer recurrence over `[B, L, input_dim]` sequences; the state is zeroed where `episode_starts`.

    Subclasses give the gate count, the state tensors' names and `cell`, one time step of one layer.
    """

    gates: int
    state_names: tuple[str, ...]
    kernel: str = "unrolled"
    """How `forward` runs a sequence of L > 1 steps: one of RNN_KERNELS (set with `use_kernel`)."""
    tf32: bool = False
    """Whether the fused scans compute their fp32 GEMMs on TF32 tensor cores."""

    def __init__(self, input_dim: int, hidden_dim: int, num_layers: int = 1) -> None:
        super().__init__()
        if input_dim < 1 or hidden_dim < 1 or num_layers < 1:
            raise ValueError(f"{type(self).__name__} needs positive sizes, got {input_dim=}, {hidden_dim=}, "
                             f"{num_layers=}")
        self.input_size = input_dim
        self.hidden_size = hidden_dim
        self.num_layers = num_layers
        width = self.gates * hidden_dim
        for layer in range(num_layers):
            in_dim = input_dim if layer == 0 else hidden_dim
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(width, in_dim)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(width, hidden_dim)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(width)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(width)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation of its RNNs: every parameter uniform in +-1/sqrt(hidden_dim)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def use_kernel(self, kernel: RnnKernel, *, tf32: bool = False) -> RecurrentCore:
        """Run sequences with `kernel` ("unrolled" or "fused"), the fused scans' fp32 GEMMs in TF32 if `tf32`.
        A runtime choice: the parameters and the state dict do not change. Returns self."""
        if kernel not in RNN_KERNELS:
            raise ValueError(f"kernel={kernel!r} is not one of {RNN_KERNELS}")
        self.kernel, self.tf32 = kernel, tf32
        return self

    def layer_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}"),
                getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}"))

    def input_gates(self, x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor,
                    b_hh: torch.Tensor) -> torch.Tensor:
        """The input's share of every step's gates at once, `[B, L, gates * H]`."""
        raise NotImplementedError

    def cell(self, gates_x: torch.Tensor, state: RecurrentState, keep: torch.Tensor, w_hh: torch.Tensor,
             b_hh: torch.Tensor) -> RecurrentState:
        """One step of one layer: `gates_x [B, gates * H]`, `state` of `[B, H]` tensors, `keep [B, 1]` 0 where
        the episode starts. Returns the new state; its first tensor is the layer's output."""
        raise NotImplementedError

    def scan(self, gates_x: torch.Tensor, state: RecurrentState, keep: torch.Tensor, w_hh: torch.Tensor,
             b_hh: torch.Tensor) -> tuple[torch.Tensor, RecurrentState]:
        """One layer over all L steps in one fused launch: `gates_x [B, L, gates * H]`, `state` of `[B, H]`
        tensors, `keep [B, L]` bool. Returns the outputs `[B, L, H]` and the final state, float32 (float64 for
        float64 inputs) whatever the gates' dtype."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, episode_starts: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Run `x [B, L, input_dim]` from `state`; where `episode_starts[b, t]` is true, the state of every
        layer is zeroed before step t. Returns the last layer's outputs `[B, L, H]` and the final state."""
        seq_len = x.shape[1]
        # One step is one cell either way, and the rollout's step is already one graph (one CUDA graph) per step:
        # the fused scan pays off over sequences, where it replaces L steps of small kernels with one launch.
        fused = self.kernel == "fused" and seq_len > 1
        keep = None if fused else (~episode_starts).to(x.dtype).unsqueeze(-1)  # [B, L, 1]
        finals: list[list[torch.Tensor]] = [[] for _ in state]
        layer_input = x
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer)
            gates_x = self.input_gates(layer_input, w_ih, b_ih, b_hh)  # [B, L, gates * H], all steps at once
            layer_state = tuple(part[layer] for part in state)  # each [B, H]
            if fused:  # the recurrent GEMM in the input GEMM's dtype: bf16 under bf16 autocast, as autocast runs it
                layer_input, layer_state = self.scan(gates_x, layer_state, ~episode_starts, w_hh.to(gates_x.dtype),
                                                     b_hh)
            else:
                outputs = []
                for t in range(seq_len):
                    layer_state = self.cell(gates_x[:, t], layer_state, keep[:, t], w_hh, b_hh)
                    outputs.append(layer_state[0])
                layer_input = torch.stack(outputs, dim=1)  # [B, L, H]
            for final, part in zip(finals, layer_state):
                final.append(part)
        return layer_input, tuple(torch.stack(final) for final in finals)


class LSTM(RecurrentCore):
    """`nn.LSTM`'s parameters and gate order (i, f, g, o); state `(h, c)`."""

    gates = 4
    state_names = ("h", "c")

    def input_gates(self, x, w_ih, b_ih, b_hh):
        return torch.nn.functional.linear(x, w_ih, b_ih + b_hh)

    def cell(self, gates_x, state, keep, w_hh, b_hh):
        return lstm_cell(gates_x, *state, keep, w_hh)  # b_hh is in gates_x

    def scan(self, gates_x, state, keep, w_hh, b_hh):
        return lstm_scan(gates_x, w_hh, *state, keep, kernel="triton", tf32=self.tf32)  # b_hh is in gates_x


class GRU(RecurrentCore):
    """`nn.GRU`'s parameters and gate order (r, z, n), with b_hn inside r * (...) as nn.GRU has it (the step:
    `rnn_cells.gru_cell`); state `(h,)`."""

    gates = 3
    state_names = ("h",)

    def input_gates(self, x, w_ih, b_ih, b_hh):
        return torch.nn.functional.linear(x, w_ih, b_ih)

    def cell(self, gates_x, state, keep, w_hh, b_hh):
        return (gru_cell(gates_x, *state, keep, w_hh, b_hh),)

    def scan(self, gates_x, state, keep, w_hh, b_hh):
        h_seq, h_n = gru_scan(gates_x, w_hh, b_hh, state[0], keep, kernel="triton", tf32=self.tf32)
        return h_seq, (h_n,)


CORES: dict[str, type[RecurrentCore]] = {"lstm": LSTM, "gru": GRU}
"""Recurrent cores by the name `TrainConfig.core` takes (CoreKind)."""
assert set(CORES) == set(get_args(CoreKind)), "CORES and CoreKind name the same cores"


def make_core(kind: CoreKind, input_dim: int, hidden_dim: int, num_layers: int = 1) -> RecurrentCore:
    if kind not in CORES:
        raise ValueError(f"core={kind!r} is not one of {sorted(CORES)}")
    return CORES[kind](input_dim, hidden_dim, num_layers)


def reset_state(state: RecurrentState, episode_starts: torch.Tensor) -> RecurrentState:
    """Zero the state of the envs whose episode starts now (`episode_starts [N]` bool), whatever the core."""
    keep = (~episode_starts).to(state[0].dtype)[None, :, None]  # [1, N, 1]
    return tuple(part * keep for part in state)
