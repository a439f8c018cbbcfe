"""Galvanostatic plating/stripping: the standard protocol, its step file, refusals."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware._stepfile import (
    Step,
    StepFile,
    StepType,
    parse_step_file,
    render_step_file,
)
from cellguard.protocols import (
    CURRENT_PROTECTION_FACTOR,
    Cell,
    GalvanostaticCycling,
    InstrumentLimits,
    disc_area_cm2,
    write_step_file,
)

DISC_CM2 = disc_area_cm2(10.0)


def _standard(**overrides: Any) -> GalvanostaticCycling:
    return dataclasses.replace(GalvanostaticCycling(Cell.symmetric(DISC_CM2)), **overrides)


def test_the_standard_protocol_on_a_10_mm_disc_runs_0_3927_ma_for_an_hour() -> None:
    protocol = GalvanostaticCycling(Cell.symmetric(DISC_CM2))
    assert pytest.approx(0.785, abs=5e-4) == DISC_CM2
    assert protocol.current_ma == pytest.approx(0.3927, abs=5e-5)
    assert protocol.current_a == pytest.approx(0.3927e-3, abs=5e-8)
    assert protocol.half_cycle_s == pytest.approx(3600.0)
    assert protocol.capacity_per_half_mah == pytest.approx(0.3927, abs=5e-5)
    assert protocol.cycles == 1000
    assert protocol.record_interval_s == 60.0
    assert protocol.voltage_limit_v == 5.0


def test_the_step_file_is_charge_discharge_looped_back_to_the_charge_then_end() -> None:
    protocol = _standard()
    step_file = protocol.to_step_file()
    assert [s.step_type for s in step_file.steps] == [
        StepType.CC_CHARGE,
        StepType.CC_DISCHARGE,
        StepType.CYCLE,
        StepType.END,
    ]
    charge, discharge, cycle, _ = step_file.steps
    assert charge == Step(
        StepType.CC_CHARGE,
        current_ma=protocol.current_ma,
        time_s=protocol.half_cycle_s,
        capacity_mah=protocol.capacity_per_half_mah,
    )
    assert discharge == dataclasses.replace(charge, step_type=StepType.CC_DISCHARGE)
    assert cycle.loop_start_step == 1
    assert cycle.cycle_count == 1000
    assert step_file.record_interval_s == 60.0


def test_the_cc_steps_carry_no_cut_off_voltage_so_a_failing_cell_is_not_moved_on() -> None:
    for step in _standard().to_step_file().steps[:2]:
        assert step.stop_voltage_v is None
        assert step.stop_current_ma is None


def test_a_rest_before_cycling_comes_first_and_the_loop_still_starts_at_the_charge() -> None:
    step_file = _standard(rest_before_s=600.0, cycles=3).to_step_file()
    assert step_file.steps[0] == Step(StepType.REST, time_s=600.0)
    assert step_file.steps[1].step_type is StepType.CC_CHARGE
    cycle = step_file.steps[3]
    assert cycle.step_type is StepType.CYCLE
    assert cycle.loop_start_step == 2
    assert cycle.cycle_count == 3


def test_whole_test_protection_is_plus_minus_the_voltage_limit_and_110_percent_current() -> None:
    protocol = _standard(voltage_limit_v=4.5)
    protection = protocol.to_step_file().protection
    assert protection.voltage_upper_v == 4.5
    assert protection.voltage_lower_v == -4.5
    assert CURRENT_PROTECTION_FACTOR == 1.1
    assert protection.current_upper_ma == pytest.approx(1.1 * protocol.current_ma)
    # Signed, as BTS reads it: the lower bound is the discharge's, below zero, so the
    # zero crossing at every reversal stays inside the bounds.
    assert protection.current_lower_ma == pytest.approx(-1.1 * protocol.current_ma)


def test_the_standard_step_file_in_the_instruments_units() -> None:
    text = render_step_file(_standard().to_step_file())
    assert 'Curr Value="0.392699"' in text  # 0.5 mA cm⁻² × π/4 cm², in mA
    assert 'Time Value="3600000"' in text  # 1 h in ms
    assert 'Cap Value="1413.716694"' in text  # 0.3927 mAh in mAs
    assert 'Upper Value="50000"' in text  # +5 V in 0.1 mV
    assert 'Lower Value="-50000"' in text


def test_the_step_file_survives_render_and_parse() -> None:
    step_file = _standard(rest_before_s=30.0).to_step_file()
    parsed = parse_step_file(render_step_file(step_file))
    assert [s.step_type for s in parsed.steps] == [s.step_type for s in step_file.steps]
    assert parsed.steps[1].current_ma == pytest.approx(step_file.steps[1].current_ma, abs=1e-6)
    assert parsed.steps[1].capacity_mah == pytest.approx(step_file.steps[1].capacity_mah)
    assert parsed.steps[3] == step_file.steps[3]
    assert parsed.protection.voltage_lower_v == -5.0


@pytest.mark.parametrize(
    ("density", "capacity", "seconds"), [(0.1, 0.1, 3600.0), (1.0, 1.0, 3600.0), (2.0, 0.5, 900.0)]
)
def test_other_protocols_of_the_papers_give_their_half_cycle_times(
    density: float, capacity: float, seconds: float
) -> None:
    protocol = _standard(current_density_ma_cm2=density, areal_capacity_mah_cm2=capacity)
    assert protocol.half_cycle_s == pytest.approx(seconds)
    assert protocol.to_step_file().steps[0].time_s == pytest.approx(seconds)


def test_an_asymmetric_cell_gets_the_same_steps_with_its_own_area() -> None:
    protocol = GalvanostaticCycling(Cell.asymmetric(DISC_CM2, li_thin_um=20.0))
    assert protocol.to_step_file().steps[0].current_ma == pytest.approx(0.3927, abs=5e-5)


def test_a_current_beyond_the_instrument_range_is_refused_with_the_numbers() -> None:
    limits = InstrumentLimits(current_range_ma=0.1)
    with pytest.raises(ConfigError) as info:
        _standard().to_step_file(limits)
    assert info.value.field == "current_density_ma_cm2"
    assert str(info.value) == (
        "current_density_ma_cm2: 0.5 mA cm⁻² on 0.785 cm² is 0.393 mA; "
        "the Neware CT-4008 allows at most 0.1 mA"
    )


def test_the_ccd_top_step_of_20_ma_cm2_fits_the_ct_4008_10_ma_range() -> None:
    protocol = _standard(current_density_ma_cm2=20.0, areal_capacity_mah_cm2=0.25)
    assert protocol.current_ma == pytest.approx(15.7, abs=0.01)
    with pytest.raises(ConfigError, match=r"^current_density_ma_cm2: .* at most 10 mA"):
        protocol.to_step_file()
    assert protocol.to_step_file(InstrumentLimits(current_range_ma=20.0)).steps


def test_a_voltage_limit_beyond_the_instrument_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^voltage_limit_v: ±6 V is beyond") as info:
        _standard(voltage_limit_v=6.0).to_step_file()
    assert "at most 5 V" in str(info.value)


def test_a_voltage_limit_at_the_instrument_range_is_allowed() -> None:
    assert _standard(voltage_limit_v=5.0).to_step_file(InstrumentLimits(voltage_range_v=5.0))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cycles": 0}, "cycles"),
        ({"cycles": -3}, "cycles"),
        ({"cycles": 2.5}, "cycles"),
        ({"cycles": True}, "cycles"),
        ({"record_interval_s": 0.0}, "record_interval_s"),
        ({"record_interval_s": -60.0}, "record_interval_s"),
        ({"record_interval_s": float("nan")}, "record_interval_s"),
        ({"current_density_ma_cm2": 0.0}, "current_density_ma_cm2"),
        ({"current_density_ma_cm2": -0.5}, "current_density_ma_cm2"),
        ({"current_density_ma_cm2": float("inf")}, "current_density_ma_cm2"),
        ({"areal_capacity_mah_cm2": 0.0}, "areal_capacity_mah_cm2"),
        ({"areal_capacity_mah_cm2": None}, "areal_capacity_mah_cm2"),
        ({"voltage_limit_v": 0.0}, "voltage_limit_v"),
        ({"voltage_limit_v": -5.0}, "voltage_limit_v"),
        ({"rest_before_s": -1.0}, "rest_before_s"),
        ({"rest_before_s": float("inf")}, "rest_before_s"),
        ({"cell": None}, "cell"),
    ],
)
def test_an_impossible_protocol_is_refused_naming_the_field(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _standard(**overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_a_half_cycle_shorter_than_one_second_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^areal_capacity_mah_cm2: .* 0\.9 s half cycle"):
        _standard(current_density_ma_cm2=2.0, areal_capacity_mah_cm2=0.0005)


def test_a_half_cycle_of_exactly_one_second_is_allowed() -> None:
    assert _standard(current_density_ma_cm2=3.6, areal_capacity_mah_cm2=0.001).half_cycle_s == (
        pytest.approx(1.0)
    )


def test_a_half_cycle_may_not_strip_the_whole_working_electrode() -> None:
    cell = Cell.asymmetric(DISC_CM2, li_thin_um=20.0)  # 4.1 mAh cm⁻²
    with pytest.raises(ConfigError, match=r"^areal_capacity_mah_cm2: .* 20 µm working") as info:
        GalvanostaticCycling(cell, areal_capacity_mah_cm2=5.0)
    assert info.value.field == "areal_capacity_mah_cm2"
    assert GalvanostaticCycling(cell, areal_capacity_mah_cm2=3.0).capacity_per_half_mah > 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"current_range_ma": 0.0}, "limits.current_range_ma"),
        ({"voltage_range_v": -5.0}, "limits.voltage_range_v"),
    ],
)
def test_instrument_limits_must_be_positive(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        InstrumentLimits(**kwargs)
    assert info.value.field == field


def test_the_default_instrument_is_a_ct_4008_with_10_ma_and_5_v() -> None:
    assert InstrumentLimits() == InstrumentLimits(10.0, 5.0, "Neware CT-4008")


def test_write_step_file_writes_utf8_xml_that_parses_back(tmp_path: Path) -> None:
    step_file = _standard().to_step_file()
    target = tmp_path / "standard.xml"
    written = write_step_file(target, step_file)
    assert written == target
    data = target.read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    # The same file but for its own Guid and date (see test_protocol_cli).
    assert parse_step_file(data) == parse_step_file(render_step_file(step_file))
    assert parse_step_file(data).steps[2] == step_file.steps[2]


def test_write_step_file_replaces_an_old_file_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "run.xml"
    target.write_text("old", encoding="utf-8")
    write_step_file(str(target), _standard(cycles=7).to_step_file())
    assert os.listdir(tmp_path) == ["run.xml"]
    assert parse_step_file(target.read_bytes()).steps[2].cycle_count == 7


def test_write_step_file_into_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "run.xml"
    with pytest.raises(ConfigError, match=r"^path: cannot write the step file to") as info:
        write_step_file(target, _standard().to_step_file())
    assert str(target) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_write_step_file_cleans_up_its_temporary_file_when_replace_fails(tmp_path: Path) -> None:
    target = tmp_path / "is-a-directory"
    (target / "child").mkdir(parents=True)  # os.replace cannot put a file over it
    with pytest.raises(ConfigError, match=r"^path: "):
        write_step_file(target, _standard().to_step_file())
    assert sorted(os.listdir(tmp_path)) == ["is-a-directory"]


def test_to_step_file_returns_a_step_file() -> None:
    assert isinstance(_standard().to_step_file(), StepFile)
