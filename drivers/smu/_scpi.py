"""Sans-IO codec of the Keithley 2400 SCPI dialect on RS-232: text lines ⇄ typed values.

No ports and no awaits here, so every rule is testable (and fuzzable) on plain bytes.
Both sides live here: the client encodes program messages and parses replies; the
simulator parses program messages and formats replies the way a 2400 writes them.

Wire rules reproduced:

* The host ends each program message with ``\\n``. The 2400 ends replies with its
  RS-232 terminator setting: ``\\r``, ``\\n``, ``\\r\\n`` or ``\\n\\r``. :class:`LineSplitter`
  accepts all of them by treating either byte as an end of line and dropping the empty
  lines a two-byte terminator leaves; no reply of this command set is ever empty.
* Headers may come in short (``:SOUR:CURR:LEV``) or long form (``:SOURce:CURRent:LEVel``),
  in any case, with or without the leading colon, and with optional nodes
  (``:SOUR:CURR:LEV:IMM:AMPL``, ``:OUTP:STAT``, ``:SENS:VOLT:DC:PROT:LEV``); they are
  folded to one canonical short form, e.g. ``SOUR:CURR:LEV``.
* Several commands may share a line, separated by ``;`` (outside quoted strings, with
  one allowed at the end); after a ``;`` a header without a leading colon continues
  the path of the command before it, as SCPI's relative paths do.
* ``:READ?`` answers the enabled elements in the 2400's fixed order VOLT, CURR, RES,
  TIME, STAT (whatever the order given to ``:FORM:ELEM``), each as ``%+.6E``; STAT is
  the status word, whose bit 3 (value 8) means the source is in compliance.
* ``:SYST:ERR?`` answers ``<code>,"<message>"``; ``0,"No error"`` when the queue is empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from cellguard.drivers.errors import ConfigError, ProtocolViolation

__all__ = [
    "CLEAR",
    "COMPLIANCE_BIT",
    "DEFAULT_MAX_LINE_BYTES",
    "ELEMENTS",
    "ERROR_QUERY",
    "IDN_QUERY",
    "NO_ERROR",
    "NO_VALUE",
    "OUTPUT_QUERY",
    "READING_ELEMENTS",
    "READ_QUERY",
    "RESET",
    "SENSE_CONCURRENT",
    "SENSE_VOLTAGE_AND_CURRENT",
    "Command",
    "Element",
    "ErrorEntry",
    "Identity",
    "LineSplitter",
    "Reading",
    "ScpiSyntaxError",
    "SourceFunction",
    "cmd_compliance",
    "cmd_format_elements",
    "cmd_output",
    "cmd_source_function",
    "cmd_source_level",
    "cmd_source_mode_fixed",
    "cmd_source_range",
    "encode_line",
    "format_bool",
    "format_error",
    "format_identity",
    "format_number",
    "format_reading",
    "format_reply_line",
    "parse_error",
    "parse_identity",
    "parse_number",
    "parse_output_state",
    "parse_program_line",
    "parse_reading",
    "quote_bytes",
]

SourceFunction = Literal["CURR", "VOLT"]
Element = Literal["VOLT", "CURR", "RES", "TIME", "STAT"]
ELEMENTS: tuple[Element, ...] = get_args(Element)
"""Every ``:FORM:ELEM`` element, in the order a 2400 always answers them."""
READING_ELEMENTS: tuple[Element, ...] = ("VOLT", "CURR", "TIME", "STAT")
"""What the client asks ``:READ?`` for."""

COMPLIANCE_BIT = 8
"""Bit 3 of the 2400 status word: the source is limited by its compliance."""

IDN_QUERY = "*IDN?"
RESET = "*RST"
CLEAR = "*CLS"
OUTPUT_QUERY = ":OUTP?"
READ_QUERY = ":READ?"
ERROR_QUERY = ":SYST:ERR?"

# A 2400 reply is at most a few hundred bytes (a buffer dump of 2500 readings is not
# part of this command set); a longer run without a terminator is line noise.
DEFAULT_MAX_LINE_BYTES = 4096
# How much of an offending line an error message quotes.
_QUOTE_BYTES = 80


def quote_bytes(data: bytes, limit: int = _QUOTE_BYTES) -> str:
    """``data`` as a Python bytes literal, cut to ``limit`` bytes with the full length said."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}... ({len(data)} bytes)"


