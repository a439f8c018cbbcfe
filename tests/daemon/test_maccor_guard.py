"""The channel guard over a simulated Maccor tester (MacNet JSON over TCP), in virtual time.

Rules: a failing cell is suspended on the tester within a poll of the fault and that
is confirmed by reading back; healthy channels are untouched; run mode programmes the
tester's own limits and starts the procedure once, and a restart never starts it
again nor halts twice; an outage is said to leave a gap (MacNet has no record
history); a channel the tester does not have is refused alone, with an alert.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import pytest
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

from cellguard.daemon.guard.links.maccor import MaccorChannelSpec, MaccorSupervisor
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.drivers import VirtualClock
from cellguard.drivers.maccor import MaccorClient, MaccorSimulator, SafetyLimits
from cellguard.drivers.neware import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 60.0


def _simulator(clock: VirtualClock) -> MaccorSimulator:
    cells = {
        0: CellSlot(SimCellSpec("MII-1", li_working_um=20.0, never_short=True)),
        1: CellSlot(SimCellSpec("SEI", never_short=True)),
        2: CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 10.0))),
    }
    return MaccorSimulator(clock, channels=8, cells=cells, seed=5)


def _specs(mode: str = "run") -> list[MaccorChannelSpec]:
    run = mode == "run"
    return [
        MaccorChannelSpec(1, "asymmetric", "MII-1", mode, "cellguard-plating" if run else None),
        MaccorChannelSpec(2, "symmetric", "SEI", mode, "cellguard-cycling" if run else None),
        MaccorChannelSpec(3, "symmetric", "SEI", mode, "cellguard-cycling" if run else None),
    ]


@asynccontextmanager
async def guarding(
    port: int,
    recorder: Recorder,
    clock: VirtualClock,
    specs: list[MaccorChannelSpec],
    current_limit_a: float | None = None,
) -> AsyncIterator[tuple[MaccorSupervisor, Queue]]:
    queue = new_queue()
    sup = MaccorSupervisor(
        "maccor-sim",
        lambda: MaccorClient("127.0.0.1", port, timeout_s=5),
        specs,
        queue,
        recorder,
        clock=clock,
        poll_interval_s=POLL_S,
        state=recorder,
        current_limit_a=current_limit_a,
    )
    async with supervised(sup, clock):
        yield sup, queue


async def _run_hours(clock: VirtualClock, hours: float) -> None:
    await run_hours(clock, hours, POLL_S)


async def test_failing_cells_are_suspended_on_the_tester_and_healthy_ones_run_on() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        _, port, _ = await stack.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(guarding(port, recorder, clock, _specs()))
        await _run_hours(clock, 60.0)
        items = drain(queue)

    depleted, healthy, short = (sup.channels[c] for c in (1, 2, 3))
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert depleted.halt is not None
    assert depleted.halt.kind == "depletion"
    assert healthy.halt is None
    # The suspends reached the tester; the healthy channel still runs.
    assert sim.state(2).status == "Suspended"
    assert sim.state(0).status == "Suspended"
    assert sim.state(1).status == "Active"
    assert (depleted.state, healthy.state, short.state) == ("halted", "running", "halted")
    # within three polls of the short at 10 h (a reversal: polled live, the first value
    # after it may sit in the zero crossing and counts for no fall)
    assert 10.0 * 3600 <= short.halt.t_s <= 10.0 * 3600 + 3 * POLL_S
    samples = [i for i in items if isinstance(i, SampleRecord)]
    assert {s.tags.channel for s in samples} == {"1", "2", "3"}
    assert all(s.source == "live" and s.tags.test_id.startswith("cg-") for s in samples)
    halts = [a for a in recorder.alerts if a.kind == "halt"]
    assert sorted(a.tags.channel for a in halts) == ["1", "3"]
    assert all(a.detail and "measured_v" in a.values for a in halts)
    events = [i for i in items if isinstance(i, EventRecord)]
    assert sum(e.kind == "start" for e in events) == 3
    assert recorder.state[("maccor-sim", "3")][0] == "halted"
    assert sim.calls["(6, 3)"] == 2  # one suspend per failing channel, no more
    assert "(6, 10)" not in sim.calls  # no current limit configured: no limits invented


async def test_the_detector_is_told_the_time_within_each_step() -> None:
    """The reading's StepTime goes back at every new run of a step, and the detector
    gets it: a poll that misses a short step still sees a new step (see StepRuns)."""
    clock = VirtualClock()
    sim = _simulator(clock)
    guard = partial(guarding, recorder=Recorder(), clock=clock, specs=_specs())
    await assert_step_times_reach_the_detector(sim.serve(), guard, clock, POLL_S)


async def test_run_mode_programmes_the_testers_own_limits() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with (
        sim.serve() as (_, port, _),
        guarding(port, recorder, clock, _specs(), current_limit_a=0.002) as (sup, _),
    ):
        await _run_hours(clock, 1.0)
    expected = SafetyLimits(4.9, -4.9, 0.002, 0.002, 4.9 * 0.002, 4.9 * 0.002)
    for index in (0, 1, 2):
        limits = sim.channels[index].safety
        assert limits is not None
        assert limits.voltage_max_v == pytest.approx(expected.voltage_max_v)
        assert limits.voltage_min_v == pytest.approx(expected.voltage_min_v)
        assert limits.charge_current_max_a == pytest.approx(0.002)
        assert limits.discharge_power_max_w == pytest.approx(expected.discharge_power_max_w)
    assert sup.channels[2].state == "running"


async def test_a_restart_neither_restarts_nor_halts_twice() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port, _):
        async with guarding(port, recorder, clock, _specs()) as (first, _):
            await _run_hours(clock, 12.0)
        assert first.channels[3].state == "halted"
        starts, suspends = sim.calls["(6, 2)"], sim.calls["(6, 3)"]
        async with guarding(port, recorder, clock, _specs()) as (second, _):
            await _run_hours(clock, 2.0)
        assert sim.calls["(6, 2)"] == starts
        assert sim.calls["(6, 3)"] == suspends
        assert second.channels[3].state == "halted"
        assert second.channels[2].state == "running"


async def test_monitor_mode_judges_what_the_tester_runs() -> None:
    """A test started at the tester (not by cellguard) is judged and halted too."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with sim.serve() as (_, port, _):
        async with MaccorClient("127.0.0.1", port) as lab:
            await lab.start_test(2, "cellguard-cycling", "someone-elses-test")
        async with guarding(port, recorder, clock, _specs("monitor")) as (sup, queue):
            await _run_hours(clock, 12.0)
            items = drain(queue)
    short = sup.channels[3]
    assert short.halt is not None
    assert short.halt.kind == "short"
    assert short.state == "halted"
    assert sup.channels[1].state == "idle"  # nothing runs there: nothing started
    assert sim.calls["(6, 2)"] == 1
    assert any(isinstance(s, SampleRecord) and s.tags.channel == "3" for s in items)


