"""The supervisor against the simulated CT-4008 over TCP, in virtual time.

Rules: a failing cell's stop arrives at the instrument within a poll or two of the
fault; healthy channels are untouched; every recorded sample reaches the queue exactly
once, also across a link outage (backfilled by position, and judged); a restarted
supervisor neither re-starts a running test nor halts a halted channel twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from shared import StepTimeSpy

from cellguard.daemon.guard.links import neware as neware_link
from cellguard.daemon.guard.links.neware import ChannelSpec, InstrumentSupervisor
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareClient, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec
from cellguard.protocols import Cell, GalvanostaticCycling

AREA_CM2 = 0.785
POLL_S = 60.0
EPOCH = datetime(2026, 3, 1, 8, 0, 0)


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


def _simulator(clock: VirtualClock) -> NewareSimulator:
    cells = {
        ChannelId(1, 1, 1): CellSlot(SimCellSpec("MII-1", li_working_um=20.0, never_short=True)),
        ChannelId(1, 1, 2): CellSlot(SimCellSpec("SEI", never_short=True)),
        ChannelId(1, 1, 3): CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 10.0))),
    }
    return NewareSimulator(clock, cells=cells, seed=5, epoch=EPOCH)


def _specs() -> list[ChannelSpec]:
    asym = Cell.asymmetric(AREA_CM2, li_thin_um=20.0)
    sym = Cell.symmetric(AREA_CM2)
    return [
        ChannelSpec(
            ChannelId(1, 1, 1), "asymmetric", "MII-1", "run", GalvanostaticCycling(asym, cycles=100)
        ),
        ChannelSpec(
            ChannelId(1, 1, 2), "symmetric", "SEI", "run", GalvanostaticCycling(sym, cycles=100)
        ),
        ChannelSpec(
            ChannelId(1, 1, 3), "symmetric", "SEI", "run", GalvanostaticCycling(sym, cycles=100)
        ),
    ]


@asynccontextmanager
async def supervising(
    sim: NewareSimulator, port: int, recorder: Recorder, tmp_path: Path, clock: VirtualClock
) -> AsyncIterator[tuple[InstrumentSupervisor, asyncio.Queue[SampleRecord | EventRecord]]]:
    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=1_000_000)
    sup = InstrumentSupervisor(
        "ct4008-sim",
        lambda: NewareClient("127.0.0.1", port, timeout_s=5.0),
        _specs(),
        queue,
        recorder,
        clock=clock,
        poll_interval_s=POLL_S,
        download_interval_s=600.0,
        state=recorder,
        step_file_dir=tmp_path,
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


def test_the_live_detectors_judge_polls_and_the_recorded_ones_records(tmp_path: Path) -> None:
    """The live ``inquire`` values are polls on this PC's clock: the first after a
    reversal comes anywhere within a poll interval of it, so the live detectors do not
    judge a fall where the profile knows nothing as early. The recorded series starts
    each step at its change: its detectors keep judging a half cycle's first sample."""
    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue()
    recorder = Recorder()
    sup = InstrumentSupervisor(
        "ct4008-sim",
        lambda: NewareClient("127.0.0.1", 9, timeout_s=5.0),
        _specs(),
        queue,
        recorder,
        clock=VirtualClock(),
        poll_interval_s=POLL_S,
        download_interval_s=600.0,
        state=recorder,
        step_file_dir=tmp_path,
    )
    assert len(sup.channels) == 3
    for runtime in sup.channels.values():
        assert runtime.live.settings.polled_live
        assert not runtime.live.settings.stream_starts_at_reversal
        assert not runtime.recorded.settings.polled_live


