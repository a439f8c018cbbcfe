"""The library of the papers' protocols: validation, golden step files, simulated runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

import pytest

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import ChannelAddress, ChannelId, SimChannel
from cellguard.drivers.neware._stepfile import StepType
from cellguard.drivers.sim import ShortSpec, SimCell, SimCellSpec, SimFullCell, SimFullCellSpec
from cellguard.protocols.detectors import Verdict, make_detector
from cellguard.protocols.script import CellSpec, InstrumentCapability, library, to_step_file
from cellguard.protocols.script.library import (
    CCD_LEVELS_MA_CM2,
    LibraryProtocol,
    asymmetric_cycling,
    ccd_levels,
    coulombic_efficiency,
    critical_current_density,
    full_cell_cccv,
    plating_to_failure,
    symmetric_cycling,
)

AREA = math.pi * 0.5**2  # 10 mm disc, cm²
SYM = CellSpec("symmetric", diameter_mm=10, thick_li_um=100)
ASYM = CellSpec("asymmetric", diameter_mm=10, thick_li_um=100, thin_li_um=20)
FULL = CellSpec("full", diameter_mm=10, capacity_mah=2.0)
BIG = InstrumentCapability(current_range_ma=20.0, name="big")


def _channel(spec: SimCellSpec) -> SimChannel:
    return SimChannel(ChannelAddress(ChannelId(1, 1, 1)), SimCell(spec, 1), current_range_ma=10.0)


def _run(
    lp: LibraryProtocol, spec: SimCellSpec, until_s: float
) -> tuple[SimChannel, Verdict | None]:
    """Run ``lp`` on the simulated CT-4008, watching it with its own detector profile;
    stop the channel at a halt, as the daemon would."""
    channel = _channel(spec)
    assert channel.start(to_step_file(lp.protocol), "x", 0.0, datetime(2026, 1, 1))
    detector = make_detector(lp.detector)
    fed = 0
    t = 0.0
    while t < until_s and channel.workstatus == "working":
        t = min(t + 600.0, until_s)
        channel.advance_to(t)
        new = channel.download(fed + 1, channel.record_count - fed)
        fed += len(new)
        for r in new:
            verdict = detector.feed(r.test_time_ms / 1000.0, r.voltage_v, r.current_a)
            if verdict.is_halt:
                channel.stop(t)
                return channel, verdict
    return channel, None


# ---------------------------------------------------------------- golden step files


def test_symmetric_cycling_standard_protocol_golden() -> None:
    lp = symmetric_cycling(SYM)
    sf = to_step_file(lp.protocol)
    strip, plate, cycle, end = sf.steps
    assert strip.step_type is StepType.CC_CHARGE
    assert plate.step_type is StepType.CC_DISCHARGE
    assert strip.current_ma == pytest.approx(0.5 * AREA) == pytest.approx(0.3927, abs=1e-4)
    assert strip.capacity_mah == pytest.approx(0.5 * AREA)
    assert plate.current_ma == strip.current_ma
    assert plate.capacity_mah == strip.capacity_mah
    assert (cycle.step_type, cycle.loop_start_step, cycle.cycle_count) == (StepType.CYCLE, 1, 500)
    assert end.step_type is StepType.END
    assert sf.record_interval_s == 60.0
    assert (sf.protection.voltage_lower_v, sf.protection.voltage_upper_v) == (-5.0, 5.0)
    assert lp.protocol.expected_cycles() == 500
    assert lp.detector.cell == "symmetric"
    assert lp.expected_halts == ()
    assert "completes 500 cycles" in lp.expected_end


def test_asymmetric_cycling_strips_thin_first_with_rest() -> None:
    lp = asymmetric_cycling(ASYM, 1.0, 1.0, cycles=10, initial_rest_min=10)
    rest, strip, plate, cycle, _ = to_step_file(lp.protocol).steps
    assert rest.step_type is StepType.REST
    assert rest.time_s == 600.0
    assert strip.step_type is StepType.CC_CHARGE
    assert strip.current_ma == pytest.approx(AREA)
    assert plate.step_type is StepType.CC_DISCHARGE
    assert (cycle.loop_start_step, cycle.cycle_count) == (2, 10)
    assert lp.detector.cell == "asymmetric"
    assert "depletion" in lp.expected_end


def test_cycling_refuses_wrong_cell_type_and_too_deep_strip() -> None:
    with pytest.raises(ConfigError, match="symmetric cycling needs a symmetric cell"):
        symmetric_cycling(ASYM)
    with pytest.raises(ConfigError, match="asymmetric cycling needs"):
        asymmetric_cycling(SYM)
    # 20 µm = 4.1 mAh/cm2: a 5 mAh/cm2 strip would take it all.
    with pytest.raises(ConfigError, match="thin electrode"):
        asymmetric_cycling(ASYM, 1.0, 5.0)


def test_ccd_default_levels_span_the_papers_range() -> None:
    assert ccd_levels() == CCD_LEVELS_MA_CM2
    assert CCD_LEVELS_MA_CM2[0] == 0.25
    assert CCD_LEVELS_MA_CM2[-1] == 20.0
    assert {3.0, 10.0, 16.0, 20.0} <= set(CCD_LEVELS_MA_CM2)
    assert ccd_levels(0.25, 2.0, factor=2.0) == (0.25, 0.5, 1.0, 2.0)
    assert ccd_levels(0.25, 3.0, factor=2.0) == (0.25, 0.5, 1.0, 2.0, 3.0)
    assert ccd_levels(levels_ma_cm2=[1, 2, 5]) == (1.0, 2.0, 5.0)
    with pytest.raises(ConfigError, match="rise"):
        ccd_levels(levels_ma_cm2=[1, 1])
    with pytest.raises(ConfigError, match="> 1"):
        ccd_levels(factor=1.0)


def test_ccd_golden_on_an_instrument_with_range() -> None:
    lp = critical_current_density(SYM, instrument=BIG)
    sf = to_step_file(lp.protocol, BIG)
    steps = sf.steps[:-1]
    assert sf.steps[-1].step_type is StepType.END
    assert len(steps) == 2 * len(CCD_LEVELS_MA_CM2)
    for level, (strip, plate) in zip(
        CCD_LEVELS_MA_CM2, zip(steps[::2], steps[1::2], strict=True), strict=True
    ):
        assert strip.step_type is StepType.CC_CHARGE
        assert plate.step_type is StepType.CC_DISCHARGE
        assert strip.current_ma == pytest.approx(level * AREA)
        assert plate.current_ma == pytest.approx(level * AREA)
        assert strip.capacity_mah == pytest.approx(0.25 * AREA)
        assert plate.capacity_mah == pytest.approx(0.25 * AREA)
    assert steps[-1].current_ma == pytest.approx(15.708, abs=1e-3)  # 20 mA/cm2
    assert lp.expected_halts == ("short",)
    assert "first short (recorded, not an error)" in lp.expected_end
    assert lp.is_expected_end(Verdict("halt", kind="short", subkind="hard"))
    assert not lp.is_expected_end(Verdict("halt", kind="depletion"))
    assert not lp.is_expected_end(Verdict("warn", kind="short"))


def test_ccd_refuses_the_first_level_beyond_the_range_by_name() -> None:
    # 20 mA/cm2 on 0.785 cm² is 15.7 mA > 10 mA; 14 mA/cm2 (11.0 mA) is the first too high.
    with pytest.raises(ConfigError, match=r"level 14 mA/cm2 .* 11 mA.*highest level .* 12.73"):
        critical_current_density(SYM)
    with pytest.raises(ConfigError, match="level 13 mA/cm2"):
        critical_current_density(SYM, levels_ma_cm2=[1.0, 13.0])
    lp = critical_current_density(SYM, stop_ma_cm2=12.0)
    assert len(lp.protocol.steps) == 2 * len(ccd_levels(0.25, 12.0))


def test_plating_to_failure_segments_and_refusal() -> None:
    lp = plating_to_failure(SYM, 0.05)
    plate, rest, cycle, _ = to_step_file(lp.protocol).steps
    assert plate.step_type is StepType.CC_DISCHARGE
    assert plate.current_ma == pytest.approx(0.05 * AREA)
    assert plate.capacity_mah == pytest.approx(0.25 * AREA)
    assert rest.step_type is StepType.REST
    assert cycle.cycle_count == 36
    assert lp.expected_halts == ("short",)
    single = to_step_file(plating_to_failure(SYM, 0.05, segment_mah_cm2=None).protocol)
    assert single.steps[0].capacity_mah == pytest.approx(9.0 * AREA)
    thin_counter = CellSpec("symmetric", diameter_mm=10, thick_li_um=20)  # 4.1 mAh/cm2
    with pytest.raises(ConfigError, match="counter electrode"):
        plating_to_failure(thin_counter, 0.5)
    with pytest.raises(ConfigError, match="whole segments"):
        plating_to_failure(SYM, 0.5, 1.0, segment_mah_cm2=0.3)


def test_coulombic_efficiency_golden_and_refusals() -> None:
    lp = coulombic_efficiency(SYM)
    plate, strip, end = to_step_file(lp.protocol).steps
    assert plate.step_type is StepType.CC_DISCHARGE
    assert plate.capacity_mah == pytest.approx(3.0 * AREA)
    assert plate.current_ma == pytest.approx(0.5 * AREA)
    assert strip.step_type is StepType.CC_CHARGE
    assert strip.stop_voltage_v == 1.0
    assert strip.capacity_mah is None
    assert strip.time_s is None
    assert end.step_type is StepType.END
    thin_counter = CellSpec("asymmetric", diameter_mm=10, thick_li_um=10, thin_li_um=1)
    with pytest.raises(ConfigError, match=r"plated_mah_cm2: 3 mAh/cm2 is beyond the Li available"):
        coulombic_efficiency(thin_counter)
    with pytest.raises(ConfigError, match="strip_cutoff_v"):
        coulombic_efficiency(SYM, strip_cutoff_v=5.0)


def test_full_cell_cccv_compiles_and_runs_on_the_simulated_full_cell() -> None:
    lp = full_cell_cccv(FULL)
    sf = to_step_file(lp.protocol)
    charge, hold, discharge, cycle, _ = sf.steps
    assert charge.step_type is StepType.CC_CHARGE
    assert charge.current_ma == pytest.approx(1.0)
    assert charge.stop_voltage_v == 4.2
    assert hold.step_type is StepType.CV_CHARGE
    assert hold.voltage_v == 4.2
    assert hold.stop_current_ma == pytest.approx(0.1)
    assert discharge.step_type is StepType.CC_DISCHARGE
    assert discharge.stop_voltage_v == 2.5
    assert (cycle.loop_start_step, cycle.cycle_count) == (1, 100)
    assert sf.protection.voltage_lower_v == pytest.approx(2.0)
    assert sf.protection.voltage_upper_v == pytest.approx(4.3)
    assert lp.detector.cell == "full"
    # The detector's window is the protocol's own cut-offs, whatever they are.
    assert (lp.detector.full_v_min_v, lp.detector.full_v_max_v) == (2.5, 4.2)
    high = full_cell_cccv(FULL, upper_v=4.9, lower_v=3.5).detector
    assert (high.full_v_min_v, high.full_v_max_v) == (3.5, 4.9)
    full_cell = SimFullCell(SimFullCellSpec(capacity_mah=2.0), 1)
    channel = SimChannel(ChannelAddress(ChannelId(1, 1, 1)), full_cell, current_range_ma=10.0)
    assert channel.start(sf, "x", 0.0, datetime(2026, 1, 1)), channel.last_refusal
    channel.advance_to(1000 * 3600.0)
    assert channel.workstatus == "finish"
    assert max(r.cycle_id for r in channel.download(1, channel.record_count)) == 100
    with pytest.raises(ConfigError, match="capacity_mah"):
        full_cell_cccv(CellSpec("full", diameter_mm=10))
    with pytest.raises(ConfigError, match="needs a full cell"):
        full_cell_cccv(SYM)


def test_chamber_temperature_is_documented_with_what_a_neware_cannot_do() -> None:
    assert library.__doc__ is not None
    assert "Temperature setpoints for an auxiliary chamber run\nhost-driven" in library.__doc__
    assert "Temperature changes in the middle of a Neware test" in library.__doc__


# ---------------------------------------------------------------- simulated CT-4008


@pytest.mark.parametrize(
    ("make", "working_um"),
    [
        (lambda: symmetric_cycling(SYM, cycles=3), 100.0),
        (lambda: asymmetric_cycling(ASYM, cycles=3), 20.0),
    ],
)
def test_cycling_runs_to_finish_with_its_cycle_count(
    make: Callable[[], LibraryProtocol], working_um: float
) -> None:
    lp = make()
    channel, halt = _run(
        lp, SimCellSpec("SEI", li_working_um=working_um, never_short=True), 8 * 3600.0
    )
    assert halt is None
    assert channel.workstatus == "finish"
    last = channel.download(channel.record_count, 1)[0]
    assert last.cycle_id == 3 == lp.protocol.expected_cycles()
    assert last.test_time_ms == pytest.approx(6 * 3600 * 1000, abs=1000)


def test_ccd_without_short_completes_all_levels() -> None:
    lp = critical_current_density(SYM, stop_ma_cm2=12.0, record_every_s=5.0)
    channel, halt = _run(lp, SimCellSpec("SEI", never_short=True), 6 * 3600.0)
    assert halt is None
    assert channel.workstatus == "finish"


def test_ccd_ends_at_the_first_short_as_its_expected_end() -> None:
    lp = critical_current_density(SYM, stop_ma_cm2=12.0, record_every_s=5.0)
    # Levels 0.25, 0.5, 1, 2 mA/cm2 take 2 + 1 + 0.5 + 0.25 h: 3.8 h is during 3 mA/cm2.
    channel, halt = _run(lp, SimCellSpec("SEI", short=ShortSpec("hard", onset_h=3.8)), 6 * 3600.0)
    assert halt is not None
    assert (halt.kind, halt.subkind) == ("short", "hard")
    assert halt.t_s == pytest.approx(3.8 * 3600.0, abs=30.0)
    assert lp.is_expected_end(halt)
    assert channel.workstatus != "finish"
    records = channel.download(1, channel.record_count)
    level_step = next(r.step_id for r in records if r.test_time_ms / 1000.0 >= halt.t_s)
    assert ccd_levels(0.25, 12.0)[(level_step - 1) // 2] == 3.0  # the CCD


def test_plating_to_failure_ends_at_a_short_or_the_cap() -> None:
    lp = plating_to_failure(SYM, 0.5, 3.0, record_every_s=30.0)
    channel, halt = _run(lp, SimCellSpec("SEI", never_short=True), 8 * 3600.0)
    assert halt is None
    assert channel.workstatus == "finish"
    channel, halt = _run(lp, SimCellSpec("SEI", short=ShortSpec("hard", onset_h=3.0)), 8 * 3600.0)
    assert halt is not None
    assert halt.kind == "short"
    assert lp.is_expected_end(halt)


def test_coulombic_efficiency_runs_to_its_cutoff() -> None:
    cell = CellSpec("asymmetric", diameter_mm=10, thick_li_um=100, thin_li_um=1)
    lp = coulombic_efficiency(cell, 0.5, 3.0)
    channel, halt = _run(lp, SimCellSpec("SEI", li_working_um=1.0, never_short=True), 16 * 3600.0)
    assert halt is None
    assert channel.workstatus == "finish"
    last = channel.download(channel.record_count, 1)[0]
    assert last.step_id == 2
    assert last.voltage_v >= 1.0
    stripped_mah_cm2 = last.capacity_ah * 1000.0 / AREA
    # CE = stripped / plated; the sim's working electrode also held 0.205 mAh/cm2.
    assert 0.95 < stripped_mah_cm2 / 3.0 < 1.1
