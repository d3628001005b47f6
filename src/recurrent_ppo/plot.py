"""Learning curves of a run as a PNG: mean episode return and steps/s against global_step, from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Figure + the Agg canvas, not pyplot: no display, and no global backend switched for the importing process.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CURVES = (("episode_return_mean", "mean episode return (last 100)"), ("sps", "steps/s"))
"""Metrics drawn, one panel each, with their axis labels."""


class MetricsError(ValueError):
    """metrics.jsonl is missing, empty, malformed or lacks a plotted metric; the message names the file."""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order; MetricsError if there are none or a line is not JSON."""
    if not path.is_file():
        raise MetricsError(f"{path} does not exist (is it a run dir written by `recurrent-ppo train`?)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise MetricsError(f"{path}:{number} is not valid JSON: {err}") from None
    if not rows:
        raise MetricsError(f"{path} is empty: no training iteration has finished yet")
    return rows


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw RUN_DIR/metrics.jsonl to `out` (default RUN_DIR/curves.png) and return the path written."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    rows = read_metrics(metrics)
    for key in ("global_step", *(key for key, _ in CURVES)):
        if missing := [i for i, row in enumerate(rows, start=1) if key not in row]:
            raise MetricsError(f"{metrics}: line {missing[0]} has no {key!r}")
    steps = [row["global_step"] for row in rows]
    fig = Figure(figsize=(5 * len(CURVES), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (key, label) in zip(fig.subplots(1, len(CURVES)), CURVES):
        # Before the first episode ends the mean return is NaN; matplotlib leaves those points out.
        ax.plot(steps, [row[key] for row in rows], marker="." if len(rows) < 50 else None)
        ax.set_xlabel("global step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(run_dir.resolve().name)
    out = Path(out) if out is not None else run_dir / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out
