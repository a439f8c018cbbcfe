"""The simulated 2400's brain, line in, reply out: what a real 2400 would answer."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import serial

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


# ------------------------------------------------------------------ the 2400 command set


def reading_fields(sim: SmuSimulator, query: str = ":READ?") -> list[float]:
    return [float(v) for v in (ask(sim, query) or "").split(",")]


def test_an_element_whose_function_is_not_measured_reads_9_91e37() -> None:
    """After *RST a 2400 measures current only: the voltage element is 9.91E+37 until
    :SENS:FUNC "VOLT" turns it on (the sourced current is always read back)."""
    clock = VirtualClock()
    sim = SmuSimulator(clock, seed=1)
    ask(sim, "*RST;:SOUR:CURR:LEV 1e-3;:OUTP ON;:FORM:ELEM VOLT,CURR,RES")
    clock.set(60.0)
    assert reading_fields(sim) == [9.91e37, pytest.approx(1e-3), 9.91e37]
    assert ask(sim, ":SENS:FUNC?") == '"CURR:DC"'
    ask(sim, ':SENS:FUNC "VOLT:DC","RES"')
    voltage_v, current_a, resistance_ohm = reading_fields(sim)
    assert 0 < voltage_v < 0.1
    assert resistance_ohm == pytest.approx(voltage_v / current_a, rel=1e-5)
    assert sim.errors == ()


def test_with_concurrent_off_one_function_replaces_the_other() -> None:
    sim = SmuSimulator(VirtualClock())
    ask(sim, ":SENS:FUNC:CONC OFF")
    assert ask(sim, ":SENS:FUNC?") == '"VOLT:DC"'  # the first of the two kept
    ask(sim, ":SENS:FUNC 'CURR'")
    assert ask(sim, ":SENS:FUNC?;:SENS:FUNC:CONC?") == '"CURR:DC";0'
    assert ask(sim, ':SENS:FUNC "VOLT","CURR"') is None
    assert ask(sim, ":SYST:ERR?") == '-221,"Settings conflict"'


def test_measure_configures_the_function_and_turns_the_output_on() -> None:
    """:MEAS:<f>? is :CONF:<f> and :READ?; :CONF turns the output on at the programmed
    source level, one reading per trigger, as the 2400 manual says."""
    clock = VirtualClock()
    sim = SmuSimulator(clock, seed=2)
    ask(sim, "*RST;:SOUR:CURR 2e-3;:TRIG:COUN 3")
    assert len(reading_fields(sim)) == 3 * 5  # three readings of five elements
    assert not sim.output_on
    voltage_v, current_a = reading_fields(sim, ":MEAS:VOLT?")[:2]
    assert sim.output_on
    assert voltage_v != 9.91e37
    assert current_a == pytest.approx(2e-3)  # the output is on for the reading
    assert ask(sim, ":TRIG:COUN?") == "+1"
    assert sim.sense_functions == {"VOLT", "CURR"}


def test_fetch_answers_the_last_readings_and_refuses_before_any() -> None:
    sim = SmuSimulator(VirtualClock())
    assert ask(sim, ":FETC?") is None
    assert ask(sim, ":SYST:ERR?") == '-230,"Data corrupt or stale"'
    ask(sim, ":INIT")
    first = ask(sim, ":FETC?")
    assert first is not None
    assert ask(sim, ":FETCh?") == first


def test_errors_set_the_standard_event_and_status_bytes() -> None:
    """*ESR? has PON at power-on, a class bit per error (CME 32, EXE 16), and clears on
    reading; *STB? has EAV (4) while the queue holds an error, ESB (32) for an event
    enabled by *ESE, MSS (64) for a bit enabled by *SRE; *CLS clears all of them."""
    sim = SmuSimulator(VirtualClock())
    assert ask(sim, "*ESR?") == "128"
    assert ask(sim, "*ESR?") == "0"
    ask(sim, ":NOPE")
    ask(sim, ":SENS:CURR:NPLC 11")
    assert ask(sim, "*STB?") == "4"
    ask(sim, "*ESE 32;*SRE 32")
    assert ask(sim, "*STB?") == str(4 + 32 + 64)
    assert ask(sim, "*ESR?") == str(32 + 16)
    assert ask(sim, ":SYST:ERR:COUN?") == "+2"
    assert ask(sim, ":SYST:ERR:ALL?") == (
        '-113,"Undefined header",-222,"Parameter data out of range"'
    )
    ask(sim, "*OPC")
    assert ask(sim, "*ESR?") == "1"
    ask(sim, ":NOPE")
    ask(sim, "*CLS")
    assert ask(sim, "*STB?;*ESR?;:SYST:ERR?") == '0;0;0,"No error"'


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (":SENS:VOLTA:RANG 2", '-113,"Undefined header"'),  # neither short nor long form
        (":SENS:VOLT:RANG:AUTO?;:TRIG:BOGUS 1", '-113,"Undefined header"'),
        ("*RST?", '-113,"Undefined header"'),
        ("*RST 1", '-108,"Parameter not allowed"'),
        (":OUTP ON;;:OUTP?", '-102,"Syntax error"'),
        (':SENS:FUNC "VOLT', '-150,"String data error"'),
        (":SENS:CURR:NPLC 20", '-222,"Parameter data out of range"'),
        (":SENS:VOLT:RANG 500", '-222,"Parameter data out of range"'),
        (":TRIG:COUN 100;:ARM:COUN 26", '-221,"Settings conflict"'),  # 2600 > 2500
        (":ROUT:TERM SIDE", '-224,"Illegal parameter value"'),
        (":SENS:FUNC 'POWER'", '-224,"Illegal parameter value"'),
        (":SYST:BEEP 10, 1", '-222,"Parameter data out of range"'),
        (":TRIG:DEL", '-109,"Missing parameter"'),
        (":TRIG:DEL soon", '-104,"Data type error"'),
    ],
)
def test_refusals_of_the_wider_command_set_carry_their_scpi_codes(command: str, error: str) -> None:
    sim = SmuSimulator(VirtualClock())
    ask(sim, command)
    assert ask(sim, ":SYST:ERR?") == error
    assert ask(sim, ":SYST:ERR?") == '0,"No error"'


def test_settings_read_back_as_a_2400_answers_them() -> None:
    """Short or long form, any case; ranges read back as the range chosen, setting one
    turns auto-range off, NPLC is one for every function, MIN/MAX/DEF are numbers."""
    sim = SmuSimulator(VirtualClock())
    ask(sim, ":sense:voltage:range 3;:SENSe:CURRent:NPLCycles 0.5")
    assert ask(sim, ":SENS:VOLT:RANG?;:SENS:VOLT:RANG:AUTO?") == "+2.100000E+01;0"
    assert ask(sim, ":SENS:VOLT:NPLC?;:SENS:RES:NPLC?") == "+5.000000E-01;+5.000000E-01"
    ask(sim, ":SOUR:CURR:RANG 2e-5;:SOUR:DEL MAX;:ARM:TIMer MIN")
    assert ask(sim, ":SOUR:CURR:RANG?") == "+1.050000E-04"
    assert ask(sim, ":SOUR:DEL?;:SOUR:DEL:AUTO?") == "+9.999999E+02;0"
    assert ask(sim, ":ARM:TIM?;:ARM:TIM? MAX") == "+1.000000E-03;+9.999999E+04"
    ask(sim, ":ROUTe:TERMinals rear;:OUTP:SMOD himpedance;:SYST:AZER ONCE")
    assert ask(sim, ":ROUT:TERM?;:OUTP:SMOD?;:SYST:AZER?") == "REAR;HIMP;1"
    ask(sim, "*RST")
    assert ask(sim, ":SENS:VOLT:RANG:AUTO?;:ROUT:TERM?") == "1;FRON"
    assert sim.errors == ()


def test_compliance_shows_in_the_status_word_and_the_trip_query() -> None:
    clock = VirtualClock()
    sim = SmuSimulator(clock, seed=1)
    ask(sim, ":SENS:VOLT:PROT 0.2;:SOUR:CURR:LEV 1;:OUTP ON;:FORM:ELEM VOLT,STAT")
    clock.set(60.0)
    voltage_v, status = reading_fields(sim)
    assert voltage_v == pytest.approx(0.2)
    assert int(status) & 8  # compliance
    assert int(status) & (1 << 15)  # sourcing current
    assert ask(sim, ":SENS:VOLT:PROT:TRIP?;:SENS:CURR:PROT:TRIP?") == "1;0"


def test_the_buffer_fills_and_says_so_in_the_status_byte() -> None:
    """PyMeasure's config_buffer/start_buffer/is_buffer_full sequence."""
    sim = SmuSimulator(VirtualClock())
    ask(sim, ":STAT:PRES;*CLS;*SRE 1;:STAT:MEAS:ENAB 512;")
    ask(sim, ":TRAC:CLEAR;:TRAC:POIN 3;:TRIG:COUN 3;:TRAC:FEED SENSE;:TRAC:FEED:CONT NEXT;")
    assert ask(sim, "*STB?") == "0"
    ask(sim, ":INIT")
    assert int(ask(sim, "*STB?") or "0") & 65 == 65
    assert ask(sim, ":TRAC:POIN:ACT?;:TRAC:FEED:CONT?") == "+3;NEV"
    assert len((ask(sim, ":TRAC:DATA?") or "").split(",")) == 3 * 5
    assert sim.errors == ()
    ask(sim, ":TRAC:CLE")
    assert ask(sim, ":TRAC:DATA?") is None  # never an empty line
    assert ask(sim, ":SYST:ERR?") == '-230,"Data corrupt or stale"'


