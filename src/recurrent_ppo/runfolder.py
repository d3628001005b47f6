"""A run folder held by one process at a time, and write failures in it named by the file that could not be written.

Only the standard library is imported here, so a process that holds a folder's lock need not import torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # not on Windows: there the lock does nothing
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
"""The lock file in a run folder; it holds the pid of the process that last held the lock."""


class RunFolderInUse(RuntimeError):
    """Another process trains or resumes the run in this folder."""


class RunFolderWriteError(OSError):
    """A file of the run folder could not be written (a read-only folder, a full disk): `filename` names it."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Raise an OSError of the block as RunFolderWriteError naming `path`: a write to an open file that fails (a
    full disk) raises one that names no file."""
    try:
        yield
    except RunFolderWriteError:
        raise
    except OSError as err:
        raise RunFolderWriteError(err.errno, err.strerror or str(err), str(path)) from err


class RunFolderLock:
    """An advisory lock (flock) on RUN_DIR/.lock, held while a process writes the run folder, so that a second
    process training or resuming the same folder is refused at once instead of both writing it. The holder's pid
    is written into the file for the refusal to name. The kernel releases the lock when the holder dies, however
    it dies, so a killed run never leaves its folder locked. The file stays: removing it could let a third process
    lock a new file while a second still holds the removed one."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderInUse naming the folder and the holder's pid; creates the folder."""
        if fcntl is None or self._fd is not None:
            return
        with writing(self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        with writing(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderInUse(f"{self.run_dir} is in use by another run (pid {holder}, which holds {self.path}): "
                                 f"wait for it to end or stop it, or choose another --run-dir") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)  # closing the descriptor releases the lock
            raise
        self._fd = fd

    def release(self) -> None:
        """Let the lock go; safe to call when not held."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file releases its flock
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
