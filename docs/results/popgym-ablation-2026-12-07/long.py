"""One long run: AutoencodeEasy with previous action, seq_len 64, hidden 256, 3M steps (background, one thread)."""
import json, math, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.trainer import Trainer

task, seed = sys.argv[1], int(sys.argv[2])
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
name = f"L-{task.split('/')[1]}-s{seed}-" + "-".join(f"{k}{v}" for k, v in extra.items())
run_dir = Path("/work/ablation/runs") / name
cfg = TrainConfig(env=task, seed=seed, run_dir=str(run_dir), overwrite=True, total_steps=3_000_000, compile_mode="off",
                  eval_episodes=0, progress=False, checkpoint_every=0, previous_action=True, seq_len=64,
                  hidden_dim=256, **extra)
t0 = time.time()
Trainer(cfg).train()
rets = [(json.loads(l)["global_step"], json.loads(l).get("episode_return_mean")) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
finite = [(s, r) for s, r in rets if r is not None and math.isfinite(r)]
best = lambda upto: max(r for s, r in finite if s <= upto)
rec = dict(run=name, task=task, seed=seed, extra=extra, mmer_1m=best(1_000_000), mmer_2m=best(2_000_000),
           mmer_3m=best(3_000_000), last=finite[-1][1], seconds=round(time.time() - t0, 1), when=time.strftime("%H:%M"))
with open("/work/ablation/long.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
print(rec, flush=True)
