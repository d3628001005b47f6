"""`recurrent-ppo benchmark`: train every task of a suite for every seed and tabulate how well and how fast
each learned: a tool for users, and a regression gate for learning quality (not a test).

The headline is what the field reports: the MMER (POPGym's maximum mean episodic return: the best mean return of
the training episodes logged over the run), its mean and std over seeds, beside the published PPO-GRU score and the
best of POPGym's 13 models where the paper states them (`envs.popgym.published`), with a mark where the mean reaches
them and the steps and wall-clock seconds at which each seed's curve first reached the PPO-GRU score. Beside it:
the final evaluations of the deterministic (greedy) policy and of the sampling policy that training runs (the greedy
one undersells tasks whose greedy policy repeats a move), the training return at the end, the best memoryless
policy's return, the steps and seconds to reach 90% of the way from the first logged return to the best one, and
steps/s. Written to OUT as results.json, results.md and curves.png (returns against steps and against wall-clock,
one panel each).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs.host_workers import available_cores
from recurrent_ppo.envs.popgym.published import CHANGED_SINCE, PUBLISHED
from recurrent_ppo.plot import read_metrics

REACH = 0.9
"""The share of the way from the first logged return to the best one that counts as reached."""

PUBLISHED_DECIMALS = 3
"""The precision POPGym's paper prints its scores at."""


def at_least(value: float, published: float) -> bool:
    """Whether `value` reaches a published score at the precision the score is printed at: a return summed from
    float32 rewards lands a hair under 1.0 where the paper prints 1.000."""
    return round(value, PUBLISHED_DECIMALS) >= published


def popgym_suite(difficulty: str) -> Callable[[], list[str]]:
    def tasks() -> list[str]:
        from recurrent_ppo.envs import ENVS

        return sorted(name for name in ENVS if name.startswith("popgym/") and name.endswith(difficulty))
    return tasks


SUITES: dict[str, Callable[[], list[str]]] = {
    "popgym-easy": popgym_suite("Easy"),
    "popgym-medium": popgym_suite("Medium"),
    "popgym-hard": popgym_suite("Hard"),
    "memory": lambda: ["memory", "stateless-cartpole"],
}
"""Suites by name: each gives its task (env) names."""


@dataclass
class SeedRun:
    """One training run: its curve and summary."""

    seed: int
    final_return: float
    steps: list[int]
    seconds: list[float]
    returns: list[float]
    sps: float
    train_return: float | None = None
    """The mean return of the last training episodes (the sampling policy) at the end."""
    sampled_return: float | None = None
    """The final evaluation's mean return under the sampling policy (final_return is the greedy policy's)."""

    @property
    def best_return(self) -> float | None:
        """The best mean training return logged: POPGym's MMER."""
        finite = [r for r in self.returns if math.isfinite(r)]
        return max(finite) if finite else None

    def reached(self) -> tuple[int | None, float | None]:
        """Steps and seconds at which the curve first reached REACH of the way from its first finite value to
        its best; None where it never logged a finite return."""
        finite = [(s, t, r) for s, t, r in zip(self.steps, self.seconds, self.returns) if math.isfinite(r)]
        if not finite:
            return None, None
        first, best = finite[0][2], max(r for _, _, r in finite)
        target = first + REACH * (best - first)
        step, second, _ = next(item for item in finite if item[2] >= target)
        return step, second

    def first_at_least(self, score: float) -> tuple[int | None, float | None]:
        """Steps and seconds at which the logged training return first reached `score` (a published figure: at
        its printed precision, `at_least`); None if it never did."""
        hit = next(((s, t) for s, t, r in zip(self.steps, self.seconds, self.returns)
                    if math.isfinite(r) and at_least(r, score)), None)
        return hit if hit is not None else (None, None)


@dataclass
class TaskResult:
    task: str
    runs: list[SeedRun] = field(default_factory=list)
    memoryless: float | None = None

    def row(self) -> dict[str, Any]:
        finals = [run.final_return for run in self.runs]
        best = [run.best_return for run in self.runs if run.best_return is not None]
        steps, seconds = means_of_pairs(run.reached() for run in self.runs)
        published = PUBLISHED.get(self.task)
        row = {
            "task": self.task, "seeds": [run.seed for run in self.runs], "final_returns": finals,
            "final_return_mean": statistics.fmean(finals),
            "final_return_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0,
            "steps_to_reach": steps, "seconds_to_reach": seconds,
            "train_return_mean": mean_of(run.train_return for run in self.runs),
            "best_return_mean": mean_of(best), "best_returns": best,
            "best_return_std": statistics.pstdev(best) if len(best) > 1 else 0.0,
            "sampled_return_mean": mean_of(run.sampled_return for run in self.runs),
            "sps": statistics.fmean(run.sps for run in self.runs), "memoryless_return": self.memoryless,
            "published_ppo_gru": None, "published_best": None, "published_best_model": None,
            "changed_since_paper": CHANGED_SINCE.get(self.task),
        }
        if published is not None:
            hits = [run.first_at_least(published.ppo_gru) for run in self.runs]
            steps, seconds = means_of_pairs(hits)
            mean_best = row["best_return_mean"]
            row.update(published_ppo_gru=published.ppo_gru, published_best=published.best,
                       published_best_model=published.best_model,
                       reached_ppo_gru=mean_best is not None and at_least(mean_best, published.ppo_gru),
                       reached_best=mean_best is not None and at_least(mean_best, published.best),
                       seeds_reaching_ppo_gru=sum(step is not None for step, _ in hits),
                       steps_to_ppo_gru=steps, seconds_to_ppo_gru=seconds)
        return row


