"""Training throughput and compile time per compile mode: `python bench/compile_table.py [--num-envs 4096]`.

For each mode, two fresh processes train the same config for a few iterations: the first with an empty inductor
cache (cold compile), the second reusing that cache (warm). Steady-state SPS is the median of the iterations
after the first; compile time is the first iteration's time minus one steady iteration. Prints a markdown table.
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

import torch


def worker(args: argparse.Namespace) -> None:
    from recurrent_ppo.config import TrainConfig
    from recurrent_ppo.trainer import Trainer

    cfg = TrainConfig(env=args.env, num_envs=args.num_envs, num_steps=args.num_steps, compile_mode=args.mode,
                      total_steps=args.num_envs * args.num_steps * args.iterations, progress=False,
                      eval_episodes=0, run_dir=tempfile.mkdtemp())
    trainer = Trainer(cfg)
    times = []
    for iteration in range(args.iterations):
        start = time.perf_counter()
        trainer.train_iteration(iteration)  # ends with the update's host read, so the device is done
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "batch": cfg.batch_size, "device": str(trainer.device),
                      "mode": trainer.compile_mode}))


def run(mode: str, cache_dir: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--env", args.env, "--num-envs", str(args.num_envs),
           "--num-steps", str(args.num_steps), "--iterations", str(args.iterations)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"compile mode {mode} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    steady = statistics.median(result["times"][1:])
    return {"sps": result["batch"] / steady, "compile_s": result["times"][0] - steady, "device": result["device"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="stateless-cartpole")
    parser.add_argument("--num-envs", type=int, default=4096 if torch.cuda.is_available() else 32)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--modes", default="off,default,reduce-overhead" if torch.cuda.is_available() else "off,default")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.iterations < 2:
        parser.error("--iterations must be >= 2: the first holds the compilation")
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{args.env}, {args.num_envs} envs x {args.num_steps} steps, {name}, torch {torch.__version__}")
    print("| compile mode | steps/s | vs off | compile, cold cache (s) | compile, warm cache (s) |")
    print("|---|---|---|---|---|")
    base = None
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as cache:
            cold = run(mode, cache, args)
            warm = run(mode, cache, args)
        base = base or warm["sps"]
        compile_cold = f"{cold['compile_s']:.1f}" if mode != "off" else "-"
        compile_warm = f"{warm['compile_s']:.1f}" if mode != "off" else "-"
        print(f"| {mode} | {warm['sps']:,.0f} | {warm['sps'] / base:.2f}x | {compile_cold} | {compile_warm} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
