"""The training loop: rollout on the device env, GAE, PPO epochs over sequence minibatches, logging."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.checkpoint import save_checkpoint
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import make_env
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.policy import LSTMPolicyBundle, reset_hidden
from recurrent_ppo.ppo import UPDATE_METRICS, update_step


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.env}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


class Trainer:
    """Owns the env, policy, optimizer and buffer of one run; `train()` runs it to the end."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg.validate()
        self.device = cfg.resolved_device()
        torch.manual_seed(cfg.seed)
        self.env = make_env(cfg.env, cfg.num_envs, self.device)
        self.policy_args = dict(obs_dim=self.env.obs_dim, num_actions=self.env.num_actions,
                                hidden_dim=cfg.hidden_dim, num_layers=cfg.num_layers)
        self.policy = LSTMPolicyBundle(**self.policy_args).to(self.device)
        # The learning rate is a tensor updated in place, so annealing never changes a traced constant;
        # on CUDA the optimizer is capturable, which tensor learning rates need there.
        self.lr = torch.tensor(cfg.learning_rate, device=self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr, eps=1e-5,
                                          capturable=self.device.type == "cuda")
        self.buffer = RolloutBuffer(cfg.num_envs, cfg.num_steps, self.env.obs_dim, cfg.num_layers,
                                    cfg.hidden_dim, self.device)
        self.episodes = EpisodeTracker(cfg.num_envs, self.device)
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        self.global_step = 0
        with torch.inference_mode():  # rollout tensors are all inference tensors, from the first step on
            self.obs = self.env.reset()
            self.hidden = self.policy.initial_hidden(cfg.num_envs)
            self.episode_starts = torch.ones(cfg.num_envs, dtype=torch.bool, device=self.device)
            self.no_starts = torch.zeros(cfg.num_envs, dtype=torch.bool, device=self.device)

    @torch.inference_mode()
    def collect_rollout(self) -> torch.Tensor:
        """Fill the buffer with `num_steps` steps of all envs; returns V(obs after the last step) `[num_envs]`."""
        policy, env, buffer = self.policy, self.env, self.buffer
        obs, hidden, starts = self.obs, self.hidden, self.episode_starts
        buffer.reset()
        for _ in range(self.cfg.num_steps):
            hidden = reset_hidden(hidden, starts)  # the buffer stores the state fed into the step
            act = policy.get_action(obs, hidden, starts)
            step = env.step(act.action)
            # Bootstrap of a time-limit cut: V(final obs) from the state after this step, no reset.
            truncated_values = policy.get_value(step.final_obs, act.hidden, self.no_starts)
            buffer.add(obs=obs, actions=act.action, log_probs=act.log_prob, values=act.value,
                       rewards=step.reward * self.cfg.reward_scale, terminated=step.terminated, truncated=step.truncated,
                       truncated_values=truncated_values, episode_starts=starts, hidden=hidden)
            done = step.terminated | step.truncated
            self.episodes.update(step.reward, done)
            obs, hidden, starts = step.obs, act.hidden, done
        self.obs, self.hidden, self.episode_starts = obs, hidden, starts
        self.global_step += self.cfg.batch_size
        return policy.get_value(obs, hidden, starts)

    def update(self) -> dict[str, float]:
        """`update_epochs` passes of PPO over shuffled sequence minibatches; returns mean loss terms."""
        cfg = self.cfg
        totals = torch.zeros(len(UPDATE_METRICS), device=self.device)
        for _ in range(cfg.update_epochs):
            for batch in self.buffer.get_batched_sequences(cfg.seq_len, cfg.num_minibatches):
                totals += update_step(self.policy, self.optimizer, batch, clip_coef=cfg.clip_coef,
                                      vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                                      max_grad_norm=cfg.max_grad_norm, clip_vloss=cfg.clip_vloss,
                                      norm_adv=cfg.norm_adv)
        means = (totals / (cfg.update_epochs * cfg.num_minibatches)).tolist()  # the update's one host read
        return dict(zip(UPDATE_METRICS, means))

    def train_iteration(self, iteration: int) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.anneal_lr:
            self.lr.fill_(cfg.learning_rate * (1.0 - iteration / cfg.num_iterations))
        last_values = self.collect_rollout()
        self.buffer.compute_advantages(last_values, cfg.gamma, cfg.gae_lambda)
        losses = self.update()
        return {"learning_rate": cfg.learning_rate * (1.0 - iteration / cfg.num_iterations) if cfg.anneal_lr
                else cfg.learning_rate, **losses}

    def train(self) -> dict[str, Any]:
        """Train for `total_steps`, log every iteration to metrics.jsonl, checkpoint at the end, then evaluate."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), disable=not cfg.progress)
        start = time.perf_counter()
        record: dict[str, Any] = {}
        with open(self.run_dir / "metrics.jsonl", "w") as log, progress:
            task = progress.add_task("steps", total=cfg.num_iterations * cfg.batch_size, status="")
            for iteration in range(cfg.num_iterations):
                iter_start = time.perf_counter()
                metrics = self.train_iteration(iteration)
                episodes = self.episodes.summary()
                now = time.perf_counter()
                record = {"iteration": iteration, "global_step": self.global_step, **episodes,
                          "sps": cfg.batch_size / (now - iter_start),
                          "sps_overall": self.global_step / (now - start), "time": now - start, **metrics}
                log.write(json.dumps(record) + "\n")
                log.flush()
                progress.update(task, completed=self.global_step,
                                status=f"SPS {record['sps_overall']:,.0f}  return {episodes['episode_return_mean']:.1f}")
        checkpoint = self.save()
        summary = {"global_step": self.global_step, "train_time_s": time.perf_counter() - start,
                   "episode_return_mean": record.get("episode_return_mean", float("nan")),
                   "sps": record.get("sps_overall", float("nan")), "checkpoint": str(checkpoint)}
        if cfg.eval_episodes:
            summary["eval_return_mean"] = self.evaluate(cfg.eval_episodes)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def save(self) -> Path:
        state = {"policy": self.policy.state_dict(), "policy_args": self.policy_args,
                 "optimizer": self.optimizer.state_dict(), "config": dataclasses.asdict(self.cfg),
                 "global_step": self.global_step}
        return save_checkpoint(self.run_dir / "checkpoint.pt", state)

    @torch.inference_mode()
    def evaluate(self, num_episodes: int, max_steps: int = 100_000) -> float:
        """Mean return of the first episode of `num_episodes` fresh envs under the deterministic policy."""
        env = make_env(self.cfg.env, num_episodes, self.device)
        obs = env.reset()
        hidden = self.policy.initial_hidden(num_episodes)
        starts = torch.ones(num_episodes, dtype=torch.bool, device=self.device)
        running = torch.zeros(num_episodes, device=self.device)
        finished = torch.zeros(num_episodes, dtype=torch.bool, device=self.device)
        for step in range(1, max_steps + 1):
            act = self.policy.get_action(obs, hidden, starts, deterministic=True)
            result = env.step(act.action)
            running += result.reward * ~finished
            finished |= result.terminated | result.truncated
            obs, hidden, starts = result.obs, act.hidden, result.terminated | result.truncated
            if step % 64 == 0 and bool(finished.all()):  # a host read every 64 steps only
                return float(running.mean())
        raise RuntimeError(f"evaluation: {int((~finished).sum())} of {num_episodes} episodes still running "
                           f"after {max_steps} steps")