def mean_of(values) -> float | None:
    """The mean of the values that are not None, or None if all are."""
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known else None


def means_of_pairs(pairs) -> tuple[float | None, float | None]:
    """The means of the first and of the second items of (steps, seconds) pairs, over the pairs that are known."""
    known = [pair for pair in pairs if pair[0] is not None]
    return mean_of(s for s, _ in known), mean_of(t for _, t in known)


def memoryless_return(task: str) -> float | None:
    """The best memoryless policy's expected return on `task`, where it is known: POPGym's ports state it, and
    device envs may carry a `memoryless_return` attribute or method."""
    from recurrent_ppo.envs import make_env
    from recurrent_ppo.envs.popgym import POPGYM_ENVS
    from recurrent_ppo.envs.popgym import memoryless_return as popgym_memoryless_return

    if task in POPGYM_ENVS:
        return popgym_memoryless_return(task)
    value = getattr(make_env(task, 1, "cpu"), "memoryless_return", None)
    if value is None:
        return None
    return float(value() if callable(value) else value)


def train_once(cfg: TrainConfig) -> SeedRun:
    from recurrent_ppo.trainer import Trainer

    # Every run compiles the same functions of new modules; Dynamo would keep piling their guards on the same code
    # objects until the recompile limit stops a later run (at the ninth task of a suite).
    torch._dynamo.reset()
    trainer = Trainer(cfg)
    summary = trainer.train()
    rows = read_metrics(Path(cfg.run_dir) / "metrics.jsonl")
    final = summary.get("eval_return_mean", summary["episode_return_mean"])
    return SeedRun(seed=cfg.seed, final_return=float(final), steps=[row["global_step"] for row in rows],
                   seconds=[row["time"] for row in rows], returns=[row["episode_return_mean"] for row in rows],
                   sps=float(summary["sps"]), train_return=float(summary["episode_return_mean"]),
                   sampled_return=sampled_evaluation(trainer) if cfg.eval_episodes else None)


def sampled_evaluation(trainer) -> float:
    """The trained policy's mean return over `eval_episodes` fresh episodes when it samples its actions, as in
    training, on the trainer's evaluation env (eager: it runs once)."""
    from recurrent_ppo.rollout import Evaluator

    evaluator = trainer.evaluator
    sampling = Evaluator(trainer.policy, evaluator.env, obs_norm=evaluator.obs_norm, deterministic=False)
    return sampling.evaluate(trainer.cfg.eval_episodes)


def run_benchmark(tasks: list[str], seeds: int, base: TrainConfig, out_dir: Path,
                  say: Callable[[str], None] = print,
                  train: Callable[[TrainConfig], SeedRun] = train_once, processes: int = 1) -> list[TaskResult]:
    """Train each task for seeds 1..`seeds` from `base` (its env and seed replaced, each run in OUT/runs/), and
    write results.json, results.md and curves.png to `out_dir` after every task. `processes` > 1 trains that many
    runs at a time, each in a process of its own with an equal share of the CPU's cores for torch's threads;
    `train` must then be a module-level function (it is pickled to them). A run that fails stops the suite once
    the runs in progress have ended."""
    if not tasks:
        raise ValueError("the suite has no tasks: are its envs registered in recurrent_ppo.envs.ENVS?")
    if processes < 1:
        raise ValueError(f"processes={processes} must be >= 1")
    runs = [base.replace(env=task, seed=seed, progress=False,
                         run_dir=str(out_dir / "runs" / f"{task.replace('/', '-')}-s{seed}")).validate()
            for task in tasks for seed in range(1, seeds + 1)]
    total, start = len(runs), time.perf_counter()

    def finished(done: int, cfg: TrainConfig, run: SeedRun) -> None:
        say(f"[{done}/{total}] {cfg.env} seed {cfg.seed}: final return {run.final_return:.3f}, {run.sps:,.0f} "
            f"steps/s, {time.perf_counter() - start:.0f} s so far")

    if processes == 1:
        def trained() -> Iterator[SeedRun]:
            for done, cfg in enumerate(runs):
                say(f"[{done + 1}/{total}] {cfg.env} seed {cfg.seed} ({cfg.total_steps:,} steps)")
                run = train(cfg)
                finished(done + 1, cfg, run)
                yield run
        return tabulate(tasks, seeds, trained(), out_dir, start)
    say(f"{total} runs, {processes} at a time, each in a process of its own")
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=share_threads,
                             initargs=(processes,)) as pool:
        futures = [pool.submit(train, cfg) for cfg in runs]  # started in suite order
        try:
            def collected() -> Iterator[SeedRun]:
                for done, (cfg, future) in enumerate(zip(runs, futures)):
                    run = future.result()
                    finished(done + 1, cfg, run)
                    yield run
            return tabulate(tasks, seeds, collected(), out_dir, start)
        finally:
            pool.shutdown(cancel_futures=True)