# ---------------------------------------------------------------- framing


class LineSplitter:
    """Cuts a byte stream into lines at ``\\r`` or ``\\n`` (any of the 2400's terminators).

    Empty lines are dropped: a ``\\r\\n`` split across two reads must not yield an empty
    reply. A line longer than ``max_line_bytes`` without a terminator raises
    :class:`ProtocolViolation`; the splitter then starts afresh.
    """

    __slots__ = ("_buffer", "max_line_bytes")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ConfigError(field="max_line_bytes", problem="must be >= 1")
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes received after the last terminator."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget any partial line (after a link is dropped or reopened)."""
        self._buffer.clear()

    def feed(self, data: bytes) -> list[bytes]:
        """Every complete, non-empty line ``data`` finishes, without terminators."""
        lines: list[bytes] = []
        buffer = self._buffer
        buffer += data
        start = 0
        for index, byte in enumerate(buffer):
            if byte in (0x0A, 0x0D):
                if index > start:
                    lines.append(bytes(buffer[start:index]))
                start = index + 1
        del buffer[:start]
        if len(buffer) > self.max_line_bytes:
            head = bytes(buffer)
            buffer.clear()
            msg = (
                f"no line terminator (CR or LF) within {self.max_line_bytes} bytes: "
                f"{quote_bytes(head)}; check the baud rate and the instrument's RS-232 "
                "terminator setting"
            )
            raise ProtocolViolation(msg)
        return lines


def _text(line: bytes, expected: str) -> str:
    """``line`` as ASCII text without surrounding blanks, or a :class:`ProtocolViolation`."""
    try:
        return line.decode("ascii").strip()
    except UnicodeDecodeError:
        msg = (
            f"expected {expected}, got non-ASCII bytes {quote_bytes(line)} "
            "(a wrong baud rate or parity garbles every byte)"
        )
        raise ProtocolViolation(msg) from None


# ---------------------------------------------------------------- numbers

# SCPI <NRf>: NR1 (integer), NR2 (fixed point) or NR3 (with exponent). No inf/nan words:
# the 2400 reports "no value" as 9.91E37, a plain number.
_NRF_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def parse_number(text: str) -> float | None:
    """The value of a SCPI ``<NRf>`` (``+1.5E-03``, ``-2``, ``.5``), or ``None`` if not one."""
    text = text.strip()
    if len(text) > 40 or not _NRF_RE.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def format_number(value: float) -> str:
    """A float as the client sends it: the shortest text that reads back exactly."""
    if not math.isfinite(value):
        raise ConfigError(field="value", problem=f"must be a finite number, got {value!r}")
    # repr is the shortest text that reads back exactly; "1e-05" and "0.001" are <NRf>.
    return repr(float(value))


# ---------------------------------------------------------------- client side: commands


def encode_line(text: str) -> bytes:
    """One program message as bytes, ended by ``\\n``; refuses text that would break framing."""
    if not text or "\n" in text or "\r" in text or ";" in text:
        raise ConfigError(
            field="command", problem=f"must be one non-empty SCPI command, got {text!r}"
        )
    try:
        return text.encode("ascii") + b"\n"
    except UnicodeEncodeError:
        raise ConfigError(field="command", problem=f"must be ASCII, got {text!r}") from None


def _check_function(function: str) -> SourceFunction:
    if function == "CURR":
        return "CURR"
    if function == "VOLT":
        return "VOLT"
    raise ConfigError(field="function", problem=f"must be CURR or VOLT, got {function!r}")


