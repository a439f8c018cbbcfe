"""Async client of a Keithley 2400-style source-measure unit on a serial line.

SCPI on RS-232 is strictly sequential and has no request ids: the instrument answers
the queries in the order it got them, one line each. The client therefore keeps a
queue of *reply slots*, one per query written and not yet answered, and hands every
received line to the oldest slot the moment it arrives (the transport calls back; no
task reads). Ordinary requests take turns under one lock, so at most one query of
theirs is outstanding.

The halt (:meth:`SmuClient.output_off`) does not take that lock. It abandons the
query in flight (whose caller gets a :class:`DriverError`), writes ``:OUTP OFF`` at
once and confirms with ``:OUTP?``. The abandoned query's answer may still come: it
precedes the confirmation on the wire, and an abandoned slot takes only a line shaped
like its own answer (a ``:READ?`` reading is never taken for ``0``/``1``), so a late
answer is discarded and a query the instrument never answered is skipped. A setpoint
command that was under way when a halt began is refused before it writes again, so
a halt is never followed by an ``:OUTP ON`` issued before it.

Timeouts abandon the slot the same way instead of closing the port, so the halt path
can still use the link after a query timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Self

from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    DriverError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)
from cellguard.drivers.galvanostat import GalvanostatInfo, Measurement, SourceMode
from cellguard.drivers.smu._scpi import (
    ERROR_QUERY,
    IDN_QUERY,
    NO_VALUE,
    OUTPUT_QUERY,
    READ_QUERY,
    READING_ELEMENTS,
    SENSE_CONCURRENT,
    SENSE_VOLTAGE_AND_CURRENT,
    ErrorEntry,
    Identity,
    LineSplitter,
    Reading,
    SourceFunction,
    cmd_compliance,
    cmd_format_elements,
    cmd_output,
    cmd_source_function,
    cmd_source_level,
    cmd_source_mode_fixed,
    cmd_source_range,
    encode_line,
    parse_error,
    parse_identity,
    parse_output_state,
    parse_reading,
    quote_bytes,
)
from cellguard.drivers.smu._transport import Parity, SerialLink, SerialSettings

__all__ = ["DEFAULT_TIMEOUT_S", "KNOWN_MODELS", "UNKNOWN_MODEL", "ModelLimits", "SmuClient"]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
"""Seconds to wait for the port to open or for one reply (a 2400 at 9600 baud answers
``:READ?`` in ~0.1 s at 1 PLC; raise it for long integration times)."""

# How many entries :SYST:ERR? is asked for at most in one go (a 2400 queue holds 10).
_MAX_ERRORS_READ = 12


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What one model can do on its largest current range.

    ``voltage_range_v`` is the voltage available *at* ``current_range_a`` (a 2400 also
    sources 210 V, but only up to 105 mA).
    """

    current_range_a: float
    voltage_range_v: float
    min_sample_interval_s: float


KNOWN_MODELS = MappingProxyType(
    {
        "2400": ModelLimits(1.05, 21.0, 0.1),
        "2401": ModelLimits(1.05, 21.0, 0.1),
        "2410": ModelLimits(1.05, 21.0, 0.1),
        "2420": ModelLimits(3.15, 21.0, 0.1),
        "2425": ModelLimits(3.15, 21.0, 0.1),
        "2430": ModelLimits(3.15, 21.0, 0.1),
        "2440": ModelLimits(5.25, 10.5, 0.1),
    }
)
"""Keithley 2400-series models by ``*IDN?`` model number."""

UNKNOWN_MODEL = ModelLimits(0.1, 10.0, 1.0)
"""Conservative limits for a model not in :data:`KNOWN_MODELS`: cellguard refuses more."""


class _Slot:
    """One query written and not yet answered."""

    __slots__ = ("abandoned", "accepts", "command", "future", "halt", "sent_at")

    def __init__(
        self, command: str, accepts: Callable[[bytes], bool], *, halt: bool = False
    ) -> None:
        self.command = command
        self.accepts = accepts
        self.halt = halt
        loop = asyncio.get_running_loop()
        self.future: asyncio.Future[bytes] = loop.create_future()
        self.sent_at = loop.time()
        self.abandoned = False

    def abandon(self, error: BaseException | None = None) -> None:
        self.abandoned = True
        if error is not None and not self.future.done():
            self.future.set_exception(error)
            # Marked as retrieved: its waiter may have been cancelled at the same moment.
            self.future.exception()


