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
from torch.profiler import record_function

from recurrent_ppo import distributed, runstate
from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.checkpoint import CHECKPOINT_FILE, save_checkpoint
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.console import Console
from recurrent_ppo.envs import EnvFactory, GymVectorEnv, PreviousAction, VectorEnv, build_env, make_env, rebuild_name
from recurrent_ppo.envs.host_workers import available_cores
from recurrent_ppo.envs.sources import is_factory
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.finite import check_update
from recurrent_ppo.models.policy import RecurrentPolicy
from recurrent_ppo.ppo import PPOSettings, PPOUpdater
from recurrent_ppo.rollout import Evaluator, OverlappedRolloutCollector, RolloutCollector, RolloutSettings, host_parts
from recurrent_ppo.runfolder import RunFolderLock, writing
from recurrent_ppo.runlog import RunLogger
from recurrent_ppo.stopping import StopRequested
from recurrent_ppo.telemetry import GPUTelemetry, cuda_index


def path_safe(name: str) -> str:
    """`name` with what paths should not hold replaced: gym:CartPole-v1 -> gym-CartPole-v1."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{path_safe(cfg.env)}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT_FILE, "summary.json")
"""What a run writes into its folder (with TensorBoard's events.out.tfevents.* files)."""


class RunDirError(ValueError):
    """The run folder holds a run that this one would overwrite."""


def gym_env(env: VectorEnv | None) -> GymVectorEnv | None:
    """The gymnasium env `env` is or wraps (PreviousAction), else None."""
    inner = env.env if isinstance(env, PreviousAction) else env
    return inner if isinstance(inner, GymVectorEnv) else None


class TrainingStopped(Exception):
    """Training stopped early at a signal (SIGINT, SIGTERM), after checkpointing the last finished iteration."""

    def __init__(self, signal_name: str, exit_code: int, iteration: int, checkpoint: Path | None) -> None:
        where = f"; checkpoint: {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"stopped by {signal_name} after iteration {iteration}{where}")
        self.signal_name, self.exit_code, self.iteration, self.checkpoint = signal_name, exit_code, iteration, checkpoint


class TrainingFailed(RuntimeError):
    """An error outside the update stopped training: an env raised or returned what its spaces forbid, in the
    rollout or in an evaluation. The message names the env, the iteration and the rollout step, then the error's
    own (chained as the cause). `checkpoint` holds the last completed iteration (`iterations` of them), None when
    none completed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.checkpoint: Path | None = None
        self.iterations = 0


@dataclasses.dataclass
class RunProgress:
    """What the training loop carries from one iteration to the next."""

    run_log: RunLogger | None  # rank 0's
    telemetry: GPUTelemetry | None  # rank 0's
    console: Console
    stop: StopRequested | None  # the signal handler, when the run handles signals
    start: float  # perf_counter at the start of this process's training
    first_step: int  # global_step then
    offset: float  # seconds of training before this process's
    record: dict[str, Any] = dataclasses.field(default_factory=dict)  # the last iteration's
    stopped: str | None = None  # why the loop stops early: a signal's name, "time budget"
    checkpoint: Path | None = None  # the last checkpoint this process wrote


def check_evaluable(cfg: TrainConfig, env: VectorEnv | EnvFactory) -> None:
    """Raise ValueError where `cfg` asks to evaluate and `env` is an instance, which cannot also be evaluated."""
    if not is_factory(env) and (cfg.eval_episodes or cfg.eval_every):
        raise ValueError(f"Trainer(cfg, env=<a {type(env).__name__} instance>): evaluation needs an env of its own "
                         f"beside the one being trained, which an instance cannot give (eval_episodes="
                         f"{cfg.eval_episodes}, eval_every={cfg.eval_every}); pass its class or a factory "
                         f"(num_envs, device) -> VectorEnv instead, or set eval_episodes=0 and eval_every=0")


class Trainer:
    """Owns the env, policy, optimizer and buffer of one run; `train()` runs it to the end."""

    starting_over = False
    """Set by `start_over()`: the run folder's run wrote no checkpoint, and this run replaces it."""

    def __init__(self, cfg: TrainConfig, env: VectorEnv | EnvFactory | None = None) -> None:
        """`env`, when given, is trained instead of `cfg.env`: a VectorEnv instance, or a factory
        `(num_envs, device) -> VectorEnv` (a VectorEnv class is one), which builds the evaluation env too. An
        instance cannot also be evaluated (evaluation steps an env of its own), so with one `eval_episodes` and
        `eval_every` must be 0. `cfg.env` becomes how config.json names it (`envs.rebuild_name`): the factory's
        import path where importing gives it back, so `eval` and `--resume` rebuild it; else a `<...>` marker
        with which they ask for the env again."""
        if env is not None:
            check_evaluable(cfg, env)
            cfg = cfg.replace(env=rebuild_name(env))
        self.cfg = cfg.validate()
        self.device, self.group = self._place()
        self.num_iterations = cfg.total_steps // (cfg.batch_size * self.group.world_size)
        if self.num_iterations < 1:
            raise ValueError(f"total_steps={cfg.total_steps} is less than one rollout of all "
                             f"{self.group.world_size} processes ({cfg.batch_size} steps each)")
        self.compile_mode = cfg.resolved_compile_mode(self.device)
        self.rnn_kernel = cfg.resolved_rnn_kernel(self.device)
        torch.set_float32_matmul_precision(cfg.matmul_precision)  # process-wide, as torch has it
        torch.manual_seed(cfg.seed + self.group.rank)  # each process its own episodes; weights come from rank 0
        # With workers and overlap, the training env's copies are laid out in two halves (OverlappedRolloutCollector).
        train_env = self._build_env(env, parts=2 if cfg.env_overlap else 1)
        self._build_learner(train_env)
        self._assemble(train_env, env)
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        self.global_step = 0
        self.start_iteration = 0
        self.resumed = False
        self.resumed_exactly = False
        self.elapsed = 0.0  # seconds of training before this process's, for a resumed run
        self.saved_iteration = 0  # the iterations the checkpoint on disk holds (0: none)
        self.fresh_episodes_note: str | None = None  # why the checkpoint resumed restarts episodes, if it says

    def _place(self) -> tuple[torch.device, distributed.Group]:
        """This process's device and its data-parallel group (under torchrun: one process per device, gradients
        averaged; recurrent_ppo.distributed)."""
        device = self.cfg.resolved_device()
        group = distributed.join(device.type)
        if group.parallel and device.type == "cuda":
            if self.cfg.device not in ("auto", "cuda"):
                raise ValueError(f"device={self.cfg.device!r} pins every process to one GPU; under torchrun use "
                                 f"'auto' or 'cuda', which give process i the device cuda:LOCAL_RANK")
            device = torch.device("cuda", group.local_rank)
            torch.cuda.set_device(device)
        return device, group

    def _build_learner(self, env: VectorEnv) -> None:
        """The policy for `env`'s spaces (rank 0's weights everywhere), its optimizer, the rollout buffer and the
        episode statistics."""
        cfg = self.cfg
        self.policy = RecurrentPolicy(env.observation_space, env.action_space, cfg.hidden_dim, cfg.num_layers,
                                      cfg.core, skip_core=cfg.skip_core, recall=cfg.recall_coef > 0).to(self.device)
        self.policy.core.use_kernel(self.rnn_kernel, tf32=cfg.precision == "tf32")  # not in the spec: a runtime choice
        self.policy_spec = self.policy.spec()
        distributed.broadcast_module(self.policy, self.group)
        # The learning rate is a tensor updated in place, so annealing never changes a traced constant;
        # on CUDA the optimizer is capturable, which tensor learning rates need there.
        self.lr = torch.tensor(cfg.learning_rate, device=self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr, eps=1e-5,
                                          capturable=self.device.type == "cuda")
        self.buffer = RolloutBuffer.for_policy(self.policy, cfg.num_envs, cfg.num_steps, self.device,
                                               env.max_episode_steps)
        self.episodes = EpisodeTracker(cfg.num_envs, self.device)

    def _assemble(self, env: VectorEnv, source: VectorEnv | EnvFactory | None) -> None:
        """The rollout collector on `env`, the evaluator and the updater, and what of them runs compiled, all here.

        Compiled (fullgraph=True, in `compile_mode` with `cfg.compile_backend`): the rollout step (one graph through
        a device env; through a host env, the parts before and after its step), the value of the rollout's last
        observation, evaluation's step, the update's loss and its refresh of sequence-start states. Modes
        reduce-overhead and max-autotune add CUDA graphs to each on CUDA. With rollout_graph, the rollout's steps
        compile without CUDA graphs of their own, and the collector captures the whole rollout in one CUDA graph
        after the first and replays it once per rollout."""
        cfg = self.cfg
        compiled = dict(compile_mode=self.compile_mode, compile_backend=cfg.compile_backend)
        rollout_compiled = {**compiled, "compile_mode": "default"} if cfg.rollout_graph else compiled
        collector = OverlappedRolloutCollector if host_parts(env) else RolloutCollector
        self.collector = collector(self.policy, env, self.buffer, self.episodes, RolloutSettings.of(cfg),
                                   **rollout_compiled)
        # Evaluation envs match the training batch, so compiled steps see the shapes they were traced with.
        # It reads the collector's observation statistics, frozen, as they stand when it runs.
        # An env instance has none (check_evaluable refused evaluation with one).
        self.evaluator = None if source is not None and not is_factory(source) else \
            Evaluator(self.policy, self._build_env(source), obs_norm=self.collector.obs_norm, **compiled)
        self.updater = PPOUpdater(self.policy, self.optimizer, PPOSettings.of(cfg),
                                  grad_sync=self._average_gradients if self.group.parallel else None, **compiled)

    def _build_env(self, source: VectorEnv | EnvFactory | None, parts: int = 1) -> VectorEnv:
        """The env `cfg.env` names (`source` None), or the one handed to the Trainer. A gymnasium env's copies step
        in `cfg.env_workers` worker processes, laid out in `parts`."""
        cfg = self.cfg
        if source is None:
            return make_env(cfg.env, cfg.num_envs, self.device, previous_action=cfg.previous_action,
                            workers=cfg.env_workers, parts=parts)
        return build_env(source, cfg.num_envs, self.device, previous_action=cfg.previous_action)

    def env_workers(self) -> tuple[int, str]:
        """The worker processes stepping the training env's copies (0: in-process), and why `auto` chose so."""
        env = gym_env(self.collector.env)
        return (env.workers, env.workers_note) if env is not None else (0, "")

    @contextlib.contextmanager
    def _threads_beside_workers(self):
        """torch's CPU threads, while env workers step: the cores the workers leave, at least one. Each worker keeps
        a core busy, and torch's OpenMP threads beyond the free cores wait for one at every parallel op: with
        2 threads beside 2 busy workers on 2 cores, a rollout step's policy took tens of times as long."""
        workers, before = self.env_workers()[0], torch.get_num_threads()
        if not workers or self.device.type != "cpu":
            yield
            return
        torch.set_num_threads(max(1, min(before, available_cores() - workers)))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        """Close the gymnasium envs the trainer made (training and evaluation), stopping their env workers."""
        for env in (self.collector.env, self.evaluator.env if self.evaluator is not None else None):
            if (made := gym_env(env)) is not None:
                made.close()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the run saved in `state` (`checkpoint.read_checkpoint`): `runstate.restore`, which says what a
        checkpoint holds and when the run goes on exactly."""
        resumed = runstate.restore(self, state)
        self.global_step, self.start_iteration, self.elapsed = resumed.global_step, resumed.iteration, resumed.elapsed
        self.resumed, self.resumed_exactly, self.saved_iteration = True, resumed.exactly, resumed.iteration
        self.fresh_episodes_note = resumed.fresh_episodes

    def resume_note(self) -> str:
        """How the resumed run relates to the uninterrupted one, for the user."""
        if self.resumed_exactly:
            return "exactly where it stopped (envs, recurrent state, random streams restored)"
        if self.fresh_episodes_note:
            return f"with fresh episodes, reseeded: {self.fresh_episodes_note}"
        if self.collector.env.steps_on_host:
            return "with fresh episodes: a gymnasium env cannot be snapshotted, so it was reseeded"
        return "with fresh episodes, reseeded (data-parallel and older checkpoints keep weights and optimizer only)"

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
        with record_function("rollout"), self._threads_beside_workers():
            try:
                last_values = self.collector.collect()
            except Exception as error:  # weights, optimizer and global_step are still the last iteration's
                step = max(self.buffer.pos - 1, 0)  # the step the host was running (claimed before it ran)
                raise TrainingFailed(f"the rollout of iteration {iteration} failed at step {step} of "
                                     f"{cfg.num_steps} (env {cfg.env}): {type(error).__name__}: {error}") from error
        self.global_step += self.steps_per_iteration
        with record_function("gae"):
            self.buffer.compute_advantages(last_values, cfg.gamma, cfg.gae_lambda, cfg.value_lambda)
        with record_function("update"):
            losses = self.updater.update(self.buffer, seq_len=cfg.seq_len, num_minibatches=cfg.num_minibatches,
                                         epochs=cfg.update_epochs)
        # The rollout's flags (env outputs first), then the update itself. The update's read has waited for the
        # device already, so this read costs no further wait.
        self.collector.check(iteration)
        check_update(losses, iteration)
        if self.group.parallel:  # each process's means, averaged
            names = list(losses)
            means = distributed.all_sum(torch.tensor([losses[n] for n in names], dtype=torch.float64,
                                                     device=self.device), self.group) / self.group.world_size
            losses = dict(zip(names, means.tolist()))
        return {"learning_rate": learning_rate, **losses}

    def evaluate(self, num_episodes: int) -> float:
        """Mean return of `num_episodes` fresh episodes under the deterministic policy."""
        if self.evaluator is None:
            raise ValueError(f"this Trainer has no evaluation env: it was handed an env instance ({self.cfg.env}); "
                             f"hand it a class or factory (num_envs, device) -> VectorEnv to evaluate")
        with self._threads_beside_workers():
            return self.evaluator.evaluate(num_episodes)

    def start_over(self) -> None:
        """Train the run in the run folder from its first iteration: its run stopped before writing a checkpoint
        (config.json, maybe logs, no checkpoint.pt), so there is nothing to resume, and `train()` replaces it
        (`train --resume` of such a folder)."""
        self.starting_over = True

    def prepare_run_dir(self) -> None:
        """Refuse a run folder that holds a run (unless resuming it, starting it over, or `overwrite`), then write
        config.json."""
        cfg = self.cfg
        existing = [name for name in RUN_FILES if (self.run_dir / name).exists()]
        existing += sorted(path.name for path in self.run_dir.glob("events.out.tfevents.*"))
        if existing and not self.resumed:
            unfinished = "config.json" in existing and CHECKPOINT_FILE not in existing  # stopped before one
            if not cfg.overwrite and not (unfinished and self.starting_over):
                if unfinished:
                    raise RunDirError(f"{self.run_dir} holds a run that stopped before its first checkpoint "
                                      f"({', '.join(existing)}): start it over with its saved configuration with "
                                      f"`recurrent-ppo train --resume {self.run_dir}`, replace it with this "
                                      f"configuration with --overwrite, or choose another --run-dir")
                raise RunDirError(f"{self.run_dir} holds a run ({', '.join(existing)}): continue it with --resume "
                                  f"{self.run_dir}, replace it with --overwrite, or choose another --run-dir")
            for name in (CHECKPOINT_FILE, "summary.json"):  # RunLogger starts metrics and events afresh
                (self.run_dir / name).unlink(missing_ok=True)
        config = {**dataclasses.asdict(cfg), "resolved_device": str(self.device),
                  "resolved_compile_mode": self.compile_mode, "resolved_rnn_kernel": self.rnn_kernel,
                  "resolved_env_workers": self.env_workers()[0], "world_size": self.group.world_size}
        with writing(self.run_dir / "config.json"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(config, indent=2))

    def _should_stop(self, stop: StopRequested | None, elapsed: float) -> str | None:
        """Why training stops after this iteration (a signal's name, "time budget"), agreed by all processes."""
        budget = self.cfg.time_budget
        reasons = [stop is not None and stop.requested, bool(budget) and elapsed >= budget]
        if self.group.parallel:  # every process must stop after the same iteration, or collectives hang
            flags = distributed.all_sum(torch.tensor(reasons, dtype=torch.float64, device=self.device), self.group)
            reasons = [bool(flag) for flag in flags.tolist()]
        if reasons[0]:
            return stop.signal.name if stop is not None and stop.signal is not None else "a signal"
        return "time budget" if reasons[1] else None

    def train(self, *, handle_signals: bool = False) -> dict[str, Any]:
        """Train for `total_steps`, log every iteration (metrics.jsonl, TensorBoard), checkpoint, then evaluate.
        Data-parallel, every process trains and rank 0 alone writes the run folder and evaluates.

        With `handle_signals`, SIGINT and SIGTERM finish the current iteration, checkpoint it and raise
        TrainingStopped (a second signal aborts at once). `time_budget` stops the same way, without raising:
        the summary then says `stopped: "time budget"`.

        The run folder is locked (`runfolder.RunFolderLock`) from before its first write to after its last, so a
        second process training or resuming it is refused; rank 0 alone writes it, so rank 0 alone locks it."""
        with RunFolderLock(self.run_dir) if self.group.is_main else contextlib.nullcontext():
            return self._train(handle_signals)

    def _train(self, handle_signals: bool) -> dict[str, Any]:
        """`train()` with the run folder locked: the loop."""
        if self.group.is_main:
            self.prepare_run_dir()
        with contextlib.ExitStack() as stack:
            run = self._open_run(stack, handle_signals)
            for iteration in range(self.start_iteration, self.num_iterations):
                run.record = self._iteration(run, iteration)
                run.stopped = self._should_stop(run.stop, time.perf_counter() - run.start)
                done = iteration + 1
                periodic = self.cfg.checkpoint_every and done % self.cfg.checkpoint_every == 0
                if self.group.is_main and (periodic or run.stopped) and done < self.num_iterations:
                    run.checkpoint = self.save(done, run.record["time"])
                if run.stopped and done < self.num_iterations:
                    run.console.say(f"stopping after iteration {done} of {self.num_iterations}: {run.stopped}")
                    break
                run.stopped = None  # a stop asked in the last iteration finishes the run as usual
        distributed.check_in_sync(self.policy, self.group)
        return self._finish(run)

    def _open_run(self, stack: contextlib.ExitStack, handle_signals: bool) -> RunProgress:
        """The logging, telemetry, progress display and signal handling of the run, entered on `stack`."""
        main = self.group.is_main
        resume_after = (self.start_iteration, self.global_step) if self.resumed else None
        run_log = stack.enter_context(RunLogger(self.run_dir, resume_after=resume_after)) if main else None
        # Telemetry samples on its own thread; the loop only copies its latest reading into each record.
        telemetry = stack.enter_context(GPUTelemetry(cuda_index(self.device))) if main else None
        console = stack.enter_context(Console(self.num_iterations, self.steps_per_iteration,
                                              enabled=self.cfg.progress and main, every=self.cfg.log_every))
        console.start_at(self.global_step)
        stop = stack.enter_context(StopRequested()) if handle_signals else None
        return RunProgress(run_log, telemetry, console, stop, time.perf_counter(), self.global_step,
                           self.elapsed if self.resumed else 0.0)

    def _iteration(self, run: RunProgress, iteration: int) -> dict[str, Any]:
        """Train one iteration, evaluate when due, log it; its record. A failed rollout or evaluation raises
        TrainingFailed once the last completed iteration is on disk."""
        iter_start = time.perf_counter()
        compiling = iteration == self.start_iteration and self.compile_mode != "off"
        if compiling:
            run.console.say(f"compiling the rollout step and the update ({self.compile_mode}, "
                            f"{self.cfg.compile_backend}) in the first iteration...")
        try:
            metrics = self.train_iteration(iteration)
        except TrainingFailed as failure:  # in the rollout: the last completed iteration goes to disk
            if self.group.is_main:
                self._keep_completed(failure, iteration, run.record.get("time", run.offset))
            raise
        if compiling:
            run.console.say(f"first iteration, compilation included: {time.perf_counter() - iter_start:.1f} s")
        evaluation_failed = None
        if self.cfg.eval_every and self.group.is_main and (iteration + 1) % self.cfg.eval_every == 0:
            try:
                metrics["eval_return_mean"] = self.evaluate(self.cfg.eval_episodes)
            except Exception as error:  # the iteration's training is whole: it is logged and saved first
                evaluation_failed = self._evaluation_failed(error, f"after iteration {iteration}")
        record = self._record(run, iteration, iter_start, metrics)
        if evaluation_failed is not None:
            evaluation_failed.checkpoint = self.save(iteration + 1, record["time"])
            evaluation_failed.iterations = iteration + 1
            raise evaluation_failed
        return record

    def _record(self, run: RunProgress, iteration: int, iter_start: float, metrics: dict[str, Any]) -> dict[str, Any]:
        """The iteration's record (counts, episode statistics, speed, time, `metrics`, telemetry), logged."""
        combine = (lambda stats: distributed.all_sum(stats, self.group)) if self.group.parallel else None
        episodes = self.episodes.summary(combine)
        now = time.perf_counter()
        record = {"iteration": iteration, "global_step": self.global_step, **episodes,
                  "sps": self.steps_per_iteration / (now - iter_start),
                  "sps_overall": (self.global_step - run.first_step) / (now - run.start),
                  "time": run.offset + now - run.start, **metrics,
                  **(run.telemetry.latest() if run.telemetry else {})}
        if run.run_log:
            run.run_log.write(record)
        run.console.update(iteration, record)
        return record

    def _finish(self, run: RunProgress) -> dict[str, Any]:
        """After the loop: raise TrainingStopped for a signal; else (rank 0) the final checkpoint, the final
        evaluation and summary.json. Returns the summary."""
        record = run.record
        summary = {"global_step": self.global_step, "train_time_s": time.perf_counter() - run.start,
                   "episode_return_mean": record.get("episode_return_mean", float("nan")),
                   "sps": record.get("sps_overall", float("nan")), "compile_mode": self.compile_mode,
                   "world_size": self.group.world_size}
        if run.stopped is not None and run.stopped != "time budget":
            raise TrainingStopped(run.stopped, run.stop.exit_code if run.stop is not None else 1,
                                  record["iteration"] + 1, run.checkpoint)
        if not self.group.is_main:
            return summary
        if run.stopped is not None:
            summary.update(stopped=run.stopped, checkpoint=str(run.checkpoint))
        else:
            summary["checkpoint"] = str(self.save(self.num_iterations, record.get("time", run.offset)))
            if self.cfg.eval_episodes:
                try:
                    summary["eval_return_mean"] = self.evaluate(self.cfg.eval_episodes)
                except Exception as error:
                    failure = self._evaluation_failed(error, "at the end of training")
                    failure.checkpoint, failure.iterations = Path(summary["checkpoint"]), self.num_iterations
                    raise failure from error
        with writing(self.run_dir / "summary.json"):
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _keep_completed(self, failure: TrainingFailed, iteration: int, elapsed: float) -> None:
        """Point `failure` at a checkpoint of the `iteration` completed iterations, writing one unless the one on disk
        holds them already (none when no iteration completed). The rollout moved the env, the carry, the random
        generators and the normalizers past them, so it resumes with fresh episodes, reseeded."""
        failure.iterations = iteration
        if iteration > self.saved_iteration:
            failure.checkpoint = self.save(iteration, elapsed, fresh_episodes=f"the checkpoint was written when "
                                           f"the rollout of iteration {iteration} failed")
        elif iteration > 0 and (self.run_dir / CHECKPOINT_FILE).exists():
            failure.checkpoint = self.run_dir / CHECKPOINT_FILE

    def _evaluation_failed(self, error: Exception, when: str) -> TrainingFailed:
        failure = TrainingFailed(f"the evaluation {when} failed (env {self.cfg.env}): {type(error).__name__}: "
                                 f"{error}")
        failure.__cause__ = error
        return failure

    def save(self, iteration: int, elapsed: float = 0.0, *, fresh_episodes: str | None = None) -> Path:
        """Checkpoint the run after `iteration` iterations (`elapsed` seconds of training), atomically, to
        RUN_DIR/checkpoint.pt (`runstate.capture`: with `fresh_episodes`, why in words, a checkpoint that resumes
        with fresh episodes)."""
        path = save_checkpoint(self.run_dir / CHECKPOINT_FILE, runstate.capture(self, iteration, elapsed, fresh_episodes))
        self.saved_iteration = iteration
        return path
