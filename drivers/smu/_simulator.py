"""A simulated Keithley 2400 on a real serial line, with a simulated cell on its terminals.

It answers the 2400's SCPI (the subset in :mod:`._scpi`) on a serial device (one end
of a socat pty pair, a USB adapter) or, given ``socket://HOST:PORT``, on a TCP
listener, so :class:`~cellguard.drivers.smu.SmuClient` runs unchanged against it.

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
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType

from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CellguardError, ConfigError, ProtocolViolation
from cellguard.drivers.sim import INTERPHASES, SimCell, SimCellSpec, SimFullCell, SimFullCellSpec
from cellguard.drivers.smu._scpi import (
    COMPLIANCE_BIT,
    ELEMENTS,
    NO_ERROR,
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
    parse_number,
    parse_program_line,
)
from cellguard.drivers.smu._transport import SerialLink, SerialSettings

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


# What a 2400 accepts (its largest ranges) and how big its error queue is.
_MAX_CURRENT_A = 1.05
_MAX_VOLTAGE_V = 210.0
_MIN_VOLTAGE_PROT_V = 0.2
_ERROR_QUEUE_LEN = 10
_FIRMWARE = "C30   Mar 17 2006 09:29:29/A02  /K/J"
_VENDOR = "KEITHLEY INSTRUMENTS INC."

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
# The 2400's "no value" (what it reports for RES when no resistance can be computed).
_NO_VALUE = 9.91e37


class _Refused(Exception):
    """A command the instrument parsed but will not execute: one error-queue entry."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f'{code},"{message}"')
        self.entry = ErrorEntry(code, message)


def _on_off(argument: str) -> bool:
    word = argument.strip().upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    if not word:
        raise _Refused(-109, "Missing parameter")
    raise _Refused(-224, "Illegal parameter value")


