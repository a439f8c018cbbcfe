"""A failing channel early in a channel-info feedback is stopped before the feedback's
last byte is read: over real TCP, against a cycler that holds the tail of the feedback
back until the stop has come (events and virtual time, no sleeps for timing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from cellguard.daemon.guard.links.arbin import ArbinChannelSpec, ArbinSupervisor
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.drivers import VirtualClock
from cellguard.drivers.arbin import (
    ALL_CHANNELS,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    ArbinClient,
    ArbinSimulator,
    ChannelReading,
    ChannelsInfoFeedback,
    FrameSplitter,
    GetChannelsInfo,
    MalformedFrame,
    StopSchedule,
    decode_request,
    encode_feedback,
)
from cellguard.drivers.neware import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

HEAD_AND_COUNT_BYTES = 24
POLL_S = 60.0
# Only a bound on a wait for a condition, never a pause: a passing run waits for none.
CONDITION_TIMEOUT_S = 10.0


class TailHoldingCycler:
    """The simulated cycler's brain behind a TCP server that writes an all-channel
    feedback in two parts: up to the end of the first channel's record, then, once
    ``release()`` has returned, the rest. ``held(feedback)`` says which feedbacks it
    holds. Each stop request is recorded with whether the tail was then still held."""

    def __init__(
        self,
        sim: ArbinSimulator,
        held: Callable[[ChannelsInfoFeedback], bool],
        release: Callable[[TailHoldingCycler, ChannelsInfoFeedback], Awaitable[None]],
        *,
        damage_checksum: bool = False,
    ) -> None:
        self.sim = sim
        self.held = held
        self.release = release
        self.stop_arrived = asyncio.Event()
        self.stops: list[tuple[int, bool]] = []  # (channel index, tail still held)
        self.tails_held = 0
        self.damage_checksum = damage_checksum
        self.failures: list[str] = []
        self._holding = False
        self._tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        splitter = FrameSplitter("request")
        tail_sent: asyncio.Task[None] | None = None
        try:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    for frame in splitter.feed(data):
                        request = decode_request(frame)
                        if isinstance(request, StopSchedule):
                            self.stops.append((request.channel, self._holding))
                            self.stop_arrived.set()
                        if tail_sent is not None:
                            await tail_sent  # feedbacks go out in the order asked
                            tail_sent = None
                        for feedback in self.sim.handle(request):
                            out = encode_feedback(feedback)
                            if self.damage_checksum and isinstance(feedback, ChannelsInfoFeedback):
                                out = out[:-1] + bytes([out[-1] ^ 0xFF])
                            if (
                                isinstance(request, GetChannelsInfo)
                                and request.channel == ALL_CHANNELS
                                and isinstance(feedback, ChannelsInfoFeedback)
                                and len(feedback.channels) > 1
                                and self.held(feedback)
                            ):
                                cut = HEAD_AND_COUNT_BYTES + (
                                    len(out) - HEAD_AND_COUNT_BYTES - 2
                                ) // len(feedback.channels)
                                writer.write(out[:cut])
                                self._holding = True
                                self.tails_held += 1
                                tail_sent = asyncio.create_task(
                                    self._tail(writer, out[cut:], feedback)
                                )
                            else:
                                writer.write(out)
        finally:
            if tail_sent is not None:
                tail_sent.cancel()
            writer.transport.abort()
            self._tasks.discard(task)

    async def _tail(
        self, writer: asyncio.StreamWriter, tail: bytes, feedback: ChannelsInfoFeedback
    ) -> None:
        try:
            await self.release(self, feedback)
        except AssertionError as err:
            self.failures.append(str(err))  # said by the test, not lost in this task
            raise
        self._holding = False
        writer.write(tail)


async def _until_a_stop(cycler: TailHoldingCycler, _: ChannelsInfoFeedback) -> None:
    await cycler.stop_arrived.wait()


async def test_the_client_stops_a_channel_before_the_feedbacks_tail_arrives() -> None:
    clock = VirtualClock()
    sim = ArbinSimulator(clock, channels=6)
    cycler = TailHoldingCycler(sim, held=lambda _: True, release=_until_a_stop)
    judged: list[int] = []

    def judge(reading: ChannelReading) -> bool:
        judged.append(reading.channel)
        return reading.channel == 0

    async with (
        cycler.serve() as port,
        ArbinClient(
            "127.0.0.1", port, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, timeout_s=5
        ) as client,
    ):
        # Without the stop the tail never comes: the client's timeout would end it.
        readings, stops = await client.channels_info_judged(judge)

    assert cycler.stops == [(0, True)]  # the stop came while the tail was held back
    assert stops == {0: None}  # and the cycler carried it out
    assert judged == list(range(6))  # every channel judged, once, in wire order
    assert sorted(readings) == list(range(6))


async def test_a_feedback_that_fails_its_checksum_after_a_stop_still_loses_the_link() -> None:
    """The stop went out on a value not yet checked (the safe side); the frame's
    checksum still decides whether the readings are returned, as before."""
    sim = ArbinSimulator(VirtualClock(), channels=3)
    cycler = TailHoldingCycler(sim, held=lambda _: True, release=_until_a_stop)
    async with cycler.serve() as port:
        client = ArbinClient(
            "127.0.0.1", port, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, timeout_s=5
        )
        await client.connect()
        cycler.damage_checksum = True
        with pytest.raises(MalformedFrame) as err:
            await client.channels_info_judged(lambda reading: reading.channel == 0)
        assert err.value.field == "checksum"
        assert not client.connected  # nothing after it on the link can be trusted
    assert cycler.stops == [(0, True)]


# ------------------------------------------------------------------ the guard


def _shorting_rack(clock: VirtualClock) -> ArbinSimulator:
    cells = {0: CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 10.0)))}
    cells |= {i: CellSlot(SimCellSpec("SEI", never_short=True)) for i in range(1, 4)}
    return ArbinSimulator(clock, channels=4, cells=cells, seed=5)


class Recorder:
    """A publisher and state store that remember what they were given."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], tuple[str, int, str]] = {}
        self.alerts: list[EventRecord] = []

    async def publish_event(self, event: EventRecord) -> None:
        self.alerts.append(event)

    async def publish_status(self, tags: object, status: dict[str, object]) -> None:
        pass

    def save_state(self, tags: object, state: str, last_seq: int, detail: str) -> None:
        channel = getattr(tags, "channel", "")
        self.state[("arbin-sim", channel)] = (state, last_seq, detail)

    def load_state(self, instrument: str, channel: str) -> tuple[str, int, str] | None:
        return self.state.get((instrument, channel))


