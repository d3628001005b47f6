"""A task with the popgym preset (+ overrides), one thread; MMER by 1M/2M/3M appended to preset_runs.jsonl."""
import json, math, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from recurrent_ppo.config import PRESETS
from recurrent_ppo.trainer import Trainer

task, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
name = f"P-{task.split('/')[1]}-s{seed}-{steps}-" + "-".join(f"{k}{v}" for k, v in extra.items())
run_dir = Path("/work/ablation/runs") / name
cfg = PRESETS["popgym"].replace(env=task, seed=seed, run_dir=str(run_dir), overwrite=True, total_steps=steps,
                                compile_mode="off", eval_episodes=0, progress=False, checkpoint_every=0, **extra)
t0 = time.time()
Trainer(cfg).train()
rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
finite = [(r["global_step"], r["episode_return_mean"]) for r in rows
          if r.get("episode_return_mean") is not None and math.isfinite(r["episode_return_mean"])]
rec = dict(run=name, task=task, seed=seed, steps=steps, extra=extra,
           mmer=max(v for _, v in finite), last=finite[-1][1],
           seconds=round(time.time() - t0, 1), when=time.strftime("%H:%M"))
with open("/work/ablation/preset_runs.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
print(rec, flush=True)
