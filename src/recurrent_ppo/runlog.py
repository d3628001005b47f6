"""Per-iteration metrics of a run: one JSON line each in metrics.jsonl, and TensorBoard scalars beside it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from recurrent_ppo.runfolder import writing

log = logging.getLogger(__name__)

EVENT_FILES = "events.out.tfevents.*"
"""TensorBoard's event files in a run folder."""
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
    A last record cut short by a killed run is dropped with a warning (`read_records`). An OSError writing either
    file is raised as runfolder.RunFolderWriteError naming the file.
    """

    def __init__(self, run_dir: str | Path, *, resume_after: tuple[int, int] | None = None) -> None:
        self.run_dir = Path(run_dir)
        with writing(self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.run_dir / "metrics.jsonl"
        self.elapsed = 0.0
        self._events = self.run_dir / EVENT_FILES
        if resume_after is None:
            for stale in self.run_dir.glob(EVENT_FILES):
                with writing(stale):
                    stale.unlink()
            purge_step = None
        else:
            iterations, global_step = resume_after
            kept = [(line, record) for line, record in read_records(metrics)
                    if record.get("iteration", iterations) < iterations]
            if kept:
                self.elapsed = float(kept[-1][1].get("time", 0.0))
            partial = metrics.with_suffix(".jsonl.partial")
            with writing(partial):
                partial.write_text("".join(line + "\n" for line, _ in kept))
                partial.replace(metrics)  # whole or not at all: a crash here leaves the old log
            purge_step = global_step + 1
            wait_for_a_later_event_file(self.run_dir)
        with writing(metrics):
            self._jsonl = open(metrics, "a" if resume_after is not None else "w")
        # flush_secs: a live TensorBoard sees new points within seconds rather than the default two minutes.
        with writing(self._events):
            self._writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=10, purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (which must hold an int `global_step`) as a JSON line and as scalars at that step."""
        step = record.get("global_step")
        if not isinstance(step, int):
            raise ValueError(f"a metrics record needs an int 'global_step', got {step!r} in {sorted(record)}")
        with writing(self._jsonl.name):
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()  # a crashed or killed run keeps every iteration it finished
        with writing(self._events):  # the writer's thread writes; its errors surface at the next call
            for tag, value in scalars(record).items():  # NaN (no episode finished yet) is written as NaN
                self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        """Flush and close both files; safe to call twice."""
        if not self._jsonl.closed:
            try:
                with writing(self._jsonl.name):
                    self._jsonl.close()
            finally:
                with writing(self._events):
                    self._writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The records of the metrics.jsonl at `path` (none if there is no file), each with its line. A last line that
    does not parse is a record cut short by a run killed while writing it: it is dropped with a warning. A line
    elsewhere that is not a JSON object raises ValueError naming the file and the line."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    last = max((number for number, line in enumerate(lines, 1) if line.strip()), default=0)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == last:
                log.warning("%s: dropped its last line, an incomplete record (the run was killed while writing it)",
                            path)
                continue
            raise ValueError(f"{path}, line {number}: not a metrics record ({err}); the file is damaged: remove "
                             f"or repair that line, then resume again") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: not a metrics record (a JSON {type(record).__name__}, not an "
                             f"object); the file is damaged: remove or repair that line, then resume again")
        records.append((line, record))
    return records


def wait_for_a_later_event_file(run_dir: Path) -> None:
    """Wait until a new TensorBoard event file in `run_dir` sorts after the ones there, as a resumed run's must
    for its purge to hide the killed run's later points: TensorBoard reads the files in name order, and a name is
    `events.out.tfevents.<second>.<host>.<pid>.<counter>`, whose unpadded counter orders wrongly (10 before 9) for
    two files of one process in the same second. A resume in a new process, or a second later, never waits."""
    fields = (p.name.split(".")[3] for p in run_dir.glob(EVENT_FILES))
    seconds = [int(field) for field in fields if field.isdigit()]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)
