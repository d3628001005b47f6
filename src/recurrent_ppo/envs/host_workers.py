"""Host env copies in worker processes: `WorkerPool` runs groups of copies in `workers` subprocesses, one message
per group and step each way, and `choose_workers` is the rule `env_workers="auto"` decides by.

Gymnasium's AsyncVectorEnv gives every copy a process of its own and sends one message per copy and step: at 32
cheap copies its pipes, not the envs, bound the step (docs/measurements.md). Here a worker holds several copies,
stepped by a handler of the caller's (the gymnasium adapter's `HostCopies`), which also turns their outputs into
the batched arrays the trainer takes. The copies are laid out in `parts` (contiguous ranges: two halves for a
rollout that steps one half while the policy acts on the other), each part spread over every worker, so each
worker holds one group per part and every worker is busy whichever part is stepping.

A worker is started by fork where the platform has it: it starts in milliseconds and inherits what the process
holds (envs registered at run time, a factory's closure), so a copy is made in a worker as it would be in the
trainer's process; elsewhere it is spawned, and what it is given is pickled with cloudpickle. It ignores SIGINT
and SIGTERM (the trainer finishes its iteration on them, with the workers still stepping) and exits when its pipe
closes, so it never outlives the trainer. An error raised in a worker comes back as the same exception, its
traceback chained; a worker that dies is named with the copies it held.
"""

from __future__ import annotations

import atexit
import collections
import multiprocessing
import os
import pickle
import signal
import statistics
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

Handler = Any
"""What serves one group of copies in a worker: an object with `reset(seed)` and `step(actions)` methods."""


class EnvWorkerDied(RuntimeError):
    """A worker process ended while it held env copies (killed, crashed in native code, out of memory)."""


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker, chained as the cause of the one re-raised here."""

    def __str__(self) -> str:
        return f"raised in an env worker process:\n{self.args[0]}"


def start_method() -> str:
    """fork where the platform offers it safely (Linux), else spawn."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Group:
    """One worker's share of one part: copies `copies` (global indices), served by the worker's handler number
    `slot`."""

    def __init__(self, worker: int, slot: int, part: int, copies: range) -> None:
        self.worker, self.slot, self.part, self.copies = worker, slot, part, copies


def layout(num_copies: int, workers: int, parts: int) -> list[list[Group]]:
    """The groups of each worker: the copies cut into `parts` contiguous parts, each part cut into `workers`
    contiguous groups (empty ones left out)."""
    groups: list[list[Group]] = [[] for _ in range(workers)]
    for part, part_copies in enumerate(np.array_split(np.arange(num_copies), parts)):
        for worker, copies in enumerate(np.array_split(part_copies, workers)):
            if len(copies):
                groups[worker].append(Group(worker, len(groups[worker]), part, range(copies[0], copies[-1] + 1)))
    return groups


def describe_copies(copies: Sequence[range]) -> str:
    """`env copies 0-3 and 8-11` for the ranges `copies`."""
    spans = [f"{r.start}" if len(r) == 1 else f"{r.start}-{r.stop - 1}" for r in copies]
    if sum(len(r) for r in copies) == 1:
        return f"env copy {spans[0]}"
    return "env copies " + (spans[0] if len(spans) == 1 else ", ".join(spans[:-1]) + " and " + spans[-1])


def serve(pipe: Connection, make_handler: Callable[[range], Handler], groups: Sequence[range]) -> None:
    """A worker's loop: build one handler per group, then answer each `(command, slot, data)` with
    `("ok", result)` or `("error", exception, traceback)` until "close" or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when to stop, and stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handlers: list[Handler] = []
    try:
        for copies in groups:
            handlers.append(make_handler(copies))
    except Exception as error:  # the answer to every command, so the error reaches the trainer
        built = error, traceback.format_exc()
    else:
        built = None
    try:
        while True:
            try:
                command, slot, data = pipe.recv()
            except EOFError:  # the trainer's process is gone
                return
            if command == "close":
                pipe.send(("ok", None))
                return
            if built is not None:
                pipe.send(("error", picklable(built[0]), built[1]))
                continue
            try:
                reply = ("ok", getattr(handlers[slot], command)(data))
            except Exception as error:
                reply = ("error", picklable(error), traceback.format_exc())
            pipe.send(reply)
    finally:
        for handler in handlers:
            close = getattr(handler, "close", None)
            if close is not None:
                close()


def picklable(error: Exception) -> Exception:
    """`error` if it survives pickling, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