async def test_the_live_detector_is_told_the_time_within_each_step(tmp_path: Path) -> None:
    """A poll misses a step shorter than its interval: a loop of one-direction blocks
    with a few seconds of rest (or an impedance scan) between them reads the same step
    number poll after poll. The inquire's relative time (the time within the running
    step) goes back at every new run, and the live detector gets it to tell them apart."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, _ = await stack.enter_async_context(supervising(sim, port, recorder, tmp_path, clock))
        runtime = sup.channels[ChannelId(1, 1, 2)]
        spy = StepTimeSpy(runtime.live)
        runtime.live = spy  # type: ignore[assignment]
        await _run_hours(clock, 3.0)
    spy.assert_one_run_per_half_cycle(3.0, 3600.0, POLL_S)


async def test_failing_cells_are_stopped_on_the_instrument_and_healthy_ones_run_on(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(
            supervising(sim, port, recorder, tmp_path, clock)
        )
        await _run_hours(clock, 60.0)
        items = _drain(queue)

    short = sup.channels[ChannelId(1, 1, 3)]
    depleted = sup.channels[ChannelId(1, 1, 1)]
    healthy = sup.channels[ChannelId(1, 1, 2)]
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert depleted.halt is not None
    assert depleted.halt.kind == "depletion"
    assert healthy.halt is None
    # The stop arrived at the instrument; the healthy channel still works.
    assert sim.channels[ChannelId(1, 1, 3)].workstatus == "stop"
    assert sim.channels[ChannelId(1, 1, 1)].workstatus == "stop"
    assert sim.channels[ChannelId(1, 1, 2)].workstatus == "working"
    assert (short.state, depleted.state, healthy.state) == ("halted", "halted", "running")
    # Halted promptly: the short at 10 h within two polls (live stream).
    assert 10.0 * 3600 <= short.halt.t_s <= 10.0 * 3600 + 3 * POLL_S
    assert depleted.halt.t_s < 60 * 3600
    # Alerts published for both halts, with their explanation.
    halts = [a for a in recorder.alerts if a.kind == "halt"]
    assert sorted(a.tags.channel for a in halts) == ["1-1-1", "1-1-3"]
    assert all(a.detail and "measured_v" in a.values for a in halts)
    # Every recorded sample reached the queue exactly once, in order.
    for channel in ("1-1-1", "1-1-2", "1-1-3"):
        seqs = [
            i.seq
            for i in items
            if isinstance(i, SampleRecord) and i.source == "recorded" and i.tags.channel == channel
        ]
        assert seqs == list(range(1, len(seqs) + 1))
    events = [i for i in items if isinstance(i, EventRecord)]
    assert sum(e.kind == "start" for e in events) == 3
    assert sum(e.kind == "halt" for e in events) == 2
    # State persisted for a restart.
    assert recorder.state[("ct4008-sim", "1-1-3")][0] == "halted"


async def test_a_restarted_supervisor_neither_restarts_nor_halts_twice(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port):
        async with supervising(sim, port, recorder, tmp_path, clock) as (first, queue):
            await _run_hours(clock, 12.0)
            # The sink wrote everything: the position a restart resumes from moves.
            first.samples_stored([i for i in _drain(queue) if isinstance(i, SampleRecord)])
        assert first.channels[ChannelId(1, 1, 3)].state == "halted"
        test_ids = {c: sim.channels[c].test_id for c in sim.channels}
        alerts_before = len(recorder.alerts)
        async with supervising(sim, port, recorder, tmp_path, clock) as (second, queue):
            await _run_hours(clock, 2.0)
            items = _drain(queue)
            second.samples_stored([i for i in items if isinstance(i, SampleRecord)])
    # No second start of the running tests, no second halt of the halted channel.
    assert {c: sim.channels[c].test_id for c in sim.channels} == test_ids
    assert second.channels[ChannelId(1, 1, 3)].state == "halted"
    assert [a for a in recorder.alerts[alerts_before:] if a.kind == "halt"] == []
    # It resumed the recorded stream where the first one stopped: no duplicates.
    seqs = [
        i.seq
        for i in items
        if isinstance(i, SampleRecord) and i.source == "recorded" and i.tags.channel == "1-1-2"
    ]
    assert seqs
    assert seqs[0] == recorder.state[("ct4008-sim", "1-1-2")][1] - len(seqs) + 1


async def test_a_fault_during_a_link_outage_is_backfilled_and_halted(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(AsyncExitStack())
        _, port = await server.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(
            supervising(sim, port, recorder, tmp_path, clock)
        )
        await _run_hours(clock, 9.0)
        await server.aclose()  # the BTS server goes away at 9 h
        await _run_hours(clock, 3.0)  # the short happens at 10 h, unseen
        assert not sup.available
        assert sim.channels[ChannelId(1, 1, 3)].workstatus == "working"
        async with sim.serve(port=port):
            await _run_hours(clock, 3.0)
            items = _drain(queue)
    short = sup.channels[ChannelId(1, 1, 3)]
    assert short.halt is not None
    assert short.halt.kind == "short"
    # Judged on the backfilled samples: the halt points at the fault time, not the reconnect.
    assert 10.0 * 3600 <= short.halt.t_s < 12.0 * 3600
    assert sim.channels[ChannelId(1, 1, 3)].workstatus == "stop"
    seqs = [
        i.seq
        for i in items
        if isinstance(i, SampleRecord) and i.source == "recorded" and i.tags.channel == "1-1-2"
    ]
    assert seqs == list(range(1, len(seqs) + 1))  # no hole across the outage
    assert max(seqs) >= 14 * 60


async def test_after_a_restart_the_detectors_rebuild_their_baseline_and_catch_the_next_fault(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port):
        async with supervising(sim, port, recorder, tmp_path, clock) as (first, queue):
            await _run_hours(clock, 9.4)  # restart 36 min before the short at 10 h
            first.samples_stored([i for i in _drain(queue) if isinstance(i, SampleRecord)])
        assert first.channels[ChannelId(1, 1, 3)].halt is None
        resumed_at = recorder.state[("ct4008-sim", "1-1-3")][1]
        assert resumed_at >= 9 * 60
        async with supervising(sim, port, recorder, tmp_path, clock) as (second, _):
            warmed = second.channels[ChannelId(1, 1, 3)].recorded.samples
            assert second.channels[ChannelId(1, 1, 3)].next_seq > resumed_at
            await _run_hours(clock, 2.0)
    assert warmed >= 5 * 60  # hours of history fed before judging anything new
    short = second.channels[ChannelId(1, 1, 3)]
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert 10.0 * 3600 <= short.halt.t_s <= 10.0 * 3600 + 3 * POLL_S
    assert second.channels[ChannelId(1, 1, 2)].halt is None


def _operator(
    sup: InstrumentSupervisor, clock: VirtualClock, channel: ChannelId
) -> Callable[[str], Awaitable[tuple[bool, str]]]:
    """An operator's command to ``channel``, answered at the next poll."""

    async def do(action: str) -> tuple[bool, str]:
        pending = asyncio.create_task(sup.command(channel, action))
        await _run_hours(clock, POLL_S / 3600)  # the next poll runs it
        return await pending

    return do


