"""The loop every guarded instrument runs, and its backoff.

Rules: a failing link is logged once when it fails and once when it recovers, not at
every retry, and the retries back off 1, 2, 4 ... s; an unexpected error in a session
(a bug) is logged with its traceback and the instrument is guarded again after the
backoff instead of ending its task (and leaving every channel on it unguarded); a
command waiting when the link is lost is answered, not left hanging.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from cellguard.daemon.guard.base import Command, InstrumentGuard
from cellguard.daemon.guard.core import Backoff
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.drivers import VirtualClock
from cellguard.drivers.errors import InstrumentConnectionError


def test_backoff_logs_the_first_failure_and_the_recovery_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="cellguard.daemon.guard")
    clock = VirtualClock()
    backoff = Backoff("ct-a", clock)
    delays = []
    for _ in range(8):
        delays.append(backoff.failed("instrument unreachable: refused"))
        clock.set(clock.now_s() + delays[-1])
    backoff.recovered()
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) == 2
    assert said[0][0] == "ERROR"
    assert "ct-a: instrument unreachable: refused" in said[0][1]
    assert said[1][0] == "WARNING"
    assert "restored after 183 s (8 failed attempt(s))" in said[1][1]
    assert backoff.delay_s == 1.0


class _Queue:
    def put_nowait(self, item: SampleRecord | EventRecord) -> None:
        pass


class _Publisher:
    async def publish_event(self, event: EventRecord) -> None:
        pass

    async def publish_status(self, tags: ChannelTags, status: dict[str, object]) -> None:
        pass


class _Flaky(InstrumentGuard[int, str]):
    """Session 1: a bug; session 2: the link is lost while a command waits; then runs."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("flaky", _Queue(), _Publisher(), clock=clock, state=None)
        self.sessions = 0
        self.closed = 0

    def _new_link(self) -> int:
        return self.sessions

    async def _open(self, link: int) -> None:
        self.sessions += 1

    async def _session(self, link: int) -> None:
        if self.sessions == 1:
            msg = "a bug in the guard"
            raise RuntimeError(msg)
        if self.sessions == 2:
            await self._clock.sleep(10.0)  # commands are not looked at meanwhile
            msg = "the link dropped"
            raise InstrumentConnectionError(msg)
        await self._clock.sleep(3600.0)

    async def _close(self, link: int) -> None:
        self.closed += 1

    async def _execute(self, link: int, command: Command[str]) -> tuple[bool, str]:
        return True, "done"


async def test_a_bug_in_a_session_reconnects_and_a_waiting_command_is_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    guard = _Flaky(clock)
    task = asyncio.create_task(guard.run())
    try:
        await clock.wait_until_sleeping(task)
        assert guard.sessions == 1
        assert any(r.exc_info and "unexpected error" in r.getMessage() for r in caplog.records)
        await clock.advance(1.0)  # the backoff
        assert guard.sessions == 2
        assert guard.available
        waiting = asyncio.create_task(guard._queue_command("1", "stop", None))
        await asyncio.sleep(0)
        await clock.advance(10.0)  # the link drops with the command still waiting
        assert await asyncio.wait_for(waiting, 5.0) == (False, "flaky: the link was lost")
        await clock.advance(2.0)
        assert guard.sessions == 3
        assert guard.closed == 2
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _Idle(InstrumentGuard[int, str]):
    """Polls once an hour; counts what it did."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("idle", _Queue(), _Publisher(), clock=clock, state=None)
        self.polls = 0
        self.executed: list[tuple[str, float]] = []

    def _new_link(self) -> int:
        return 0

    async def _open(self, link: int) -> None:
        pass

    async def _session(self, link: int) -> None:
        while True:
            await self._run_commands(link)
            self.polls += 1
            await self._idle(link, 3600.0)

    async def _close(self, link: int) -> None:
        pass

    async def _execute(self, link: int, command: Command[str]) -> tuple[bool, str]:
        self.executed.append((command.action, self._clock.now_s()))
        return True, "stopped"


async def test_an_operator_command_runs_at_once_not_at_the_next_poll() -> None:
    clock = VirtualClock()
    guard = _Idle(clock)
    task = asyncio.create_task(guard.run())
    try:
        await clock.wait_until_sleeping(task)
        await clock.advance(60.0)
        result = await asyncio.wait_for(guard._queue_command("1", "stop", None), 5.0)
        assert result == (True, "stopped")
        # Carried out 60 s into the hour, without waiting for the next poll.
        assert guard.executed == [("stop", 60.0)]
        assert guard.polls == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
