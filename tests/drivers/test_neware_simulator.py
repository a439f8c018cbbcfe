"""The simulated CT-4008: runs step files as the instrument does, over real TCP."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cellguard.drivers import CommandRefused, VirtualClock
from cellguard.drivers.neware import (
    ChannelAddress,
    ChannelId,
    NewareClient,
    NewareSimulator,
    Protection,
    SimChannel,
    Step,
    StepFile,
    StepType,
)
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCell, SimCellSpec
from cellguard.protocols import Cell, GalvanostaticCycling, InstrumentLimits, write_step_file

AREA_CM2 = 0.785398
EPOCH = datetime(2026, 1, 5, 9, 0, 0)


def _cycling(cycles: int = 3, record_s: float = 60.0, thin_um: float = 100.0) -> StepFile:
    cell = (
        Cell.symmetric(AREA_CM2)
        if thin_um == 100.0
        else Cell.asymmetric(AREA_CM2, li_thin_um=thin_um)
    )
    return GalvanostaticCycling(cell, cycles=cycles, record_interval_s=record_s).to_step_file()


def _channel(spec: SimCellSpec | None = None, seed: int = 1) -> SimChannel:
    cell = SimCell(spec or SimCellSpec(interphase="SEI", never_short=True), seed)
    return SimChannel(ChannelAddress(ChannelId(1, 1, 1)), cell, current_range_ma=10.0)


def test_channel_runs_the_step_file_and_finishes_after_its_cycles() -> None:
    channel = _channel()
    assert channel.start(_cycling(cycles=3), "cell-1", 0.0, EPOCH)
    channel.advance_to(3 * 2 * 3600.0 - 1.0)
    assert channel.workstatus == "working"
    assert channel.inquire().cycle_id == 3
    channel.advance_to(3 * 2 * 3600.0 + 10.0)
    assert channel.workstatus == "finish"
    records = channel.download(1, 100_000)
    # One sample every record interval, plus every step's last point.
    times_s = [r.test_time_ms / 1000 for r in records]
    assert times_s == sorted(times_s)
    assert len(records) == channel.record_count
    assert 6 * 60 <= len(records) <= 6 * 60 + 10
    assert {r.cycle_id for r in records} == {1, 2, 3}
    charge = [r for r in records if r.step_type == "cc"]
    discharge = [r for r in records if r.step_type == "dc"]
    assert charge
    assert all(r.current_a == pytest.approx(0.5e-3 * AREA_CM2) for r in charge)
    assert discharge
    assert all(r.current_a == pytest.approx(-0.5e-3 * AREA_CM2) for r in discharge)
    # Each half cycle ends at its capacity: 0.5 mAh cm⁻² × area.
    assert max(r.capacity_ah for r in charge) == pytest.approx(0.5e-3 * AREA_CM2, rel=1e-6)
    assert records[-1].wall_time == EPOCH.replace(hour=15)


def test_voltage_sign_follows_the_current() -> None:
    channel = _channel()
    channel.start(_cycling(cycles=2), "x", 0.0, EPOCH)
    channel.advance_to(4 * 3600.0)
    for record in channel.download(1, 10_000):
        if record.current_a != 0 and record.test_time_ms % 3_600_000 > 600_000:
            assert record.voltage_v * record.current_a > 0


def test_depleted_asymmetric_cell_trips_the_whole_test_protection_at_the_range() -> None:
    spec = SimCellSpec(interphase="MII-1", li_working_um=20.0, never_short=True)
    channel = _channel(spec)
    channel.start(_cycling(cycles=200, thin_um=20.0), "thin", 0.0, EPOCH)
    channel.advance_to(300 * 3600.0)
    assert channel.workstatus == "protect"
    last = channel.download(channel.record_count, 1)[0]
    assert last.voltage_v == pytest.approx(5.0)  # clamped at the instrument's range
    # Stopped channels rest at open circuit.
    assert abs(channel.inquire().voltage_v) < 0.05
    assert channel.inquire().current_a == 0.0


def test_protection_trips_at_a_lower_limit_than_the_range() -> None:
    spec = SimCellSpec(interphase="MII-1", li_working_um=20.0, never_short=True)
    program = _cycling(cycles=200, thin_um=20.0)
    program = StepFile(
        program.steps,
        Protection(voltage_upper_v=1.0, voltage_lower_v=-1.0),
        program.record_interval_s,
    )
    channel = _channel(spec)
    channel.start(program, "x", 0.0, EPOCH)
    channel.advance_to(300 * 3600.0)
    assert channel.workstatus == "protect"
    assert 1.0 <= channel.download(channel.record_count, 1)[0].voltage_v < 5.0


def test_start_is_refused_beyond_the_current_range_or_while_working() -> None:
    channel = SimChannel(
        ChannelAddress(ChannelId(1, 1, 1)),
        SimCell(SimCellSpec(), 1),
        current_range_ma=0.1,
    )
    assert not channel.start(_cycling(), "x", 0.0, EPOCH)
    assert channel.last_refusal is not None
    assert "range" in channel.last_refusal.reason
    ok = _channel()
    assert ok.start(_cycling(), "x", 0.0, EPOCH)
    assert not ok.start(_cycling(), "x", 10.0, EPOCH)
    empty = SimChannel(ChannelAddress(ChannelId(1, 1, 2)), None, current_range_ma=10.0)
    assert not empty.start(_cycling(), "x", 0.0, EPOCH)


def test_stop_ends_a_running_test_and_is_refused_when_nothing_runs() -> None:
    channel = _channel()
    assert not channel.stop(0.0)
    channel.start(_cycling(), "x", 0.0, EPOCH)
    assert channel.stop(1800.0)
    assert channel.workstatus == "stop"
    count = channel.record_count
    channel.advance_to(7200.0)
    assert channel.record_count == count  # nothing is recorded after a stop


def test_rest_and_loop_steps_follow_the_program() -> None:
    program = StepFile(
        (
            Step(StepType.REST, time_s=600.0),
            Step(StepType.CC_CHARGE, current_ma=0.1, time_s=300.0),
            Step(StepType.CC_DISCHARGE, current_ma=0.1, time_s=300.0),
            Step(StepType.CYCLE, loop_start_step=2, cycle_count=4),
            Step(StepType.END),
        ),
        record_interval_s=10.0,
    )
    channel = _channel()
    channel.start(program, "x", 0.0, EPOCH)
    channel.advance_to(600.0 + 4 * 600.0 + 5.0)
    assert channel.workstatus == "finish"
    records = channel.download(1, 10_000)
    rest = [r for r in records if r.step_type == "rest"]
    assert rest
    assert all(r.current_a == 0.0 for r in rest)
    assert max(r.cycle_id for r in records) == 4
    layers = channel.step_layers()
    assert [layer.step_type for layer in layers[:3]] == ["rest", "cc", "dc"]
    assert len(layers) == 1 + 4 * 2


def test_same_seed_same_history_different_seed_different_noise() -> None:
    def run(seed: int) -> list[float]:
        channel = _channel(seed=seed)
        channel.start(_cycling(cycles=2), "x", 0.0, EPOCH)
        for t in range(0, 4 * 3600, 437):  # irregular polls must not change the history
            channel.advance_to(float(t))
        channel.advance_to(4 * 3600.0)
        return [r.voltage_v for r in channel.download(1, 10_000)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_polling_pattern_does_not_change_the_recorded_history() -> None:
    a, b = _channel(seed=5), _channel(seed=5)
    a.start(_cycling(cycles=2), "x", 0.0, EPOCH)
    b.start(_cycling(cycles=2), "x", 0.0, EPOCH)
    a.advance_to(4 * 3600.0)
    for t in range(1, 4 * 3600 + 1, 7):
        b.advance_to(float(t))
    b.advance_to(4 * 3600.0)
    va = [r.voltage_v for r in a.download(1, 10_000)]
    vb = [r.voltage_v for r in b.download(1, 10_000)]
    assert len(va) == len(vb)
    assert va == pytest.approx(vb, abs=6e-4)  # noise (50 µV σ) differs by draw order only


# ---------------------------------------------------------------- over TCP


async def test_the_driver_runs_a_test_on_the_simulator_over_tcp(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = NewareSimulator(clock, units=2, devid=7, seed=2, epoch=EPOCH)
    path = write_step_file(tmp_path / "p.xml", _cycling(cycles=2, record_s=30.0))
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        assert [str(c.address.channel) for c in client.channels][:3] == ["7-1-1", "7-1-2", "7-1-3"]
        assert len(client.channels) == 16
        await client.start(
            [("7-2-3", "cell-a", str(path)), (ChannelId(7, 1, 1), "cell-b", str(path))]
        )
        clock.set(1800.0)
        live = await client.inquire()
        assert live[ChannelId(7, 2, 3)].workstatus == "working"
        assert live[ChannelId(7, 2, 3)].step_type == "cc"
        assert live[ChannelId(7, 2, 3)].barcode == "cell-a"
        assert live[ChannelId(7, 1, 2)].workstatus == "finish"
        assert live[ChannelId(7, 2, 3)].total_time_s == pytest.approx(1800.0)
        status = await client.get_status(["7-2-3", "7-1-2"])
        assert status == {ChannelId(7, 2, 3): "working", ChannelId(7, 1, 2): "finish"}

        clock.set(4 * 3600.0 + 60.0)
        counts = await client.inquire_df(["7-2-3"])
        total = counts[ChannelId(7, 2, 3)].count
        assert total > 2 * 2 * 120
        got = []
        pos = 1
        while pos <= total:
            reply = await client.download("7-2-3", pos, 1000)
            got += reply.records
            pos += len(reply.records)
        assert [r.seq_id for r in got] == list(range(1, total + 1))
        assert (await client.get_status(["7-2-3"]))[ChannelId(7, 2, 3)] == "finish"

        with pytest.raises(CommandRefused) as refused:
            await client.stop(["7-2-3"])  # nothing runs there any more
        assert "7-2-3" in str(refused.value)


async def test_start_is_refused_for_a_missing_step_file_and_a_current_beyond_range(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = NewareSimulator(clock, current_range_ma=0.1, epoch=EPOCH)
    strong = StepFile(
        (Step(StepType.CC_CHARGE, current_ma=0.5, time_s=60.0), Step(StepType.END)),
    )
    path = write_step_file(tmp_path / "strong.xml", strong)
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        with pytest.raises(CommandRefused) as refused:
            await client.start(
                [("1-1-1", "a", str(path)), ("1-1-2", "b", str(tmp_path / "nope.xml"))]
            )
        assert "1-1-1" in str(refused.value)
        assert "1-1-2" in str(refused.value)


async def test_a_shorted_cell_collapses_the_live_voltage_while_current_flows(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    slot = CellSlot(SimCellSpec(interphase="SEI", short=ShortSpec("hard", onset_h=3.0)))
    sim = NewareSimulator(clock, cells={ChannelId(1, 1, 1): slot}, epoch=EPOCH)
    path = write_step_file(tmp_path / "p.xml", _cycling(cycles=5))
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([("1-1-1", "a", str(path))])
        clock.set(1.5 * 3600)
        before = (await client.inquire(["1-1-1"]))[ChannelId(1, 1, 1)]
        clock.set(4.5 * 3600)
        after = (await client.inquire(["1-1-1"]))[ChannelId(1, 1, 1)]
    assert abs(before.voltage_v) > 0.003
    assert after.workstatus == "working"
    assert after.current_a != 0
    assert abs(after.voltage_v) < 0.0005


def test_the_simulator_refuses_impossible_configurations() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="units"):
        NewareSimulator(clock, units=0)
    with pytest.raises(ValueError, match="cells"):
        NewareSimulator(clock, units=1, cells={ChannelId(1, 2, 1): CellSlot(SimCellSpec())})
    _ = InstrumentLimits()


async def test_a_test_started_days_after_the_simulator_finds_a_fresh_cell(tmp_path: Path) -> None:
    """Issue 17 item 11: an asymmetric 1 mA cm⁻² channel went to ``protect`` right after
    its start and was halted as a depletion after 0.075 mAh cm⁻². The simulator had
    aged every cell from its own start: the 20 µm MII-2 electrode was empty before the
    test began. A cell ages from its first current, as one assembled for its test."""
    clock = VirtualClock()
    sim = NewareSimulator(clock, seed=1, epoch=EPOCH)  # demo layout: 1-1-4 MII-2 100|20
    cell = Cell.asymmetric(AREA_CM2, li_thin_um=20.0)
    protocol = GalvanostaticCycling(cell, current_density_ma_cm2=1.0, cycles=20)
    path = write_step_file(tmp_path / "p.xml", protocol.to_step_file())
    idle_s = 100 * 3600.0
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        clock.set(idle_s)
        assert (await client.inquire(["1-1-4"]))[ChannelId(1, 1, 4)].workstatus == "finish"
        await client.start([("1-1-4", "asym-1mA", str(path))])
        clock.set(idle_s + 4 * 3600.0)  # four 1 mA cm⁻² cycles
        live = (await client.inquire(["1-1-4"]))[ChannelId(1, 1, 4)]
        records = (await client.download("1-1-4", 1, 1000)).records
    assert live.workstatus == "working"
    assert max(abs(r.voltage_v) for r in records) < 0.2  # ~30 mV, far from the ±5 V range
