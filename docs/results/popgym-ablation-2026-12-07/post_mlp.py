"""Experiment: a 2-layer MLP (LeakyReLU, 128 wide, as POPGym's actor/critic trunks) between the core and the heads,
shared by actor and critic; the popgym preset otherwise. Appends to preset_runs.jsonl like preset_run.py."""
import json, math, sys, time
from pathlib import Path
import torch
from torch import nn
torch.set_num_threads(1)
import recurrent_ppo.models.policy as policy_mod
from recurrent_ppo.config import PRESETS
from recurrent_ppo.trainer import Trainer

class CoreWithPost(nn.Module):
    def __init__(self, core, hidden):
        super().__init__()
        self.inner = core
        self.post = nn.Sequential(nn.Linear(hidden, 128), nn.LeakyReLU(), nn.Linear(128, hidden), nn.LeakyReLU())
        self.state_names = core.state_names
    def use_kernel(self, *a, **k):
        self.inner.use_kernel(*a, **k); return self
    def forward(self, x, starts, state):
        out, state = self.inner(x, starts, state)
        return self.post(out), state

orig = policy_mod.make_core
policy_mod.make_core = lambda kind, i, h, n=1: CoreWithPost(orig(kind, i, h, n), h)

task, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
name = f"MLP-{task.split('/')[1]}-s{seed}-{steps}-" + "-".join(f"{k}{v}" for k, v in extra.items())
run_dir = Path("/work/ablation/runs") / name
cfg = PRESETS["popgym"].replace(env=task, seed=seed, run_dir=str(run_dir), overwrite=True, total_steps=steps,
                                compile_mode="off", eval_episodes=0, progress=False, checkpoint_every=0, **extra)
t0 = time.time()
Trainer(cfg).train()
rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
finite = [(r["global_step"], r["episode_return_mean"]) for r in rows
          if r.get("episode_return_mean") is not None and math.isfinite(r["episode_return_mean"])]
rec = dict(run=name, task=task, seed=seed, steps=steps, extra=extra, mmer=max(v for _, v in finite), last=finite[-1][1],
           seconds=round(time.time() - t0, 1), when=time.strftime("%H:%M"))
with open("/work/ablation/preset_runs.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
print(rec, flush=True)
