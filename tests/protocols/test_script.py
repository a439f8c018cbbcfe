"""Protocol scripting: the Python API, validation before start, BTS compilation, the sim."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared import EXAMPLE_PROTOCOL

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import (
    ChannelAddress,
    ChannelId,
    SimChannel,
    Step,
    StepType,
    parse_step_file,
    render_step_file,
)
from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.protocols import InstrumentLimits, half_cycle_s
from cellguard.protocols.script import (
    CellSpec,
    Charge,
    CurrentBelow,
    Discharge,
    HoldVoltage,
    InstrumentCapability,
    Plate,
    Protocol,
    Quantity,
    Repeat,
    Rest,
    Strip,
    VoltageBetween,
    amps,
    c_rate,
    describe,
    expected_length_s,
    hours,
    ma,
    ma_cm2,
    mah,
    mah_cm2,
    millivolts,
    minutes,
    parse_protocol_text,
    seconds,
    to_step_file,
    volts,
)

EXAMPLE_TOML = EXAMPLE_PROTOCOL

GOLDEN_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<root>
  <config type="Step File" version="17" client_version="BTS Client 8.0.0.478(2024.06.24)(R3)" \
date="20260101000000" Guid="golden">
    <Head_Info>
      <Operate Value="66" />
      <Scale Value="1" />
      <Start_Step Value="1" Hide_Ctrl_Step="0" />
      <Creator Value="cellguard" />
      <Remark Value="asymmetric 0.5/0.5; asymmetric cell 0.7854 cm2" />
      <RateType Value="103" />
    </Head_Info>
    <Whole_Prt>
      <Protect>
        <Main>
          <Volt>
            <Upper Value="50000" />
            <Lower Value="-50000" />
          </Volt>
          <Curr>
            <Upper Value="0.431969" />
            <Lower Value="-0.431969" />
          </Curr>
        </Main>
      </Protect>
      <Record>
        <Main>
          <Time Value="10000" />
        </Main>
      </Record>
    </Whole_Prt>
    <Step_Info Num="5">
      <Step1 Step_ID="1" Step_Type="4">
        <Limit>
          <Main>
            <Time Value="600000" />
          </Main>
        </Limit>
      </Step1>
      <Step2 Step_ID="2" Step_Type="1">
        <Limit>
          <Main>
            <Curr Value="0.392699" />
            <Cap Value="1413.716694" />
          </Main>
        </Limit>
      </Step2>
      <Step3 Step_ID="3" Step_Type="2">
        <Limit>
          <Main>
            <Curr Value="0.392699" />
            <Cap Value="1413.716694" />
          </Main>
        </Limit>
      </Step3>
      <Step4 Step_ID="4" Step_Type="5">
        <Limit>
          <Other>
            <Start_Step Value="2" />
            <Cycle_Count Value="500" />
          </Other>
        </Limit>
      </Step4>
      <Step5 Step_ID="5" Step_Type="6" />
    </Step_Info>
    <SMBUS>
      <SMBUS_Info Num="0" AdjacentInterval="0" />
    </SMBUS>
  </config>
</root>"""

DISC = CellSpec("asymmetric", diameter_mm=10, thick_li_um=100, thin_li_um=20)
AREA_CM2 = math.pi * 0.5**2


def _api_example(times: int = 500) -> Protocol:
    return Protocol(
        "asymmetric 0.5/0.5",
        cell=DISC,
        steps=[
            Rest(minutes(10)),
            Strip(ma_cm2(0.5), capacity=mah_cm2(0.5)),
            Plate(ma_cm2(0.5), capacity=mah_cm2(0.5)),
            Repeat(2, 3, times=times),
        ],
        limits=[VoltageBetween(volts(-5), volts(5))],
        record_every=seconds(10),
    )


