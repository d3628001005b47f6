"""Stopping a run cleanly: SIGINT/SIGTERM finish the current iteration, a second signal aborts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""The shell's exit code for a process ended by each signal (128 + the signal's number)."""


class Aborted(KeyboardInterrupt):
    """A second SIGINT or SIGTERM while a run was finishing its iteration: it stops at once, without a checkpoint.
    A KeyboardInterrupt, so it passes every `except Exception` and unwinds through finally blocks as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        self.exit_code = EXIT_CODES.get(self.signal, 130)
        super().__init__(f"second {self.signal.name}: aborting without a checkpoint")


class StopRequested:
    """While entered, SIGINT and SIGTERM set `signal` instead of ending the process; the training loop reads it
    between iterations, checkpoints, and stops. A second signal raises Aborted (a KeyboardInterrupt) at once, for a
    user who will not wait for the iteration to finish. Outside the main thread (where Python cannot install handlers)
    it does nothing, and signals keep their usual effect."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signal] if self.signal is not None else 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise Aborted(signum)
        self.signal = signal.Signals(signum)

    def __enter__(self) -> StopRequested:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
