"""The sans-IO SCPI codec of the 2400: framing, headers, replies, and fuzzing."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellguard.drivers.errors import ConfigError, ProtocolViolation
from cellguard.drivers.smu import (
    COMPLIANCE_BIT,
    ErrorEntry,
    Identity,
    LineSplitter,
    ScpiSyntaxError,
    parse_error,
    parse_identity,
    parse_output_state,
    parse_program_line,
    parse_reading,
)
from cellguard.drivers.smu._scpi import (
    cmd_compliance,
    cmd_format_elements,
    cmd_source_level,
    cmd_source_range,
    encode_line,
    format_error,
    format_identity,
    format_reading,
    format_reply_line,
    parse_number,
)

REAL_IDN = b"KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234567,C30   Mar 17 2006 09:29:29/A02  /K/J"
finite = st.floats(allow_nan=False, allow_infinity=False)

# ------------------------------------------------------------------ framing


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n", b"\n\r"])
def test_splitter_accepts_every_terminator_the_2400_can_be_set_to(terminator: bytes) -> None:
    splitter = LineSplitter()
    data = b"1" + terminator + b'0,"No error"' + terminator
    assert splitter.feed(data) == [b"1", b'0,"No error"']
    assert splitter.pending_bytes == 0


def test_a_crlf_split_across_reads_yields_no_empty_line() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"+1.0E+00\r") == [b"+1.0E+00"]
    assert splitter.feed(b"\n0") == []
    assert splitter.feed(b"\r") == [b"0"]


@given(
    lines=st.lists(
        st.binary(min_size=1, max_size=30).map(
            lambda b: b.replace(b"\r", b"x").replace(b"\n", b"y")
        ),
        max_size=8,
    ),
    terminator=st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_lines_do_not_depend_on_how_the_stream_is_cut(
    lines: list[bytes], terminator: bytes, cuts: list[int]
) -> None:
    stream = b"".join(line + terminator for line in lines)
    splitter = LineSplitter()
    got: list[bytes] = []
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        got += splitter.feed(stream[start:cut])
        start = cut
    assert got == lines


def test_an_endless_line_is_a_protocol_violation_and_the_splitter_recovers() -> None:
    splitter = LineSplitter(max_line_bytes=16)
    with pytest.raises(ProtocolViolation, match="no line terminator") as info:
        splitter.feed(b"x" * 200)
    assert "(200 bytes)" not in str(info.value) or "..." in str(info.value)
    assert splitter.feed(b"1\r") == [b"1"]


@given(st.binary(max_size=300))
def test_garbage_in_the_splitter_raises_nothing_but_protocol_violation(data: bytes) -> None:
    splitter = LineSplitter(max_line_bytes=64)
    try:
        lines = splitter.feed(data)
    except ProtocolViolation:
        return
    assert all(line and b"\r" not in line and b"\n" not in line for line in lines)


# ------------------------------------------------------------------ program messages


@pytest.mark.parametrize(
    ("text", "header", "query", "argument"),
    [
        (b":SOUR:CURR:LEV 1e-3", "SOUR:CURR:LEV", False, "1e-3"),
        (b":source:current:level:immediate:amplitude -0.5", "SOUR:CURR:LEV", False, "-0.5"),
        (b"SOUR1:CURR 0.25", "SOUR:CURR:LEV", False, "0.25"),
        (b":CURR:LEV 0.25", "SOUR:CURR:LEV", False, "0.25"),
        (b":SENS:VOLT:DC:PROT:LEV 5", "SENS:VOLT:PROT", False, "5"),
        (b":VOLT:PROT 5", "SENS:VOLT:PROT", False, "5"),
        (b":OUTPut:STATe ON", "OUTP", False, "ON"),
        (b":OUTP?", "OUTP", True, ""),
        (b":SYST:ERR:NEXT?", "SYST:ERR", True, ""),
        (b"*idn?", "*IDN", True, ""),
        (b":FORM:ELEM VOLT,CURR,TIME,STAT", "FORM:ELEM", False, "VOLT,CURR,TIME,STAT"),
    ],
)
def test_headers_fold_to_one_canonical_short_form(
    text: bytes, header: str, query: bool, argument: str
) -> None:
    (command,) = parse_program_line(text)
    assert (command.header, command.query, command.argument) == (header, query, argument)


def test_several_commands_share_a_line() -> None:
    commands = parse_program_line(b":OUTP OFF;:OUTP?")
    assert [(c.header, c.query) for c in commands] == [("OUTP", False), ("OUTP", True)]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b":SOUR:BOGUS 1", -113),
        (b":SOUR2:CURR 1", -114),
        (b"*", -113),
        (b"\xff\xfe", -102),
        (b";", -102),
    ],
)
def test_unparseable_program_lines_carry_their_scpi_error_code(text: bytes, code: int) -> None:
    with pytest.raises(ScpiSyntaxError) as info:
        parse_program_line(text)
    assert info.value.code == code
    assert isinstance(info.value, ProtocolViolation)


@given(st.binary(max_size=200))
def test_garbage_program_lines_raise_only_scpi_syntax_errors(data: bytes) -> None:
    try:
        commands = parse_program_line(data)
    except ScpiSyntaxError:
        return
    assert commands


@given(value=finite, function=st.sampled_from(["CURR", "VOLT"]))
def test_a_level_reads_back_exactly_what_the_client_encoded(value: float, function: str) -> None:
    line = encode_line(cmd_source_level(function, value))  # type: ignore[arg-type]
    assert line.endswith(b"\n")
    (command,) = parse_program_line(line.rstrip(b"\n"))
    assert command.header == f"SOUR:{function}:LEV"
    assert parse_number(command.argument) == value


@given(value=st.floats(min_value=1e-9, max_value=1e9))
def test_compliance_and_range_read_back_exactly(value: float) -> None:
    (command,) = parse_program_line(encode_line(cmd_compliance("VOLT", value)).strip())
    assert (command.header, parse_number(command.argument)) == ("SENS:VOLT:PROT", value)
    (command,) = parse_program_line(encode_line(cmd_source_range("CURR", -value)).strip())
    assert (command.header, parse_number(command.argument)) == ("SOUR:CURR:RANG", value)


@pytest.mark.parametrize("bad", ["", ":OUTP ON\n", ":OUTP ON;*RST", "µ"])
def test_encode_refuses_text_that_would_break_the_framing(bad: str) -> None:
    with pytest.raises(ConfigError, match="command"):
        encode_line(bad)


def test_encoders_refuse_what_the_instrument_cannot_take() -> None:
    with pytest.raises(ConfigError, match="finite"):
        cmd_source_level("CURR", math.inf)
    with pytest.raises(ConfigError, match="CURR or VOLT"):
        cmd_source_level("RES", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="elements"):
        cmd_format_elements(["VOLT", "WATT"])  # type: ignore[list-item]
    assert cmd_format_elements() == ":FORM:ELEM VOLT,CURR,TIME,STAT"


# ------------------------------------------------------------------ replies


def test_the_real_idn_answer_parses() -> None:
    identity = parse_identity(REAL_IDN)
    assert identity == Identity(
        "KEITHLEY INSTRUMENTS INC.", "2400", "1234567", "C30   Mar 17 2006 09:29:29/A02  /K/J"
    )
    assert format_identity(identity).encode() == REAL_IDN


def test_the_documented_reading_parses() -> None:
    reading = parse_reading(b"+1.234560E-02,+5.000000E-04,+1.234000E+02,+0.000000E+00")
    assert reading.voltage_v == pytest.approx(0.0123456)
    assert reading.current_a == pytest.approx(5e-4)
    assert reading.t_s == pytest.approx(123.4)
    assert reading.status == 0
    assert not reading.compliance
    assert parse_reading(b"+5.0E+00,+1.0E-03,+1.0E+00,+8.000000E+00").compliance


@given(
    volts=finite,
    amps=finite,
    t_s=st.floats(min_value=0, max_value=1e9),
    # The 2400 sends STAT with 7 digits too: exact below 10⁷ (every bit up to 22 alone).
    status=st.integers(min_value=0, max_value=10**7 - 1),
)
def test_readings_round_trip_at_the_2400s_seven_digits(
    volts: float, amps: float, t_s: float, status: int
) -> None:
    line = format_reading([volts, amps, t_s, float(status)]).encode()
    try:
        reading = parse_reading(line)
    except ProtocolViolation:
        # Only a value that %E rounds past the largest float (inf) may fail.
        assert "inf" in line.decode().lower()
        return
    assert reading.voltage_v == pytest.approx(volts, rel=1e-6, abs=1e-300)
    assert reading.current_a == pytest.approx(amps, rel=1e-6, abs=1e-300)
    assert reading.t_s == pytest.approx(t_s, rel=1e-6, abs=1e-300)
    assert reading.status == status
    assert reading.compliance == bool(status & COMPLIANCE_BIT)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"+1.0E+00,+2.0E+00,+3.0E+00", "got 3 field"),
        (b"+1.0E+00,abc,+3.0E+00,+0.0E+00", "CURR is not a number"),
        (b"nan,+1.0E+00,+3.0E+00,+0.0E+00", "VOLT is not a number"),
        (b"+1.0E+00,+1.0E+00,+3.0E+00,+0.5E+00", "status word"),
        (b"+1.0E+00,+1.0E+00,+3.0E+00,-8.0E+00", "status word"),
        (b"\xff\xfe,1,2,3", "non-ASCII"),
    ],
)
def test_malformed_readings_say_what_was_expected_and_quote_the_bytes(
    line: bytes, match: str
) -> None:
    with pytest.raises(ProtocolViolation, match=match) as info:
        parse_reading(line)
    assert "expected a :READ? answer of 4 numbers" in str(info.value)
    assert repr(line)[:20] in str(info.value)


def test_long_garbage_is_quoted_cut_short() -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_identity(b"x" * 5000)
    assert "(5000 bytes)" in str(info.value)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("line", "on"), [(b"1", True), (b"0", False), (b" ON ", True), (b"off", False)]
)
def test_output_state(line: bytes, on: bool) -> None:
    assert parse_output_state(line) is on


def test_error_queue_entries() -> None:
    assert parse_error(b'0,"No error"') == ErrorEntry(0, "No error")
    assert parse_error(b'-113,"Undefined header"') == ErrorEntry(-113, "Undefined header")
    assert format_error(ErrorEntry(-221, "Settings conflict")) == '-221,"Settings conflict"'
    with pytest.raises(ProtocolViolation, match="SYST:ERR"):
        parse_error(b"-113 Undefined header")


def test_replies_to_one_line_are_joined_by_semicolons() -> None:
    assert format_reply_line(["1", '0,"No error"'], b"\r\n") == b'1;0,"No error"\r\n'


@given(st.binary(max_size=200))
def test_garbage_replies_raise_nothing_but_protocol_violation(data: bytes) -> None:
    for parse in (parse_identity, parse_reading, parse_output_state, parse_error):
        with contextlib.suppress(ProtocolViolation):
            parse(data)


@given(
    vendor=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=","),
        min_size=1,
        max_size=20,
    ),
    model=st.from_regex(r"[0-9]{4}[A-Z]?", fullmatch=True),
    serial=st.from_regex(r"[0-9A-Z]{1,10}", fullmatch=True),
    firmware=st.from_regex(r"[ -~]{0,30}", fullmatch=True),
)
def test_identities_round_trip(vendor: str, model: str, serial: str, firmware: str) -> None:
    identity = Identity(vendor, model, serial, firmware.strip())
    assert parse_identity(format_identity(identity).encode()) == identity


@pytest.mark.parametrize(
    ("text", "headers"),
    [
        # SCPI relative paths: after ";" a header without a colon continues the path.
        (b":SOUR:CURR:RANG 1;LEV 0.5", ["SOUR:CURR:RANG", "SOUR:CURR:LEV"]),
        (b":SENS:VOLT:NPLC 1;*CLS;RANG 2", ["SENS:VOLT:NPLC", "*CLS", "SENS:VOLT:RANG"]),
        # A trailing ";" (PyMeasure's ":TRAC:CLEAR;") ends nothing.
        (b":TRAC:CLEAR;", ["TRAC:CLE"]),
        # A ";" inside a quoted string is no separator.
        (b":SENS:FUNC 'VOLT;CURR';:OUTP?", ["SENS:FUNC", "OUTP"]),
        # Optional nodes and roots.
        (b":TRIGger:SEQuence1:COUNt 5", ["TRIG:COUN"]),
        (b":ARM:SEQ:LAY:COUN 2", ["ARM:COUN"]),
        (b":SENS:FUNC:ON 'VOLT'", ["SENS:FUNC"]),
        (b":FUNC 'VOLT'", ["SENS:FUNC"]),
        (b":SOURce:FUNCtion:MODE CURR", ["SOUR:FUNC"]),
        (b":VOLT:NPLC 1", ["SENS:VOLT:NPLC"]),
        (b":STATus:MEASurement:EVENt?", ["STAT:MEAS"]),
        (b":STAT:QUE:NEXT?", ["STAT:QUE"]),
        (b":FORM:ELEM:SENS VOLT", ["FORM:ELEM"]),
        (b":SYST:AZER:STAT ON", ["SYST:AZER"]),
        (b":MEASure:VOLTage:DC?", ["MEAS:VOLT"]),
        (b":syst:beep:stat off", ["SYST:BEEP:STAT"]),
    ],
)
def test_paths_separators_and_optional_nodes_as_scpi_requires(
    text: bytes, headers: list[str]
) -> None:
    assert [c.header for c in parse_program_line(text)] == headers


def test_a_header_that_is_neither_short_nor_long_form_is_undefined() -> None:
    with pytest.raises(ScpiSyntaxError) as info:
        parse_program_line(b":SENS:VOLTA:RANG 2")
    assert info.value.code == -113
