"""The architecture probes: `python architecture_probe.py mlp|skip|gated|memoryless TASK SEED STEPS [JSON]` runs
preset_run.py with the core wrapped (its records were named MLP-..., SKIP-..., GATE-... and FF-... in preset_runs.jsonl).

mlp:  a 2-layer MLP (128 wide, LeakyReLU, as POPGym's actor and critic trunks) between the core and the heads,
      shared by actor and critic;
skip: the encoder's features added to the core's output (a skip connection past the core) before the heads;
gated: the same, the features times a learned per-feature gate that starts at zero;
memoryless: the encoder's features alone to the heads (the core runs, its output unused): a feed-forward policy,
      one Linear + Tanh layer, learned by the preset's PPO."""
import runpy
import sys
from pathlib import Path

import torch
from torch import nn

import recurrent_ppo.models.policy as policy_module


class WrappedCore(nn.Module):
    def __init__(self, core: nn.Module, hidden: int, variant: str) -> None:
        super().__init__()
        self.inner, self.variant, self.state_names = core, variant, core.state_names
        if variant == "mlp":
            self.post = nn.Sequential(nn.Linear(hidden, 128), nn.LeakyReLU(), nn.Linear(128, hidden), nn.LeakyReLU())
        if variant == "gated":
            self.gate = nn.Parameter(torch.zeros(hidden))

    def use_kernel(self, *args, **kwargs):
        self.inner.use_kernel(*args, **kwargs)
        return self

    def forward(self, x, episode_starts, state):
        out, state = self.inner(x, episode_starts, state)
        if self.variant == "memoryless":
            return x, state
        if self.variant == "gated":
            return out + self.gate * x, state
        return (self.post(out) if self.variant == "mlp" else out + x), state


variant = sys.argv.pop(1)
make_core = policy_module.make_core
policy_module.make_core = lambda kind, i, h, n=1: WrappedCore(make_core(kind, i, h, n), h, variant)
runpy.run_path(str(Path(__file__).with_name("preset_run.py")), run_name="__main__")
