"""The protocol text form: the TOML file, step strings, and what their errors say."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared import EXAMPLE_PROTOCOL

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.script import (
    Charge,
    CurrentBelow,
    HoldVoltage,
    Plate,
    Repeat,
    Rest,
    Strip,
    VoltageBetween,
    amps,
    c_rate,
    hours,
    load_protocol_file,
    ma,
    ma_cm2,
    mah,
    mah_cm2,
    millivolts,
    minutes,
    parse_limit,
    parse_protocol_text,
    parse_quantity,
    parse_step,
    seconds,
    volts,
)

EXAMPLE_TOML = EXAMPLE_PROTOCOL


def _toml(cell: str = "", protocol: str = "", steps: str = '"Rest for 1 h"') -> str:
    return (
        f'[cell]\ntype = "symmetric"\ndiameter_mm = 10\n{cell}\n'
        f'[protocol]\nname = "p"\nsteps = [{steps}]\n{protocol}\n'
    )


def test_the_issue_example_file_loads(tmp_path: Path) -> None:
    """The TOML from issue 5 loads as written."""
    path = tmp_path / "asym.toml"
    path.write_text(EXAMPLE_TOML, encoding="utf-8")
    protocol = load_protocol_file(path)
    assert protocol.name == "asymmetric 0.5/0.5"
    assert protocol.cell.thin_li_capacity_mah_cm2 == pytest.approx(4.1)
    assert protocol.steps == (
        Rest(minutes(10)),
        Strip(ma_cm2(0.5), capacity=mah_cm2(0.5)),
        Plate(ma_cm2(0.5), capacity=mah_cm2(0.5)),
        Repeat(2, 3, 500),
    )
    assert protocol.steps[1].text == "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2"
    assert protocol.limits == (VoltageBetween(volts(-5), volts(5)),)
    assert protocol.record_every == seconds(10)


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("Rest for 10 min", Rest(minutes(10))),
        ("rest for 30s", Rest(seconds(30))),
        ("Charge at C/2 until 4.2 V", Charge(c_rate(0.5), until=volts(4.2))),
        ("Charge at 0.5C for 2 h or until 4.2 V", Charge(c_rate(0.5), hours(2), until=volts(4.2))),
        ("Strip at 1 A for 1 mAh", Strip(amps(1), capacity=mah(1))),
        ("Strip at 0.5 mA cm-2 for 1 h", Strip(ma_cm2(0.5), duration=hours(1))),
        ("Plate at 400 uA until -500 mV", Plate(ma(0.4), until=millivolts(-500))),
        (
            "Strip at 0.5 mA/cm2 for 1 h or 0.5 mAh/cm2",
            Strip(ma_cm2(0.5), duration=hours(1), capacity=mah_cm2(0.5)),
        ),
        ("Hold at 4.2 V until C/20", HoldVoltage(volts(4.2), until_current=c_rate(0.05))),
        (
            "Hold at 4.2V for 1 h or until 0.05 mA/cm2",
            HoldVoltage(volts(4.2), until_current=ma_cm2(0.05), duration=hours(1)),
        ),
        ("Repeat steps 2-3 500 times", Repeat(2, 3, 500)),
        ("Repeat step 4 2 times", Repeat(4, 4, 2)),
    ],
)
def test_every_step_form_parses_to_its_model(text: str, step: object) -> None:
    assert parse_step(text) == step


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Strip at 0.5 mA/cm2 fro 1 h",
            "step 3 'Strip at 0.5 mA/cm2 fro 1 h': expected 'for' or 'until' after the "
            "current, got 'fro'",
        ),
        ("Strp at 1 mA for 1 h", "got 'Strp' (did you mean 'Strip'?)"),
        ("Strip 1 mA for 1 h", "expected 'at' after 'Strip', got '1'"),
        ("Strip at 0.5 mA/cm3 for 1 h", "unknown unit 'mA/cm3' in '0.5 mA/cm3'"),
        ("Strip at 1 mA for 4.2 V", "'for' needs a time (s, min, h) or capacity"),
        ("Strip at 1 mA for 1 h for 2 h", "a second for 2 h"),
        ("Strip at 1 mA", "expected 'for' or 'until' after the current, got the end"),
        ("Strip at fast for 1 h", "expected a current (a number and a unit), got 'fast'"),
        ("Strip at 1", "expected a unit after '1'"),
        ("Rest for 10 min please", "unexpected 'please'"),
        ("Repeat steps 2 to 3 5 times", "expected how many times (a whole number), got 'to'"),
        ("Repeat 2-3 5 times", "expected 'steps' after 'Repeat', got '2-3'"),
        ("Repeat steps two 5 times", "expected a step range like 2-3, got 'two'"),
        ("Repeat steps 1-2 5 loops", "expected 'times' after 5, got 'loops'"),
        ("Hold at 4.2 V", "expected 'until <current>' or 'for <time>' after the voltage"),
        ("Charge at C/0 for 1 h", "divides by zero"),
        ("Rest for -5 min", "time must be > 0"),
        ("", "expected a step, got the end of the step"),
    ],
)
def test_parse_errors_quote_the_step_and_the_word_at_fault(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_step(text, 3)
    assert info.value.field == f"step 3 {text!r}"
    assert message in str(info.value)


def test_unit_mix_ups_in_text_name_the_step_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_protocol_text(_toml(steps='"Rest for 1 h", "Strip at 0.5 mAh/cm2 for 1 h"'))
    assert str(info.value) == (
        "step 2 'Strip at 0.5 mAh/cm2 for 1 h': 0.5 mAh/cm2 is a capacity; "
        "a strip needs a current (mA/cm2, mA, A or C-rate)"
    )


def test_limits_parse_and_refuse_nonsense() -> None:
    assert parse_limit("Voltage between -5 V and 5 V") == VoltageBetween(volts(-5), volts(5))
    assert parse_limit("Current below 2 mA") == CurrentBelow(ma(2))
    with pytest.raises(ConfigError, match="expected 'Voltage between") as info:
        parse_limit("Temperature below 5 V", 2)
    assert info.value.field == "protocol.limits[2] 'Temperature below 5 V'"
    with pytest.raises(ConfigError, match="must be below the upper"):
        parse_protocol_text(_toml(protocol='limits = ["Voltage between 5 V and -5 V"]'))
    with pytest.raises(ConfigError, match="is not a current"):
        parse_protocol_text(_toml(protocol='limits = ["Current below 5 V"]'))


@pytest.mark.parametrize(
    ("toml", "field", "hint"),
    [
        (_toml(cell="diamter_mm = 10"), "cell.diamter_mm", "did you mean 'diameter_mm'?"),
        (_toml(protocol="step = []"), "protocol.step", "did you mean 'steps'?"),
        (_toml() + "\n[detector]\nx = 1\n", "detector", "allowed: cell, protocol"),
        (_toml(protocol="record_every = 10"), "protocol.record_every", "like '10 s'"),
        (_toml(protocol='record_every = "10 V"'), "protocol.record_every", "is not a time"),
        (_toml(protocol='record_every = "ten s"'), "protocol.record_every", "got 'ten'"),
        (_toml(steps="1, 2"), "protocol.steps", "list of strings"),
        (_toml(cell='thick_li_um = "100"'), "cell.thick_li_um", "finite number > 0"),
        ('[protocol]\nname = "p"\nsteps = []\n', "[cell]", "required"),
        ('[cell]\ndiameter_mm = 10\n[protocol]\nname = "p"\nsteps = []', "cell.type", "required"),
        ("[cell\n", "protocol file", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key_and_suggest_a_fix(toml: str, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_protocol_text(toml)
    assert info.value.field == field
    assert hint in info.value.problem


def test_missing_name_or_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="required: a name"):
        parse_protocol_text('[cell]\ntype = "full"\n[protocol]\nsteps = ["Rest for 1 h"]\n')
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_protocol_file(tmp_path / "missing.toml")
    assert info.value.field == "path"


def test_record_interval_defaults_to_a_minute() -> None:
    assert parse_protocol_text(_toml()).record_every == seconds(60)


quantities = st.one_of(
    st.builds(ma_cm2, st.floats(min_value=1e-3, max_value=1e3)),
    st.builds(ma, st.floats(min_value=1e-3, max_value=1e3)),
    st.builds(mah_cm2, st.floats(min_value=1e-3, max_value=1e3)),
    st.builds(mah, st.floats(min_value=1e-3, max_value=1e3)),
    st.builds(seconds, st.floats(min_value=1e-3, max_value=1e6)),
    st.builds(c_rate, st.floats(min_value=1e-3, max_value=1e2)),
    st.builds(volts, st.floats(min_value=-10, max_value=10)),
)


@given(quantities)
def test_every_quantity_reads_back_from_its_own_text(q: object) -> None:
    """str(q) is valid protocol text for the same quantity (to 6 significant digits)."""
    back = parse_quantity(str(q))
    assert back.unit == q.unit  # type: ignore[attr-defined]
    assert back.value == pytest.approx(q.value, rel=1e-5, abs=1e-9)  # type: ignore[attr-defined]


@given(st.integers(min_value=1, max_value=10_000), st.sampled_from(["s", "min", "h"]))
def test_times_in_any_unit_parse_to_seconds(n: int, unit: str) -> None:
    factor = {"s": 1, "min": 60, "h": 3600}[unit]
    assert parse_quantity(f"{n} {unit}") == seconds(n * factor)
    assert parse_quantity(f"{n}{unit}") == seconds(n * factor)
