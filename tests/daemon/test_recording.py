"""The recorder: a failed write waits out its backoff on the daemon's clock, visibly.

Code that drives a virtual clock (the fault suite) must know when the sink needs
time to pass and when it is still busy on the store's thread (wall time).
"""

from __future__ import annotations

import asyncio
import errno

from cellguard.daemon.recording import Recorder
from cellguard.daemon.records import EventRecord
from cellguard.drivers import VirtualClock


class _Alerts:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def publish_event(self, event: EventRecord) -> None:
        self.kinds.append(event.kind)


async def test_waiting_to_retry_holds_exactly_while_a_failed_write_waits_on_the_clock() -> None:
    clock = VirtualClock()
    alerts = _Alerts()
    recorder = Recorder(alerts, clock, backoff_initial_s=10.0)
    attempts = 0

    async def write() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    assert not recorder.waiting_to_retry
    sink = asyncio.create_task(recorder.attempt("writing samples", write))
    # The write is a coroutine here (no thread): a few loop turns reach the backoff.
    for _ in range(100):
        if recorder.waiting_to_retry:
            break
        await asyncio.sleep(0)
    assert recorder.waiting_to_retry
    assert (attempts, recorder.recording, alerts.kinds) == (1, False, ["unavailable"])

    await clock.advance(9.0)
    assert recorder.waiting_to_retry  # the backoff is 10 s

    await clock.advance(1.0)
    # False the moment the clock has done its part, before the sink even resumes: a
    # driver that moves time on only then never outruns the write that follows.
    assert not recorder.waiting_to_retry
    assert await sink
    assert (attempts, recorder.recording, alerts.kinds) == (2, True, ["unavailable", "available"])
    assert not recorder.waiting_to_retry