async def test_an_outage_is_reported_as_a_gap_and_a_fault_after_it_is_still_halted() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    specs = [MaccorChannelSpec(3, "symmetric", "SEI", "run", "cellguard-cycling")]
    async with AsyncExitStack() as stack:
        _, sim_port, _ = await stack.enter_async_context(sim.serve())
        outage = await stack.enter_async_context(Outage(sim_port))
        sup, queue = await stack.enter_async_context(guarding(outage.port, recorder, clock, specs))
        await _run_hours(clock, 4.0)
        outage.cut()
        await _run_hours(clock, 2.0)
        assert sup.channels[3].state == "unavailable"
        outage.down = False
        await _run_hours(clock, 6.0)
        items = drain(queue)
    runtime = sup.channels[3]
    assert runtime.halt is not None
    assert runtime.halt.kind == "short"
    assert runtime.state == "halted"
    assert sim.state(2).status == "Suspended"
    (gap,) = [e for e in sup.events if e.kind == "available"]
    assert "not backfilled" in gap.detail
    times = [s.test_time_s for s in items if isinstance(s, SampleRecord)]
    holes = [b - a for a, b in itertools.pairwise(times) if b - a > POLL_S * 1.5]
    assert len(holes) == 1  # the outage, and nothing else
    assert holes[0] >= 2 * 3600 - POLL_S


async def test_a_channel_the_tester_lacks_is_refused_alone() -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    specs = [*_specs(), MaccorChannelSpec(9, "symmetric", "SEI", "monitor")]
    async with sim.serve() as (_, port, _), guarding(port, recorder, clock, specs) as (sup, _):
        await _run_hours(clock, 1.0)
        ok, detail = await sup.command("9", "stop")
        assert not ok
        assert "refused at connect" in detail
        ok, detail = await sup.command("2", "pause")
        assert not ok
        assert "no pause for MacNet" in detail
        ok, detail = await sup.command("2", "stop")
        assert ok
    unguarded = [a for a in recorder.alerts if a.kind == "unguarded"]
    assert [a.tags.channel for a in unguarded] == ["9"]
    assert "8 channels" in unguarded[0].detail
    assert sup.channels[2].state == "stopped"
    assert sim.state(1).status == "Suspended"
    assert sim.state(0).status == "Active"  # the others run on
