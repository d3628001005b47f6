"""Per-iteration metrics of a run: one JSON line each in metrics.jsonl, and TensorBoard scalars beside it."""

from __future__ import annotations

import json
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
    are removed, since TensorBoard would otherwise draw both runs as one. `resume=True` continues them instead
    (a resumed run is the same run): records are appended, and earlier event files kept.
    """

    def __init__(self, run_dir: str | Path, *, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in self.run_dir.glob("events.out.tfevents.*"):
                stale.unlink()
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a" if resume else "w")
        # flush_secs: a live TensorBoard sees new points within seconds rather than the default two minutes.
        self._writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=10)

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