def _symmetric(*steps: object, **kwargs: object) -> Protocol:
    return Protocol("p", CellSpec("symmetric", area_cm2=1.0, thick_li_um=100), steps, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- golden and equivalence


def test_the_issue_example_compiles_to_the_golden_step_file() -> None:
    """The TOML from issue 5, as written, renders byte-for-byte to the golden XML."""
    step_file = to_step_file(parse_protocol_text(EXAMPLE_TOML))
    assert render_step_file(step_file, date="20260101000000", guid="golden") == GOLDEN_XML


def test_the_python_api_builds_the_same_protocol_and_step_file_as_the_text() -> None:
    """Text and Python API compile to equal models and identical step files."""
    text = parse_protocol_text(EXAMPLE_TOML)
    api = _api_example()
    assert api == text
    assert to_step_file(api) == to_step_file(text)
    assert render_step_file(to_step_file(api)) == render_step_file(to_step_file(text))


def test_compiled_file_uses_absolute_units_and_survives_the_xml_round_trip() -> None:
    """Currents in mA and capacities in mAh from the area; Repeat is a CYCLE to step 2."""
    step_file = to_step_file(_api_example())
    rest, strip, plate, cycle, end = step_file.steps
    assert rest == Step(StepType.REST, time_s=600.0)
    assert strip.step_type is StepType.CC_CHARGE
    assert plate.step_type is StepType.CC_DISCHARGE
    assert strip.current_ma == pytest.approx(0.5 * AREA_CM2)
    assert strip.capacity_mah == pytest.approx(0.5 * AREA_CM2)
    assert cycle == Step(StepType.CYCLE, loop_start_step=2, cycle_count=500)
    assert end.step_type is StepType.END
    assert step_file.record_interval_s == 10.0
    assert step_file.protection.voltage_upper_v == 5.0
    assert step_file.protection.voltage_lower_v == -5.0
    parsed = parse_step_file(render_step_file(step_file))
    assert [s.step_type for s in parsed.steps] == [s.step_type for s in step_file.steps]
    assert parsed.steps[1].capacity_mah == pytest.approx(strip.capacity_mah)


def test_describe_lists_absolute_currents_durations_and_the_test_length() -> None:
    """describe() shows mA, per-step durations and 1000 h 10 min for 500 cycles."""
    text = describe(_api_example())
    assert "0.3927 mA" in text
    assert "(≈ 1 h) × 500" in text
    assert "for 10 min" in text
    assert "expected length: 1000 h" in text
    assert "500 cycles" in text
    total_s, exact = expected_length_s(to_step_file(_api_example()))
    assert exact
    assert total_s == pytest.approx(600 + 500 * 2 * 3600)


def test_full_cell_cc_cv_compiles_c_rates_cut_offs_and_holds() -> None:
    """C-rates scale the full-cell capacity; a hold's stop current and ceiling are absolute."""
    protocol = Protocol(
        "cccv",
        CellSpec("full", area_cm2=1.0, capacity_mah=2.0),
        [
            Charge(c_rate(0.5), until=volts(4.2)),
            HoldVoltage(volts(4.2), until_current=c_rate(0.05), duration=hours(1)),
            Discharge(c_rate(1), until=volts(3.0)),
            Repeat(1, 3, 10),
        ],
        limits=[VoltageBetween(volts(2.5), volts(4.3)), CurrentBelow(ma(3))],
    )
    steps = to_step_file(protocol).steps
    assert steps[0] == Step(StepType.CC_CHARGE, current_ma=1.0, stop_voltage_v=4.2)
    assert steps[1] == Step(
        StepType.CV_CHARGE, current_ma=1.0, voltage_v=4.2, time_s=3600.0, stop_current_ma=0.1
    )
    assert steps[2] == Step(StepType.CC_DISCHARGE, current_ma=2.0, stop_voltage_v=3.0)
    assert to_step_file(protocol).protection.current_upper_ma == 3.0
    assert protocol.expected_cycles() == 10
    assert "at least" in describe(protocol)  # cut-off steps have no fixed duration


def test_nested_repeats_count_every_loop() -> None:
    """An inner loop runs its count each time the outer one passes through it."""
    protocol = _symmetric(
        Strip(ma_cm2(1), duration=minutes(1)),
        Plate(ma_cm2(1), duration=minutes(1)),
        Repeat(1, 2, 3),
        Rest(minutes(1)),
        Repeat(1, 4, 2),
    )
    assert protocol.expected_cycles() == 1 + 2 * 2 + 1
    total_s, _ = expected_length_s(to_step_file(protocol))
    assert total_s == pytest.approx(2 * (3 * 120 + 60))


# ---------------------------------------------------------------- units


def test_unit_constructors_normalise_to_one_unit_per_family() -> None:
    """min/h → s, A → mA, mV → V; equal quantities compare equal."""
    assert minutes(10) == seconds(600)
    assert hours(1) == seconds(3600)
    assert amps(0.002) == ma(2)
    assert millivolts(500) == volts(0.5)
    assert str(c_rate(0.5)) == "C/2"
    assert str(c_rate(2)) == "2C"
    assert str(hours(1)) == "1 h"
    assert str(mah_cm2(0.5)) == "0.5 mAh/cm2"


@pytest.mark.parametrize("make", [ma_cm2, ma, mah_cm2, mah, seconds, c_rate])
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_magnitudes_must_be_finite_and_positive(make: object, value: float) -> None:
    """Currents, capacities and times are magnitudes > 0; the step gives the direction."""
    with pytest.raises(ConfigError):
        make(value)  # type: ignore[operator]


def test_an_unknown_unit_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown unit 'furlong'"):
        Quantity(1.0, "furlong")


positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)