def cmd_source_function(function: SourceFunction) -> str:
    """``:SOUR:FUNC CURR|VOLT``: what the output sources."""
    return f":SOUR:FUNC {_check_function(function)}"


def cmd_source_mode_fixed(function: SourceFunction) -> str:
    """``:SOUR:CURR:MODE FIX``: a fixed level (not a sweep or a list)."""
    return f":SOUR:{_check_function(function)}:MODE FIX"


def cmd_source_range(function: SourceFunction, value: float) -> str:
    """``:SOUR:CURR:RANG <A>``: the instrument picks the lowest range holding ``value``."""
    return f":SOUR:{_check_function(function)}:RANG {format_number(abs(value))}"


def cmd_source_level(function: SourceFunction, value: float) -> str:
    """``:SOUR:CURR:LEV <A>`` or ``:SOUR:VOLT:LEV <V>``."""
    return f":SOUR:{_check_function(function)}:LEV {format_number(value)}"


def cmd_compliance(measured: SourceFunction, limit: float) -> str:
    """``:SENS:VOLT:PROT <V>`` (when sourcing current) or ``:SENS:CURR:PROT <A>``."""
    return f":SENS:{_check_function(measured)}:PROT {format_number(limit)}"


def cmd_output(on: bool) -> str:
    """``:OUTP ON`` or ``:OUTP OFF``."""
    return ":OUTP ON" if on else ":OUTP OFF"


SENSE_CONCURRENT = ":SENS:FUNC:CONC ON"
"""Measure several functions at once (the 2400's *RST default, stated anyway)."""
SENSE_VOLTAGE_AND_CURRENT = ':SENS:FUNC "VOLT","CURR"'
"""Measure voltage and current: a function left off reads 9.91E+37 (``NO_VALUE``), and
after ``*RST`` a 2400 measures current only."""
NO_VALUE = 9.91e37
"""What a 2400 reports for an element it did not measure."""


def cmd_format_elements(elements: Sequence[Element] = READING_ELEMENTS) -> str:
    """``:FORM:ELEM VOLT,CURR,TIME,STAT``: which values ``:READ?`` answers."""
    unknown = [e for e in elements if e not in ELEMENTS]
    if unknown or not elements or len(set(elements)) != len(elements):
        raise ConfigError(
            field="elements",
            problem=f"must be distinct names among {', '.join(ELEMENTS)}, got {list(elements)}",
        )
    return ":FORM:ELEM " + ",".join(elements)


# ---------------------------------------------------------------- client side: replies


@dataclass(frozen=True, slots=True)
class Identity:
    """The four fields of ``*IDN?``; ``model`` without the ``MODEL`` prefix (``2400``)."""

    vendor: str
    model: str
    serial: str
    firmware: str