async def test_operator_pause_resume_and_stop_reach_the_instrument(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    healthy = ChannelId(1, 1, 2)
    async with (
        sim.serve() as (_, port),
        supervising(sim, port, recorder, tmp_path, clock) as (sup, _),
    ):
        await _run_hours(clock, 3.0)
        do = _operator(sup, clock, healthy)
        assert await do("pause") == (True, "paused")
        assert sim.channels[healthy].workstatus == "pause"
        await _run_hours(clock, 1.0)  # an hour at rest: not a fault
        assert await do("resume") == (True, "resumed")
        assert sim.channels[healthy].workstatus == "working"
        await _run_hours(clock, 3.0)
        ok, detail = await do("pause")
        assert ok
        ok, detail = await do("pause")
        assert not ok
        assert "refused" in detail
        assert await do("stop") == (True, "stopped")
        assert sim.channels[healthy].workstatus == "stop"
        assert (await sup.command(healthy, "dance"))[0] is False
    assert sup.channels[healthy].halt is None
    kinds = [e.kind for e in sup.events if e.tags.channel == "1-1-2"]
    assert kinds.count("pause") == 2
    assert "resume" in kinds
    assert "stop" in kinds


async def test_every_halt_of_a_poll_is_on_the_wire_before_any_alert(tmp_path: Path) -> None:
    """Two cells short at once: both stops precede either alert (no halt waits)."""
    clock = VirtualClock()
    cells = {
        ChannelId(1, 1, 1): CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 10.0))),
        ChannelId(1, 1, 2): CellSlot(SimCellSpec("SEI", never_short=True)),
        ChannelId(1, 1, 3): CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 10.0))),
    }
    sim = NewareSimulator(clock, cells=cells, seed=5, epoch=EPOCH)
    seen_at_alert: list[dict[str, str]] = []

    class Watching(Recorder):
        async def publish_event(self, event: EventRecord) -> None:
            if event.kind == "halt":
                seen_at_alert.append(
                    {
                        str(c): sim.channels[c].workstatus
                        for c in (ChannelId(1, 1, 1), ChannelId(1, 1, 3))
                    }
                )
            await super().publish_event(event)

    specs = _specs()
    specs[0] = ChannelSpec(
        ChannelId(1, 1, 1),
        "symmetric",
        "SEI",
        "run",
        GalvanostaticCycling(Cell.symmetric(AREA_CM2), cycles=100),
    )
    recorder = Watching()
    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue()
    async with sim.serve() as (_, port):
        sup = InstrumentSupervisor(
            "ct4008-sim",
            lambda: NewareClient("127.0.0.1", port, timeout_s=5.0),
            specs,
            queue,
            recorder,
            clock=clock,
            poll_interval_s=POLL_S,
            download_interval_s=3600.0,
            state=recorder,
            step_file_dir=tmp_path,
        )
        task = asyncio.create_task(sup.run())
        try:
            await clock.wait_until_sleeping(task)
            await _run_hours(clock, 11.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert len(seen_at_alert) == 2
    assert all(s == {"1-1-1": "stop", "1-1-3": "stop"} for s in seen_at_alert)


async def test_full_sinks_never_delay_a_halt_and_lose_no_recorded_sample(tmp_path: Path) -> None:
    """With the queue full and nobody draining it, the live poll still halts the short;
    recorded samples wait on the instrument and arrive later, once each, in order."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=200)
    async with sim.serve() as (_, port):
        sup = InstrumentSupervisor(
            "ct4008-sim",
            lambda: NewareClient("127.0.0.1", port, timeout_s=5.0),
            _specs(),
            queue,
            recorder,
            clock=clock,
            poll_interval_s=POLL_S,
            download_interval_s=600.0,
            state=recorder,
            step_file_dir=tmp_path,
        )
        task = asyncio.create_task(sup.run())
        try:
            await clock.wait_until_sleeping(task)
            await _run_hours(clock, 11.0)  # the sinks are stuck: nothing drains the queue
            assert queue.full()
            assert sup.recorded_deferred > 0
            assert sup.channels[ChannelId(1, 1, 3)].halt is not None
            assert sim.channels[ChannelId(1, 1, 3)].workstatus == "stop"
            items = []
            for _ in range(200):  # the sinks recover: drain, let the supervisor catch up
                items += _drain(queue)
                await _run_hours(clock, 600.0 / 3600)
            items += _drain(queue)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    seqs = [
        i.seq
        for i in items
        if isinstance(i, SampleRecord) and i.source == "recorded" and i.tags.channel == "1-1-2"
    ]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= 11 * 60


async def test_the_position_saved_for_a_restart_is_what_the_sink_wrote_not_what_was_queued(
    tmp_path: Path,
) -> None:
    """A kill -9 loses the queue: the position a restart resumes from must be the last
    recorded sample the sink acknowledged, so nothing queued is lost with the process."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port):
        async with supervising(sim, port, recorder, tmp_path, clock) as (sup, queue):
            await _run_hours(clock, 2.0)
            items = _drain(queue)
            recorded = [
                i
                for i in items
                if isinstance(i, SampleRecord)
                and i.source == "recorded"
                and i.tags.channel == "1-1-2"
            ]
            assert len(recorded) >= 100
            # Queued, never written: the saved position has not moved.
            assert recorder.state[("ct4008-sim", "1-1-2")][1] == 0
            half = recorded[: len(recorded) // 2]
            sup.samples_stored(half)
            assert recorder.state[("ct4008-sim", "1-1-2")][1] == half[-1].seq
            # Samples of another instrument or of an earlier test move nothing.
            other = ChannelTags("other", "1-1-2", half[0].tags.test_id, "SEI", "symmetric")
            old = ChannelTags("ct4008-sim", "1-1-2", "earlier", "SEI", "symmetric")
            sup.samples_stored(
                [SampleRecord(t, 0.0, 0.0, 0.0, 0.0, seq=10_000) for t in (other, old)]
            )
            assert recorder.state[("ct4008-sim", "1-1-2")][1] == half[-1].seq
            assert recorder.state[("ct4008-sim", "1-1-2")][0] == "running"
        # A supervisor restarted from that state fetches the unwritten half again.
        async with supervising(sim, port, recorder, tmp_path, clock) as (_, queue):
            await _run_hours(clock, 0.1)
            again = [
                i.seq
                for i in _drain(queue)
                if isinstance(i, SampleRecord)
                and i.source == "recorded"
                and i.tags.channel == "1-1-2"
            ]
    assert again[0] == half[-1].seq + 1
    assert again[: len(recorded) - len(half)] == [s.seq for s in recorded[len(half) :]]


async def test_a_channel_back_after_a_link_loss_is_running_again(tmp_path: Path) -> None:
    """After a reconnect a channel the instrument reports working is "running" (also
    in the saved state), not stuck "unavailable" until its status text changes."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(AsyncExitStack())
        _, port = await server.enter_async_context(sim.serve())
        sup, _ = await stack.enter_async_context(supervising(sim, port, recorder, tmp_path, clock))
        await _run_hours(clock, 1.0)
        await server.aclose()
        await _run_hours(clock, 0.5)
        assert sup.channels[ChannelId(1, 1, 2)].state == "unavailable"
        async with sim.serve(port=port):
            await _run_hours(clock, 0.5)
            assert sup.available
            assert sup.channels[ChannelId(1, 1, 2)].state == "running"
            assert recorder.state[("ct4008-sim", "1-1-2")][0] == "running"


WINDOWED = """
[cell]
type = "symmetric"
diameter_mm = 10
thick_li_um = 100

[protocol]
name = "windowed"
record_every = "60 s"
steps = [
  "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Plate at 0.5 mA/cm2 for 0.5 mAh/cm2 within -0.004 V and 0.004 V",
  "Repeat steps 1-2 10 times",
]
"""


async def test_a_scripts_step_window_is_judged_on_the_neware_and_halts(tmp_path: Path) -> None:
    """The script's window on the plating step (4 mV, under this cell's ~12 mV) halts
    the channel from the step id of the samples, while the strip step, outside any
    window, runs. The compiled file carries the window as the step's own protection
    too, so the instrument trips the channel to ``protect`` itself."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    healthy = ChannelId(1, 1, 2)
    async with (
        sim.serve() as (_, port),
        supervising(sim, port, recorder, tmp_path, clock) as (sup, _),
    ):
        await _run_hours(clock, 0.5)

        async def do(action: str, text: str | None = None) -> tuple[bool, str]:
            pending = asyncio.create_task(sup.command(healthy, action, text))
            await _run_hours(clock, POLL_S / 3600)
            return await pending

        assert await do("stop") == (True, "stopped")
        soak = WINDOWED.replace("steps = [\n", 'steps = [\n  "Set temperature to 60 °C",\n')
        soak = soak.replace("Repeat steps 1-2", "Repeat steps 2-3")
        ok, detail = await do("start", soak)
        assert not ok
        assert "has no chamber" in detail
        assert sim.channels[healthy].workstatus == "stop"
        ok, detail = await do("start", WINDOWED)
        assert ok, detail
        await _run_hours(clock, 0.9)
        assert sup.channels[healthy].halt is None  # the strip step: no window
        await _run_hours(clock, 0.5)
    halt = sup.channels[healthy].halt
    assert halt is not None
    assert (halt.kind, halt.subkind) == ("limit", "step")
    assert "step 2" in halt.detail
    assert sim.channels[healthy].workstatus == "protect"


async def test_a_channel_paused_for_three_hours_mid_half_cycle_is_not_halted_after(
    tmp_path: Path,
) -> None:
    """Issue 14: a healthy channel paused for 3 h (operator command) in the middle of a
    half cycle and resumed goes on unhalted; the live stream is judged as a pause."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    healthy = ChannelId(1, 1, 2)
    async with (
        sim.serve() as (_, port),
        supervising(sim, port, recorder, tmp_path, clock) as (sup, _),
    ):
        await _run_hours(clock, 6.5)  # three cycles and half a half cycle
        do = _operator(sup, clock, healthy)
        assert await do("pause") == (True, "paused")
        await _run_hours(clock, 3.0)
        assert await do("resume") == (True, "resumed")
        await _run_hours(clock, 8.0)
        assert sim.channels[healthy].workstatus == "working"
    assert sup.channels[healthy].halt is None
    assert not [e for e in sup.events if e.tags.channel == "1-1-2" and e.kind == "halt"]


async def test_the_collectors_routine_work_runs_after_each_poll_never_before_its_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One routine collection per poll, each after that poll's stops reached the
    instrument: a judged halt never waits behind the garbage collector's routine."""
    clock = VirtualClock()
    sim = _simulator(clock)
    collections: list[tuple[int, list[str]]] = []
    sup_ref: list[InstrumentSupervisor] = []

    def collect_after_poll() -> int:
        sup = sup_ref[0]
        # Judged for a halt but still running at the instrument: a stop not yet out.
        waiting = [
            str(c)
            for c, r in sup.channels.items()
            if r.halt is not None and sim.channels[c].workstatus == "working"
        ]
        collections.append((sup.polls, waiting))
        return 1

    monkeypatch.setattr(neware_link, "collect_after_poll", collect_after_poll)
    recorder = Recorder()
    async with (
        sim.serve() as (_, port),
        supervising(sim, port, recorder, tmp_path, clock) as (sup, _),
    ):
        sup_ref.append(sup)
        polls0 = sup.polls
        await _run_hours(clock, 11.0)
        polls = sup.polls - polls0
        halted = [str(c) for c, r in sup.channels.items() if r.halt is not None]
    assert halted == ["1-1-3"]
    assert polls > 600
    after = [(p, w) for p, w in collections if p > polls0]
    assert [p for p, _ in after] == list(range(polls0 + 1, polls0 + polls + 1))
    assert all(w == [] for _, w in collections)