class WorkerPool:
    """`num_copies` env copies in `workers` processes, laid out in `parts` (`layout`). `make_handler(copies)` builds,
    in a worker, the handler of a group of copies (`copies`: their global indices); it should leave torch alone,
    whose thread pools and CUDA state do not survive a fork. `name` is how errors call the env.

    `request(part, command, data)` sends `command` to every group of `part` (`data[i]` to its i-th group, or the
    same to all); `replies(part)` waits for them and returns their results in copy order. Requests are answered in
    the order they were sent, so parts are waited for in that order. After an error the pool is broken: every
    later call says so."""

    def __init__(self, make_handler: Callable[[range], Handler], num_copies: int, workers: int, parts: int = 1,
                 *, name: str = "the env") -> None:
        if not 1 <= workers <= num_copies:
            raise ValueError(f"{name}: {workers} workers for {num_copies} env copies; each worker needs a copy, so "
                             f"use between 1 and {num_copies}")
        if not 1 <= parts <= num_copies:
            raise ValueError(f"{name}: {parts} parts for {num_copies} env copies; use between 1 and {num_copies}")
        self.name, self.num_copies = name, num_copies
        self.groups = layout(num_copies, workers, parts)
        self.parts = [[group for worker in self.groups for group in worker if group.part == part]
                      for part in range(parts)]
        for part in self.parts:
            part.sort(key=lambda group: group.copies.start)
        self.part_copies = [range(part[0].copies.start, part[-1].copies.stop) for part in self.parts]
        self.pending: collections.deque[int] = collections.deque()
        self.broken: str | None = None
        context = multiprocessing.get_context(start_method())
        if context.get_start_method() != "fork":
            from gymnasium.vector.utils import CloudpickleWrapper

            make_handler = CloudpickleWrapper(make_handler)
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.Process] = []
        for worker, groups in enumerate(self.groups):
            ours, theirs = context.Pipe()
            process = context.Process(target=serve, args=(theirs, make_handler, [g.copies for g in groups]),
                                      name=f"env-worker-{worker}", daemon=True)
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)
        self._finalizer = weakref.finalize(self, shut_down, self.pipes, self.processes)
        # Before multiprocessing's own exit hook (registered earlier, so run later), which would SIGTERM the workers
        # (ignored) and wait for them forever.
        atexit.register(self._finalizer)

    def copies_of(self, worker: int) -> str:
        return describe_copies([group.copies for group in self.groups[worker]])

    def request(self, part: int, command: str, data: Sequence[Any] | None = None) -> None:
        """Send `command` to the groups of `part`, `data[i]` to the i-th (None: None to each)."""
        self._check_usable()
        for index, group in enumerate(self.parts[part]):
            try:
                self.pipes[group.worker].send((command, group.slot, None if data is None else data[index]))
            except (BrokenPipeError, ConnectionResetError):
                pass  # a dead worker: `replies` names it when it waits for this part, the step that needs it
        self.pending.append(part)

    def replies(self, part: int) -> list[Any]:
        """The results of the oldest request, which must be to `part`, in copy order. An exception raised in a
        worker is raised here once every group has answered (the first in copy order), with the worker's
        traceback chained."""
        self._check_usable()
        if not self.pending or self.pending[0] != part:
            raise RuntimeError(f"{self.name}: replies of part {part} asked for, but the oldest request is to "
                               f"{'no part' if not self.pending else f'part {self.pending[0]}'}")
        self.pending.popleft()
        results, failure = [], None
        for group in self.parts[part]:
            try:
                status, *reply = self.pipes[group.worker].recv()
            except (EOFError, ConnectionResetError, OSError):
                raise self._died(group.worker) from None
            if status == "error" and failure is None:
                failure = reply
            results.append(reply[0] if status == "ok" else None)
        if failure is not None:
            error, trace = failure
            self.broken = f"{type(error).__name__}: {error}"
            raise error from WorkerTraceback(trace)
        return results

    def _check_usable(self) -> None:
        if self.broken is not None:
            raise RuntimeError(f"{self.name}: its env workers cannot go on after an earlier failure ({self.broken}); "
                               f"make the env again")
        if not self._finalizer.alive:
            raise RuntimeError(f"{self.name}: its env workers were closed")

    def _died(self, worker: int) -> EnvWorkerDied:
        """The error naming `worker`, how it ended and the copies it held."""
        self.broken = "a worker died"
        process = self.processes[worker]
        process.join(timeout=1.0)
        code = process.exitcode
        if code is None:
            how = "stopped answering (its pipe closed)"
        elif code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        return EnvWorkerDied(f"{self.name}: env worker {worker} of {len(self.processes)} (pid {process.pid}), "
                             f"which held {self.copies_of(worker)}, {how}; its copies are lost (a crash in the env's "
                             f"native code, the out-of-memory killer or a kill ends a worker this way)")

    def close(self) -> None:
        """Stop the workers: each finishes what it was asked, then exits; one that does not within a few seconds is
        killed."""
        self._finalizer()