def test_a_reading_right_after_a_source_change_shows_the_new_source() -> None:
    """No time has to pass: the output settles in microseconds on a real 2400."""
    clock = VirtualClock()
    sim = SmuSimulator(clock, seed=1)
    ask(sim, ":FORM:ELEM CURR;:SOUR:CURR:LEV 1e-3;:OUTP ON")
    assert reading_fields(sim) == [pytest.approx(1e-3)]
    clock.set(60.0)
    ask(sim, ":SOUR:CURR:LEV 2e-3")
    assert reading_fields(sim) == [pytest.approx(2e-3)]
    ask(sim, ":OUTP OFF")
    assert reading_fields(sim) == [0.0]


async def test_its_own_pty_drops_replies_nobody_reads_and_keeps_answering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that writes queries and never reads fills the pty; the simulator drops
    what does not fit (as a UART does) instead of blocking, and answers the next host."""
    caplog.set_level(logging.INFO, logger="cellguard.drivers.smu._ports")
    sim = SmuSimulator(VirtualClock())
    queries = 3000  # ~250 kB of answers: more than a pty holds

    def flood(port: str) -> None:
        with serial.Serial(port, 9600, timeout=5) as host:
            host.write(b"*IDN?\n" * queries)
            host.flush()

    def ask_fresh(port: str) -> bytes:
        with serial.Serial(port, 9600, timeout=5) as host:
            host.reset_input_buffer()  # what a careful host does after opening a port
            host.write(b"*OPC?\n")
            return host.read_until(b"\r")

    async with sim.serve(f"pty:{tmp_path / 'k2400'}") as where:
        await asyncio.to_thread(flood, where)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while sim.lines_served < queries:  # bounded wait for the simulator to catch up
            assert loop.time() < deadline, sim.lines_served
            await asyncio.sleep(0.01)
        assert await asyncio.to_thread(ask_fresh, where) == b"1\r"
    assert "reply bytes dropped" in caplog.text