def share_threads(processes: int) -> None:
    """A benchmark process's torch threads: its share of the cores this process may use, at least one."""
    torch.set_num_threads(max(1, available_cores() // processes))


def tabulate(tasks: list[str], seeds: int, runs: Iterator[SeedRun], out_dir: Path,
             start: float) -> list[TaskResult]:
    """Group `runs` (each task's seeds in order, task after task) into results, written after every task with the
    wall-clock seconds since `start` (time.perf_counter): a stopped benchmark keeps what it finished."""
    results = []
    for task in tasks:
        result = TaskResult(task, memoryless=memoryless_return(task))
        result.runs.extend(next(runs) for _ in range(seeds))
        results.append(result)
        write_results(results, out_dir, time.perf_counter() - start)
    return results


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def number(value: float | None, fmt: str = ".3f") -> str:
        return "-" if value is None else format(value, fmt)

    def published(row: dict[str, Any]) -> str:
        if row.get("published_ppo_gru") is None:
            return "-"
        marks = "".join(mark for mark, key in (("✓", "reached_ppo_gru"), ("★", "reached_best")) if row.get(key))
        changed = " (task changed since)" if row.get("changed_since_paper") else ""
        return (f"{row['published_ppo_gru']:.3f} / {row['published_best']:.3f} ({row['published_best_model']})"
                f"{changed} {marks}".rstrip())

    def first_reached(row: dict[str, Any]) -> str:
        if row.get("published_ppo_gru") is None:
            return "-"
        if not row.get("seeds_reaching_ppo_gru"):
            return "not reached"
        return (f"{row['steps_to_ppo_gru']:,.0f} steps, {row['seconds_to_ppo_gru']:.0f} s "
                f"({row['seeds_reaching_ppo_gru']}/{len(row['seeds'])} seeds)")

    lines = ["| task | MMER (mean +- std) | published PPO-GRU / best of 13 | first at PPO-GRU | greedy evaluation | "
             "sampling evaluation | training return at the end | memoryless best | steps/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mmer = (f"{row['best_return_mean']:.3f} +- {row['best_return_std']:.3f}"
                if row.get("best_return_mean") is not None else "-")
        lines.append(f"| {row['task']} | {mmer} (n={len(row['seeds'])}) | {published(row)} | {first_reached(row)} | "
                     f"{row['final_return_mean']:.3f} +- {row['final_return_std']:.3f} | "
                     f"{number(row.get('sampled_return_mean'))} | {number(row.get('train_return_mean'))} | "
                     f"{number(row['memoryless_return'])} | {row['sps']:,.0f} |")
    legend = ("\n✓: the mean MMER reaches the published PPO-GRU score; ★: it reaches the best of POPGym's 13 models "
              "(Morad et al., ICLR 2023, 15M steps; recurrent_ppo.envs.popgym.published).\n")
    return "\n".join(lines) + "\n" + (legend if any(row.get("published_ppo_gru") is not None for row in rows) else "")


def write_results(results: list[TaskResult], out_dir: Path, seconds: float) -> None:
    """results.json (the rows, the curves and the suite's wall-clock `seconds` so far), results.md, curves.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [result.row() for result in results]
    curves = {result.task: [{"seed": run.seed, "steps": run.steps, "seconds": run.seconds, "returns": run.returns}
                            for run in result.runs] for result in results}
    (out_dir / "results.json").write_text(json.dumps({"rows": rows, "curves": curves, "seconds": seconds}, indent=1))
    runs = sum(len(result.runs) for result in results)
    (out_dir / "results.md").write_text(markdown_table(rows) + f"\n{runs} runs in {seconds:,.0f} s of wall-clock.\n")
    plot_curves(results, out_dir / "curves.png")


def plot_curves(results: list[TaskResult], path: Path) -> None:
    """Each task's mean-return curves (one line per seed), against steps and against wall-clock seconds."""
    fig = Figure(figsize=(10, 3 * len(results)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), 2, squeeze=False)
    for (by_steps, by_time), result in zip(axes, results):
        for run in result.runs:
            by_steps.plot(run.steps, run.returns, label=f"seed {run.seed}")
            by_time.plot(run.seconds, run.returns, label=f"seed {run.seed}")
        for ax, label in ((by_steps, "global step"), (by_time, "seconds")):
            if result.memoryless is not None:
                ax.axhline(result.memoryless, color="grey", linestyle="--", label="memoryless best")
            ax.set_xlabel(label)
            ax.set_ylabel("mean episode return")
            ax.set_title(result.task)
            ax.grid(alpha=0.3)
        by_steps.legend(fontsize="small")
    fig.savefig(path, format="png", dpi=90)
