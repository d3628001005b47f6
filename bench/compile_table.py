"""Training throughput and compile time per compile mode: `python bench/compile_table.py [--num-envs 4096]`.

For each mode, two fresh processes train the same config for a few iterations: the first with an empty inductor
cache (cold compile), the second reusing that cache (warm). Steady-state SPS is the median of the iterations
after the first; compile time is the first iteration's time minus one steady iteration. Eager (`off`) runs once,
and the CleanRL-style baseline (bench/cleanrl_baseline.py) runs once at the same sizes, so the table also gives
ours over the baseline in the same run. Prints a markdown table; `--json` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BASELINE = "cleanrl"
"""The --modes entry that runs the CleanRL-style baseline instead of our trainer."""


def worker(args: argparse.Namespace) -> None:
    from recurrent_ppo.config import TrainConfig
    from recurrent_ppo.trainer import Trainer

    baseline = args.mode == BASELINE
    cfg = TrainConfig(env=args.env, num_envs=args.num_envs, num_steps=args.num_steps,
                      compile_mode="off" if baseline else args.mode,
                      total_steps=args.num_envs * args.num_steps * args.iterations, progress=False,
                      eval_episodes=0, run_dir=tempfile.mkdtemp())
    if baseline:
        sys.path.insert(0, str(Path(__file__).parent))
        from cleanrl_baseline import CleanRLPPO

        trainer = CleanRLPPO(cfg)
        device = cfg.resolved_device()
    else:
        trainer = Trainer(cfg)
        device = trainer.device
    times = []
    for iteration in range(args.iterations):
        start = time.perf_counter()
        trainer.train_iteration(iteration)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "batch": cfg.batch_size, "device": str(device)}))


def run(mode: str, cache_dir: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--env", args.env, "--num-envs", str(args.num_envs),
           "--num-steps", str(args.num_steps), "--iterations", str(args.iterations)]
    # Triton's own cache too (our GAE kernel compiles through it), so a cold run recompiles everything.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, "TRITON_CACHE_DIR": os.path.join(cache_dir, "triton")}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"compile mode {mode} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    steady = statistics.median(result["times"][1:])
    return {"sps": result["batch"] / steady, "compile_s": result["times"][0] - steady, "times": result["times"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="stateless-cartpole")
    parser.add_argument("--num-envs", type=int, default=4096 if torch.cuda.is_available() else 32)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--modes", default=f"{BASELINE},off,default,reduce-overhead" if torch.cuda.is_available()
                        else f"{BASELINE},off,default",
                        help=f"comma-separated compile modes; {BASELINE!r} is the CleanRL-style baseline (eager)")
    parser.add_argument("--cache-root", type=Path,
                        help="keep each mode's inductor cache in CACHE_ROOT/<mode> (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.iterations < 2:
        parser.error("--iterations must be >= 2: the first holds the compilation")
    print(f"{args.env}, {args.num_envs} envs x {args.num_steps} steps, {name_of_device()}, torch {torch.__version__}")
    print("| compile mode | steps/s | vs baseline | compile, cold cache (s) | compile, warm cache (s) |")
    print("|---|---|---|---|---|")
    rows = {}
    for mode in args.modes.split(","):
        eager = mode in (BASELINE, "off")
        with tempfile.TemporaryDirectory() as scratch:
            cache = args.cache_root / mode if args.cache_root else Path(scratch)
            if cache.exists() and any(cache.iterdir()):
                raise SystemExit(f"{cache} is not empty: the cold-cache run needs an empty inductor cache")
            cold = run(mode, str(cache), args)
            warm = cold if eager else run(mode, str(cache), args)  # nothing is compiled, so no warm run
        rows[mode] = {"sps": warm["sps"], "compile_cold_s": None if eager else cold["compile_s"],
                      "compile_warm_s": None if eager else warm["compile_s"],
                      "cold_times_s": cold["times"], "warm_times_s": warm["times"]}
        base = rows.get(BASELINE, {}).get("sps")
        ratio = f"{warm['sps'] / base:.2f}x" if base else "-"
        cold_s = "-" if eager else f"{cold['compile_s']:.1f}"
        warm_s = "-" if eager else f"{warm['compile_s']:.1f}"
        name = "CleanRL-style baseline (eager)" if mode == BASELINE else mode
        print(f"| {name} | {warm['sps']:,.0f} | {ratio} | {cold_s} | {warm_s} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": name_of_device(), "torch": torch.__version__, "env": args.env,
                                         "num_envs": args.num_envs, "num_steps": args.num_steps, "rows": rows},
                                        indent=2))
    return 0


def name_of_device() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
