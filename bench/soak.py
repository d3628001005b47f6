"""Soak: train a small configuration for many iterations and check that memory stays flat and nothing
recompiles after the first iteration (`make soak`).

    python bench/soak.py [--iterations 1000] [--max-growth-mib 64] [--out soak.json]

Resident memory is read from /proc/self/statm after every iteration. Its growth is measured from iteration
WARMUP (compilation, allocator pools and TensorBoard's writer have settled by then) to the end. From iteration 1
on, torch.compile runs under `set_stance("fail_on_recompile")`, so any recompile fails the soak at once.
Exit code 0 when growth stays under the bound, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from recurrent_ppo.config import TrainConfig
from recurrent_ppo.trainer import Trainer

WARMUP = 50
"""Iterations before the memory baseline is taken."""


def rss_mib() -> float:
    """Resident set size of this process, MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(iterations: int, run_dir: Path) -> dict:
    per_iteration = 8 * 32
    cfg = TrainConfig(num_envs=8, num_steps=32, seq_len=8, num_minibatches=2, update_epochs=2, hidden_dim=16,
                      total_steps=per_iteration * iterations, checkpoint_every=100, eval_episodes=4,
                      progress=False, device="cpu", run_dir=str(run_dir))
    trainer = Trainer(cfg)
    train_iteration = trainer.train_iteration
    samples: list[float] = []

    def observed(iteration: int) -> dict:
        metrics = train_iteration(iteration)
        if iteration == 0:
            trainer.evaluate(cfg.eval_episodes)  # the final evaluation's step is compiled now, not after the stance
            torch.compiler.set_stance("fail_on_recompile")
        samples.append(rss_mib())
        return metrics

    trainer.train_iteration = observed
    start = time.perf_counter()
    try:
        summary = trainer.train()
    finally:
        torch.compiler.set_stance("default")
    base = samples[min(WARMUP, len(samples) - 1)]
    return {"iterations": len(samples), "seconds": time.perf_counter() - start, "rss_start_mib": samples[0],
            "rss_after_warmup_mib": base, "rss_end_mib": samples[-1], "rss_max_mib": max(samples),
            "growth_after_warmup_mib": samples[-1] - base, "final_return": summary["episode_return_mean"],
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.iterations <= WARMUP:
        parser.error(f"--iterations must exceed the {WARMUP} warm-up iterations")
    with tempfile.TemporaryDirectory() as run_dir:
        figures = soak(args.iterations, Path(run_dir))
    figures["max_growth_mib"] = args.max_growth_mib
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    if figures["growth_after_warmup_mib"] > args.max_growth_mib:
        print(f"soak: resident memory grew {figures['growth_after_warmup_mib']:.1f} MiB after warm-up, more than "
              f"{args.max_growth_mib} MiB", file=sys.stderr)
        return 1
    print(f"soak: {figures['iterations']} iterations, no recompile, memory grew "
          f"{figures['growth_after_warmup_mib']:.1f} MiB after warm-up (bound {args.max_growth_mib} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
