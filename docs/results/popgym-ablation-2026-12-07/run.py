"""The first and second rounds of the one-change-at-a-time ablation on three POPGym Easy tasks (background, one
thread): `python run.py VARIANT...`; the second round ran A3, A7, A4, A5, A8 and A9."""
import json, math, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.trainer import Trainer

TASKS = ["popgym/CountRecallEasy", "popgym/AutoencodeEasy", "popgym/NoisyPositionOnlyCartPoleEasy"]
BASE = dict(total_steps=1_000_000, compile_mode="off", eval_episodes=0, progress=False, checkpoint_every=0)
VARIANTS = {
    "A0-default": {},
    "A1-prev": dict(previous_action=True),
    "A2-prev-seq64": dict(previous_action=True, seq_len=64),
    "A3-prev-seq64-h256": dict(previous_action=True, seq_len=64, hidden_dim=256),
    "A4-prev-seq64-lr5e-4": dict(previous_action=True, seq_len=64, learning_rate=5e-4),
    "A5-prev-seq64-ent0": dict(previous_action=True, seq_len=64, ent_coef=0.0),
    "A6-prev-seq128": dict(previous_action=True, seq_len=128),
    "A7-prev-seq128-h256": dict(previous_action=True, seq_len=128, hidden_dim=256),
    "A8-prev-seq64-epochs8": dict(previous_action=True, seq_len=64, update_epochs=8),
    "A9-prev-seq64-gru": dict(previous_action=True, seq_len=64, core="gru"),
}
out = Path("/work/ablation/results.jsonl")
done = {(r["variant"], r["task"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
only = sys.argv[1:] or list(VARIANTS)
for variant in only:
    for task in TASKS:
        for seed in (1, 2):
            if (variant, task, seed) in done:
                continue
            run_dir = Path("/work/ablation/runs") / f"{variant}-{task.split('/')[1]}-s{seed}"
            cfg = TrainConfig(env=task, seed=seed, run_dir=str(run_dir), overwrite=True, **BASE, **VARIANTS[variant])
            t0 = time.time()
            torch._dynamo.reset()
            Trainer(cfg).train()
            rets = [json.loads(l).get("episode_return_mean") for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
            finite = [r for r in rets if r is not None and math.isfinite(r)]
            rec = dict(variant=variant, task=task, seed=seed, mmer=max(finite), last=finite[-1],
                       seconds=round(time.time() - t0, 1), when=time.strftime("%H:%M"))
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(rec, flush=True)
