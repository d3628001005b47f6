"""Steps/s of the training iteration under each speed option, in one process, beside the default:

    python bench/iteration_variants.py --num-envs 4096 --json variants.json       # on a GPU
    python bench/iteration_variants.py --num-envs 8 --iterations 2 --variants base # CPU smoke test

Variants (each a TrainConfig change from the defaults, stateless-cartpole):
    base             the defaults (on CUDA: reduce-overhead, one CUDA-graph replay per rollout step)
    fused            --rnn-kernel fused: the update's BPTT through the fused Triton recurrence
    fused-bf16       ... and --precision bf16
    rollout-graph    --rollout-graph: the whole rollout one CUDA-graph replay
    all              fused, bf16 and the rollout graph together
Each variant warms up (compilation, capture) for `--warmup` iterations, then times `--iterations` iterations
(`Trainer.train_iteration`, synchronized), and reports the median; the first iteration's seconds are kept too.
A variant that fails is reported with its error, and the others still run. The JSON is rewritten after each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent)]
import benchlib  # noqa: E402
import machine  # noqa: E402

from recurrent_ppo.config import TrainConfig  # noqa: E402
from recurrent_ppo.trainer import Trainer  # noqa: E402

VARIANTS = {
    "base": {},
    "fused": {"rnn_kernel": "fused"},
    "fused-bf16": {"rnn_kernel": "fused", "precision": "bf16"},
    "rollout-graph": {"rollout_graph": True},
    "all": {"rnn_kernel": "fused", "precision": "bf16", "rollout_graph": True},
}


def time_variant(cfg: TrainConfig, warmup: int, iterations: int) -> dict:
    trainer = Trainer(cfg)
    device = trainer.device
    first = time.perf_counter()
    trainer.train_iteration(0)
    benchlib.synchronize(device)
    first_s = time.perf_counter() - first
    for _ in range(warmup - 1):
        trainer.train_iteration(0)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        trainer.train_iteration(0)  # iteration 0 every time: the learning rate stays put
        benchlib.synchronize(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "first_iteration_s": first_s,
            "steps_per_s": cfg.batch_size / median}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    results = {"machine": machine.machine_info(), "num_envs": args.num_envs, "rows": {}}
    print(f"{'variant':<14} {'median ms':>10} {'min ms':>9} {'steps/s':>12} {'first s':>8}", flush=True)
    for name in names:
        cfg = TrainConfig(num_envs=args.num_envs, progress=False, eval_episodes=0,
                          run_dir=tempfile.mkdtemp(prefix=f"variant-{name}-"), **VARIANTS[name])
        torch._dynamo.reset()
        try:
            row = time_variant(cfg.validate(), args.warmup, args.iterations)
            print(f"{name:<14} {row['median_s'] * 1e3:>10.1f} {row['min_s'] * 1e3:>9.1f} "
                  f"{row['steps_per_s']:>12,.0f} {row['first_iteration_s']:>8.1f}", flush=True)
        except Exception as error:  # one variant's failure is a result too; the others still run
            row = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=8)}
            print(f"{name:<14} FAILED {row['error'][:300]}", flush=True)
        results["rows"][name] = row
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