def _number(argument: str, low: float, high: float) -> float:
    if not argument.strip():
        raise _Refused(-109, "Missing parameter")
    value = parse_number(argument)
    if value is None:
        raise _Refused(-104, "Data type error")
    if not low <= value <= high:
        raise _Refused(-222, "Parameter data out of range")
    return value


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
        self._errors: deque[ErrorEntry] = deque()
        self._t_last_s = clock.now_s()
        self._t0_s = self._t_last_s
        self._voltage_v = self._rest_voltage_v()
        self._current_a = 0.0
        self._compliance = False
        self.lines_received = 0
        """Program lines received on the port (answered or still waiting while held)."""
        self.lines_served = 0
        """Program lines executed."""
        self._reset()

    # ------------------------------------------------------------ state

    def _reset(self) -> None:
        self.output_on = False
        self.function: str = "CURR"
        self.current_level_a = 0.0
        self.voltage_level_v = 0.0
        self.current_range_a = _MAX_CURRENT_A
        self.voltage_range_v = 21.0
        self.voltage_compliance_v = 21.0
        self.current_compliance_a = 105e-6
        self.elements: tuple[Element, ...] = ELEMENTS

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
        return tuple(self._errors)

    def hold(self) -> None:
        """Stop answering: lines received from now on wait until :meth:`release`."""
        self._gate.clear()

    def release(self) -> None:
        """Answer again, starting with the lines that arrived while held, in order."""
        self._gate.set()

    def _push_error(self, entry: ErrorEntry) -> None:
        if len(self._errors) >= _ERROR_QUEUE_LEN:
            self._errors[-1] = ErrorEntry(-350, "Queue overflow")
            return
        self._errors.append(entry)

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
        status = COMPLIANCE_BIT if self._compliance else 0
        current_a = self._current_a
        values: dict[Element, float] = {
            "VOLT": self._voltage_v,
            "CURR": current_a,
            "RES": self._voltage_v / current_a if current_a else _NO_VALUE,
            "TIME": self.clock.now_s() - self._t0_s,
            "STAT": float(status),
        }
        return format_reading(values[e] for e in ELEMENTS if e in self.elements)

    # ------------------------------------------------------------ the brain

    def handle_line(self, line: bytes) -> bytes | None:
        """Execute one program line; the reply bytes, or ``None`` when nothing is asked."""
        self.lines_served += 1
        self.advance()
        try:
            commands = parse_program_line(line)
        except ScpiSyntaxError as err:
            log.debug("SMU simulator: %s", err)
            self._push_error(ErrorEntry(err.code, err.scpi_message))
            return None
        replies: list[str] = []
        for command in commands:
            if command.query and command.header in self.drop_queries:
                self._push_error(ErrorEntry(-113, "Undefined header"))
                break
            try:
                reply = self._execute(command)
            except _Refused as err:
                log.debug("SMU simulator: %s refused: %s", command.header, err)
                self._push_error(err.entry)
                break
            if reply is not None:
                replies.append(reply)
        if not replies:
            return None
        return format_reply_line(replies, self.terminator)

    def _execute(self, command: Command) -> str | None:
        header, query, argument = command.header, command.query, command.argument
        match (header, query):
            case ("*IDN", True):
                return format_identity(self.identity)
            case ("*RST", False):
                self._reset()
                self._compliance = False
                return None
            case ("*CLS", False):
                self._errors.clear()
                return None
            case ("*OPC", True):
                return "1"
            case ("SYST:ERR", True):
                return format_error(self._errors.popleft() if self._errors else NO_ERROR)
            case ("SYST:TIME:RES", False):
                self._t0_s = self.clock.now_s()
                return None
            case ("OUTP", True):
                return format_bool(self.output_on)
            case ("OUTP", False):
                self.output_on = _on_off(argument)
                if not self.output_on:
                    self._compliance = False
                return None
            case ("READ", True) | ("MEAS", True) | ("FETC", True):
                return self._reading()
            case ("INIT", False):
                return None
            case ("FORM:ELEM", False):
                self.elements = self._parse_elements(argument)
                return None
            case ("FORM:ELEM", True):
                return ",".join(self.elements)
            case ("SOUR:FUNC", False):
                self._set_function(argument)
                return None
            case ("SOUR:FUNC", True):
                return self.function
            case ("SOUR:CURR:MODE" | "SOUR:VOLT:MODE", False):
                if argument.strip().upper() not in ("FIX", "FIXED"):
                    raise _Refused(-224, "Illegal parameter value")  # no sweeps or lists
                return None
            case ("SOUR:CURR:RANG", False):
                self.current_range_a = _number(argument, -_MAX_CURRENT_A, _MAX_CURRENT_A)
                return None
            case ("SOUR:VOLT:RANG", False):
                self.voltage_range_v = _number(argument, -_MAX_VOLTAGE_V, _MAX_VOLTAGE_V)
                return None
            case ("SOUR:CURR:RANG:AUTO" | "SOUR:VOLT:RANG:AUTO", False):
                _on_off(argument)
                return None
            case ("SOUR:CURR:LEV", False):
                self.current_level_a = _number(argument, -_MAX_CURRENT_A, _MAX_CURRENT_A)
                return None
            case ("SOUR:CURR:LEV", True):
                return f"{self.current_level_a:+.6E}"
            case ("SOUR:VOLT:LEV", False):
                self.voltage_level_v = _number(argument, -_MAX_VOLTAGE_V, _MAX_VOLTAGE_V)
                return None
            case ("SOUR:VOLT:LEV", True):
                return f"{self.voltage_level_v:+.6E}"
            case ("SENS:VOLT:PROT", False):
                self.voltage_compliance_v = _number(argument, _MIN_VOLTAGE_PROT_V, _MAX_VOLTAGE_V)
                return None
            case ("SENS:VOLT:PROT", True):
                return f"{self.voltage_compliance_v:+.6E}"
            case ("SENS:CURR:PROT", False):
                self.current_compliance_a = _number(argument, 1e-9, _MAX_CURRENT_A)
                return None
            case ("SENS:CURR:PROT", True):
                return f"{self.current_compliance_a:+.6E}"
        raise _Refused(-113, "Undefined header")

    def _parse_elements(self, argument: str) -> tuple[Element, ...]:
        words = [w.strip().upper() for w in argument.split(",")]
        if not argument.strip():
            raise _Refused(-109, "Missing parameter")
        chosen = {_ELEMENT_WORDS.get(w) for w in words}
        if None in chosen:
            raise _Refused(-224, "Illegal parameter value")
        return tuple(e for e in ELEMENTS if e in chosen)

    def _set_function(self, argument: str) -> None:
        word = argument.strip().strip("\"'").upper()
        if word in ("CURR", "CURRENT"):
            self.function = "CURR"
        elif word in ("VOLT", "VOLTAGE"):
            if not isinstance(self.cell, SimFullCell):
                # This cell model cannot say which current holds a voltage.
                raise _Refused(-221, "Settings conflict")
            self.function = "VOLT"
        elif not word:
            raise _Refused(-109, "Missing parameter")
        else:
            raise _Refused(-224, "Illegal parameter value")

    # ------------------------------------------------------------ the port

    @contextlib.asynccontextmanager
    async def serve(self, port: str) -> AsyncIterator[str]:
        """Answer on ``port``: a serial device path, or ``socket://HOST:PORT`` to listen on
        TCP (port 0 = any free port). Yields where it serves."""
        if port.startswith("socket://"):
            async with self._serve_tcp(port) as where:
                yield where
            return
        lines: asyncio.Queue[bytes] = asyncio.Queue()
        splitter = LineSplitter()
        lost = asyncio.Event()

        def on_data(data: bytes) -> None:
            try:
                for line in splitter.feed(data):
                    self.lines_received += 1
                    lines.put_nowait(line)
            except ProtocolViolation as err:
                log.warning("SMU simulator on %s: %s", port, err)

        def on_lost(exc: Exception | None) -> None:
            if exc is not None:
                log.warning("SMU simulator: lost %s: %s", port, exc)
            lost.set()

        link = await SerialLink.open(
            port, on_data=on_data, on_lost=on_lost, settings=self.settings, timeout_s=10.0
        )
        runner = asyncio.create_task(self._answer(lines, link.write), name=f"smu-sim {port}")
        try:
            yield port
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await link.aclose()

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