@given(density=positive, diameter_mm=st.floats(min_value=1.0, max_value=50.0))
def test_areal_current_round_trips_through_the_area(density: float, diameter_mm: float) -> None:
    """mA cm⁻² × area → mA, and mA ÷ area → the same mA cm⁻²."""
    cell = CellSpec("symmetric", diameter_mm=diameter_mm)
    area = cell.electrode_area_cm2
    assert area is not None
    current = cell.current_ma(ma_cm2(density))
    assert current / area == pytest.approx(density, rel=1e-12)
    assert cell.current_ma(ma(current)) == pytest.approx(current, rel=1e-12)
    assert cell.capacity_mah_of(mah_cm2(density)) / area == pytest.approx(density, rel=1e-12)


@given(capacity=positive, density=positive)
def test_half_cycle_duration_is_capacity_over_current(capacity: float, density: float) -> None:
    """A strip ending on an areal capacity lasts capacity / current, on any cell."""
    cell = CellSpec("symmetric", area_cm2=0.785)
    protocol = Protocol("p", cell, [Strip(ma_cm2(density), capacity=mah_cm2(capacity))])
    step_file = to_step_file(protocol, InstrumentCapability(current_range_ma=1e9))
    total_s, exact = expected_length_s(step_file)
    assert exact
    assert total_s == pytest.approx(capacity / density * 3600.0, rel=1e-9)
    assert total_s == pytest.approx(half_cycle_s(capacity, density), rel=1e-9)


@given(rate=positive, capacity_mah=positive)
def test_c_rate_is_a_multiple_of_the_cell_capacity(rate: float, capacity_mah: float) -> None:
    cell = CellSpec("full", capacity_mah=capacity_mah)
    assert cell.current_ma(c_rate(rate)) == pytest.approx(rate * capacity_mah, rel=1e-12)


# ---------------------------------------------------------------- refusals