@dataclass(frozen=True, slots=True)
class Reading:
    """One ``:READ?`` answer in SI units; an element that was not asked for is ``None``."""

    voltage_v: float | None
    current_a: float | None
    resistance_ohm: float | None
    t_s: float | None
    status: int | None

    @property
    def compliance(self) -> bool:
        """The source was limited by its compliance when this reading was taken."""
        return self.status is not None and bool(self.status & COMPLIANCE_BIT)


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One entry of the error queue; ``code`` 0 means the queue is empty."""

    code: int
    message: str

    def __str__(self) -> str:
        return f'{self.code},"{self.message}"'


NO_ERROR = ErrorEntry(0, "No error")


def parse_identity(line: bytes) -> Identity:
    """``KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234567,C30 ...`` → :class:`Identity`."""
    expected = "an *IDN? answer 'vendor,model,serial,firmware'"
    text = _text(line, expected)
    parts = [p.strip() for p in text.split(",", 3)]
    if len(parts) != 4 or not parts[0] or not parts[1]:
        msg = f"expected {expected}, got {quote_bytes(line)}"
        raise ProtocolViolation(msg)
    vendor, model, serial, firmware = parts
    if model.upper().startswith("MODEL "):
        model = model[6:].strip()
    return Identity(vendor, model, serial, firmware)


def parse_reading(line: bytes, elements: Sequence[Element] = READING_ELEMENTS) -> Reading:
    """A ``:READ?`` answer with exactly the values of ``elements`` (in the 2400's order)."""
    ordered = [e for e in ELEMENTS if e in elements]
    expected = f"a :READ? answer of {len(ordered)} numbers ({','.join(ordered)})"
    text = _text(line, expected)
    fields = text.split(",")
    if len(fields) != len(ordered):
        msg = f"expected {expected}, got {len(fields)} field(s): {quote_bytes(line)}"
        raise ProtocolViolation(msg)
    values: dict[str, float] = {}
    for element, field in zip(ordered, fields, strict=True):
        value = parse_number(field)
        if value is None:
            msg = f"expected {expected}; {element} is not a number in {quote_bytes(line)}"
            raise ProtocolViolation(msg)
        values[element] = value
    status: int | None = None
    if "STAT" in values:
        raw = values["STAT"]
        # The status word is a 24-bit integer sent as a float.
        if not (raw == int(raw) and 0 <= raw < 2**24):
            msg = f"expected {expected}; STAT is not a 24-bit status word in {quote_bytes(line)}"
            raise ProtocolViolation(msg)
        status = int(raw)
    return Reading(
        voltage_v=values.get("VOLT"),
        current_a=values.get("CURR"),
        resistance_ohm=values.get("RES"),
        t_s=values.get("TIME"),
        status=status,
    )


def parse_output_state(line: bytes) -> bool:
    """``:OUTP?`` → ``True`` for on (``1``/``ON``), ``False`` for off (``0``/``OFF``)."""
    expected = "an :OUTP? answer 0 or 1"
    text = _text(line, expected).upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    msg = f"expected {expected}, got {quote_bytes(line)}"
    raise ProtocolViolation(msg)


_ERROR_RE = re.compile(r'([+-]?[0-9]{1,6})\s*,\s*"([^"]*)"')


def parse_error(line: bytes) -> ErrorEntry:
    """``-113,"Undefined header"`` → :class:`ErrorEntry`."""
    expected = 'a :SYST:ERR? answer <code>,"<message>"'
    match = _ERROR_RE.fullmatch(_text(line, expected))
    if match is None:
        msg = f"expected {expected}, got {quote_bytes(line)}"
        raise ProtocolViolation(msg)
    return ErrorEntry(int(match.group(1)), match.group(2))


# ---------------------------------------------------------------- instrument side


class ScpiSyntaxError(ProtocolViolation):
    """A program message the instrument cannot parse; ``code`` is its SCPI error number."""

    def __init__(self, code: int, scpi_message: str, line: bytes) -> None:
        self.code = code
        self.scpi_message = scpi_message
        super().__init__(f'{code},"{scpi_message}": {quote_bytes(line)}')


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed program message: canonical short header, query or not, raw argument."""

    header: str
    """Upper case, short form, no leading colon: ``SOUR:CURR:LEV``, ``*IDN``."""
    query: bool
    argument: str = ""


# Mnemonics of the 2400's command tree, long form with the short form in capitals. SCPI
# takes either form, in any case, and nothing in between (``VOLTA`` is no mnemonic).
_KEYWORDS = (
    # root subsystems
    "ABORt",
    "ARM",
    "CALCulate",
    "DISPlay",
    "FETCh",
    "FORMat",
    "INITiate",
    "MEASure",
    "OUTPut",
    "READ",
    "ROUTe",
    "SENSe",
    "SOURce",
    "STATus",
    "SYSTem",
    "TRACe",
    "TRIGger",
    "CONFigure",
    # nodes below them
    "ACTual",
    "ALL",
    "AMPLitude",
    "AUTO",
    "AVERage",
    "AZERo",
    "BEEPer",
    "CLEar",
    "CODE",
    "CONCurrent",
    "CONDition",
    "CONTrol",
    "COUNt",
    "CURRent",
    "DATA",
    "DC",
    "DELay",
    "ELEMents",
    "ENABle",
    "ERRor",
    "EVENt",
    "FEED",
    "FREE",
    "FUNCtion",
    "ILINe",
    "IMMediate",
    "KEY",
    "LAYer",
    "LEVel",
    "LFRequency",
    "LOCal",
    "MEASurement",
    "MODE",
    "NEXT",
    "NPLCycles",
    "OFF",
    "OLINe",
    "ON",
    "OPERation",
    "POINts",
    "PRESet",
    "PROTection",
    "QUEStionable",
    "QUEue",
    "RANGe",
    "REMote",
    "RESet",
    "RESistance",
    "RSENse",
    "RWLock",
    "SEQuence",
    "SMODe",
    "STATe",
    "STATus",
    "TCONtrol",
    "TERMinals",
    "TIME",
    "TIMer",
    "TRIPped",
    "VERSion",
    "VOLTage",
)
_MNEMONICS: dict[str, str] = {}
for _kw in _KEYWORDS:
    _short = "".join(c for c in _kw if c.isupper())
    _MNEMONICS[_kw.upper()] = _short
    _MNEMONICS[_short] = _short
_COMMON_RE = re.compile(r"\*[A-Z]{2,4}")
_MNEMONIC_RE = re.compile(r"([A-Z]+?)([0-9]*)")


# Optional nodes: (node, the nodes it may follow; empty = anywhere). SCPI writes them in
# brackets (``[:SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]``); a 2400 takes a header
# with or without them, so they are dropped before a header is looked up.
_OPTIONAL_NODES: dict[str, frozenset[str]] = {
    "IMM": frozenset(),
    "AMPL": frozenset(),
    "LEV": frozenset({"PROT"}),
    "STAT": frozenset({"OUTP", "AZER", "AVER", "AUTO"}),
    "NEXT": frozenset({"ERR", "QUE"}),
    "DC": frozenset({"CURR", "VOLT"}),
    "SEQ": frozenset({"TRIG", "ARM"}),
    "LAY": frozenset({"TRIG", "ARM"}),
    "ON": frozenset({"FUNC"}),
    "MODE": frozenset({"FUNC"}),
    "EVEN": frozenset({"MEAS", "OPER", "QUES"}),
    "SENS": frozenset({"ELEM"}),
}
# A header may also leave out its root, [:SENSe] or [:SOURce]: which one is implied is
# told by the node after CURR/VOLT (PROTection and NPLCycles belong to the sense side).
_SENSE_ROOTS = frozenset({"FUNC", "RES", "AVER"})
_SOURCE_ROOTS = frozenset({"DEL", "CLE"})
_SENSE_AFTER_QUANTITY = frozenset({"PROT", "NPLC"})


def _canonical(nodes: list[str]) -> str:
    """Drop the optional nodes of this command set, and fill in the implied root and ``LEV``."""
    kept: list[str] = []
    for node in nodes:
        after = _OPTIONAL_NODES.get(node)
        if after is not None and (not after or (kept and kept[-1] in after)):
            continue
        kept.append(node)
    if kept[:1] in (["CURR"], ["VOLT"]):
        kept.insert(0, "SENS" if kept[1:2] and kept[1] in _SENSE_AFTER_QUANTITY else "SOUR")
    elif kept[:1] and kept[0] in _SENSE_ROOTS:
        kept.insert(0, "SENS")
    elif kept[:1] and kept[0] in _SOURCE_ROOTS:
        kept.insert(0, "SOUR")
    if kept in (["SOUR", "CURR"], ["SOUR", "VOLT"]):
        kept.append("LEV")  # :SOUR:CURR <A> is :SOUR:CURR:LEV:IMM:AMPL <A>
    return ":".join(kept)


def _nodes(head: str, path: list[str], line: bytes) -> list[str]:
    """The short-form nodes of ``head``, relative to ``path`` unless it starts with a colon."""
    rooted = head.startswith(":")
    nodes = [] if rooted else list(path)
    for raw in head.removeprefix(":").split(":"):
        match = _MNEMONIC_RE.fullmatch(raw)
        if match is None or match.group(1) not in _MNEMONICS:
            raise ScpiSyntaxError(-113, "Undefined header", line)
        # Numeric suffixes (SOUR1, SENS1, SEQ1) name the one channel or layer a 2400 has.
        if match.group(2) not in ("", "1"):
            raise ScpiSyntaxError(-114, "Header suffix out of range", line)
        nodes.append(_MNEMONICS[match.group(1)])
    return nodes


def _split_commands(text: str, line: bytes) -> list[str]:
    """``text`` cut at the semicolons outside quoted strings; a trailing one ends nothing."""
    parts: list[str] = []
    start = 0
    quote = ""
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == ";":
            parts.append(text[start:index])
            start = index + 1
    if quote:
        raise ScpiSyntaxError(-150, "String data error", line)  # an unterminated string
    last = text[start:]
    # PyMeasure and many LabVIEW programs end messages with ";" (":TRAC:CLEAR;"); a 2400
    # takes that, so only a missing command between two separators is a syntax error.
    if last.strip() or not parts:
        parts.append(last)
    return parts


def parse_program_line(line: bytes) -> list[Command]:
    """Every command of one program message line (``;`` separates several).

    After a ``;``, a header without a leading colon continues the path of the command
    before it, as SCPI requires (``:SOUR:CURR:RANG 1;LEV 0.5`` sets ``SOUR:CURR:LEV``);
    common commands (``*CLS``) leave the path as it was. Raises :class:`ScpiSyntaxError`
    (a :class:`ProtocolViolation`) with the SCPI error code for a line that is not ASCII
    or has an empty command (-102), an unterminated string (-150), an unknown header
    (-113) or a channel suffix other than 1 (-114).
    """
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ScpiSyntaxError(-102, "Syntax error", line) from None
    if any(ord(c) < 0x20 and c != "\t" for c in text):
        raise ScpiSyntaxError(-102, "Syntax error", line)
    commands: list[Command] = []
    path: list[str] = []
    for part in _split_commands(text, line):
        fields = part.strip().split(None, 1)
        if not fields:
            raise ScpiSyntaxError(-102, "Syntax error", line)
        head = fields[0]
        argument = fields[1].strip() if len(fields) > 1 else ""
        query = head.endswith("?")
        head = (head[:-1] if query else head).upper()
        if head.startswith("*"):
            if not _COMMON_RE.fullmatch(head):
                raise ScpiSyntaxError(-113, "Undefined header", line)
            commands.append(Command(head, query, argument))
            continue
        nodes = _nodes(head, path if commands else [], line)
        path = nodes[:-1]
        commands.append(Command(_canonical(nodes), query, argument))
    return commands


def format_reading(values: Iterable[float]) -> str:
    """Values as a 2400 writes them: ``+1.234560E-02,+5.000000E-04,...``."""
    return ",".join(f"{v:+.6E}" for v in values)


def format_error(entry: ErrorEntry) -> str:
    """``-113,"Undefined header"``."""
    return str(entry)


def format_identity(identity: Identity) -> str:
    """``KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234567,C30 ...``."""
    return ",".join(
        (identity.vendor, f"MODEL {identity.model}", identity.serial, identity.firmware)
    )


def format_bool(value: bool) -> str:
    """``1`` or ``0``, as a 2400 answers ``:OUTP?``."""
    return "1" if value else "0"


def format_reply_line(replies: Sequence[str], terminator: bytes) -> bytes:
    """The answers to one program message line, joined by ``;`` as SCPI does."""
    return ";".join(replies).encode("ascii") + terminator
