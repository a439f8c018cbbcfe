"""The channel guard over a simulated Arbin cycler (CTI over TCP), in virtual time.

Rules: a failing cell's stop arrives at the cycler within a poll of the fault and is
confirmed by reading back; healthy channels are untouched; run mode assigns and
starts the schedule once and a restart never starts it again nor halts twice; an
outage is said to leave a gap (no backfill in CTI); a channel the cycler does not
have is refused alone, with an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from cellguard.daemon.guard.links.arbin import ArbinChannelSpec, ArbinSupervisor
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.drivers import VirtualClock
from cellguard.drivers.arbin import DEFAULT_PASSWORD, DEFAULT_USERNAME, ArbinClient, ArbinSimulator
from cellguard.drivers.neware import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 60.0


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


def _simulator(clock: VirtualClock) -> ArbinSimulator:
    cells = {
        0: CellSlot(SimCellSpec("MII-1", li_working_um=20.0, never_short=True)),
        1: CellSlot(SimCellSpec("SEI", never_short=True)),
        2: CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 10.0))),
    }
    return ArbinSimulator(clock, channels=8, cells=cells, seed=5)


def _specs(mode: str = "run") -> list[ArbinChannelSpec]:
    return [
        ArbinChannelSpec(1, "asymmetric", "MII-1", mode, "cellguard-plating.sdx"),
        ArbinChannelSpec(2, "symmetric", "SEI", mode, "cellguard-cycling.sdx"),
        ArbinChannelSpec(3, "symmetric", "SEI", mode, "cellguard-cycling.sdx"),
    ]


@asynccontextmanager
async def guarding(
    port: int, recorder: Recorder, clock: VirtualClock, specs: list[ArbinChannelSpec]
) -> AsyncIterator[tuple[ArbinSupervisor, asyncio.Queue[SampleRecord | EventRecord]]]:
    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=1_000_000)
    sup = ArbinSupervisor(
        "arbin-sim",
        lambda: ArbinClient(
            "127.0.0.1", port, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, timeout_s=5
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
        yield sup, queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run_hours(clock: VirtualClock, hours: float) -> None:
    for _ in range(round(hours * 3600 / POLL_S)):
        await clock.advance(POLL_S)


def _drain(queue: asyncio.Queue[SampleRecord | EventRecord]) -> list[SampleRecord | EventRecord]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_failing_cells_are_stopped_on_the_cycler_and_healthy_ones_run_on() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(guarding(port, recorder, clock, _specs()))
        await _run_hours(clock, 60.0)
        items = _drain(queue)

    depleted, healthy, short = (sup.channels[c] for c in (1, 2, 3))
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert depleted.halt is not None
    assert depleted.halt.kind == "depletion"
    assert healthy.halt is None
    # The stops reached the cycler; the healthy channel still runs.
    assert not sim.channels[2].running
    assert not sim.channels[0].running
    assert sim.channels[1].running
    assert (depleted.state, healthy.state, short.state) == ("halted", "running", "halted")
    # Halted promptly: the short at 10 h within two polls of it.
    assert 10.0 * 3600 <= short.halt.t_s <= 10.0 * 3600 + 2 * POLL_S
    # Every value judged was stored, and the halt alerts say why.
    samples = [i for i in items if isinstance(i, SampleRecord)]
    assert {s.tags.channel for s in samples} == {"1", "2", "3"}
    assert all(s.source == "live" and s.tags.test_id.startswith("cg-") for s in samples)
    halts = [a for a in recorder.alerts if a.kind == "halt"]
    assert sorted(a.tags.channel for a in halts) == ["1", "3"]
    assert all(a.detail and "measured_v" in a.values for a in halts)
    events = [i for i in items if isinstance(i, EventRecord)]
    assert sum(e.kind == "start" for e in events) == 3
    assert recorder.state[("arbin-sim", "3")][0] == "halted"
    assert sim.calls["StopSchedule"] == 2  # one stop per failing channel, no more


async def test_a_restart_neither_restarts_nor_halts_twice() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port):
        async with guarding(port, recorder, clock, _specs()) as (first, _):
            await _run_hours(clock, 12.0)
        assert first.channels[3].state == "halted"
        starts, stops = sim.calls["StartSchedule"], sim.calls["StopSchedule"]
        async with guarding(port, recorder, clock, _specs()) as (second, _):
            await _run_hours(clock, 2.0)
        assert sim.calls["StartSchedule"] == starts
        assert sim.calls["StopSchedule"] == stops
        assert second.channels[3].state == "halted"
        assert second.channels[2].state == "running"


async def test_monitor_mode_judges_what_mits_pro_runs() -> None:
    """A test started at the cycler (not by cellguard) is judged and halted too."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port):
        async with ArbinClient(
            "127.0.0.1", port, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD
        ) as lab:
            await lab.assign_schedule(2, "cellguard-cycling.sdx")
            await lab.start(2, "someone-elses-test")
        async with guarding(port, recorder, clock, _specs("monitor")) as (sup, queue):
            await _run_hours(clock, 12.0)
            items = _drain(queue)
    short = sup.channels[3]
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert short.state == "halted"
    assert sup.channels[1].state == "idle"  # nothing runs there: nothing started
    assert "StartSchedule" not in sim.calls or sim.calls["StartSchedule"] == 1
    assert {s.tags.test_id for s in items if isinstance(s, SampleRecord)} == {"someone-elses-test"}


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


