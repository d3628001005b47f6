"""Compile time of the update with the fused recurrence against the unrolled one, at two sequence lengths:
`python bench/rnn_compile_time.py [--cores lstm gru] [--json out.json]`.

Each row is a fresh process with an empty inductor cache: it fills a rollout buffer (stateless CartPole, eager),
builds a PPOUpdater with `--rnn-kernel`'s core and compile mode default on the backend, and times the first call
of the compiled loss, forward and backward (compilation plus one run), then the median of three later calls (the
run alone). Two compile times: torch's own record of its compilation (dynamo, AOTAutograd and the backend's
forward, plus the backward inductor compiles lazily at the first backward: `compilation_time_metrics`), and the
first call minus a later one. The fused op is one node per layer whatever the length, so its compile time should
not grow with seq_len; the unrolled core traces L cells. Without CUDA the fused kernels run under
TRITON_INTERPRET=1 (set here before triton is imported), so a CPU's calls time the interpreter, not the kernels,
and the interpreter's slower first run inflates first minus later at long L; torch's record leaves it out.
One torch thread unless --threads says otherwise.
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


def worker(args: argparse.Namespace) -> None:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported, by recurrent_ppo below
    torch.set_num_threads(args.threads)
    from recurrent_ppo.buffer import RolloutBuffer
    from recurrent_ppo.envs import CartPole
    from recurrent_ppo.episodes import EpisodeTracker
    from recurrent_ppo.models import RecurrentPolicy
    from recurrent_ppo.ppo import PPOUpdater
    from recurrent_ppo.rollout import RolloutCollector
    from recurrent_ppo.spaces import Box, Discrete

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    policy = RecurrentPolicy(Box((2,)), Discrete(2), args.hidden, args.layers, args.core).to(device)
    policy.core.use_kernel(args.kernel)
    env = CartPole(args.num_envs, device, stateless=True, max_episode_steps=20)
    buffer = RolloutBuffer.for_policy(policy, args.num_envs, args.num_steps, device)
    collector = RolloutCollector(policy, env, buffer, EpisodeTracker(args.num_envs, device))
    buffer.compute_advantages(collector.collect(), 0.99, 0.95)
    updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters()), compile_mode="default", compile_backend=args.backend)
    batch = next(buffer.get_batched_sequences(args.seq_len, args.num_minibatches))

    def call() -> float:
        start = time.perf_counter()
        loss, _ = updater.loss(batch)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    from torch._dynamo.utils import compilation_time_metrics

    first = call()
    compiled = sum(sum(compilation_time_metrics.get(name, ()))
                   for name in ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler"))
    later = statistics.median(call() for _ in range(3))
    print(json.dumps({"first_s": first, "later_s": later, "torch_compile_s": compiled, "device": str(device)}))


def run(args: argparse.Namespace, core: str, backend: str, kernel: str, seq_len: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--core", core, "--backend", backend, "--kernel", kernel,
           "--seq-len", str(seq_len), "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps),
           "--hidden", str(args.hidden), "--layers", str(args.layers), "--num-minibatches", str(args.num_minibatches),
           "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as cache:  # cold: nothing compiled before
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton"),
               "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"core": core, "backend": backend, "kernel": kernel, "seq_len": seq_len, **result,
            "compile_s": result["first_s"] - result["later_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--core", default="lstm", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="aot_eager", help=argparse.SUPPRESS)
    parser.add_argument("--kernel", default="fused", help=argparse.SUPPRESS)
    parser.add_argument("--seq-len", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--cores", nargs="+", default=["lstm"], choices=["lstm", "gru"])
    parser.add_argument("--backends", nargs="+", default=["aot_eager", "inductor"])
    parser.add_argument("--kernels", nargs="+", default=["fused", "unrolled"], choices=["fused", "unrolled"])
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--num-minibatches", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    print(f"{args.num_envs} envs x {args.num_steps} steps, hidden {args.hidden}, {args.layers} layer(s), "
          f"{args.num_minibatches} minibatch(es), {args.threads} thread(s)\n")
    print("| core | backend | kernel | seq_len | compile s (torch's record) | first call s | later call s | "
          "first - later s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for core in args.cores:
        for backend in args.backends:
            for kernel in args.kernels:
                for seq_len in args.seq_lens:
                    row = run(args, core, backend, kernel, seq_len)
                    rows.append(row)
                    print(f"| {core} | {backend} | {kernel} | {seq_len} | {row['torch_compile_s']:.2f} | "
                          f"{row['first_s']:.2f} | {row['later_s']:.3f} | {row['compile_s']:.2f} |", flush=True)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