def _shaped(parse: Callable[[bytes], object]) -> Callable[[bytes], bool]:
    def accepts(line: bytes) -> bool:
        try:
            parse(line)
        except ProtocolViolation:
            return False
        return True

    return accepts


_IS_IDENTITY = _shaped(parse_identity)
_IS_READING = _shaped(parse_reading)
_IS_BOOL = _shaped(parse_output_state)
_IS_ERROR = _shaped(parse_error)


class SmuClient:
    """A Keithley 2400-style SMU on ``port`` (device path or pyserial URL), as a
    :class:`~cellguard.drivers.galvanostat.Galvanostat`.

    Every reply is awaited at most ``timeout_s`` seconds; the halt, open and confirm
    included, at most ``halt_timeout_s`` (default ``timeout_s``). Errors:
    :class:`InstrumentConnectionError` (missing port, lost link) and its
    :class:`InstrumentTimeout`, :class:`ProtocolViolation` for malformed replies,
    :class:`CommandRefused` with the instrument's error queue text, and
    :class:`ConfigError` for setpoints outside the model's limits.
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: Parity = "N",
        stopbits: float = 1,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        halt_timeout_s: float | None = None,
    ) -> None:
        for field, value in (("timeout_s", timeout_s), ("halt_timeout_s", halt_timeout_s)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    field=field, problem=f"must be a positive number of seconds, got {value!r}"
                )
        if not port:
            raise ConfigError(field="port", problem="name a serial device or a pyserial URL")
        self.port = port
        self.settings = SerialSettings(baudrate, bytesize, parity, stopbits)
        self.timeout_s = timeout_s
        self.halt_timeout_s = halt_timeout_s if halt_timeout_s is not None else timeout_s
        self._link: SerialLink | None = None
        self._splitter = LineSplitter()
        self._slots: deque[_Slot] = deque()
        self._lock = asyncio.Lock()
        self._halts_running = 0
        self._halt_generation = 0
        self._wire_free = asyncio.Event()
        self._wire_free.set()
        self._info: GalvanostatInfo | None = None
        self._output_on = False
        self._mode: SourceMode = "off"
        self.last_reading: Reading | None = None
        """The last ``:READ?`` answer, status word included (compliance)."""

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<SmuClient {self.port} {state}>"

    # ------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True between a successful :meth:`connect` and a close or a lost link."""
        return self._link is not None and self._info is not None

    @property
    def info(self) -> GalvanostatInfo | None:
        """What :meth:`connect` identified, or ``None`` before."""
        return self._info

    @property
    def mode(self) -> SourceMode:
        """What the client last set: ``off``, ``current`` or ``voltage``."""
        return self._mode

    # ------------------------------------------------------------ the link

    async def _open_link(self, timeout_s: float) -> SerialLink:
        self._splitter.reset()
        self._slots.clear()
        link = await SerialLink.open(
            self.port,
            on_data=self._on_data,
            on_lost=self._on_lost,
            settings=self.settings,
            timeout_s=timeout_s,
        )
        self._link = link
        return link

    async def _drop_link(self, why: str) -> None:
        link, self._link = self._link, None
        self._info = None
        self._fail_slots(InstrumentConnectionError(f"the link to {self.port} was closed: {why}"))
        if link is not None:
            await link.aclose()

    def _fail_slots(self, error: DriverError) -> None:
        slots, self._slots = self._slots, deque()
        for slot in slots:
            if not slot.future.done():
                slot.future.set_exception(error)
                # Retrieved here so an abandoned slot's error is never logged as lost.
                slot.future.exception()

    def _on_data(self, data: bytes) -> None:
        try:
            lines = self._splitter.feed(data)
        except ProtocolViolation as err:
            _log.warning("SMU %s: %s", self.port, err)
            head = next((s for s in self._slots if not s.abandoned), None)
            if head is not None:
                self._slots.remove(head)
                if not head.future.done():
                    head.future.set_exception(err)
            return
        for line in lines:
            self._dispatch(line)

    def _dispatch(self, line: bytes) -> None:
        slots = self._slots
        while slots:
            slot = slots.popleft()
            if slot.abandoned:
                if slot.accepts(line):
                    _log.debug("SMU %s: late answer to %s discarded", self.port, slot.command)
                    return
                # Never answered (garbled on the way, or dropped): the line is the next one's.
                continue
            if not slot.future.done():
                slot.future.set_result(line)
            return
        _log.warning("SMU %s: unsolicited line %s ignored", self.port, quote_bytes(line))

    def _on_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            _log.warning("SMU %s: link lost: %s", self.port, exc)
        self._link = None
        self._info = None
        self._fail_slots(InstrumentConnectionError(f"lost the link to {self.port} ({exc})"))

    def _require_link(self) -> SerialLink:
        if self._link is None or self._link.closed:
            msg = f"not connected to the SMU on {self.port}; call connect()"
            raise InstrumentConnectionError(msg)
        return self._link

    def _require_info(self) -> GalvanostatInfo:
        self._require_link()
        if self._info is None:
            msg = f"not connected to the SMU on {self.port}; call connect()"
            raise InstrumentConnectionError(msg)
        return self._info

    # ------------------------------------------------------------ exchanges

    async def _wait_wire(self, generation: int | None, what: str) -> SerialLink:
        """Wait while a halt owns the wire; refuse if a halt began since ``generation``."""
        while self._halts_running:
            await self._wire_free.wait()
        if generation is not None and generation != self._halt_generation:
            msg = f"{what} on {self.port} was overtaken by output_off and not completed"
            raise DriverError(msg)
        return self._require_link()

    async def _send(self, command: str, generation: int | None, what: str) -> None:
        """Write one command that has no answer; the caller holds the lock."""
        link = await self._wait_wire(generation, what)
        link.write(encode_line(command))

    async def _query(
        self,
        command: str,
        accepts: Callable[[bytes], bool],
        generation: int | None = None,
        what: str = "",
    ) -> bytes:
        """Write one query and wait for its line; the caller holds the lock."""
        link = await self._wait_wire(generation, what or command)
        self._forget_lost_queries()
        slot = _Slot(command, accepts)
        self._slots.append(slot)
        link.write(encode_line(command))
        return await self._await_slot(slot, self.timeout_s)

    def _forget_lost_queries(self) -> None:
        """Drop abandoned slots older than the timeout: their answers are taken as lost.

        Otherwise a query that was never answered would swallow the answer to the next
        query of the same kind. Should an answer come later than that after all, the
        next query of its kind takes it (one stale value of the right kind) and its own
        answer is then dropped as unsolicited: the stream is back in step.
        """
        horizon = asyncio.get_running_loop().time() - self.timeout_s
        if any(s.abandoned and s.sent_at <= horizon for s in self._slots):
            self._slots = deque(
                s for s in self._slots if not (s.abandoned and s.sent_at <= horizon)
            )

    async def _await_slot(self, slot: _Slot, timeout_s: float) -> bytes:
        try:
            async with asyncio.timeout(timeout_s):
                return await slot.future
        except TimeoutError as err:
            slot.abandon()
            msg = (
                f"the SMU on {self.port} did not answer {slot.command} within {timeout_s} s; "
                f"check the cable, the line settings ({self.settings}) and that the "
                "instrument's interface is RS-232 with these settings"
            )
            raise InstrumentTimeout(msg) from err
        except asyncio.CancelledError:
            # The answer may still come: it must not be taken for the next query's.
            slot.abandon()
            raise

    async def _read_errors(self, generation: int | None, what: str) -> list[ErrorEntry]:
        """Empty the error queue; the entries it held, oldest first."""
        entries: list[ErrorEntry] = []
        for _ in range(_MAX_ERRORS_READ):
            entry = parse_error(await self._query(ERROR_QUERY, _IS_ERROR, generation, what))
            if entry.code == 0:
                break
            entries.append(entry)
        return entries

    # ------------------------------------------------------------ Galvanostat

    async def connect(self) -> GalvanostatInfo:
        """Open the port, identify with ``*IDN?``, set ``:FORM:ELEM`` and read the output state.

        Sends no ``*RST`` or ``*CLS``: reconnecting never disturbs a running output.
        Closes any previous link first, so it also reconnects after a lost link.
        """
        async with self._lock:
            await self._drop_link("reconnecting")
            await self._open_link(self.timeout_s)
            try:
                info = await self._handshake()
            except BaseException:
                await self._drop_link("the handshake failed")
                raise
            self._info = info
        _log.info(
            "connected to %s %s (serial %s) on %s; output %s",
            info.vendor,
            info.model,
            info.serial,
            self.port,
            "on" if self._output_on else "off",
        )
        return info

    async def _handshake(self) -> GalvanostatInfo:
        identity = parse_identity(await self._query(IDN_QUERY, _IS_IDENTITY))
        stale = await self._read_errors(None, "connect")
        if stale:
            _log.info(
                "SMU %s: errors left from before, discarded: %s",
                self.port,
                "; ".join(map(str, stale)),
            )
        elements = cmd_format_elements(READING_ELEMENTS)
        setup = (elements, SENSE_CONCURRENT, SENSE_VOLTAGE_AND_CURRENT)
        for command in setup:
            await self._send(command, None, "connect")
        refused = await self._read_errors(None, "connect")
        if refused:
            raise CommandRefused(
                command="; ".join(setup),
                targets=[self.port],
                detail="; ".join(map(str, refused)),
            )
        self._output_on = parse_output_state(await self._query(OUTPUT_QUERY, _IS_BOOL))
        if not self._output_on:
            self._mode = "off"
        return _info_for(identity)

    async def close(self) -> None:
        """Close the port; never raises, and leaves the output as it is.

        A request in flight in another task fails with :class:`InstrumentConnectionError`.
        """
        # No lock: closing must not wait behind a query that may never be answered.
        if self._link is not None:
            _log.info("closing the link to the SMU on %s", self.port)
        with contextlib.suppress(DriverError):
            await self._drop_link("closed by the client")

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def source_current(self, current_a: float, *, compliance_v: float) -> None:
        """Output on, sourcing ``current_a`` (A, positive charges); |V| ≤ ``compliance_v``.

        The compliance is set before the level, so a new current never meets an old
        limit. A refused setting (``:SYST:ERR?`` not empty) raises
        :class:`CommandRefused` before the output is switched on; a refusal of the
        switch itself turns the output off again.
        """
        info = self._require_info()
        _check_value("current_a", current_a, info.current_range_a, "A", info.model)
        _check_limit("compliance_v", compliance_v, info.voltage_range_v, "V", info.model)
        await self._source(
            "CURR", current_a, "VOLT", compliance_v, f"source_current({current_a!r} A)"
        )
        self._mode = "current"
        _log.info("SMU %s: sourcing %.6g A (compliance %.6g V)", self.port, current_a, compliance_v)

    async def source_voltage(self, voltage_v: float, *, compliance_a: float) -> None:
        """Output on, holding ``voltage_v`` (V); |I| ≤ ``compliance_a`` (A)."""
        info = self._require_info()
        _check_value("voltage_v", voltage_v, info.voltage_range_v, "V", info.model)
        _check_limit("compliance_a", compliance_a, info.current_range_a, "A", info.model)
        await self._source(
            "VOLT", voltage_v, "CURR", compliance_a, f"source_voltage({voltage_v!r} V)"
        )
        self._mode = "voltage"
        _log.info("SMU %s: holding %.6g V (compliance %.6g A)", self.port, voltage_v, compliance_a)

    async def _source(
        self,
        function: SourceFunction,
        level: float,
        measured: SourceFunction,
        limit: float,
        what: str,
    ) -> None:
        # Taken before the lock: a halt that starts while this waits for its turn wins.
        generation = self._halt_generation
        async with self._lock:
            self._require_info()
            stale = await self._read_errors(generation, what)
            if stale:
                _log.info("SMU %s: errors from before, discarded: %s", self.port, stale)
            for command in (
                cmd_source_function(function),
                cmd_source_mode_fixed(function),
                cmd_source_range(function, level),
                cmd_compliance(measured, limit),
                cmd_source_level(function, level),
            ):
                await self._send(command, generation, what)
            refused = await self._read_errors(generation, what)
            if refused:
                raise CommandRefused(
                    command=what, targets=[self.port], detail="; ".join(map(str, refused))
                )
            await self._send(cmd_output(True), generation, what)
            self._output_on = True
            refused = await self._read_errors(generation, what)
        if refused:
            # The output may be on at a setting nobody asked for: off first, then say so.
            await self.output_off()
            raise CommandRefused(
                command=f"{what}: :OUTP ON",
                targets=[self.port],
                detail="; ".join(map(str, refused)),
            )

    async def measure(self) -> Measurement:
        """One ``:READ?``: voltage, current and the instrument's timestamp (s).

        ``output_on`` is the state the client set or read last (``:OUTP?`` at connect
        and after every halt); the status word of the reading is in :attr:`last_reading`.
        """
        async with self._lock:
            self._require_info()
            line = await self._query(READ_QUERY, _IS_READING)
            output_on = self._output_on
        reading = parse_reading(line, READING_ELEMENTS)
        self.last_reading = reading
        # parse_reading answered every element asked for; the asserts document it.
        assert reading.t_s is not None
        assert reading.voltage_v is not None
        assert reading.current_a is not None
        for name, value in (("VOLT", reading.voltage_v), ("CURR", reading.current_a)):
            if value >= NO_VALUE:
                # The function is off: someone sent *RST or :SENS:FUNC:OFF on this port
                # since connect. Passing 9.91E+37 V on would look like a real reading.
                msg = (
                    f"the SMU on {self.port} did not measure {name} (it answered 9.91E+37): "
                    f"its sense function {name} is off; reconnect to turn it on again"
                )
                raise ProtocolViolation(msg)
        return Measurement(
            t_s=reading.t_s,
            voltage_v=reading.voltage_v,
            current_a=reading.current_a,
            output_on=output_on,
        )

    # ------------------------------------------------------------ the halt

    async def output_off(self) -> None:
        """Output off, confirmed by ``:OUTP?``; idempotent, bounded by ``halt_timeout_s``.

        Never waits behind another request: a query in flight is abandoned (its caller
        gets a :class:`DriverError`). If the calling task is cancelled meanwhile, the
        halt still runs to its end (bounded) before the cancellation goes on. Reopens
        the port if the link was lost. Raises :class:`InstrumentTimeout` if the
        instrument does not confirm, :class:`CommandRefused` if it reports the output
        still on.
        """
        halt = asyncio.ensure_future(self._halt())
        try:
            await asyncio.shield(halt)
        except asyncio.CancelledError:
            # Shielded: the cancellation is honoured once the halt is over, not before.
            while not halt.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(halt)
            if not halt.cancelled() and (error := halt.exception()) is not None:
                _log.error("SMU %s: halt while cancelled failed: %s", self.port, error)
            raise

    async def _halt(self) -> None:
        self._halts_running += 1
        self._halt_generation += 1
        self._wire_free.clear()
        timeout_s = self.halt_timeout_s
        slot: _Slot | None = None
        try:
            async with asyncio.timeout(timeout_s):
                link = self._link
                if link is None or link.closed:
                    link = await self._open_link(timeout_s)
                preempted = DriverError(
                    f"interrupted by output_off on {self.port}; the answer was abandoned"
                )
                for pending in self._slots:
                    # Another halt's confirmation is as good as this one's: left alone.
                    if not (pending.abandoned or pending.halt):
                        pending.abandon(preempted)
                # Written before any await: on its way whatever happens to this task.
                link.write(encode_line(cmd_output(False)) + encode_line(OUTPUT_QUERY))
                slot = _Slot(OUTPUT_QUERY, _IS_BOOL, halt=True)
                self._slots.append(slot)
                line = await slot.future
        except TimeoutError as err:
            if slot is not None:
                slot.abandon()
            msg = (
                f"the SMU on {self.port} did not confirm :OUTP OFF within {timeout_s} s; "
                "the output state is unknown: switch it off at the instrument"
            )
            _log.error("%s", msg)
            raise InstrumentTimeout(msg) from err
        except asyncio.CancelledError:
            if slot is not None:
                slot.abandon()
            raise
        finally:
            self._halts_running -= 1
            if not self._halts_running:
                self._wire_free.set()
        if parse_output_state(line):
            msg = "the instrument still reports its output on after :OUTP OFF"
            _log.error("SMU %s: %s", self.port, msg)
            raise CommandRefused(command=":OUTP OFF", targets=[self.port], detail=msg)
        self._output_on = False
        self._mode = "off"
        _log.info("SMU %s: output off (confirmed)", self.port)


def _info_for(identity: Identity) -> GalvanostatInfo:
    limits = KNOWN_MODELS.get(identity.model)
    if limits is None:
        _log.warning(
            "unknown SMU model %r (%s): using conservative limits %s",
            identity.model,
            identity.vendor,
            UNKNOWN_MODEL,
        )
        limits = UNKNOWN_MODEL
    return GalvanostatInfo(
        vendor=identity.vendor,
        model=identity.model,
        serial=identity.serial,
        firmware=identity.firmware,
        current_range_a=limits.current_range_a,
        voltage_range_v=limits.voltage_range_v,
        min_sample_interval_s=limits.min_sample_interval_s,
    )


def _check_value(field: str, value: float, limit: float, unit: str, model: str) -> None:
    if not (math.isfinite(value) and abs(value) <= limit):
        raise ConfigError(
            field=field, problem=f"must be within ±{limit:g} {unit} on a {model}, got {value!r}"
        )


def _check_limit(field: str, value: float, limit: float, unit: str, model: str) -> None:
    if not (math.isfinite(value) and 0 < value <= limit):
        raise ConfigError(
            field=field,
            problem=f"must be > 0 and at most {limit:g} {unit} on a {model}, got {value!r}",
        )
