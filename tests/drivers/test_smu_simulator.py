"""The simulated 2400's brain, line in, reply out: what a real 2400 would answer."""

from __future__ import annotations

import pytest

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.smu import SMU_CELL_PRESETS, SmuSimulator, make_cell, parse_reading


def ask(sim: SmuSimulator, line: str) -> str | None:
    reply = sim.handle_line(line.encode())
    return None if reply is None else reply.decode().rstrip("\r\n")


def test_an_unknown_command_gets_no_answer_but_an_error_queue_entry() -> None:
    sim = SmuSimulator(VirtualClock())
    assert ask(sim, ":SOUR:BOGUS 3") is None
    assert ask(sim, ":SYST:ERR?") == '-113,"Undefined header"'
    assert ask(sim, ":SYST:ERR?") == '0,"No error"'


def test_the_rest_of_a_line_after_an_error_is_ignored() -> None:
    sim = SmuSimulator(VirtualClock())
    assert ask(sim, ":SOUR:CURR:LEV abc;:OUTP ON") is None
    assert not sim.output_on
    assert ask(sim, ":SYST:ERR?") == '-104,"Data type error"'


def test_the_error_queue_holds_ten_and_says_it_overflowed() -> None:
    sim = SmuSimulator(VirtualClock())
    for _ in range(15):
        ask(sim, ":NOPE")
    answers = [ask(sim, ":SYST:ERR?") for _ in range(11)]
    assert answers[:9] == ['-113,"Undefined header"'] * 9
    assert answers[9:] == ['-350,"Queue overflow"', '0,"No error"']
    ask(sim, ":NOPE")
    ask(sim, "*CLS")
    assert sim.errors == ()


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (":SOUR:CURR:LEV 2", '-222,"Parameter data out of range"'),
        (":SENS:VOLT:PROT 0.01", '-222,"Parameter data out of range"'),
        (":SOUR:CURR:LEV", '-109,"Missing parameter"'),
        (":OUTP MAYBE", '-224,"Illegal parameter value"'),
        (":SOUR:CURR:MODE SWE", '-224,"Illegal parameter value"'),
        (":FORM:ELEM VOLT,WATT", '-224,"Illegal parameter value"'),
        (":SOUR:FUNC VOLT", '-221,"Settings conflict"'),  # a Li|Li cell has no inverse
    ],
)
def test_refusals_carry_the_2400s_error_codes(command: str, error: str) -> None:
    sim = SmuSimulator(VirtualClock())
    assert ask(sim, command) is None
    assert ask(sim, ":SYST:ERR?") == error


def test_queries_answer_in_2400_formats_and_share_a_line() -> None:
    sim = SmuSimulator(VirtualClock(), terminator=b"\r\n")
    assert sim.handle_line(b":OUTP ON;:OUTP?;*OPC?") == b"1;1\r\n"
    assert ask(sim, ":source:current:level:immediate:amplitude 1.5e-3") is None
    assert ask(sim, ":SOUR:CURR?") == "+1.500000E-03"
    assert ask(sim, ":SENS:VOLT:PROT 4.2;:VOLT:PROT?") == "+4.200000E+00"
    assert ask(sim, ":FORM:ELEM STAT,VOLT") is None
    assert ask(sim, ":FORM:ELEM?") == "VOLT,STAT"


def test_readings_follow_the_clock_and_the_elements_asked_for() -> None:
    clock = VirtualClock()
    sim = SmuSimulator(clock, seed=3)
    for line in (":FORM:ELEM VOLT,CURR,TIME,STAT", ":SOUR:CURR:LEV 1e-3", ":OUTP ON"):
        ask(sim, line)
    clock.set(3600.0)
    reading = parse_reading((ask(sim, ":READ?") or "").encode())
    assert reading.t_s == 3600.0
    assert reading.current_a == pytest.approx(1e-3)
    assert reading.voltage_v is not None
    assert reading.voltage_v > 0
    assert sim.cell.t_s == pytest.approx(3600.0)
    ask(sim, ":SYST:TIME:RES")
    clock.set(3610.0)
    assert parse_reading((ask(sim, ":READ?") or "").encode()).t_s == pytest.approx(10.0)
    ask(sim, "*RST")
    assert not sim.output_on


def test_with_the_output_off_the_cell_rests() -> None:
    clock = VirtualClock()
    sim = SmuSimulator(clock, seed=3)
    ask(sim, ":SOUR:CURR:LEV 1e-3;:FORM:ELEM VOLT,CURR,TIME,STAT")
    clock.set(600.0)
    reading = parse_reading((ask(sim, ":READ?") or "").encode())
    assert reading.current_a == 0.0
    assert reading.voltage_v is not None
    assert abs(reading.voltage_v) < 1e-3
    assert sim.cell.li_working_mah_cm2 == pytest.approx(100 * 0.205, rel=1e-3)


def test_a_full_cell_is_held_at_a_voltage_within_the_current_compliance() -> None:
    clock = VirtualClock()
    sim = SmuSimulator(clock, cell="full")
    for line in (":SOUR:FUNC VOLT", ":SENS:CURR:PROT 1e-3", ":SOUR:VOLT:LEV 4.1", ":OUTP ON"):
        assert ask(sim, line) is None
    assert sim.errors == ()
    clock.set(60.0)
    ask(sim, ":READ?")
    assert sim.current_a == pytest.approx(1e-3)  # far from 4.1 V: limited, in compliance
    assert sim.in_compliance


def test_cell_presets_and_bad_names() -> None:
    assert {"SEI-symmetric", "MII-1-asymmetric", "full"} <= set(SMU_CELL_PRESETS)
    assert make_cell("MII-1-asymmetric", 1).li_working_mah_cm2 == pytest.approx(20 * 0.205)
    with pytest.raises(ConfigError, match="cell: must be one of"):
        make_cell("LFP", 1)
    with pytest.raises(ConfigError, match="terminator"):
        SmuSimulator(VirtualClock(), terminator=b";")
