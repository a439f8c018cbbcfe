"""Test-wide rules: a test that leaves asyncio tasks running fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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
    """``../shared/fixtures``: real Neware BTS API responses and Neware data files."""
    return SHARED_FIXTURES
