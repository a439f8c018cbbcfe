"""The simulated full cell: OCV, charge conservation, CV holds, and CC-CV on the CT-4008."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import ChannelAddress, ChannelId, SimChannel, Step, StepFile, StepType
from cellguard.drivers.sim import SimCell, SimCellSpec, SimFullCell, SimFullCellSpec
from cellguard.protocols.detectors import DetectorSettings, make_detector
from cellguard.protocols.script import CellSpec, to_step_file
from cellguard.protocols.script.library import full_cell_cccv

START = datetime(2026, 1, 1)
QUIET = SimFullCellSpec(noise_v=0.0)


def _channel(cell: SimFullCell | SimCell) -> SimChannel:
    return SimChannel(ChannelAddress(ChannelId(1, 1, 1)), cell, current_range_ma=10.0)


def _run(steps: tuple[Step, ...], cell: SimFullCell, until_s: float) -> SimChannel:
    channel = _channel(cell)
    assert channel.start(StepFile(steps, record_interval_s=10.0), "x", 0.0, START), (
        channel.last_refusal
    )
    channel.advance_to(until_s)
    return channel


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capacity_mah": 0.0}, "capacity_mah"),
        ({"capacity_mah": float("nan")}, "capacity_mah"),
        ({"ocv_empty_v": -1.0}, "ocv_empty_v"),
        ({"ocv_full_v": 2.9}, "ocv_full_v"),
        ({"r_ohm": -1.0}, "r_ohm"),
        ({"r1_ohm": float("inf")}, "r1_ohm"),
        ({"tau1_s": 0.0}, "tau1_s"),
        ({"soc0": 1.5}, "soc0"),
        ({"noise_v": -1e-6}, "noise_v"),
    ],
)
def test_spec_is_validated_by_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        SimFullCellSpec(**kwargs)
    assert info.value.field == field


def test_ocv_is_smooth_monotone_from_3_0_to_4_2_v() -> None:
    cell = SimFullCell(QUIET, 1)
    assert cell.ocv(0.0) == pytest.approx(3.0)
    assert cell.ocv(1.0) == pytest.approx(4.2)
    socs = [i / 1000 for i in range(-50, 1051)]
    ocvs = [cell.ocv(s) for s in socs]
    assert all(b > a for a, b in itertools.pairwise(ocvs))
    assert all(cell.ocv_slope(s) > 0 for s in socs)
    # Smooth inside 0..100 %: the slope agrees with a finite difference.
    for s in (0.05, 0.3, 0.5, 0.7, 0.95):
        h = 1e-6
        numeric = (cell.ocv(s + h) - cell.ocv(s - h)) / (2 * h)
        assert numeric == pytest.approx(cell.ocv_slope(s), rel=1e-5)
    # Graphite|NMC-like: steeper at the ends than in the middle.
    assert cell.ocv_slope(0.0) > cell.ocv_slope(0.5)
    assert cell.ocv_slope(1.0) > cell.ocv_slope(0.5)


def test_rest_voltage_is_the_ocv_and_current_adds_r_and_rc() -> None:
    spec = SimFullCellSpec(noise_v=0.0, soc0=0.5, r_ohm=20.0, r1_ohm=10.0, tau1_s=100.0)
    cell = SimFullCell(spec, 1)
    assert cell.advance(1.0, 0.0) == pytest.approx(cell.ocv(0.5))
    v = cell.advance(1e-6, 1e-3)  # the ohmic drop appears at once, the RC not yet
    assert v - cell.ocv(cell.soc) == pytest.approx(20.0 * 1e-3, rel=1e-4)
    v = cell.advance(10_000.0, 1e-3)  # long after the RC has settled
    assert v - cell.ocv(cell.soc) == pytest.approx(30.0 * 1e-3, rel=1e-6)
    assert cell.t_s == pytest.approx(10_001.0 + 1e-6)


def test_charge_is_conserved_for_any_chopping() -> None:
    spec = SimFullCellSpec(noise_v=0.0, soc0=0.2, capacity_mah=2.0)
    profile = [(1800.0, 1e-3), (600.0, 0.0), (900.0, -2e-3), (300.0, 0.5e-3)]
    coarse = SimFullCell(spec, 1)
    fine = SimFullCell(spec, 1)
    charge_as = 0.0
    for duration_s, current_a in profile:
        v_coarse = coarse.advance(duration_s, current_a)
        for _ in range(30):
            v_fine = fine.advance(duration_s / 30, current_a)
        charge_as += current_a * duration_s
        assert v_fine == pytest.approx(v_coarse, abs=1e-9)
    expected = 0.2 + charge_as / (2.0 * 3.6)  # 1 mAh = 3.6 A·s
    assert coarse.soc == pytest.approx(expected, abs=1e-12)
    assert fine.soc == pytest.approx(expected, abs=1e-12)
    # A full charge of 2 mAh moves the SOC from 0 to 1.
    cell = SimFullCell(SimFullCellSpec(noise_v=0.0, soc0=0.0), 1)
    cell.advance(7200.0, 1e-3)
    assert cell.soc == pytest.approx(1.0)


def test_same_seed_same_voltages() -> None:
    def trace(seed: int) -> list[float]:
        cell = SimFullCell(SimFullCellSpec(), seed)
        return [cell.advance(30.0, 1e-3) for _ in range(50)]

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)
    noise = [a - b for a, b in zip(trace(7), trace(8), strict=True)]
    assert max(abs(n) for n in noise) < 1e-3  # 100 µV noise, same physics


def test_current_for_voltage_holds_the_voltage_while_the_current_decays() -> None:
    cell = SimFullCell(SimFullCellSpec(soc0=0.5), 3)
    target_v = 3.9
    assert cell.ocv(0.5) < target_v
    currents: list[float] = []
    voltages: list[float] = []
    for _ in range(400):
        soc_before = cell.soc
        current_a = cell.current_for_voltage(target_v, 10.0, 5e-3)
        assert cell.soc == soc_before  # asking does not change the cell
        currents.append(current_a)
        voltages.append(cell.advance(10.0, current_a))
    # The first intervals are clamped at the ceiling (a CC phase), then CV.
    assert currents[0] == pytest.approx(5e-3)
    held = [v for v, i in zip(voltages, currents, strict=True) if i < 5e-3]
    assert len(held) > 300
    assert max(abs(v - target_v) for v in held) < 3e-3
    tail = currents[-300:]
    assert all(b <= a for a, b in itertools.pairwise(tail))
    assert currents[-1] < 0.05e-3  # well below a C/40 stop current
    assert cell.ocv(cell.soc) == pytest.approx(target_v, abs=2e-3)


def test_current_for_voltage_clamps_and_discharges() -> None:
    cell = SimFullCell(QUIET, 1)
    assert cell.current_for_voltage(4.2, 30.0, 1e-3) == 1e-3
    assert cell.current_for_voltage(3.0, 30.0, 1e-3) == -1e-3
    current_a = cell.current_for_voltage(3.5, 30.0, 1.0)
    assert current_a < 0
    assert cell.advance(30.0, current_a) == pytest.approx(3.5, abs=1e-4)
    with pytest.raises(ConfigError, match="dt_s"):
        cell.current_for_voltage(3.6, 0.0, 1.0)
    with pytest.raises(ConfigError, match="limit_a"):
        cell.current_for_voltage(3.6, 1.0, -1.0)


def test_lithium_cell_still_refuses_cv_steps() -> None:
    channel = _channel(SimCell(SimCellSpec("SEI", never_short=True), 1))
    steps = (Step(StepType.CV_CHARGE, voltage_v=0.1, time_s=60.0), Step(StepType.END))
    assert not channel.start(StepFile(steps), "x", 0.0, START)
    assert channel.last_refusal is not None
    assert "CV steps are not simulated" in channel.last_refusal.reason


def test_cccv_charge_step_runs_cc_then_cv_to_the_stop_current() -> None:
    cell = SimFullCell(SimFullCellSpec(soc0=0.2), 1)
    steps = (
        Step(StepType.CCCV_CHARGE, current_ma=1.0, voltage_v=4.1, stop_current_ma=0.1),
        Step(StepType.END),
    )
    channel = _run(steps, cell, 6 * 3600.0)
    assert channel.workstatus == "finish"
    records = channel.download(1, channel.record_count)
    assert {r.step_type for r in records} == {"cccv"}
    assert records[0].current_a == pytest.approx(1e-3)  # CC phase at the ceiling
    assert max(r.current_a for r in records) <= 1e-3 + 1e-15
    cv = [r for r in records if r.current_a < 0.999e-3]
    assert len(cv) > 5
    assert max(abs(r.voltage_v - 4.1) for r in cv) < 3e-3
    assert abs(records[-1].current_a) <= 0.1e-3
    (layer,) = channel.step_layers()
    assert layer.end_current_a <= 0.1e-3
    assert layer.capacity_ah * 1000 == pytest.approx((cell.soc - 0.2) * 2.0, rel=1e-9)


def test_cv_discharge_holds_with_negative_current_and_uses_the_range_as_ceiling() -> None:
    cell = SimFullCell(SimFullCellSpec(soc0=0.8), 1)
    steps = (
        Step(StepType.CV_DISCHARGE, voltage_v=3.5, stop_current_ma=0.05),
        Step(StepType.END),
    )
    channel = _run(steps, cell, 6 * 3600.0)
    assert channel.workstatus == "finish"
    records = channel.download(1, channel.record_count)
    assert records[0].current_a == pytest.approx(-10e-3)  # no current_ma: the ±10 mA range
    assert all(-10e-3 - 1e-15 <= r.current_a <= 0 for r in records)
    cv = [r for r in records if r.current_a > -9.99e-3]
    assert max(abs(r.voltage_v - 3.5) for r in cv) < 3e-3
    assert abs(records[-1].current_a) <= 0.05e-3


def test_cv_step_ends_at_its_time_or_capacity_limit() -> None:
    by_time = _run(
        (Step(StepType.CV_CHARGE, voltage_v=4.0, time_s=600.0), Step(StepType.END)),
        SimFullCell(SimFullCellSpec(soc0=0.3), 1),
        3600.0,
    )
    assert by_time.workstatus == "finish"
    assert by_time.step_layers()[0].step_time_ms == 600_000
    by_capacity = _run(
        (
            Step(StepType.CV_CHARGE, current_ma=2.0, voltage_v=4.2, capacity_mah=0.5),
            Step(StepType.END),
        ),
        SimFullCell(SimFullCellSpec(soc0=0.1), 1),
        3 * 3600.0,
    )
    assert by_capacity.workstatus == "finish"
    (layer,) = by_capacity.step_layers()
    assert layer.capacity_ah * 1000 == pytest.approx(0.5, rel=1e-3)


def test_cv_charge_above_the_set_point_passes_no_current_and_ends_at_the_stop() -> None:
    cell = SimFullCell(SimFullCellSpec(soc0=0.9), 1)
    steps = (Step(StepType.CV_CHARGE, voltage_v=3.5, stop_current_ma=0.1), Step(StepType.END))
    channel = _run(steps, cell, 600.0)
    assert channel.workstatus == "finish"
    assert all(r.current_a == 0.0 for r in channel.download(1, channel.record_count))
    assert cell.soc == 0.9


def test_full_cell_cccv_cycles_to_finish_without_a_detector_halt() -> None:
    cycles = 3
    lp = full_cell_cccv(CellSpec("full", diameter_mm=10, capacity_mah=2.0), cycles=cycles)
    cell = SimFullCell(SimFullCellSpec(capacity_mah=2.0, soc0=0.5), 11)
    channel = _channel(cell)
    assert channel.start(to_step_file(lp.protocol), "x", 0.0, START), channel.last_refusal
    t_s = 0.0
    while channel.workstatus == "working" and t_s < 100 * 3600.0:
        t_s += 3600.0
        channel.advance_to(t_s)
    assert channel.workstatus == "finish"

    layers = channel.step_layers()
    assert [(layer.cycle_id, layer.step_type) for layer in layers] == [
        (c, kind) for c in range(1, cycles + 1) for kind in ("cc", "cv", "dc")
    ]
    for layer in layers:
        if layer.step_type == "cv":
            assert abs(layer.end_current_a) <= 0.1e-3  # C/20 of 2 mAh
            assert layer.end_voltage_v == pytest.approx(4.2, abs=3e-3)
        if layer.step_type == "dc":
            assert layer.end_voltage_v <= 2.5
    # After the first cycle a whole cycle charges what it discharges (same SOC window).
    for c in range(2, cycles + 1):
        charged = sum(x.capacity_ah for x in layers if x.cycle_id == c and x.step_type != "dc")
        (discharged,) = (x.capacity_ah for x in layers if x.cycle_id == c and x.step_type == "dc")
        assert charged == pytest.approx(discharged, rel=0.03)

    records = channel.download(1, channel.record_count)
    assert len(records) == channel.record_count > 100
    assert {r.cycle_id for r in records} == set(range(1, cycles + 1))
    cv = [r for r in records if r.step_type == "cv"]
    assert cv
    assert max(abs(r.voltage_v - 4.2) for r in cv) < 5e-3
    detector = make_detector(DetectorSettings(cell="full"))
    halts = [
        v
        for r in records
        if (v := detector.feed(r.test_time_ms / 1000.0, r.voltage_v, r.current_a)).is_halt
    ]
    assert halts == []
    # Its own profile (the library's detector settings) does not halt either.
    own = make_detector(lp.detector)
    assert not any(
        own.feed(r.test_time_ms / 1000.0, r.voltage_v, r.current_a).is_halt for r in records
    )
