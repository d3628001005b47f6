"""Probe: GAE's lambda for the policy's advantages (the config's gae_lambda) apart from the lambda of the value
targets (argv[5]). Value targets = A(lambda_v) + V; run with clip_vloss false, since the swap below moves the
minibatch's `values`, which the clipped value loss would read. Appends to preset_runs.jsonl like preset_run.py."""
import json, math, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.config import PRESETS
from recurrent_ppo.trainer import Trainer
from recurrent_ppo.kernels.gae import gae  # noqa

task, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = json.loads(sys.argv[4]); lam_v = float(sys.argv[5])
assert extra.get("clip_vloss") is False

orig_compute, orig_batches = RolloutBuffer.compute_advantages, RolloutBuffer.get_batched_sequences

def compute(self, last_values, gamma, gae_lambda, value_lambda=None):
    orig_compute(self, last_values, gamma, lam_v)
    self.adv_v = self.advantages.clone()
    orig_compute(self, last_values, gamma, gae_lambda)

def batches(self, *a, **k):
    saved = self.values
    self.values = saved + self.adv_v - self.advantages  # so that batch.returns = A(lambda_v) + V
    try:
        yield from orig_batches(self, *a, **k)
    finally:
        self.values = saved

RolloutBuffer.compute_advantages, RolloutBuffer.get_batched_sequences = compute, batches
name = f"P-{task.split('/')[1]}-s{seed}-{steps}-" + "-".join(f"{k}{v}" for k, v in extra.items()) + f"-lamv{lam_v}"
run_dir = Path("/work/ablation/runs") / name
cfg = PRESETS["popgym"].replace(env=task, seed=seed, run_dir=str(run_dir), overwrite=True, total_steps=steps,
                                compile_mode="off", eval_episodes=0, progress=False, checkpoint_every=0, **extra)
t0 = time.time()
Trainer(cfg).train()
rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
finite = [(r["global_step"], r["episode_return_mean"]) for r in rows
          if r.get("episode_return_mean") is not None and math.isfinite(r["episode_return_mean"])]
rec = dict(run=name, task=task, seed=seed, steps=steps, extra={**extra, "value_lambda": lam_v},
           mmer=max(v for _, v in finite), last=finite[-1][1],
           seconds=round(time.time() - t0, 1), when=time.strftime("%H:%M"))
with open("/work/ablation/preset_runs.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
print(rec, flush=True)
