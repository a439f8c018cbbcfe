"""One daemon per ``state_dir``: an OS lock on ``state_dir/cellguard.lock``.

Two daemons on one state_dir would both stop a failing cell, both alert and both
write the same store. The lock is taken with ``fcntl.flock`` (POSIX) or
``msvcrt.locking`` (Windows) and held for the process's lifetime; the OS releases it
when the process ends, even by kill -9 or a crash, so a stale lock file never keeps
a restarted daemon out. The file holds the PID of its holder for the error message.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from cellguard.drivers.errors import CellguardError

LOCK_FILENAME = "cellguard.lock"
_WINDOWS_LOCK_OFFSET = 4096
# A daemon holds its lock for its lifetime; `cellguard status` (holder()) holds it for
# microseconds to ask the OS. A daemon starting in that instant tries again a few times
# over ~0.2 s instead of exiting 3 and waiting for its service manager's restart.
ACQUIRE_ATTEMPTS = 10
ACQUIRE_RETRY_S = 0.02


class StateDirInUse(CellguardError):
    """Another process holds the lock of this state_dir."""


def _try_lock(handle: IO[str]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt  # noqa: PLC0415

        try:
            # A byte past the PID: Windows keeps a locked range from other readers.
            handle.seek(_WINDOWS_LOCK_OFFSET)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl  # noqa: PLC0415

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="ascii", errors="replace").strip()
        if text:
            return f"PID {text}"
    return "an unknown PID"


class StateDirLock:
    """The lock of one state_dir, held by this process until :meth:`release`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILENAME
        self._handle: IO[str] | None = None

    def acquire(self, *, sleep: Callable[[float], None] = time.sleep) -> None:
        """Take the lock; raise StateDirInUse naming the holder if another process has it
        (after :data:`ACQUIRE_ATTEMPTS` tries: a ``status`` probe lets go at once)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # "a+": never truncate before holding the lock (the holder's PID stays readable).
        handle = self.path.open("a+", encoding="ascii")
        locked = _try_lock(handle)
        for _ in range(ACQUIRE_ATTEMPTS - 1):
            if locked:
                break
            sleep(ACQUIRE_RETRY_S)
            locked = _try_lock(handle)
        if not locked:
            handle.close()
            msg = (
                f"state_dir {self.state_dir} is in use by another cellguard "
                f"({_holder(self.path)} holds {self.path}); stop it, or give this one "
                "another state_dir"
            )
            raise StateDirInUse(msg)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        old, self._handle = self._handle, handle
        if old is not None:
            old.close()

    def reacquire_if_gone(self) -> None:
        """After state_dir was deleted: lock a new file, or a second daemon could start
        on it (the old lock is on a file no one can open any more)."""
        if not self.path.exists():
            self.acquire()

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # releases the lock


@contextlib.contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[StateDirLock]:
    """Hold the lock of ``state_dir`` for the block; raise StateDirInUse if taken."""
    lock = StateDirLock(state_dir)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def holder(state_dir: Path) -> str | None:
    """Who holds the lock of ``state_dir`` ("PID 1234"), or None if no daemon runs there.

    Reads only: a missing lock file means no daemon ever ran there, and none is created.
    To ask the OS, the lock is tried and at once let go; a daemon starting in that very
    instant tries again (:meth:`StateDirLock.acquire`) and starts. An OSError (no
    permission to open the lock file) is raised: whether a daemon runs is then unknown.
    """
    path = state_dir / LOCK_FILENAME
    try:
        # "r+": no create, no truncate (the holder's PID stays); Windows locks need write.
        handle = path.open("r+", encoding="ascii")
    except FileNotFoundError:
        return None
    with handle:
        if _try_lock(handle):
            return None  # closing the handle lets go of the lock
    return _holder(path)