def _refused(protocol: Protocol, limits: object = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        to_step_file(protocol, limits)  # type: ignore[arg-type]
    return info.value


def test_current_beyond_the_instrument_range_is_refused_naming_the_step() -> None:
    protocol = Protocol("p", DISC, [Strip(ma_cm2(20), duration=minutes(1))])
    err = _refused(protocol)
    assert err.field.startswith("step 1 'Strip at 20 mA/cm2")
    assert "15.71 mA" in err.problem
    assert "at most 10 mA" in err.problem
    # A wider instrument runs it.
    to_step_file(protocol, InstrumentLimits(current_range_ma=20.0))


def test_voltage_limits_beyond_the_instrument_are_refused() -> None:
    protocol = _symmetric(Rest(seconds(10)), limits=[VoltageBetween(volts(-10), volts(10))])
    err = _refused(protocol)
    assert err.field.startswith("protocol.limits[1]")
    assert "-10 V is beyond" in err.problem
    err = _refused(_symmetric(Strip(ma(1), until=volts(6))))
    assert err.field.startswith("step 1")
    assert "6 V is beyond" in err.problem


def test_record_interval_shorter_than_the_instrument_allows_is_refused() -> None:
    err = _refused(_symmetric(Rest(seconds(10)), record_every=seconds(0.5)))
    assert err.field == "protocol.record_every"
    assert "at least 1 s" in err.problem
    to_step_file(
        _symmetric(Rest(seconds(10)), record_every=seconds(0.5)),
        InstrumentCapability(min_record_interval_s=0.1),
    )


def test_too_many_steps_are_refused() -> None:
    err = _refused(_symmetric(*[Rest(seconds(1))] * 254))
    assert err.field == "protocol.steps"
    assert "at most 254" in err.problem
    to_step_file(_symmetric(*[Rest(seconds(1))] * 253))


def test_missing_area_is_refused_for_li_li_cells_and_areal_units() -> None:
    err = _refused(Protocol("p", CellSpec("symmetric"), [Strip(ma(0.4), duration=hours(1))]))
    assert err.field == "cell.area_cm2"
    assert "diameter_mm" in err.problem
    full = Protocol("p", CellSpec("full"), [Charge(ma_cm2(1), duration=hours(1))])
    assert _refused(full).field == "cell.area_cm2"


def test_c_rate_without_the_cell_capacity_is_refused() -> None:
    err = _refused(Protocol("p", CellSpec("full"), [Charge(c_rate(0.5), until=volts(4.2))]))
    assert err.field == "cell.capacity_mah"
    assert "C/2" in err.problem


def test_a_strip_that_takes_all_of_the_thin_electrode_is_refused() -> None:
    """20 µm holds 4.1 mAh cm⁻²: stripping 5 mAh cm⁻² in one go depletes it by construction."""
    protocol = Protocol("p", DISC, [Strip(ma_cm2(1), capacity=mah_cm2(5))])
    err = _refused(protocol)
    assert err.field.startswith("step 1 'Strip at 1 mA/cm2 for 5 mAh/cm2'")
    assert "thin electrode's 4.1 mAh/cm2" in err.problem
    by_time = Protocol("p", DISC, [Strip(ma_cm2(1), duration=hours(5))])
    assert "deplete" in _refused(by_time).problem
    # Plating that much onto it is fine.
    to_step_file(Protocol("p", DISC, [Plate(ma_cm2(1), capacity=mah_cm2(5))]))


def test_strip_on_a_full_cell_and_charge_on_a_li_li_cell_are_refused() -> None:
    full = Protocol("p", CellSpec("full", capacity_mah=1), [Strip(ma(1), duration=hours(1))])
    assert "use Charge or Discharge" in _refused(full).problem
    li_li = _symmetric(Discharge(ma(1), duration=hours(1)))
    assert "use Strip" in _refused(li_li).problem


def test_wrong_units_in_a_step_name_the_step_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        _symmetric(Strip(mah_cm2(0.5), duration=hours(1)))
    assert str(info.value) == (
        "step 1 'Strip at 0.5 mAh/cm2 for 1 h': 0.5 mAh/cm2 is a capacity; "
        "a strip needs a current (mA/cm2, mA, A or C-rate)"
    )
    with pytest.raises(ConfigError, match="'for' needs a time"):
        _symmetric(Plate(ma(1), duration=mah(1)))
    with pytest.raises(ConfigError, match="'until' needs a voltage"):
        _symmetric(Plate(ma(1), until=ma(1)))
    with pytest.raises(ConfigError, match="a rest needs a time"):
        _symmetric(Rest(volts(1)))
    with pytest.raises(ConfigError, match="a hold needs a voltage"):
        _symmetric(HoldVoltage(ma(1), duration=hours(1)))
    with pytest.raises(ConfigError, match="needs an end"):
        _symmetric(Strip(ma(1)))
    with pytest.raises(ConfigError, match="is not a time"):
        _symmetric(Rest(hours(1)), record_every=volts(1))


@pytest.mark.parametrize(
    ("steps", "word"),
    [
        ((Rest(hours(1)), Rest(hours(1)), Repeat(3, 2, 5)), "out of order"),
        ((Rest(hours(1)), Rest(hours(1)), Rest(hours(1)), Repeat(1, 2, 5)), "directly follow"),
        (
            (Rest(hours(1)), Rest(hours(1)), Repeat(1, 2, 2), Rest(hours(1)), Repeat(2, 4, 2)),
            "partly overlap",
        ),
        ((Rest(hours(1)), Repeat(1, 1, 0)), "times must be a whole number >= 1"),
    ],
)
def test_repeat_ranges_that_cannot_loop_are_refused(steps: tuple[object, ...], word: str) -> None:
    with pytest.raises(ConfigError, match=word) as info:
        _symmetric(*steps)
    assert info.value.field.startswith(f"step {len(steps)} 'Repeat steps")


def test_cell_spec_refuses_contradictions() -> None:
    with pytest.raises(ConfigError, match="not both") as info:
        CellSpec("symmetric", area_cm2=1.0, diameter_mm=10)
    assert info.value.field == "cell.area_cm2"
    with pytest.raises(ConfigError, match="not both"):
        CellSpec("symmetric", thick_li_um=100, thick_li_mah_cm2=20.5)
    with pytest.raises(ConfigError, match="required for an asymmetric cell"):
        CellSpec("asymmetric", area_cm2=1.0)
    with pytest.raises(ConfigError, match="thinner than the thick"):
        CellSpec("asymmetric", area_cm2=1.0, thick_li_um=50, thin_li_um=100)
    with pytest.raises(ConfigError, match="two equal Li electrodes"):
        CellSpec("symmetric", thick_li_um=100, thin_li_um=20)
    with pytest.raises(ConfigError, match="'symmetric', 'asymmetric' or 'full'"):
        CellSpec("pouch")  # type: ignore[arg-type]
    assert CellSpec("asymmetric", thin_li_mah_cm2=4.1).working_li_mah_cm2 == 4.1


# ---------------------------------------------------------------- the simulated CT-4008


def _sim_channel(li_working_um: float) -> SimChannel:
    spec = SimCellSpec(interphase="SEI", li_working_um=li_working_um, never_short=True)
    return SimChannel(ChannelAddress(ChannelId(1, 1, 1)), SimCell(spec, 7), current_range_ma=10.0)


def test_the_issue_example_runs_on_the_simulated_ct4008_to_its_end() -> None:
    """500 cycles of 2 h after a 10 min rest: finishes at 1000 h 10 min with 500 cycles."""
    step_file = to_step_file(parse_protocol_text(EXAMPLE_TOML))
    total_s, _ = expected_length_s(step_file)
    channel = _sim_channel(20.0)
    assert channel.start(step_file, "asym-20", 0.0, datetime(2026, 1, 1))
    channel.advance_to(total_s - 60.0)
    assert channel.workstatus == "working"
    assert channel.inquire().cycle_id == 500
    channel.advance_to(total_s + 60.0)
    assert channel.workstatus == "finish"
    last = channel.download(channel.record_count, 1)[0]
    assert last.cycle_id == 500
    assert last.test_time_ms == pytest.approx(total_s * 1000, abs=1)
    layers = channel.step_layers()
    assert len(layers) == 1 + 2 * 500
    assert [layer.step_type for layer in layers[:3]] == ["rest", "cc", "dc"]


def test_nested_protocol_runs_on_the_simulator_with_the_expected_cycles() -> None:
    protocol = Protocol(
        "ccd-like",
        CellSpec("symmetric", diameter_mm=10, thick_li_um=100),
        [
            Strip(ma_cm2(0.5), capacity=mah_cm2(0.25)),
            Plate(ma_cm2(0.5), capacity=mah_cm2(0.25)),
            Repeat(1, 2, 3),
            Rest(minutes(5)),
            Repeat(1, 4, 2),
        ],
        record_every=seconds(30),
    )
    step_file = to_step_file(protocol)
    total_s, _ = expected_length_s(step_file)
    channel = _sim_channel(100.0)
    assert channel.start(step_file, "sym", 0.0, datetime(2026, 1, 1))
    channel.advance_to(total_s + 10.0)
    assert channel.workstatus == "finish"
    assert channel.inquire().cycle_id == protocol.expected_cycles()
    assert len(channel.step_layers()) == 2 * (3 * 2 + 1)
