"""The state_dir lock against a ``cellguard status`` probe (daemon/instance_lock.py).

``holder()`` asks the OS by taking the lock and letting go at once; a daemon that
starts in that instant must start, not exit 3. flock locks belong to an open file, so
a second handle in this process stands in for the other process.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

import pytest

from cellguard.daemon.instance_lock import (
    ACQUIRE_ATTEMPTS,
    LOCK_FILENAME,
    StateDirInUse,
    StateDirLock,
    holder,
)


def _probe_holding(state_dir: Path) -> IO[str]:
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = (state_dir / LOCK_FILENAME).open("a+", encoding="ascii")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_daemon_starting_while_status_probes_the_lock_starts(tmp_path: Path) -> None:
    probe = _probe_holding(tmp_path)
    waits: list[float] = []

    def sleep(duration_s: float) -> None:
        waits.append(duration_s)
        probe.close()  # the probe lets go, as holder() does at once

    lock = StateDirLock(tmp_path)
    lock.acquire(sleep=sleep)
    try:
        assert len(waits) == 1
        assert holder(tmp_path) is not None  # this process now holds it
    finally:
        lock.release()
    assert holder(tmp_path) is None


def test_a_lasting_holder_still_keeps_a_second_daemon_out(tmp_path: Path) -> None:
    probe = _probe_holding(tmp_path)
    waits: list[float] = []
    try:
        with pytest.raises(StateDirInUse, match="in use by another cellguard"):
            StateDirLock(tmp_path).acquire(sleep=waits.append)
    finally:
        probe.close()
    assert len(waits) == ACQUIRE_ATTEMPTS - 1
    assert sum(waits) < 0.5  # a refused second daemon still says so at once
