"""The training loop: rollout on the device env, GAE, PPO epochs over sequence minibatches, logging."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.profiler import record_function

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.checkpoint import save_checkpoint
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import make_env
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.policy import LSTMPolicyBundle
from recurrent_ppo.ppo import PPOUpdater
from recurrent_ppo.rollout import Evaluator, RolloutCollector
from recurrent_ppo.runlog import RunLogger
from recurrent_ppo.telemetry import GPUTelemetry, cuda_index


def default_run_dir(cfg: TrainConfig) -> Path:
    env = re.sub(r"[^A-Za-z0-9._-]", "-", cfg.env)  # gym:CartPole-v1 -> gym-CartPole-v1: no colons in paths
    return Path("runs") / f"{env}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


class Trainer:
    """Owns the env, policy, optimizer and buffer of one run; `train()` runs it to the end."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg.validate()
        self.device = cfg.resolved_device()
        self.compile_mode = cfg.resolved_compile_mode(self.device)
        torch.set_float32_matmul_precision(cfg.matmul_precision)  # process-wide, as torch has it
        torch.manual_seed(cfg.seed)
        env = make_env(cfg.env, cfg.num_envs, self.device)
        self.policy_args = dict(obs_dim=env.obs_dim, num_actions=env.num_actions, hidden_dim=cfg.hidden_dim,
                                num_layers=cfg.num_layers)
        self.policy = LSTMPolicyBundle(**self.policy_args).to(self.device)
        # The learning rate is a tensor updated in place, so annealing never changes a traced constant;
        # on CUDA the optimizer is capturable, which tensor learning rates need there.
        self.lr = torch.tensor(cfg.learning_rate, device=self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr, eps=1e-5,
                                          capturable=self.device.type == "cuda")
        self.buffer = RolloutBuffer(cfg.num_envs, cfg.num_steps, env.obs_dim, cfg.num_layers, cfg.hidden_dim,
                                    self.device)
        self.episodes = EpisodeTracker(cfg.num_envs, self.device)
        compile_args = dict(compile_mode=self.compile_mode, compile_backend=cfg.compile_backend)
        self.collector = RolloutCollector(self.policy, env, self.buffer, self.episodes,
                                          reward_scale=cfg.reward_scale, **compile_args)
        # Evaluation envs match the training batch, so compiled steps see the shapes they were traced with.
        self.evaluator = Evaluator(self.policy, make_env(cfg.env, cfg.num_envs, self.device), **compile_args)
        self.updater = PPOUpdater(self.policy, self.optimizer, clip_coef=cfg.clip_coef, vf_coef=cfg.vf_coef,
                                  ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
                                  clip_vloss=cfg.clip_vloss, norm_adv=cfg.norm_adv, **compile_args)
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        self.global_step = 0

    def learning_rate_at(self, iteration: int) -> float:
        cfg = self.cfg
        return cfg.learning_rate * (1.0 - iteration / cfg.num_iterations) if cfg.anneal_lr else cfg.learning_rate

    def train_iteration(self, iteration: int) -> dict[str, Any]:
        """One rollout, GAE and PPO update; returns the update's mean loss terms and the learning rate used."""
        cfg = self.cfg
        learning_rate = self.learning_rate_at(iteration)
        self.lr.fill_(learning_rate)
        with record_function("rollout"):
            last_values = self.collector.collect()
        self.global_step += cfg.batch_size
        with record_function("gae"):
            self.buffer.compute_advantages(last_values, cfg.gamma, cfg.gae_lambda)
        with record_function("update"):
            losses = self.updater.update(self.buffer, seq_len=cfg.seq_len, num_minibatches=cfg.num_minibatches,
                                         epochs=cfg.update_epochs)
        return {"learning_rate": learning_rate, **losses}

    def evaluate(self, num_episodes: int) -> float:
        """Mean return of `num_episodes` fresh episodes under the deterministic policy."""
        return self.evaluator.evaluate(num_episodes)

    def train(self) -> dict[str, Any]:
        """Train for `total_steps`, log every iteration (metrics.jsonl, TensorBoard), checkpoint, then evaluate."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = {**dataclasses.asdict(cfg), "resolved_device": str(self.device),
                  "resolved_compile_mode": self.compile_mode}
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2))
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), disable=not cfg.progress)
        start = time.perf_counter()
        record: dict[str, Any] = {}
        # Telemetry samples on its own thread; the loop only copies its latest reading into each record.
        with RunLogger(self.run_dir) as run_log, GPUTelemetry(cuda_index(self.device)) as telemetry, progress:
            task = progress.add_task("steps", total=cfg.num_iterations * cfg.batch_size, status="")
            for iteration in range(cfg.num_iterations):
                iter_start = time.perf_counter()
                metrics = self.train_iteration(iteration)
                episodes = self.episodes.summary()
                now = time.perf_counter()
                record = {"iteration": iteration, "global_step": self.global_step, **episodes,
                          "sps": cfg.batch_size / (now - iter_start),
                          "sps_overall": self.global_step / (now - start), "time": now - start, **metrics,
                          **telemetry.latest()}
                run_log.write(record)
                progress.update(task, completed=self.global_step,
                                status=f"SPS {record['sps_overall']:,.0f}  "
                                       f"return {episodes['episode_return_mean']:.1f}")
        checkpoint = self.save()
        summary = {"global_step": self.global_step, "train_time_s": time.perf_counter() - start,
                   "episode_return_mean": record.get("episode_return_mean", float("nan")),
                   "sps": record.get("sps_overall", float("nan")), "compile_mode": self.compile_mode,
                   "checkpoint": str(checkpoint)}
        if cfg.eval_episodes:
            summary["eval_return_mean"] = self.evaluate(cfg.eval_episodes)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def save(self) -> Path:
        state = {"policy": self.policy.state_dict(), "policy_args": self.policy_args,
                 "optimizer": self.optimizer.state_dict(), "config": dataclasses.asdict(self.cfg),
                 "global_step": self.global_step}
        return save_checkpoint(self.run_dir / "checkpoint.pt", state)
