"""Test-wide rules (a test that leaves asyncio tasks running fails) and shared fixtures
(a real pty pair for the serial instruments)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from shared import SHARED_FIXTURES


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail any test that leaves a task running after its own fixtures are torn down.

    Autouse fixtures are set up first, so this teardown runs after every other fixture
    of the test (servers, clients) has closed: whatever still runs then was leaked.
    """
    yield
    current = asyncio.current_task()
    for _ in range(5):  # let tasks that were just cancelled finish unwinding
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if leaked:
        names = ", ".join(repr(t.get_coro()) for t in leaked)
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {names}")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures``: real Neware BTS API responses and Neware data files."""
    return SHARED_FIXTURES


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals ``(host_end, instrument_end)``: bytes written to one
    are read from the other, as over a null-modem cable. socat is killed at teardown."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is required (apt-get install -y socat)")
    host, instrument = tmp_path / "host-tty", tmp_path / "instrument-tty"
    proc = subprocess.Popen(
        [
            socat,
            "-d",
            "-d",
            f"pty,raw,echo=0,link={host}",
            f"pty,raw,echo=0,link={instrument}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    # socat logs both PTYs, then this line once it relays: readiness without sleeping.
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if "starting data transfer loop" in line:
            break
    if not (host.exists() and instrument.exists()):
        proc.kill()
        proc.communicate()
        pytest.fail(f"socat made no pty pair: {''.join(seen)}")
    try:
        yield str(host), str(instrument)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
