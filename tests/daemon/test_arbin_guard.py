"""The channel guard over a simulated Arbin cycler (CTI over TCP), in virtual time.

Rules: a failing cell's stop arrives at the cycler within a poll of the fault and is
confirmed by reading back; healthy channels are untouched; run mode assigns and
starts the schedule once and a restart never starts it again nor halts twice; an
outage is said to leave a gap (no backfill in CTI); a channel the cycler does not
have is refused alone, with an alert.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

from present_value_guarding import (
    Outage,
    Queue,
    Recorder,
    assert_step_times_reach_the_detector,
    drain,
    new_queue,
    run_hours,
    supervised,
)

from cellguard.daemon.guard.links.arbin import ArbinChannelSpec, ArbinSupervisor
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.drivers import VirtualClock
from cellguard.drivers.arbin import DEFAULT_PASSWORD, DEFAULT_USERNAME, ArbinClient, ArbinSimulator
from cellguard.drivers.neware import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 60.0


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
) -> AsyncIterator[tuple[ArbinSupervisor, Queue]]:
    queue = new_queue()
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
    async with supervised(sup, clock):
        yield sup, queue


async def _run_hours(clock: VirtualClock, hours: float) -> None:
    await run_hours(clock, hours, POLL_S)


async def test_failing_cells_are_stopped_on_the_cycler_and_healthy_ones_run_on() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(guarding(port, recorder, clock, _specs()))
        await _run_hours(clock, 60.0)
        items = drain(queue)

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
    # Halted promptly: the short at 10 h, which is a reversal, within three polls of
    # it. Polled live, the first value after a reversal may sit in the zero crossing
    # itself, earlier than anything the profile knows: it counts for no fall.
    assert 10.0 * 3600 <= short.halt.t_s <= 10.0 * 3600 + 3 * POLL_S
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


async def test_the_detector_is_told_the_time_within_each_step() -> None:
    """A poll misses a step shorter than its interval; the reading's step time goes back
    at every new run of a step, and the detector gets it (see StepRuns)."""
    clock = VirtualClock()
    sim = _simulator(clock)
    guard = partial(guarding, recorder=Recorder(), clock=clock, specs=_specs())
    await assert_step_times_reach_the_detector(sim.serve(), guard, clock, POLL_S)


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
            items = drain(queue)
    short = sup.channels[3]
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert short.state == "halted"
    assert sup.channels[1].state == "idle"  # nothing runs there: nothing started
    assert "StartSchedule" not in sim.calls or sim.calls["StartSchedule"] == 1
    assert {s.tags.test_id for s in items if isinstance(s, SampleRecord)} == {"someone-elses-test"}


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
        items = drain(queue)
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
    samples = [i for i in drain(queue) if isinstance(i, SampleRecord)]
    assert [s.test_time_s for s in samples] == [600.0, 660.0]
    assert sup.channels[2].detector.samples == 2
