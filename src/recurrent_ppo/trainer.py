"""The training loop: rollout on the device env, GAE, PPO epochs over sequence minibatches, logging."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.profiler import record_function

from recurrent_ppo import distributed
from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.checkpoint import save_checkpoint
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import make_env
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.models.policy import RecurrentPolicy
from recurrent_ppo.ppo import PPOUpdater
from recurrent_ppo.rollout import Evaluator, RolloutCollector
from recurrent_ppo.runlog import RunLogger
from recurrent_ppo.telemetry import GPUTelemetry, cuda_index


def path_safe(name: str) -> str:
    """`name` with what paths should not hold replaced: gym:CartPole-v1 -> gym-CartPole-v1."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{path_safe(cfg.env)}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


class Trainer:
    """Owns the env, policy, optimizer and buffer of one run; `train()` runs it to the end."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg.validate()
        self.device = cfg.resolved_device()
        # Under torchrun: one process per device, gradients averaged (recurrent_ppo.distributed).
        self.group = distributed.join(self.device.type)
        if self.group.parallel and self.device.type == "cuda":
            if cfg.device not in ("auto", "cuda"):
                raise ValueError(f"device={cfg.device!r} pins every process to one GPU; under torchrun use "
                                 f"'auto' or 'cuda', which give process i the device cuda:LOCAL_RANK")
            self.device = torch.device("cuda", self.group.local_rank)
            torch.cuda.set_device(self.device)
        self.num_iterations = cfg.total_steps // (cfg.batch_size * self.group.world_size)
        if self.num_iterations < 1:
            raise ValueError(f"total_steps={cfg.total_steps} is less than one rollout of all "
                             f"{self.group.world_size} processes ({cfg.batch_size} steps each)")
        self.compile_mode = cfg.resolved_compile_mode(self.device)
        torch.set_float32_matmul_precision(cfg.matmul_precision)  # process-wide, as torch has it
        torch.manual_seed(cfg.seed + self.group.rank)  # each process its own episodes; weights come from rank 0
        env = make_env(cfg.env, cfg.num_envs, self.device)
        self.policy = RecurrentPolicy(env.observation_space, env.action_space, cfg.hidden_dim, cfg.num_layers,
                                      cfg.core).to(self.device)
        self.policy_spec = self.policy.spec()
        distributed.broadcast_module(self.policy, self.group)
        # The learning rate is a tensor updated in place, so annealing never changes a traced constant;
        # on CUDA the optimizer is capturable, which tensor learning rates need there.
        self.lr = torch.tensor(cfg.learning_rate, device=self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr, eps=1e-5,
                                          capturable=self.device.type == "cuda")
        self.buffer = RolloutBuffer.for_policy(self.policy, cfg.num_envs, cfg.num_steps, self.device)
        self.episodes = EpisodeTracker(cfg.num_envs, self.device)
        compile_args = dict(compile_mode=self.compile_mode, compile_backend=cfg.compile_backend)
        self.collector = RolloutCollector(self.policy, env, self.buffer, self.episodes,
                                          reward_scale=cfg.reward_scale, **compile_args)
        # Evaluation envs match the training batch, so compiled steps see the shapes they were traced with.
        self.evaluator = Evaluator(self.policy, make_env(cfg.env, cfg.num_envs, self.device), **compile_args)
        self.updater = PPOUpdater(self.policy, self.optimizer, clip_coef=cfg.clip_coef, vf_coef=cfg.vf_coef,
                                  ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
                                  clip_vloss=cfg.clip_vloss, norm_adv=cfg.norm_adv,
                                  grad_sync=self._average_gradients if self.group.parallel else None,
                                  **compile_args)
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        self.global_step = 0
        self.start_iteration = 0
        self.resumed = False

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the run saved in `state` (`checkpoint.read_checkpoint`): weights, optimizer state, step and
        iteration counts, so the learning-rate schedule goes on where it stopped. The envs and the episode
        statistics start afresh, and random numbers are reseeded from the seed, the rank and the iteration: a
        resumed run is reproducible, though not the stream an uninterrupted run would have drawn."""
        if state["policy_spec"] != self.policy_spec:
            raise ValueError(f"the checkpoint's policy {state['policy_spec']} does not match this run's "
                             f"{self.policy_spec}")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # loading replaced the lr tensor that annealing updates in place
            group["lr"] = self.lr
        self.global_step = state["global_step"]
        self.start_iteration = state.get("iteration", self.global_step // self.steps_per_iteration)
        if self.start_iteration >= self.num_iterations:
            raise ValueError(f"the run already trained {self.global_step:,} of total_steps={self.cfg.total_steps:,}; "
                             f"give a larger total_steps to continue it")
        torch.manual_seed(self.cfg.seed + self.group.rank + 1_000_003 * self.start_iteration)
        self.resumed = True

    def _average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        distributed.average_gradients(params, self.group)

    @property
    def steps_per_iteration(self) -> int:
        """Env steps of one iteration, all processes together."""
        return self.cfg.batch_size * self.group.world_size

    def learning_rate_at(self, iteration: int) -> float:
        cfg = self.cfg
        return cfg.learning_rate * (1.0 - iteration / self.num_iterations) if cfg.anneal_lr else cfg.learning_rate

    def train_iteration(self, iteration: int) -> dict[str, Any]:
        """One rollout, GAE and PPO update; returns the update's mean loss terms and the learning rate used."""
        cfg = self.cfg
        learning_rate = self.learning_rate_at(iteration)
        self.lr.fill_(learning_rate)
        with record_function("rollout"):
            last_values = self.collector.collect()
        self.global_step += self.steps_per_iteration
        with record_function("gae"):
            self.buffer.compute_advantages(last_values, cfg.gamma, cfg.gae_lambda)
        with record_function("update"):
            losses = self.updater.update(self.buffer, seq_len=cfg.seq_len, num_minibatches=cfg.num_minibatches,
                                         epochs=cfg.update_epochs)
        self.collector.check()  # the update's read has waited for the device already
        if self.group.parallel:  # each process's means, averaged
            names = list(losses)
            means = distributed.all_sum(torch.tensor([losses[n] for n in names], dtype=torch.float64,
                                                     device=self.device), self.group) / self.group.world_size
            losses = dict(zip(names, means.tolist()))
        return {"learning_rate": learning_rate, **losses}

    def evaluate(self, num_episodes: int) -> float:
        """Mean return of `num_episodes` fresh episodes under the deterministic policy."""
        return self.evaluator.evaluate(num_episodes)

    def train(self) -> dict[str, Any]:
        """Train for `total_steps`, log every iteration (metrics.jsonl, TensorBoard), checkpoint, then evaluate.
        Data-parallel, every process trains and rank 0 alone writes the run folder and evaluates."""
        cfg, main = self.cfg, self.group.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config = {**dataclasses.asdict(cfg), "resolved_device": str(self.device),
                      "resolved_compile_mode": self.compile_mode, "world_size": self.group.world_size}
            (self.run_dir / "config.json").write_text(json.dumps(config, indent=2))
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                            disable=not (cfg.progress and main))
        combine = (lambda stats: distributed.all_sum(stats, self.group)) if self.group.parallel else None
        start, first_step = time.perf_counter(), self.global_step
        record: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:
            resume_after = (self.start_iteration, self.global_step) if self.resumed else None
            run_log = stack.enter_context(RunLogger(self.run_dir, resume_after=resume_after)) if main else None
            # Telemetry samples on its own thread; the loop only copies its latest reading into each record.
            telemetry = stack.enter_context(GPUTelemetry(cuda_index(self.device))) if main else None
            stack.enter_context(progress)
            task = progress.add_task("steps", total=self.num_iterations * self.steps_per_iteration, status="")
            progress.update(task, completed=self.global_step)
            for iteration in range(self.start_iteration, self.num_iterations):
                iter_start = time.perf_counter()
                metrics = self.train_iteration(iteration)
                episodes = self.episodes.summary(combine)
                now = time.perf_counter()
                record = {"iteration": iteration, "global_step": self.global_step, **episodes,
                          "sps": self.steps_per_iteration / (now - iter_start),
                          "sps_overall": (self.global_step - first_step) / (now - start), "time": now - start,
                          **metrics, **(telemetry.latest() if telemetry else {})}
                if run_log:
                    run_log.write(record)
                    done = iteration + 1
                    if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < self.num_iterations:
                        self.save(done)
                progress.update(task, completed=self.global_step,
                                status=f"SPS {record['sps_overall']:,.0f}  "
                                       f"return {episodes['episode_return_mean']:.1f}")
        distributed.check_in_sync(self.policy, self.group)
        summary = {"global_step": self.global_step, "train_time_s": time.perf_counter() - start,
                   "episode_return_mean": record.get("episode_return_mean", float("nan")),
                   "sps": record.get("sps_overall", float("nan")), "compile_mode": self.compile_mode,
                   "world_size": self.group.world_size}
        if not main:
            return summary
        summary["checkpoint"] = str(self.save(self.num_iterations))
        if cfg.eval_episodes:
            summary["eval_return_mean"] = self.evaluate(cfg.eval_episodes)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def save(self, iteration: int) -> Path:
        """Checkpoint the run after `iteration` iterations, atomically, to RUN_DIR/checkpoint.pt."""
        state = {"policy": self.policy.state_dict(), "policy_spec": self.policy_spec,
                 "optimizer": self.optimizer.state_dict(), "config": dataclasses.asdict(self.cfg),
                 "global_step": self.global_step, "iteration": iteration}
        return save_checkpoint(self.run_dir / "checkpoint.pt", state)
