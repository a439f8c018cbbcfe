"""Goto, per-step limits and chamber temperature steps: grammar, validation, Neware."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import StepType
from cellguard.protocols.script import (
    DEFAULT_SOAK_TIMEOUT_S,
    CellSpec,
    Condition,
    CurrentBelow,
    Goto,
    HoldVoltage,
    HostRun,
    Plate,
    Protocol,
    Repeat,
    Rest,
    SetTemperature,
    Step,
    Strip,
    VoltageBetween,
    bts_step_ids,
    c_rate,
    celsius,
    describe,
    hours,
    load_protocol_file,
    ma,
    ma_cm2,
    mah,
    mah_cm2,
    minutes,
    parse_quantity,
    parse_step,
    prestart_setpoints,
    step_limits,
    to_step_file,
    volts,
)
from cellguard.protocols.script.library import asymmetric_cycling, symmetric_cycling

EXAMPLES = Path(__file__).resolve().parents[2] / "protocols" / "script" / "examples"
SYM = CellSpec("symmetric", diameter_mm=10, thick_li_um=100)
AREA = math.pi * 0.5**2


def _protocol(*steps: Step, limits: tuple[VoltageBetween, ...] = ()) -> Protocol:
    return Protocol("p", cell=SYM, steps=steps, limits=limits)


# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "step"),
    [
        (
            "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 or until 1 V, then goto step 5 if voltage "
            "above 1 V",
            Strip(
                ma_cm2(0.5),
                capacity=mah_cm2(0.5),
                until=volts(1),
                goto=Goto(5, Condition("voltage above", volts(1))),
            ),
        ),
        (
            "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 within -1 V and 1 V",
            Strip(
                ma_cm2(0.5),
                capacity=mah_cm2(0.5),
                limits=(VoltageBetween(volts(-1), volts(1)),),
            ),
        ),
        (
            "Plate at 1 mA for 1 h within -1 V and 1 V within 2 mA then goto end if "
            "voltage below -0.8 V",
            Plate(
                ma(1),
                duration=hours(1),
                limits=(VoltageBetween(volts(-1), volts(1)), CurrentBelow(ma(2))),
                goto=Goto("end", Condition("voltage below", volts(-0.8))),
            ),
        ),
        (
            "Hold at 4.2 V until C/20, then goto step 1 if current below C/10",
            HoldVoltage(
                volts(4.2),
                until_current=c_rate(0.05),
                goto=Goto(1, Condition("current below", c_rate(0.1))),
            ),
        ),
        (
            "Rest for 10 min, then goto step 2 if step time reached 10 min",
            Rest(minutes(10), goto=Goto(2, Condition("time reached", minutes(10)))),
        ),
        (
            "Strip at 1 mA for 1 h, then goto step 3 if capacity reached 0.5 mAh",
            Strip(ma(1), duration=hours(1), goto=Goto(3, Condition("capacity reached", mah(0.5)))),
        ),
        ("Set temperature to 60 °C", SetTemperature(celsius(60))),
        ("Set temperature to -5 C", SetTemperature(celsius(-5))),
        ("set temperature to 25degC", SetTemperature(celsius(25))),
        (
            "Set temperature to 60 °C and wait until within 1 °C",
            SetTemperature(celsius(60), within=celsius(1)),
        ),
        (
            "Set temperature to 60°C and wait until within 0.5 C for at most 2 h",
            SetTemperature(celsius(60), within=celsius(0.5), timeout=hours(2)),
        ),
    ],
)
def test_new_step_forms_parse_to_their_model(text: str, step: Step) -> None:
    parsed = parse_step(text)
    assert parsed == step
    assert parsed.text == " ".join(text.split())  # messages quote what was written


@pytest.mark.parametrize(
    "step",
    [
        Strip(
            ma_cm2(0.5),
            capacity=mah_cm2(0.5),
            until=volts(0.9),
            limits=(VoltageBetween(volts(-1), volts(1)), CurrentBelow(ma(1))),
            goto=Goto(2, Condition("voltage above", volts(0.9))),
        ),
        HoldVoltage(
            volts(4.2), duration=hours(1), goto=Goto("end", Condition("time reached", hours(1)))
        ),
        Rest(hours(1), limits=(VoltageBetween(volts(-0.1), volts(0.1)),)),
        SetTemperature(celsius(-5), within=celsius(2), timeout=minutes(90)),
    ],
)
def test_the_python_api_writes_text_that_parses_back_to_the_same_step(step: Step) -> None:
    assert parse_step(step.text) == step


@given(st.floats(min_value=-80, max_value=200), st.floats(min_value=0.01, max_value=20))
def test_any_setpoint_and_band_read_back_from_their_text(setpoint: float, band: float) -> None:
    step = SetTemperature(celsius(setpoint), within=celsius(band))
    back = parse_step(step.text)
    assert isinstance(back, SetTemperature)
    assert back.setpoint_c == pytest.approx(setpoint, rel=1e-5, abs=1e-9)
    assert back.band_c == pytest.approx(band, rel=1e-5)
    assert parse_quantity(str(celsius(setpoint))).unit == "°C"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Strip at 1 mA for 1 h, then goto stpe 5 if voltage above 1 V",
            "expected 'step N' or 'end' after 'goto', got 'stpe'",
        ),
        ("Strip at 1 mA for 1 h, then go to step 5", "expected 'goto' after 'then', got 'go'"),
        ("Strip at 1 mA for 1 h, then goto step five", "expected a step number (a whole number)"),
        ("Strip at 1 mA for 1 h, then goto step 5 when V > 1", "expected 'if' after goto step"),
        (
            "Strip at 1 mA for 1 h, then goto step 5 if temperature above 1 V",
            "expected a condition (voltage above|below <V>, current below <current>",
        ),
        ("Strip at 1 mA for 1 h, then goto step 5 if voltage over 1 V", "got 'over'"),
        ("Strip at 1 mA for 1 h, then goto step 5 if current above 1 mA", "expected 'below'"),
        (
            "Strip at 1 mA for 1 h, then goto step 5 if voltage above 1 mA",
            "1 mA is a current; 'if voltage above' needs a voltage",
        ),
        ("Strip at 1 mA for 1 h within 1 h", "'within' needs a voltage window"),
        ("Strip at 1 mA for 1 h within -1 V or 1 V", "expected 'and' after -1 V, got 'or'"),
        ("Strip at 1 mA for 1 h within -1 V and 2 mA", "expected a voltage after 'within -1 V"),
        ("Rest for 1 h please", "unexpected 'please'"),
        ("Set temperature to 60 K", "expected a temperature in °C (°C, degC or C), got 'K'"),
        ("Set temprature to 60 °C", "expected 'temperature' after 'Set', got 'temprature'"),
        ("Set temperature to hot", "expected a temperature (a number and °C), got 'hot'"),
        ("Set temperature to -300 °C", "above absolute zero"),
        ("Set temperature to 60 °C and hold", "expected 'wait' after 'and', got 'hold'"),
        (
            "Set temperature to 60 °C and wait until within 1 °C for 2 h",
            "expected 'at' after 'for', got '2'",
        ),
        (
            "Set temperature to 60 °C, then goto step 1 if voltage above 1 V",
            "a Set step cannot jump",
        ),
        ("Repeat steps 1-2 3 times then goto step 1 if voltage above 1 V", "cannot jump"),
    ],
)
def test_parse_errors_quote_the_step_and_the_word_at_fault(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_step(text, 4)
    assert info.value.field == f"step 4 {text!r}"
    assert message in info.value.problem


# ---------------------------------------------------------------- validation


def test_a_cut_off_or_hold_outside_the_steps_own_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="1 V is not inside the step's window -1 V to 1 V"):
        _protocol(parse_step("Strip at 1 mA until 1 V within -1 V and 1 V"))
    with pytest.raises(ConfigError, match=r"4\.2 V is not inside"):
        Protocol(
            "p",
            cell=CellSpec("full", capacity_mah=2),
            steps=[parse_step("Hold at 4.2 V for 1 h within 3 V and 4.1 V")],
        )


def test_a_band_of_zero_and_a_timeout_without_a_wait_are_refused() -> None:
    with pytest.raises(ConfigError, match="must be > 0 °C wide"):
        _protocol(SetTemperature(celsius(60), within=celsius(0)))
    with pytest.raises(ConfigError, match="a timeout needs a wait"):
        _protocol(SetTemperature(celsius(60), timeout=hours(1)))
    with pytest.raises(ConfigError, match="needs a temperature"):
        _protocol(SetTemperature(volts(60)))


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        (
            ("Strip at 1 mA for 1 h, then goto step 9 if voltage above 1 V", "Rest for 1 h"),
            "goto step 9 does not exist; the protocol has steps 1-2",
        ),
        (
            (
                "Strip at 1 mA for 1 h",
                "Repeat steps 1-1 2 times",
                "Rest for 1 h, then goto step 2 if voltage above 1 V",
            ),
            "targets a Repeat",
        ),
        (
            (
                "Rest for 1 h, then goto step 3 if voltage above 1 V",
                "Strip at 1 mA for 1 h",
                "Plate at 1 mA for 1 h",
                "Repeat steps 2-3 5 times",
            ),
            "jumps into the middle of the repeated steps 2-3 from outside; goto step 2",
        ),
        (
            (
                "Strip at 1 mA until 0.5 V",
                "Plate at 1 mA until -0.5 V, then goto step 1 if voltage below -0.5 V",
            ),
            "its goto can loop over steps 1-2 forever without passing any time or capacity",
        ),
    ],
)
def test_gotos_that_cannot_run_are_refused_naming_the_step(
    steps: tuple[str, ...], words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _protocol(*(parse_step(s, n) for n, s in enumerate(steps, start=1)))
    assert words in info.value.problem
    assert info.value.field.startswith("step ")


@pytest.mark.parametrize(
    "steps",
    [
        # The loop passes time in a fixed rest.
        ("Strip at 1 mA until 0.5 V", "Rest for 1 min, then goto step 1 if voltage below 0.1 V"),
        # The condition itself needs capacity to have passed.
        ("Strip at 1 mA until 0.5 V, then goto step 1 if capacity reached 0.1 mAh",),
        # Inside one loop, and to the top of a loop from outside.
        (
            "Strip at 1 mA for 1 h",
            "Plate at 1 mA for 1 h, then goto step 1 if voltage below -1 V",
            "Repeat steps 1-2 3 times",
            "Rest for 1 h, then goto step 1 if voltage above 0.5 V",
        ),
    ],
)
def test_well_defined_gotos_are_allowed(steps: tuple[str, ...]) -> None:
    protocol = _protocol(*(parse_step(s, n) for n, s in enumerate(steps, start=1)))
    HostRun(protocol)  # validates against the instrument too


def test_step_limits_and_goto_thresholds_are_checked_against_the_instrument() -> None:
    with pytest.raises(ConfigError, match="beyond the Neware CT-4008's range") as info:
        _protocol(parse_step("Strip at 1 mA for 1 h within -6 V and 1 V", 2)).validate()
    assert info.value.field.startswith("step 1 ")
    with pytest.raises(ConfigError, match="allows at most 10 mA"):
        _protocol(parse_step("Strip at 1 mA for 1 h within 20 mA")).validate()
    with pytest.raises(ConfigError, match="beyond the Neware CT-4008's range"):
        _protocol(
            parse_step("Strip at 1 mA for 1 h, then goto end if voltage above 7 V")
        ).validate()


# ---------------------------------------------------------------- Neware


def test_a_goto_is_refused_for_neware_naming_the_step_and_host_driven() -> None:
    protocol = _protocol(
        Rest(minutes(1)),
        parse_step("Strip at 1 mA for 1 h or until 1 V, then goto end if voltage above 1 V", 2),
    )
    with pytest.raises(ConfigError) as info:
        to_step_file(protocol)
    assert info.value.field == (
        "step 2 'Strip at 1 mA for 1 h or until 1 V, then goto end if voltage above 1 V'"
    )
    assert "runs host-driven only" in info.value.problem
    assert "no conditional jump" in info.value.problem
    with pytest.raises(ConfigError, match="host-driven only"):
        describe(protocol)


@pytest.mark.parametrize(
    "steps",
    [
        (Strip(ma(1), duration=hours(1)), SetTemperature(celsius(60)), Rest(hours(1))),
        (
            SetTemperature(celsius(60)),
            Rest(hours(1)),
            Repeat(1, 2, 3),
            Strip(ma(1), duration=hours(1)),
        ),
    ],
)
def test_a_setpoint_after_the_first_current_step_or_in_a_loop_is_refused_for_neware(
    steps: tuple[Step, ...],
) -> None:
    protocol = _protocol(*steps)
    with pytest.raises(ConfigError) as info:
        to_step_file(protocol)
    assert info.value.field.startswith("step ")
    assert "Set temperature to 60 °C" in info.value.field
    assert "runs host-driven only" in info.value.problem
    assert "before the first current step" in info.value.problem
    HostRun(protocol)  # host-driven, it runs


def test_setpoints_before_the_first_current_are_prestart_actions_taking_no_bts_step() -> None:
    protocol = _protocol(
        SetTemperature(celsius(60), within=celsius(1)),
        Rest(hours(1)),
        SetTemperature(celsius(55)),
        parse_step("Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 within -1 V and 1 V"),
        parse_step("Plate at 0.5 mA/cm2 for 0.5 mAh/cm2 within -1 V and 1 V within 1 mA"),
        Repeat(4, 5, 10),
    )
    assert prestart_setpoints(protocol) == (
        SetTemperature(celsius(60), within=celsius(1)),
        SetTemperature(celsius(55)),
    )
    first = prestart_setpoints(protocol)[0]
    assert (first.setpoint_c, first.band_c, first.timeout_s) == (60.0, 1.0, DEFAULT_SOAK_TIMEOUT_S)
    assert bts_step_ids(protocol) == {2: 1, 4: 2, 5: 3, 6: 4}
    sf = to_step_file(protocol)
    assert [s.step_type for s in sf.steps] == [
        StepType.REST,
        StepType.CC_CHARGE,
        StepType.CC_DISCHARGE,
        StepType.CYCLE,
        StepType.END,
    ]
    assert (sf.steps[3].loop_start_step, sf.steps[3].cycle_count) == (2, 10)
    assert sf.protection.voltage_upper_v is None  # step windows are not whole-test protection
    window = VoltageBetween(volts(-1), volts(1))
    assert step_limits(protocol) == {2: (window,), 3: (window, CurrentBelow(ma(1)))}
    text = describe(protocol)
    assert "before start: chamber to 60 °C, wait until within 1 °C (at most 4 h)" in text
    assert "before start: chamber to 55 °C" in text
    assert (
        "   2  CC_CHARGE     0.3927 mA until 0.3927 mAh (≈ 1 h) × 10; "
        "step limits: voltage -1 V to 1 V\n" in text
    )
    assert "step limits: voltage -1 V to 1 V, |current| ≤ 1 mA" in text


def test_a_protocol_without_extras_has_no_step_limits_or_prestart_setpoints() -> None:
    protocol = asymmetric_cycling(
        CellSpec("asymmetric", diameter_mm=10, thick_li_um=100, thin_li_um=20), cycles=2
    ).protocol
    assert step_limits(protocol) == {}
    assert prestart_setpoints(protocol) == ()
    assert bts_step_ids(protocol) == {1: 1, 2: 2, 3: 3}


# ---------------------------------------------------------------- library, examples


def test_the_library_runs_symmetric_cycling_in_a_chamber_after_a_soak() -> None:
    lp = symmetric_cycling(SYM, cycles=3, temperature_c=60, soak_min=30)
    steps = lp.protocol.steps
    assert steps[0] == SetTemperature(celsius(60), within=celsius(1), timeout=hours(4))
    assert steps[1] == Rest(minutes(30))
    assert steps[4] == Repeat(3, 4, 3)
    assert "at 60 °C" in lp.protocol.name
    sf = to_step_file(lp.protocol)  # the setpoint is a pre-start action on a Neware
    assert sf.steps[0].step_type is StepType.REST
    assert sf.steps[3].loop_start_step == 2
    assert prestart_setpoints(lp.protocol) == (steps[0],)
    with pytest.raises(ConfigError, match="temperature_band_c"):
        symmetric_cycling(SYM, temperature_c=60, temperature_band_c=0)
    with pytest.raises(ConfigError, match="absolute zero"):
        symmetric_cycling(SYM, temperature_c=-300)
    assert symmetric_cycling(SYM).protocol.steps[0] == Strip(ma_cm2(0.5), capacity=mah_cm2(0.5))


def test_the_shipped_examples_load_and_compile_where_they_can() -> None:
    soak = load_protocol_file(EXAMPLES / "symmetric-60C-soak.toml")
    assert prestart_setpoints(soak)[0].setpoint_c == 60.0
    assert set(step_limits(soak)) == {2, 3}
    to_step_file(soak)
    depletion = load_protocol_file(EXAMPLES / "asymmetric-until-depletion.toml")
    with pytest.raises(ConfigError, match="host-driven only"):
        to_step_file(depletion)
    HostRun(depletion)
    strip = depletion.steps[0]
    assert isinstance(strip, Strip)
    assert strip.goto == Goto(4, Condition("voltage above", volts(1)))
    assert dataclasses.replace(strip, source=None).text == strip.text
