"""A simulated Keithley 2400 on a real serial line, with a simulated cell on its terminals.

It answers the 2400's SCPI on a serial device (one end of a socat pty pair, a USB
adapter, opened again whenever it goes away), on a pty of its own (``pty:PATH``) or,
given ``socket://HOST:PORT``, on a TCP listener (see :mod:`._ports`), so
:class:`~cellguard.drivers.smu.SmuClient` and other people's clients (PyMeasure's
``Keithley2400``, LabVIEW-style programs) run unchanged against it.

The command set is the one such programs use: ``:SOUR`` (function, level, range, mode,
delay), ``:SENS`` (functions, concurrent, ranges, NPLC, compliance and its trip query,
filter), ``:MEAS?``/``:CONF``/``:READ?``/``:INIT``/``:FETC?``, the trigger model's counts,
delays and sources, ``:FORM:ELEM``, the reading buffer (``:TRAC``), ``:SYST`` (errors,
beeper, line frequency, auto-zero, remote sense), ``:DISP:ENAB``, ``:ROUT:TERM``, the
``:STAT`` registers and the IEEE 488.2 common commands (see :mod:`._registers`); plain
stored settings are one table in :mod:`._settings`. A function that is not measured reads
``+9.91E+37``; the status element carries the compliance (bit 3), measured-function,
source-function, filter, terminal and remote-sense bits. ``:CONF``/``:MEAS?`` turn the
output on, as the 2400 manual says. ``*RST`` leaves current as the only sense function;
the simulator powers on measuring voltage and current too (a bench's saved setup).

The cell (:mod:`cellguard.drivers.sim`) is brought up to the simulator's clock before
every command, in steps of at most ``max_step_s``, so on a
:class:`~cellguard.drivers.clock.ScaledClock` a 500 h test runs in minutes and on a
:class:`~cellguard.drivers.clock.VirtualClock` tests move time themselves.

What it simplifies, on purpose:

* **Compliance while sourcing current.** A full cell (:class:`SimFullCell`) is held at
  the compliance voltage with the current that keeps it there (never more than the set
  current), as a real source does when it turns into a voltage source. A Li|Li cell
  (:class:`SimCell`) has no inverse, so its current stays at the set value, and the
  reading is clamped to ±compliance with the status bit 3 set: what the host sees is
  the same, the Li moved is slightly more than a real SMU would move.
* **Voltage source mode** needs ``current_for_voltage``: a full cell has it; for a
  Li|Li cell ``:SOUR:FUNC VOLT`` is refused with ``-221,"Settings conflict"``.
* **Output off.** No current flows and the cell rests; ``:READ?`` still answers with
  the open-circuit voltage and zero current (a real 2400 opens its output relay and
  would not measure: hosts that want the OCV source 0 A with the output on).
* ``*RST`` leaves the source function at current (a real 2400 resets to voltage).

As a 2400 does, a command it does not understand gets no answer: the error goes to the
queue that ``:SYST:ERR?`` reads, and the rest of that line is ignored.

Two fault injections stand in for a misbehaving line or instrument: :meth:`hold`
makes it stop answering (busy, as during a long measurement) until :meth:`release`,
and :attr:`SmuSimulator.drop_queries` lists queries it treats as garbled on the way
(no answer, an error in the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import Literal, cast

from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.drivers.sim import INTERPHASES, SimCell, SimCellSpec, SimFullCell, SimFullCellSpec
from cellguard.drivers.smu._ports import PTY_PREFIX, pty_lines, pty_path, serial_lines
from cellguard.drivers.smu._registers import (
    BUFFER_FULL_BIT,
    OPC_BIT,
    StatusRegisters,
    StatusSystem,
)
from cellguard.drivers.smu._scpi import (
    COMPLIANCE_BIT,
    ELEMENTS,
    NO_VALUE,
    Command,
    Element,
    ErrorEntry,
    Identity,
    LineSplitter,
    ScpiSyntaxError,
    format_bool,
    format_error,
    format_identity,
    format_reading,
    format_reply_line,
    parse_program_line,
)
from cellguard.drivers.smu._settings import (
    SETTINGS,
    Refused,
    boolean,
    defaults,
    format_value,
    number,
    reply_number,
)
from cellguard.drivers.smu._transport import SerialSettings

__all__ = [
    "DEFAULT_CELL",
    "SMU_CELL_PRESETS",
    "SimulatedCell",
    "SmuSimulator",
    "make_cell",
]

log = logging.getLogger(__name__)

SimulatedCell = SimCell | SimFullCell


def _presets() -> dict[str, Callable[[int], SimulatedCell]]:
    presets: dict[str, Callable[[int], SimulatedCell]] = {}
    for name in INTERPHASES:
        presets[f"{name}-symmetric"] = functools.partial(SimCell, SimCellSpec(interphase=name))
        presets[f"{name}-asymmetric"] = functools.partial(
            SimCell, SimCellSpec(interphase=name, li_working_um=20.0)
        )
    presets["full"] = functools.partial(SimFullCell, SimFullCellSpec())
    return presets


SMU_CELL_PRESETS: Mapping[str, Callable[[int], SimulatedCell]] = MappingProxyType(_presets())
"""Cells by name: ``<interphase>-symmetric`` (Li 100|100 µm), ``<interphase>-asymmetric``
(100|20 µm) for the interphases MII-1, MII-2, MII-3 and SEI on 0.785 cm², and ``full``
(a 2 mAh graphite|NMC-like cell)."""

DEFAULT_CELL = "SEI-symmetric"


def make_cell(preset: str, seed: int) -> SimulatedCell:
    """The cell named ``preset`` (see :data:`SMU_CELL_PRESETS`), seeded."""
    try:
        factory = SMU_CELL_PRESETS[preset]
    except KeyError:
        raise ConfigError(
            field="cell", problem=f"must be one of {', '.join(SMU_CELL_PRESETS)}, got {preset!r}"
        ) from None
    return factory(seed)


# What a 2400 accepts (its largest ranges).
_MAX_CURRENT_A = 1.05
_MAX_VOLTAGE_V = 210.0
_MIN_VOLTAGE_PROT_V = 0.2
_FIRMWARE = "C30   Mar 17 2006 09:29:29/A02  /K/J"
_VENDOR = "KEITHLEY INSTRUMENTS INC."
_SCPI_VERSION = "1996.0"

_ELEMENT_WORDS: dict[str, Element] = {
    "VOLT": "VOLT",
    "VOLTAGE": "VOLT",
    "CURR": "CURR",
    "CURRENT": "CURR",
    "RES": "RES",
    "RESISTANCE": "RES",
    "TIME": "TIME",
    "STAT": "STAT",
    "STATUS": "STAT",
}
SenseFunction = Literal["VOLT", "CURR", "RES"]
_SENSE_ORDER: tuple[SenseFunction, ...] = ("VOLT", "CURR", "RES")
_SENSE_WORDS: dict[str, SenseFunction] = {}
for _name, _function in (("VOLT", "VOLT"), ("CURR", "CURR"), ("RES", "RES")):
    for _word in {_name, {"VOLT": "VOLTAGE", "CURR": "CURRENT", "RES": "RESISTANCE"}[_name]}:
        _SENSE_WORDS[_word] = _function  # type: ignore[assignment]
        if _function != "RES":
            _SENSE_WORDS[f"{_word}:DC"] = _function  # type: ignore[assignment]
# How :SENS:FUNC? names them.
_SENSE_REPLY = {"VOLT": '"VOLT:DC"', "CURR": '"CURR:DC"', "RES": '"RES"'}

# Bits of the status word (:FORM:ELEM STAT), from the 2400 manual's list.
_STAT_FILTER = 1 << 1
_STAT_FRONT = 1 << 2
_STAT_V_MEAS = 1 << 11
_STAT_I_MEAS = 1 << 12
_STAT_R_MEAS = 1 << 13
_STAT_V_SOURCE = 1 << 14
_STAT_I_SOURCE = 1 << 15
_STAT_REMOTE_SENSE = 1 << 22
_MAX_READINGS = 2500


def _on_off(argument: str) -> bool:
    return boolean(argument)


def _number(argument: str, low: float, high: float) -> float:
    return number(argument, low, high, 0.0 if low <= 0.0 <= high else low)


def _no_argument(argument: str) -> None:
    if argument:
        raise Refused(-108, "Parameter not allowed")


def _mask(argument: str) -> int:
    return round(number(argument, 0, 255, 0))


class SmuSimulator:
    """The instrument: SCPI in, SCPI out, a cell on the terminals.

    ``handle_line`` is the whole brain (one program line in, the reply bytes or
    ``None`` out) and needs no port; :meth:`serve` puts it on a serial line.
    ``terminator`` is what ends replies (the 2400's RS-232 setting: CR, LF, CRLF, LFCR).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        cell: str | SimulatedCell = DEFAULT_CELL,
        seed: int = 0,
        model: str = "2400",
        serial_number: str = "1234567",
        terminator: bytes = b"\r",
        max_step_s: float = 10.0,
        settings: SerialSettings | None = None,
    ) -> None:
        if terminator not in (b"\r", b"\n", b"\r\n", b"\n\r"):
            raise ConfigError(
                field="terminator", problem=f"must be CR, LF, CRLF or LFCR, got {terminator!r}"
            )
        if not (math.isfinite(max_step_s) and max_step_s > 0):
            raise ConfigError(field="max_step_s", problem=f"must be > 0 s, got {max_step_s!r}")
        self.clock = clock
        self.cell: SimulatedCell = make_cell(cell, seed) if isinstance(cell, str) else cell
        self.cell_name = cell if isinstance(cell, str) else type(cell).__name__
        self.identity = Identity(_VENDOR, model, serial_number, _FIRMWARE)
        self.terminator = terminator
        self.max_step_s = max_step_s
        self.settings = settings or SerialSettings()
        self.drop_queries: set[str] = set()
        """Fault injection: canonical headers (``READ``, ``OUTP``) whose queries arrive
        garbled: no answer, ``-113`` in the error queue."""
        self._gate = asyncio.Event()
        self._gate.set()
        self.status = StatusRegisters()
        """Error queue and status registers (not touched by ``*RST``, as on a 2400)."""
        self._t_last_s = clock.now_s()
        self._t0_s = self._t_last_s
        self._voltage_v = self._rest_voltage_v()
        self._current_a = 0.0
        self._compliance = False
        self._last_readings: list[str] = []
        self.sense_functions: set[SenseFunction] = set()
        """Measured functions (``:SENS:FUNC``); the others read 9.91E+37."""
        self.buffer: list[str] = []
        """Readings stored by ``:TRAC:FEED:CONT NEXT``, oldest first."""
        self.lines_received = 0
        """Program lines received on the port (answered or still waiting while held)."""
        self.lines_served = 0
        """Program lines executed."""
        self.commands_seen: Counter[str] = Counter()
        """Commands executed without error, by canonical header (``?`` for a query):
        which part of the 2400's command set a host program uses."""
        self._reset()
        # The power-on setup measures voltage and current at once, as a bench set up for
        # "source I, measure V" does (a 2400 powers on with a setup saved by :SYST:POS);
        # *RST returns to the 2400's reset state, current only.
        self.sense_functions = {"VOLT", "CURR"}

    # ------------------------------------------------------------ state

    def _reset(self) -> None:
        self.output_on = False
        self.function: str = "CURR"
        self.current_level_a = 0.0
        self.voltage_level_v = 0.0
        self.voltage_compliance_v = 21.0
        self.current_compliance_a = 105e-6
        self.elements: tuple[Element, ...] = ELEMENTS
        self.values: dict[str, str] = defaults()
        """Replies of the plain settings (see :mod:`._settings`), by canonical header."""
        self.sense_functions = {"CURR"}
        self.concurrent = True
        self._compliance = False

    def _rest_voltage_v(self) -> float:
        cell = self.cell
        return cell.ocv(cell.soc) if isinstance(cell, SimFullCell) else 0.0

    @property
    def voltage_v(self) -> float:
        """Terminal voltage at the last step (V), as the instrument would measure it."""
        return self._voltage_v

    @property
    def current_a(self) -> float:
        """Current through the cell at the last step (A)."""
        return self._current_a

    @property
    def in_compliance(self) -> bool:
        """The source was limited by its compliance at the last step."""
        return self._compliance

    @property
    def errors(self) -> tuple[ErrorEntry, ...]:
        """The error queue, oldest first (what ``:SYST:ERR?`` would answer in turn)."""
        return self.status.errors

    def hold(self) -> None:
        """Stop answering: lines received from now on wait until :meth:`release`."""
        self._gate.clear()

    def release(self) -> None:
        """Answer again, starting with the lines that arrived while held, in order."""
        self._gate.set()

    # ------------------------------------------------------------ physics

    def advance(self) -> None:
        """Bring the cell up to the clock's present."""
        now_s = self.clock.now_s()
        remaining_s = now_s - self._t_last_s
        while remaining_s > 1e-12:
            dt_s = min(remaining_s, self.max_step_s)
            self._step(dt_s)
            remaining_s -= dt_s
        self._t_last_s = max(self._t_last_s, now_s)

    def _settle(self) -> None:
        """What the source puts out the moment a setting changes, before time moves on.

        A source settles in microseconds: a reading right after ``:OUTP OFF`` shows 0 A,
        right after ``:OUTP ON`` the set current, even on a clock that has not moved.
        """
        if not self.output_on:
            self._current_a = 0.0
            self._compliance = False
        elif self.function == "CURR" and not self._compliance:
            self._current_a = self.current_level_a

    def _step(self, dt_s: float) -> None:
        cell = self.cell
        compliance = False
        if not self.output_on:
            current_a = 0.0
            voltage_v = cell.advance(dt_s, 0.0)
        elif self.function == "CURR":
            current_a = self.current_level_a
            limit_v = self.voltage_compliance_v
            if isinstance(cell, SimFullCell):
                # Turned voltage source at ±compliance, never above the set current.
                ceiling_a = abs(current_a)
                high_a = cell.current_for_voltage(limit_v, dt_s, ceiling_a)
                low_a = cell.current_for_voltage(-limit_v, dt_s, ceiling_a)
                held_a = min(max(current_a, low_a), high_a)
                compliance = held_a != current_a
                current_a = held_a
            voltage_v = cell.advance(dt_s, current_a)
            if abs(voltage_v) > limit_v:
                voltage_v = math.copysign(limit_v, voltage_v)
                compliance = True
        else:
            assert isinstance(cell, SimFullCell)  # :SOUR:FUNC VOLT is refused otherwise
            limit_a = self.current_compliance_a
            current_a = cell.current_for_voltage(self.voltage_level_v, dt_s, limit_a)
            compliance = abs(current_a) >= limit_a
            voltage_v = cell.advance(dt_s, current_a)
        self._voltage_v = voltage_v
        self._current_a = current_a
        self._compliance = compliance

    def _reading(self) -> str:
        """One reading of the enabled elements; an unmeasured function reads 9.91E+37."""
        sense = self.sense_functions
        status = COMPLIANCE_BIT if self._compliance else 0
        status |= _STAT_V_SOURCE if self.function == "VOLT" else _STAT_I_SOURCE
        for function, bit in (
            ("VOLT", _STAT_V_MEAS),
            ("CURR", _STAT_I_MEAS),
            ("RES", _STAT_R_MEAS),
        ):
            if function in sense:
                status |= bit
        if self.values["SENS:AVER"] == "1":
            status |= _STAT_FILTER
        if self.values["ROUT:TERM"] == "FRON":
            status |= _STAT_FRONT
        if self.values["SYST:RSEN"] == "1":
            status |= _STAT_REMOTE_SENSE
        voltage_v, current_a = self._voltage_v, self._current_a
        # The sourced quantity is always in the reading (the source readback); the other
        # one only when its sense function is on.
        voltage_known = "VOLT" in sense or self.function == "VOLT"
        current_known = "CURR" in sense or self.function == "CURR"
        values: dict[Element, float] = {
            "VOLT": voltage_v if voltage_known else NO_VALUE,
            "CURR": current_a if current_known else NO_VALUE,
            "RES": voltage_v / current_a if "RES" in sense and current_a else NO_VALUE,
            "TIME": self.clock.now_s() - self._t0_s,
            "STAT": float(status),
        }
        return format_reading(values[e] for e in ELEMENTS if e in self.elements)

    def _initiate(self) -> None:
        """``:INIT``: take arm count × trigger count readings, feeding the buffer if asked."""
        count = round(
            reply_number(self.values["TRIG:COUN"]) * reply_number(self.values["ARM:COUN"])
        )
        # Readings of one trigger sequence are taken at once: the simulator's time only
        # moves with its clock, and no trigger delay is long next to a cell's changes.
        self._last_readings = [self._reading() for _ in range(count)]
        if self.values["TRAC:FEED:CONT"] == "NEXT":
            points = round(reply_number(self.values["TRAC:POIN"]))
            self.buffer.extend(self._last_readings[: points - len(self.buffer)])
            if len(self.buffer) >= points:
                self.values["TRAC:FEED:CONT"] = "NEV"
                self.status.events["MEAS"] |= BUFFER_FULL_BIT

    def _fetch(self) -> str:
        if not self._last_readings:
            raise Refused(-230, "Data corrupt or stale")
        return ",".join(self._last_readings)

    def _configure(self, function: SenseFunction | None) -> None:
        """``:CONF:<function>``, the first half of ``:MEAS:<function>?``.

        As the 2400 manual says: the function is selected, the trigger model set to one
        immediate reading without delay, and the output turns on (at the programmed
        source level, which is why a host should set the source before measuring).
        """
        if function is not None:
            self._select_functions([function])
        for header, value in (
            ("TRIG:COUN", "+1"),
            ("ARM:COUN", "+1"),
            ("TRIG:DEL", format_value(0.0)),
            ("TRIG:SOUR", "IMM"),
            ("ARM:SOUR", "IMM"),
        ):
            self.values[header] = value
        self.output_on = True
        self._settle()  # the reading that follows sees the output on

    # ------------------------------------------------------------ the brain

    def handle_line(self, line: bytes) -> bytes | None:
        """Execute one program line; the reply bytes, or ``None`` when nothing is asked."""
        self.lines_served += 1
        self.advance()
        try:
            commands = parse_program_line(line)
        except ScpiSyntaxError as err:
            log.debug("SMU simulator: %s", err)
            self.status.push_error(ErrorEntry(err.code, err.scpi_message))
            return None
        replies: list[str] = []
        for command in commands:
            if command.query and command.header in self.drop_queries:
                self.status.push_error(ErrorEntry(-113, "Undefined header"))
                break
            try:
                reply = self._execute(command)
            except Refused as err:
                log.debug("SMU simulator: %s refused: %s", command.header, err)
                self.status.push_error(err.entry)
                break
            self._settle()
            self.commands_seen[command.header + ("?" if command.query else "")] += 1
            if reply is not None:
                replies.append(reply)
        if not replies:
            return None
        return format_reply_line(replies, self.terminator)

    def _execute(self, command: Command) -> str | None:
        header, query, argument = command.header, command.query, command.argument
        if header.startswith("*"):
            return self._common(header, query, argument)
        if header.startswith(("SYST:ERR", "STAT:")):
            return self._status_command(header, query, argument)
        setting = SETTINGS.get(header)
        if setting is None:
            return self._instrument_command(header, query, argument)
        if query:
            # ":ARM:TIM? MAX" answers the value MAX stands for, without setting it.
            return setting.parse(argument, self.values[header]) if argument else self.values[header]
        value = setting.parse(argument, self.values[header])
        if header in ("TRIG:COUN", "ARM:COUN"):
            other = self.values["ARM:COUN" if header == "TRIG:COUN" else "TRIG:COUN"]
            if reply_number(value) * reply_number(other) > _MAX_READINGS:
                raise Refused(-221, "Settings conflict")  # arm × trigger count <= 2500
        self.values[header] = value
        for other_header in setting.also:
            self.values[other_header] = value
        for auto in setting.fixes:
            self.values[auto] = "0"
        return None

    def _common(self, header: str, query: bool, argument: str) -> str | None:
        """IEEE 488.2 common commands."""
        status = self.status
        match (header, query):
            case ("*IDN", True):
                return format_identity(self.identity)
            case ("*ESR", True):
                return str(status.read_event_status())
            case ("*STB", True):
                return str(status.status_byte())
            case ("*ESE", True):
                return str(status.event_enable)
            case ("*ESE", False):
                status.event_enable = _mask(argument)
                return None
            case ("*SRE", True):
                return str(status.service_enable)
            case ("*SRE", False):
                status.service_enable = _mask(argument) & ~64  # bit 6 cannot be enabled
                return None
            case ("*OPC", True):
                _no_argument(argument)
                return "1"  # every operation of the simulator is complete when it answers
            case ("*TST", True):
                return "0"  # self-test passed
        _no_argument(argument)
        match (header, query):
            case ("*RST", False):
                self._reset()
            case ("*CLS", False):
                status.clear()
            case ("*OPC", False):
                status.event_status |= OPC_BIT
            case ("*WAI", False) | ("*TRG", False):
                pass  # nothing is ever pending; no bus trigger is awaited
            case _:
                raise Refused(-113, "Undefined header")
        return None

    def _status_command(self, header: str, query: bool, argument: str) -> str | None:
        """``:SYST:ERR...`` and the ``:STAT`` subsystem."""
        status = self.status
        match (header, query):
            case ("SYST:ERR" | "STAT:QUE", True):
                return format_error(status.next_error())
            case ("SYST:ERR:ALL", True):
                entries = [status.next_error()]
                while entries[-1].code != 0:
                    entries.append(status.next_error())
                if len(entries) > 1:
                    entries.pop()  # the "No error" that ends a non-empty queue
                return ",".join(map(format_error, entries))
            case ("SYST:ERR:COUN", True):
                return f"{len(status.errors):+d}"
            case ("SYST:ERR:CODE", True):
                return f"{status.next_error().code:+d}"
            case ("STAT:QUE:CLE", False):
                _no_argument(argument)
                status.clear_errors()
                return None
            case ("STAT:PRES", False):
                _no_argument(argument)
                status.preset()
                return None
        parts = header.split(":")
        if len(parts) in (2, 3) and parts[1] in ("MEAS", "QUES", "OPER"):
            system = cast("StatusSystem", parts[1])
            match (parts[2:], query):
                case ([], True):
                    return str(status.read_event(system))
                case (["ENAB"], True):
                    return str(status.enables[system])
                case (["ENAB"], False):
                    status.enables[system] = round(number(argument, 0, 65535, 0))
                    return None
                case (["COND"], True):
                    full = (
                        system == "MEAS"
                        and self.values["TRAC:FEED:CONT"] == "NEV"
                        and bool(self.buffer)
                        and len(self.buffer) >= round(reply_number(self.values["TRAC:POIN"]))
                    )
                    return str(BUFFER_FULL_BIT if full else 0)
        raise Refused(-113, "Undefined header")

    def _instrument_command(self, header: str, query: bool, argument: str) -> str | None:
        """Commands that act on the source, the readings or the buffer."""
        match (header, query):
            case ("SYST:TIME:RES", False):
                self._t0_s = self.clock.now_s()
            case ("SYST:PRES", False):
                self._reset()
            case ("SYST:VERS", True):
                return _SCPI_VERSION
            case ("SYST:LOC" | "SYST:REM" | "SYST:RWL", False):
                pass  # RS-232 front-panel lockout: nothing to simulate
            case ("SYST:BEEP", False):
                frequency, _, duration = argument.partition(",")
                number(frequency, 65.0, 2e6, 65.0)
                number(duration, 0.0, 7.9, 0.0)
            case ("OUTP", True):
                return format_bool(self.output_on)
            case ("OUTP", False):
                self.output_on = _on_off(argument)
                if not self.output_on:
                    self._compliance = False
            case ("SOUR:CLE", False):
                self.output_on = False
                self._compliance = False
            case ("READ", True):
                self._initiate()
                return self._fetch()
            case ("FETC", True):
                return self._fetch()
            case ("INIT", False):
                self._initiate()
            case ("ABOR" | "TRIG:CLE", False):
                pass  # readings are taken at once: nothing is ever under way
            case ("MEAS", True):
                self._configure(None)
                self._initiate()
                return self._fetch()
            case ("MEAS:VOLT" | "MEAS:CURR" | "MEAS:RES", True):
                self._configure(_SENSE_WORDS[header.partition(":")[2]])
                self._initiate()
                return self._fetch()
            case ("CONF:VOLT" | "CONF:CURR" | "CONF:RES", False):
                self._configure(_SENSE_WORDS[header.partition(":")[2]])
            case ("CONF", True) | ("SENS:FUNC", True):
                names = [_SENSE_REPLY[f] for f in _SENSE_ORDER if f in self.sense_functions]
                return ",".join(names) or '""'  # none: an empty string, never an empty line
            case ("SENS:FUNC", False):
                self._select_functions(self._function_list(argument))
            case ("SENS:FUNC:OFF", False):
                self.sense_functions -= set(self._function_list(argument))
            case ("SENS:FUNC:ALL", False):
                self.sense_functions = set(_SENSE_ORDER)
                self.concurrent = True
            case ("SENS:FUNC:OFF:ALL", False):
                self.sense_functions = set()
            case ("SENS:FUNC:CONC", True):
                return format_bool(self.concurrent)
            case ("SENS:FUNC:CONC", False):
                self.concurrent = _on_off(argument)
                if not self.concurrent and len(self.sense_functions) > 1:
                    # One function stays: the first in the 2400's order.
                    first = next(f for f in _SENSE_ORDER if f in self.sense_functions)
                    self.sense_functions = {first}
            case ("FORM:ELEM", False):
                self.elements = self._parse_elements(argument)
            case ("FORM:ELEM", True):
                return ",".join(self.elements)
            case ("SOUR:FUNC", False):
                self._set_function(argument)
            case ("SOUR:FUNC", True):
                return self.function
            case ("SOUR:CURR:MODE" | "SOUR:VOLT:MODE", False):
                if argument.strip().upper() not in ("FIX", "FIXED"):
                    raise Refused(-224, "Illegal parameter value")  # no sweeps or lists
            case ("SOUR:CURR:MODE" | "SOUR:VOLT:MODE", True):
                return "FIX"
            case ("SOUR:CURR:LEV", False):
                self.current_level_a = _number(argument, -_MAX_CURRENT_A, _MAX_CURRENT_A)
            case ("SOUR:CURR:LEV", True):
                return format_value(self.current_level_a)
            case ("SOUR:VOLT:LEV", False):
                self.voltage_level_v = _number(argument, -_MAX_VOLTAGE_V, _MAX_VOLTAGE_V)
            case ("SOUR:VOLT:LEV", True):
                return format_value(self.voltage_level_v)
            case ("SENS:VOLT:PROT", False):
                limit_v = abs(_number(argument, -_MAX_VOLTAGE_V, _MAX_VOLTAGE_V))
                if limit_v < _MIN_VOLTAGE_PROT_V:
                    raise Refused(-222, "Parameter data out of range")
                self.voltage_compliance_v = limit_v
            case ("SENS:VOLT:PROT", True):
                return format_value(self.voltage_compliance_v)
            case ("SENS:CURR:PROT", False):
                limit_a = abs(_number(argument, -_MAX_CURRENT_A, _MAX_CURRENT_A))
                if limit_a < 1e-9:
                    raise Refused(-222, "Parameter data out of range")
                self.current_compliance_a = limit_a
            case ("SENS:CURR:PROT", True):
                return format_value(self.current_compliance_a)
            case ("SENS:VOLT:PROT:TRIP", True):
                return format_bool(self._compliance and self.function == "CURR")
            case ("SENS:CURR:PROT:TRIP", True):
                return format_bool(self._compliance and self.function == "VOLT")
            case ("TRAC:CLE", False):
                self.buffer.clear()
            case ("TRAC:DATA", True):
                if not self.buffer:
                    raise Refused(-230, "Data corrupt or stale")  # an empty line is no reply
                return ",".join(self.buffer)
            case ("TRAC:POIN:ACT", True):
                return f"{len(self.buffer):+d}"
            case _:
                raise Refused(-113, "Undefined header")
        return None

    def _function_list(self, argument: str) -> list[SenseFunction]:
        """``"VOLT","CURR:DC"`` (quoted, single or double) → the functions named."""
        words = [w.strip().strip("\"'").strip().upper() for w in argument.split(",")]
        if not argument.strip():
            raise Refused(-109, "Missing parameter")
        try:
            return [_SENSE_WORDS[w] for w in words]
        except KeyError:
            raise Refused(-224, "Illegal parameter value") from None

    def _select_functions(self, functions: list[SenseFunction]) -> None:
        if self.concurrent:
            self.sense_functions |= set(functions)
        elif len(functions) == 1:
            self.sense_functions = {functions[0]}  # one at a time: it replaces the last
        else:
            raise Refused(-221, "Settings conflict")

    def _parse_elements(self, argument: str) -> tuple[Element, ...]:
        words = [w.strip().upper() for w in argument.split(",")]
        if not argument.strip():
            raise Refused(-109, "Missing parameter")
        chosen = {_ELEMENT_WORDS.get(w) for w in words}
        if None in chosen:
            raise Refused(-224, "Illegal parameter value")
        return tuple(e for e in ELEMENTS if e in chosen)

    def _set_function(self, argument: str) -> None:
        word = argument.strip().strip("\"'").upper()
        if word in ("CURR", "CURRENT"):
            self.function = "CURR"
        elif word in ("VOLT", "VOLTAGE"):
            if not isinstance(self.cell, SimFullCell):
                # This cell model cannot say which current holds a voltage.
                raise Refused(-221, "Settings conflict")
            self.function = "VOLT"
        elif not word:
            raise Refused(-109, "Missing parameter")
        else:
            raise Refused(-224, "Illegal parameter value")

    # ------------------------------------------------------------ the port

    @contextlib.asynccontextmanager
    async def serve(self, port: str) -> AsyncIterator[str]:
        """Answer on ``port`` until the context ends; yields where it serves.

        ``port`` is a serial device path (opened again whenever it is lost, see
        :mod:`._ports`), ``pty:PATH`` for a pty of the simulator's own linked at ``PATH``
        (hosts may open and close it any number of times), or ``socket://HOST:PORT`` to
        listen on TCP (port 0 = any free port).
        """
        if port.startswith("socket://"):
            async with self._serve_tcp(port) as where:
                yield where
            return
        lines: asyncio.Queue[bytes] = asyncio.Queue()

        def deliver(line: bytes) -> None:
            self.lines_received += 1
            lines.put_nowait(line)

        if port.startswith(PTY_PREFIX):
            link = pty_path(port)
            where = str(link)
            opened = pty_lines(link, deliver)
        else:
            where = port
            opened = serial_lines(port, self.settings, deliver)
        async with opened as write:
            runner = asyncio.create_task(self._answer(lines, write), name=f"smu-sim {where}")
            try:
                yield where
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner

    async def _answer(self, lines: asyncio.Queue[bytes], write: Callable[[bytes], None]) -> None:
        """Answer lines in order, one at a time, as the instrument's parser does."""
        while True:
            line = await lines.get()
            await self._gate.wait()
            reply = self.handle_line(line)
            if reply is not None:
                try:
                    write(reply)
                except CellguardError as err:
                    log.info("SMU simulator: cannot answer: %s", err)

    @contextlib.asynccontextmanager
    async def _serve_tcp(self, url: str) -> AsyncIterator[str]:
        parsed = urllib.parse.urlparse(url)
        host = parsed.hostname or "127.0.0.1"
        try:
            tcp_port = parsed.port or 0
        except ValueError as err:
            raise ConfigError(field="port", problem=f"bad TCP port in {url!r}") from err
        connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections[task] = writer
            splitter = LineSplitter()
            try:
                while data := await reader.read(4096):
                    for line in splitter.feed(data):
                        self.lines_received += 1
                        await self._gate.wait()
                        reply = self.handle_line(line)
                        if reply is not None:
                            writer.write(reply)
                    await writer.drain()
            except (ConnectionError, CellguardError) as err:
                log.info("SMU simulator: TCP connection ended: %s", err)
            finally:
                connections.pop(task, None)
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await asyncio.shield(writer.wait_closed())

        try:
            server = await asyncio.start_server(on_connect, host, tcp_port)
        except OSError as err:
            raise ConfigError(
                field="port", problem=f"cannot listen on {host}:{tcp_port}: {err.strerror}"
            ) from err
        bound = server.sockets[0].getsockname()
        try:
            yield f"socket://{bound[0]}:{bound[1]}"
        finally:
            server.close()
            # Aborting the sockets ends each handler at its next read (see the Neware
            # simulator: cancelling them instead makes asyncio log errors).
            for writer in list(connections.values()):
                writer.transport.abort()
            if connections:
                await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()
