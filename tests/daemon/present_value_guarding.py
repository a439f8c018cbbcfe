"""What the Arbin and Maccor guard tests share: a recorder standing in for the publisher
and state store, a TCP relay whose link can be cut, and the supervisor's task run in
virtual time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from shared import StepTimeSpy

from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.drivers import VirtualClock

Queue = asyncio.Queue[SampleRecord | EventRecord]


class Recorder:
    """A publisher and state store that remember what they were given."""

    def __init__(self) -> None:
        self.alerts: list[EventRecord] = []
        self.statuses: list[tuple[str, dict[str, object]]] = []
        self.state: dict[tuple[str, str], tuple[str, int, str]] = {}

    async def publish_event(self, event: EventRecord) -> None:
        self.alerts.append(event)

    async def publish_status(self, tags: ChannelTags, status: dict[str, object]) -> None:
        self.statuses.append((tags.channel, status))

    def save_state(self, tags: ChannelTags, state: str, last_seq: int, detail: str) -> None:
        self.state[(tags.instrument, tags.channel)] = (state, last_seq, detail)

    def load_state(self, instrument: str, channel: str) -> tuple[str, int, str] | None:
        return self.state.get((instrument, channel))


class Outage:
    """A TCP relay to the simulator whose link can be cut (and refused) and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Outage:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()

    async def _handle(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.down:
                down_w.transport.abort()
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.update((down_w, up_w))
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._pump(down_r, up_w))
                pumps.create_task(self._pump(up_r, down_w))
        finally:
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


def new_queue() -> Queue:
    return asyncio.Queue(maxsize=1_000_000)


@asynccontextmanager
async def supervised(sup: Any, clock: VirtualClock) -> AsyncIterator[None]:
    """Run ``sup.run()`` until the block ends; enter once it waits on the clock."""
    task = asyncio.create_task(sup.run())
    try:
        await clock.wait_until_sleeping(task)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_hours(clock: VirtualClock, hours: float, poll_s: float) -> None:
    for _ in range(round(hours * 3600 / poll_s)):
        await clock.advance(poll_s)


def drain(queue: Queue) -> list[SampleRecord | EventRecord]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def assert_step_times_reach_the_detector(
    serve: AbstractAsyncContextManager[tuple[Any, ...]],
    guarding: Callable[[int], AbstractAsyncContextManager[tuple[Any, Queue]]],
    clock: VirtualClock,
    poll_s: float,
) -> None:
    """Run a simulated cycler (``serve`` yields (..., port, ...)) under its guard for
    3 h with channel 2's detector spied on: each poll hands it the time within the
    running step, one run of a step per 1-h half cycle (see StepRuns)."""
    async with AsyncExitStack() as stack:
        served = await stack.enter_async_context(serve)
        sup, _ = await stack.enter_async_context(guarding(served[1]))
        runtime = sup.channels[2]
        spy = StepTimeSpy(runtime.detector)
        runtime.detector = spy
        await run_hours(clock, 3.0, poll_s)
    spy.assert_one_run_per_half_cycle(3.0, 3600.0, poll_s)