async def test_the_guard_halts_a_short_early_in_the_feedback_before_its_last_byte() -> None:
    clock = VirtualClock()
    sim = _shorting_rack(clock)
    recorder = Recorder()
    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=1_000_000)
    specs = [
        ArbinChannelSpec(c, "symmetric", "SEI", "run", "cellguard-cycling.sdx")
        for c in (1, 2, 3, 4)
    ]
    sup: ArbinSupervisor | None = None

    def shorted(feedback: ChannelsInfoFeedback) -> bool:
        first = feedback.channels[0]
        return first.channel == 0 and first.running and abs(first.voltage_v) < 2e-3

    async def judged_or_stopped(cycler: TailHoldingCycler, feedback: ChannelsInfoFeedback) -> None:
        """The tail goes once the guard judged channel 1's value without a halt, or
        once its stop came: the guard must be able to do either on the head alone."""
        assert sup is not None
        runtime = sup.channels[1]
        value_s = feedback.channels[0].test_time_s
        started = time.monotonic()
        while True:
            stopped = any(index == 0 and held for index, held in cycler.stops)
            if stopped or (runtime.halt is None and runtime.last_test_time_s >= value_s):
                return
            assert time.monotonic() - started < CONDITION_TIMEOUT_S, (
                "the guard neither judged nor stopped channel 1 while the tail was held"
            )
            await asyncio.sleep(0.001)  # a condition polled, with a bound

    cycler = TailHoldingCycler(sim, held=shorted, release=judged_or_stopped)
    async with AsyncExitStack() as stack:
        port = await stack.enter_async_context(cycler.serve())
        sup = ArbinSupervisor(
            "arbin-sim",
            lambda: ArbinClient(
                "127.0.0.1",
                port,
                username=DEFAULT_USERNAME,
                password=DEFAULT_PASSWORD,
                timeout_s=30,
            ),
            specs,
            queue,
            recorder,
            clock=clock,
            poll_interval_s=POLL_S,
            state=recorder,
        )
        task = asyncio.create_task(sup.run())
        try:
            await clock.wait_until_sleeping(task)
            for _ in range(round(14 * 3600 / POLL_S)):
                await clock.advance(POLL_S)
                if sup.channels[1].state == "halted":
                    break
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert cycler.failures == []
    short = sup.channels[1]
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert short.state == "halted"  # confirmed by reading the channel back
    assert cycler.tails_held >= 1
    assert (0, True) in cycler.stops  # stopped while the feedback's tail was held back
    assert all(sup.channels[c].halt is None for c in (2, 3, 4))
