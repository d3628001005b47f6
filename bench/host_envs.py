"""Steps/s of full training iterations (rollout, GAE, update) on a host (gymnasium) env whose step costs a set
time, with its copies stepped in the trainer's process, in worker processes, and in workers with the rollout
overlapped (one half of the envs stepping while the policy acts on the other), all in one process:

    python bench/host_envs.py                                  # 0, 0.1 and 1 ms envs, at 32 and 256 envs
    python bench/host_envs.py --costs-us 1000 --envs 32 --rounds 5
    python bench/host_envs.py --sb3 /tmp/sb3                   # and gym CartPole, beside sb3-contrib (below)

The env (`Busy`) busy-waits for its cost on every step, on its thread's CPU clock: it stands for a simulator
that computes on the CPU (physics, an emulator, Python game logic), the common slow host env, and costs its time
in CPU work however the scheduler shares the cores out. A busy-wait on the wall clock would finish early when
its process is preempted (its time passes while another process computes), and a sleep would stand for a
simulator that waits on something else (another process, the network): it frees the core, so more workers than
cores would pay. Either would flatter workers on a machine with few cores. `--sleep` times that kind of env
instead (`time.sleep` for the cost).

Variants, each a Trainer of its own built once (`--workers` defaults to the cores this process may use):
    sync      env_workers=0: the copies step one after another in the trainer's process
    workers   env_workers=N, env_overlap off: the copies step in N processes, the policy waits for them
    overlap   env_workers=N, env_overlap on: ... and the halves of the envs step while the policy acts
    auto      env_workers=auto (overlap on): what the timing rule chooses (printed)
Each variant trains `--warmup` iterations first (worker start, compilation), then the variants take turns, one
iteration each, for `--rounds` rounds (sync, workers, overlap, auto, sync, ...), so a slow stretch of a shared
machine falls on all of them; the median of each variant's iterations is reported with the load average.

`--sb3 DIR` also times gymnasium's CartPole-v1 (ours, every variant), and sb3-contrib's RecurrentPPO on it (its
default LSTM policy, n_steps=128 per env, 4 epochs of 4 minibatches, as ours) with SubprocVecEnv and with
DummyVecEnv: learn() of `--rounds` + 2 rollouts, the median time from one rollout's start to the next. DIR
holds sb3-contrib and stable-baselines3 (`pip install --target DIR --no-deps sb3-contrib stable-baselines3`),
which use this environment's torch, gymnasium and numpy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).parent)]
import machine  # noqa: E402

from recurrent_ppo.config import TrainConfig  # noqa: E402
from recurrent_ppo.trainer import Trainer  # noqa: E402


class Busy(gym.Env):
    """Observation Box(4) in [-1, 1], actions Discrete(2), reward 1 per step, episodes of `length` steps; each step
    busy-waits `cost` seconds of its thread's CPU time before it returns (sleeps them, with `sleep`)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, cost: float = 0.0, length: int = 200, sleep: bool = False) -> None:
        self.cost, self.length, self.sleep, self.t = cost, length, sleep, 0

    def _obs(self) -> np.ndarray:
        return np.sin(np.arange(4, dtype=np.float32) + self.t * 0.1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        if self.sleep:
            time.sleep(self.cost)
        end = time.thread_time() + (0.0 if self.sleep else self.cost)
        while time.thread_time() < end:
            pass
        self.t += 1
        return self._obs(), 1.0, self.t >= self.length, False, {}


def register(cost_us: float, sleep: bool = False) -> str:
    """`rppo-bench/Busy<cost>us-v0` (`Sleep<cost>us` with `sleep`), registered once (forked workers inherit the
    registration)."""
    env_id = f"rppo-bench/{'Sleep' if sleep else 'Busy'}{cost_us:g}us-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=Busy, kwargs={"cost": cost_us * 1e-6, "sleep": sleep})
    return env_id


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def variants(workers: int) -> dict[str, dict]:
    return {"sync": {"env_workers": 0}, "workers": {"env_workers": workers, "env_overlap": False},
            "overlap": {"env_workers": workers, "env_overlap": True}, "auto": {"env_workers": "auto"}}


def time_ours(env_id: str, num_envs: int, num_steps: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds of each timed iteration per variant, the variants taking turns."""
    trainers = {}
    for name, change in variants(args.workers).items():
        cfg = TrainConfig(env=f"gym:{env_id}", num_envs=num_envs, num_steps=num_steps, seq_len=16,
                          total_steps=num_envs * num_steps * (args.warmup + args.rounds + 1), eval_episodes=0,
                          progress=False, device="cpu", compile_mode=args.compile_mode, checkpoint_every=0,
                          run_dir=tempfile.mkdtemp(prefix="host-envs-"), **change)
        trainer = Trainer(cfg)
        for iteration in range(args.warmup):
            trainer.train_iteration(iteration)
        trainers[name] = trainer
        workers, note = trainer.env_workers()
        if name == "auto":
            print(f"    auto chose {workers} workers: {note}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for round_ in range(args.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_iteration(args.warmup + round_)
            times[name].append(time.perf_counter() - start)
    for trainer in trainers.values():
        trainer.close()
    return times


def time_sb3(env_id: str, num_envs: int, args: argparse.Namespace) -> dict[str, float]:
    """Steps/s of sb3-contrib's RecurrentPPO.learn, per vec env kind (the median rollout+update of `--rounds`)."""
    sys.path.insert(0, args.sb3)
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    class IterationTimes(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[float] = []

        def _on_rollout_start(self) -> None:
            self.starts.append(time.perf_counter())

        def _on_step(self) -> bool:
            return True

    results = {}
    for kind, vec_cls in (("sb3-subproc", SubprocVecEnv), ("sb3-dummy", DummyVecEnv)):
        kwargs = {"start_method": "fork"} if vec_cls is SubprocVecEnv else {}
        env = make_vec_env(env_id, n_envs=num_envs, vec_env_cls=vec_cls, vec_env_kwargs=kwargs)
        model = RecurrentPPO("MlpLstmPolicy", env, n_steps=128, batch_size=num_envs * 128 // 4, n_epochs=4,
                             device="cpu", verbose=0)
        callback = IterationTimes()
        model.learn(num_envs * 128 * (args.rounds + 2), callback=callback)
        gaps = np.diff(callback.starts)[1:]  # rollout start to rollout start: rollout + update of one iteration
        results[kind] = num_envs * 128 / float(np.median(gaps))
        env.close()
    return results


def report(env_id: str, num_envs: int, num_steps: int, args: argparse.Namespace) -> None:
    print(f"{env_id}, {num_envs} envs x {num_steps} steps ({load()})", flush=True)
    times = time_ours(env_id, num_envs, num_steps, args)
    base = statistics.median(times["sync"])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"    {name:8s} {num_envs * num_steps / median:9,.0f} steps/s  ({median:.3f} s per iteration, "
              f"{base / median:.2f}x sync; iterations {', '.join(f'{s:.3f}' for s in seconds)})", flush=True)
    if args.sb3 and env_id == "CartPole-v1":
        for kind, rate in time_sb3(env_id, num_envs, args).items():
            print(f"    {kind:8s} {rate:9,.0f} steps/s  (sb3-contrib RecurrentPPO, n_steps 128)", flush=True)
    print(f"    ({load()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--costs-us", type=float, nargs="+", default=[0, 100, 1000], help="env step costs (us)")
    parser.add_argument("--envs", type=int, nargs="+", default=[32, 256], help="numbers of envs")
    parser.add_argument("--steps", type=int, nargs="+", default=[128, 32],
                        help="rollout steps per env, one per --envs entry (the last one for the rest)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--sleep", action="store_true", help="envs that sleep their cost instead of computing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compile-mode", default="auto", help="the trainer's (auto: inductor on the CPU)")
    parser.add_argument("--sb3", default=None, help="a folder holding sb3-contrib and stable-baselines3: adds "
                                                    "gym CartPole-v1 at the first --envs, ours beside sb3-contrib's")
    args = parser.parse_args()
    print(f"{machine.cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, {args.workers} workers, compile {args.compile_mode}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; {load()}")
    for cost in args.costs_us:
        for index, num_envs in enumerate(args.envs):
            report(register(cost, args.sleep), num_envs, args.steps[min(index, len(args.steps) - 1)], args)
    if args.sb3:
        report("CartPole-v1", args.envs[0], args.steps[0], args)


if __name__ == "__main__":
    main()
