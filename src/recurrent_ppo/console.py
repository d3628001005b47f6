"""What a run shows while it trains: a progress bar on a terminal, one plain line per N iterations elsewhere
(a log file, a batch job), and a notice while the first iteration compiles."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

LINE_FIELDS = (("global_step", "steps", "{:,}"), ("sps", "sps", "{:,.0f}"),
               ("episode_return_mean", "return", "{:.2f}"), ("policy_loss", "pg_loss", "{:.4f}"),
               ("value_loss", "v_loss", "{:.4f}"), ("entropy", "entropy", "{:.3f}"), ("approx_kl", "kl", "{:.4f}"))
"""(record key, label, format) of the fields in a plain progress line."""


def progress_line(record: dict[str, Any], iteration: int, iterations: int) -> str:
    """One iteration's record as a line: `iter 3/10  steps 12,288  sps 18,400  return 23.10 ...`."""
    parts = [f"iter {iteration}/{iterations}"]
    for key, label, fmt in LINE_FIELDS:
        if isinstance(record.get(key), (int, float)):
            parts.append(f"{label} {fmt.format(record[key])}")
    return "  ".join(parts)


class Console:
    """Progress of a run of `iterations` iterations of `steps_per_iteration` steps.

    On a terminal (or `interactive=True`) a rich progress bar; otherwise a line every `every` iterations, the
    first and last included, flushed at once so a log file follows the run. `enabled=False` prints nothing.
    """

    def __init__(self, iterations: int, steps_per_iteration: int, *, enabled: bool = True, every: int = 10,
                 interactive: bool | None = None, stream: TextIO | None = None) -> None:
        self.iterations, self.steps_per_iteration = iterations, steps_per_iteration
        self.enabled, self.every = enabled, max(every, 1)
        self.stream = stream if stream is not None else sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._progress: Progress | None = None
        if enabled and self.interactive:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn())
            self._task = self._progress.add_task("steps", total=iterations * steps_per_iteration, status="")

    def say(self, message: str) -> None:
        """A line of its own, above the bar on a terminal."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, file=self.stream, flush=True)

    def update(self, iteration: int, record: dict[str, Any]) -> None:
        """After iteration `iteration` (0-based) with its metrics `record`."""
        if not self.enabled:
            return
        done = iteration + 1
        if self._progress is not None:
            self._progress.update(self._task, completed=record.get("global_step", done * self.steps_per_iteration),
                                  status=f"SPS {record.get('sps_overall', 0.0):,.0f}  "
                                         f"return {record.get('episode_return_mean', float('nan')):.1f}")
        elif done == 1 or done % self.every == 0 or done == self.iterations:
            print(progress_line(record, done, self.iterations), file=self.stream, flush=True)

    def start_at(self, global_step: int) -> None:
        """Where a resumed run's bar starts."""
        if self._progress is not None:
            self._progress.update(self._task, completed=global_step)

    def __enter__(self) -> Console:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
