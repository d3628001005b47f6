"""The two architecture probes of the third round: `python architecture_probe.py mlp|skip TASK SEED STEPS [JSON]`
runs preset_run.py with the core wrapped (its records were named MLP-... and SKIP-... in preset_runs.jsonl).

mlp:  a 2-layer MLP (128 wide, LeakyReLU, as POPGym's actor and critic trunks) between the core and the heads,
      shared by actor and critic;
skip: the encoder's features added to the core's output (a skip connection past the core) before the heads."""
import runpy
import sys
from pathlib import Path

from torch import nn

import recurrent_ppo.models.policy as policy_module


class WrappedCore(nn.Module):
    def __init__(self, core: nn.Module, hidden: int, variant: str) -> None:
        super().__init__()
        self.inner, self.variant, self.state_names = core, variant, core.state_names
        if variant == "mlp":
            self.post = nn.Sequential(nn.Linear(hidden, 128), nn.LeakyReLU(), nn.Linear(128, hidden), nn.LeakyReLU())

    def use_kernel(self, *args, **kwargs):
        self.inner.use_kernel(*args, **kwargs)
        return self

    def forward(self, x, episode_starts, state):
        out, state = self.inner(x, episode_starts, state)
        return (self.post(out) if self.variant == "mlp" else out + x), state


variant = sys.argv.pop(1)
make_core = policy_module.make_core
policy_module.make_core = lambda kind, i, h, n=1: WrappedCore(make_core(kind, i, h, n), h, variant)
runpy.run_path(str(Path(__file__).with_name("preset_run.py")), run_name="__main__")