def shut_down(pipes: list[Connection], processes: list[multiprocessing.Process], timeout: float = 5.0) -> None:
    for pipe in pipes:
        try:
            pipe.send(("close", None, None))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(timeout=max(deadline - time.monotonic(), 0.0))
        if process.is_alive():
            process.kill()  # a worker ignores SIGTERM
            process.join()
    for pipe in pipes:
        pipe.close()


def echo(pipe: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while (message := pipe.recv()) is not None:
        pipe.send(message)


_round_trip: float | None = None


def pipe_round_trip(repeats: int = 30) -> float:
    """Seconds of one message to a worker process and back (a step's worth of small arrays each way), the median
    of `repeats`; measured once per process, with a worker started for it."""
    global _round_trip
    if _round_trip is None:
        context = multiprocessing.get_context(start_method())
        ours, theirs = context.Pipe()
        process = context.Process(target=echo, args=(theirs,), daemon=True)
        process.start()
        theirs.close()
        message = {"obs": np.zeros((16, 4), np.float32), "reward": np.zeros(16), "done": np.zeros(16, bool)}
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ours.send(message)
            ours.recv()
            times.append(time.perf_counter() - start)
        ours.send(None)
        process.join()
        ours.close()
        _round_trip = statistics.median(times)
    return _round_trip


WORKER_PAYOFF = 4.0
"""`auto` starts workers only when they save this many pipe round trips per step or more: a step in workers
costs a round trip per part to send and receive, plus pickling and the copies' Python overhead that the measured
step time leaves out."""


def choose_workers(num_copies: int, step_seconds: float, parts: int = 1, cores: int | None = None,
                   round_trip: float | None = None) -> tuple[int, str]:
    """The workers `env_workers="auto"` starts for `num_copies` copies whose step takes `step_seconds` each, and why,
    in words. Workers, one per core (at most one per copy), step the copies in parallel: they save
    `num_copies * step_seconds * (1 - 1/workers)` of each step, and cost a pipe round trip per part and step
    (`pipe_round_trip`, measured here). None (0) where that saving is under `WORKER_PAYOFF` round trips."""
    cores = available_cores() if cores is None else cores
    workers = min(cores, num_copies)
    if workers < 2:
        return 0, f"in-process: {'one core' if cores < 2 else 'one env copy'}, workers would step nothing in parallel"
    round_trip = pipe_round_trip() if round_trip is None else round_trip
    saved = num_copies * step_seconds * (1 - 1 / workers)
    cost = WORKER_PAYOFF * parts * round_trip
    measured = (f"a step of one copy takes {step_seconds * 1e6:.0f} us, a pipe round trip {round_trip * 1e6:.0f} us; "
                f"{workers} workers would save {saved * 1e6:.0f} us of each step")
    if saved < cost:
        return 0, f"in-process: {measured}, under the {cost * 1e6:.0f} us they cost"
    return workers, f"{workers} workers: {measured}, over the {cost * 1e6:.0f} us they cost"