async def test_an_outage_is_reported_as_a_gap_and_a_fault_after_it_is_still_halted() -> None:
    """CTI has no history: the values of the outage are missing (said in an
    ``available`` event), the channel is guarded again and its short is halted."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    specs = [ArbinChannelSpec(3, "symmetric", "SEI", "run", "cellguard-cycling.sdx")]
    async with AsyncExitStack() as stack:
        _, sim_port = await stack.enter_async_context(sim.serve())
        outage = await stack.enter_async_context(Outage(sim_port))
        sup, queue = await stack.enter_async_context(guarding(outage.port, recorder, clock, specs))
        await _run_hours(clock, 4.0)
        outage.cut()
        await _run_hours(clock, 2.0)
        assert sup.channels[3].state == "unavailable"
        assert not sup.available
        outage.down = False
        await _run_hours(clock, 6.0)
        items = _drain(queue)
    runtime = sup.channels[3]
    assert runtime.halt is not None
    assert runtime.halt.kind == "short"
    assert runtime.state == "halted"
    assert not sim.channels[2].running
    (gap,) = [e for e in sup.events if e.kind == "available"]
    assert "not backfilled" in gap.detail
    assert 7000 <= float(gap.detail.split("after ")[1].split(" s")[0]) <= 7300
    times = [s.test_time_s for s in items if isinstance(s, SampleRecord)]
    holes = [b - a for a, b in itertools.pairwise(times) if b - a > POLL_S * 1.5]
    assert len(holes) == 1  # the outage, and nothing else
    assert holes[0] >= 2 * 3600 - POLL_S


async def test_a_channel_the_cycler_lacks_is_refused_alone() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    specs = [*_specs(), ArbinChannelSpec(9, "symmetric", "SEI", "monitor")]
    async with sim.serve() as (_, port), guarding(port, recorder, clock, specs) as (sup, _):
        await _run_hours(clock, 1.0)
        ok, detail = await sup.command("9", "stop")
        assert not ok
        assert "refused at connect" in detail
        ok, detail = await sup.command("2", "pause")
        assert not ok
        assert "CTI has no pause" in detail
        ok, detail = await sup.command("2", "stop")
        assert ok
    unguarded = [a for a in recorder.alerts if a.kind == "unguarded"]
    assert [a.tags.channel for a in unguarded] == ["9"]
    assert "8 channels" in unguarded[0].detail
    assert sup.channels[2].state == "stopped"
    assert sim.channels[0].running  # the others run on


async def test_a_value_read_twice_is_judged_and_stored_once() -> None:
    """Two polls in the same instant (an operator command between polls, a reconnect)
    read the same value: one sample, one judgement."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port):
        queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue()
        client = ArbinClient(
            "127.0.0.1", port, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD
        )
        sup = ArbinSupervisor(
            "arbin-sim", lambda: client, _specs("monitor"), queue, recorder, clock=clock
        )
        async with client:
            await client.assign_schedule(1, "cellguard-cycling.sdx")
            await client.start(1, "t")
            clock.set(600.0)
            await sup.poll_once(client)
            await sup.poll_once(client)
            clock.set(660.0)
            await sup.poll_once(client)
    samples = [i for i in _drain(queue) if isinstance(i, SampleRecord)]
    assert [s.test_time_s for s in samples] == [600.0, 660.0]
    assert sup.channels[2].detector.samples == 2
