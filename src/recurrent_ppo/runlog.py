"""Per-iteration metrics of a run: one JSON line each in metrics.jsonl, and TensorBoard scalars beside it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from torch.utils.tensorboard import SummaryWriter

STEP_KEYS = ("iteration", "global_step")
"""Counters that place a record on the x axis; every other numeric value becomes a TensorBoard scalar."""


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of `record` that are logged as TensorBoard scalars (bools and step counters left out)."""
    return {key: float(value) for key, value in record.items()
            if key not in STEP_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)}


class RunLogger:
    """Owns RUN_DIR/metrics.jsonl and a TensorBoard event file in RUN_DIR; `write()` one record per iteration.

    Opening a run dir starts its logs afresh: metrics.jsonl is truncated and event files of an earlier run there
    are removed, since TensorBoard would otherwise draw both runs as one. `resume_after=(iterations, global_step)`
    continues a run from its checkpoint instead: metrics.jsonl keeps the records of the first `iterations`
    iterations only (those after the checkpoint are logged again by the resumed run), TensorBoard hides the
    events past `global_step` (SummaryWriter's purge_step), and `elapsed` is the time the kept records reached.
    """

    def __init__(self, run_dir: str | Path, *, resume_after: tuple[int, int] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.run_dir / "metrics.jsonl"
        self.elapsed = 0.0
        if resume_after is None:
            for stale in self.run_dir.glob("events.out.tfevents.*"):
                stale.unlink()
            purge_step = None
        else:
            iterations, global_step = resume_after
            kept = [line for line in (metrics.read_text().splitlines() if metrics.exists() else [])
                    if line.strip() and json.loads(line).get("iteration", iterations) < iterations]
            if kept:
                self.elapsed = float(json.loads(kept[-1]).get("time", 0.0))
            partial = metrics.with_suffix(".jsonl.partial")
            partial.write_text("".join(line + "\n" for line in kept))
            partial.replace(metrics)  # whole or not at all: a crash here leaves the old log
            purge_step = global_step + 1
            wait_for_a_later_event_file(self.run_dir)
        self._jsonl = open(metrics, "a" if resume_after is not None else "w")
        # flush_secs: a live TensorBoard sees new points within seconds rather than the default two minutes.
        self._writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=10, purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (which must hold an int `global_step`) as a JSON line and as scalars at that step."""
        step = record.get("global_step")
        if not isinstance(step, int):
            raise ValueError(f"a metrics record needs an int 'global_step', got {step!r} in {sorted(record)}")
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()  # a crashed or killed run keeps every iteration it finished
        for tag, value in scalars(record).items():  # NaN (no episode finished yet) is written as NaN
            self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        """Flush and close both files; safe to call twice."""
        if not self._jsonl.closed:
            self._jsonl.close()
            self._writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def wait_for_a_later_event_file(run_dir: Path) -> None:
    """Wait until a new TensorBoard event file in `run_dir` sorts after the ones there, as a resumed run's must
    for its purge to hide the killed run's later points: TensorBoard reads the files in name order, and a name is
    `events.out.tfevents.<second>.<host>.<pid>.<counter>`, whose unpadded counter orders wrongly (10 before 9) for
    two files of one process in the same second. A resume in a new process, or a second later, never waits."""
    fields = (p.name.split(".")[3] for p in run_dir.glob("events.out.tfevents.*"))
    seconds = [int(field) for field in fields if field.isdigit()]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)
