"""`recurrent-ppo benchmark`: train every task of a suite for every seed and tabulate how well and how fast
each learned: a tool for users, and a regression gate for learning quality (not a test).

For each task: the final return (the deterministic evaluation at the end of training, or the last-100 training
return when evaluation is off), its mean and std over seeds; the training return at the end (the sampling policy's
last-100-episode mean) and the best one logged (POPGym's MMER, the maximum mean episodic reward over training);
the steps and wall-clock seconds to reach 90% of
the way from the first logged return to the best one (per seed, then averaged); steps/s. Written to OUT as
results.json, results.md and curves.png (returns against steps and against wall-clock, one panel each).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recurrent_ppo.config import TrainConfig
from recurrent_ppo.plot import read_metrics

REACH = 0.9
"""The share of the way from the first logged return to the best one that counts as reached."""


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


@dataclass
class TaskResult:
    task: str
    runs: list[SeedRun] = field(default_factory=list)
    memoryless: float | None = None

    def row(self) -> dict[str, Any]:
        finals = [run.final_return for run in self.runs]
        reached = [run.reached() for run in self.runs]
        steps = [s for s, _ in reached if s is not None]
        seconds = [t for _, t in reached if t is not None]
        return {
            "task": self.task, "seeds": [run.seed for run in self.runs], "final_returns": finals,
            "final_return_mean": statistics.fmean(finals),
            "final_return_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0,
            "steps_to_reach": statistics.fmean(steps) if steps else None,
            "seconds_to_reach": statistics.fmean(seconds) if seconds else None,
            "train_return_mean": mean_of(run.train_return for run in self.runs),
            "best_return_mean": mean_of(run.best_return for run in self.runs),
            "sps": statistics.fmean(run.sps for run in self.runs), "memoryless_return": self.memoryless,
        }


def mean_of(values) -> float | None:
    """The mean of the values that are not None, or None if all are."""
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known else None


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
    summary = Trainer(cfg).train()
    rows = read_metrics(Path(cfg.run_dir) / "metrics.jsonl")
    final = summary.get("eval_return_mean", summary["episode_return_mean"])
    return SeedRun(seed=cfg.seed, final_return=float(final), steps=[row["global_step"] for row in rows],
                   seconds=[row["time"] for row in rows], returns=[row["episode_return_mean"] for row in rows],
                   sps=float(summary["sps"]), train_return=float(summary["episode_return_mean"]))


def run_benchmark(tasks: list[str], seeds: int, base: TrainConfig, out_dir: Path,
                  say: Callable[[str], None] = print,
                  train: Callable[[TrainConfig], SeedRun] = train_once) -> list[TaskResult]:
    """Train each task for seeds 1..`seeds` from `base` (its env and seed replaced, each run in OUT/runs/), and
    write results.json, results.md and curves.png to `out_dir`."""
    if not tasks:
        raise ValueError("the suite has no tasks: are its envs registered in recurrent_ppo.envs.ENVS?")
    results = []
    total, done, start = len(tasks) * seeds, 0, time.perf_counter()
    for task in tasks:
        result = TaskResult(task, memoryless=memoryless_return(task))
        for seed in range(1, seeds + 1):
            run_dir = out_dir / "runs" / f"{task.replace('/', '-')}-s{seed}"
            cfg = base.replace(env=task, seed=seed, run_dir=str(run_dir), progress=False).validate()
            say(f"[{done + 1}/{total}] {task} seed {seed} ({cfg.total_steps:,} steps)")
            run = train(cfg)
            result.runs.append(run)
            done += 1
            say(f"[{done}/{total}] {task} seed {seed}: final return {run.final_return:.3f}, {run.sps:,.0f} steps/s, "
                f"{time.perf_counter() - start:.0f} s so far")
        results.append(result)
        write_results(results, out_dir)  # after every task: a stopped benchmark keeps what it finished
    return results


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = ["| task | final return (mean +- std) | training return: last, best | memoryless best | steps to 90% "
             "| seconds to 90% | steps/s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['task']} | {row['final_return_mean']:.3f} +- {row['final_return_std']:.3f} "
                     f"(n={len(row['seeds'])}) | {number(row.get('train_return_mean'), '.3f')}, "
                     f"{number(row.get('best_return_mean'), '.3f')} | {number(row['memoryless_return'], '.3f')} | "
                     f"{number(row['steps_to_reach'], ',.0f')} | {number(row['seconds_to_reach'], '.1f')} | "
                     f"{row['sps']:,.0f} |")
    return "\n".join(lines) + "\n"


def write_results(results: list[TaskResult], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [result.row() for result in results]
    curves = {result.task: [{"seed": run.seed, "steps": run.steps, "seconds": run.seconds, "returns": run.returns}
                            for run in result.runs] for result in results}
    (out_dir / "results.json").write_text(json.dumps({"rows": rows, "curves": curves}, indent=1))
    (out_dir / "results.md").write_text(markdown_table(rows))
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
