"""A Modbus device, read and written by register name: pymodbus underneath.

:class:`ModbusDevice` owns one pymodbus client (TCP, or RTU over a serial line) and a
:class:`~._registers.RegisterMap`; it reads named values in as few requests as the map
allows and writes them with their access checked, and it translates every pymodbus
outcome into cellguard's errors:

- cannot connect, link lost -> :class:`InstrumentConnectionError` naming host:port
  (or the serial port);
- no answer within ``timeout_s`` -> :class:`InstrumentTimeout`;
- a Modbus exception response (illegal address, ...) -> :class:`CommandRefused`
  naming the registers of the request;
- anything malformed -> :class:`ProtocolViolation`.

Timeouts are ours, not pymodbus': pymodbus' own retries are off (a retried write is
not what a halt path wants hidden) and its reconnect task is off (reconnection is the
supervisor's policy). pymodbus turns a cancellation into ``ModbusIOException`` in
places; such an exception in a task being cancelled is turned back into
``CancelledError`` here, so cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)
from cellguard.drivers.modbus._registers import (
    ReadBlock,
    Register,
    RegisterMap,
    decode_block,
    plan_reads,
    plan_writes,
)

__all__ = ["DEFAULT_TIMEOUT_S", "ModbusDevice", "SerialLink", "TcpLink"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 1.0
"""How long one request may wait for its answer (s)."""

# Function codes of the requests, to check an answer is the one asked for.
_READ_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_EXC_NAMES = {code.value: code.name.lower().replace("_", " ") for code in ExcCodes}


@dataclass(frozen=True, slots=True)
class TcpLink:
    """Modbus TCP to ``host:port``."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialLink:
    """Modbus RTU on a serial line: a device path or a pyserial URL (``rfc2217://...``)."""

    port: str
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    def __str__(self) -> str:
        return f"{self.port} ({self.baudrate} {self.bytesize}{self.parity}{self.stopbits})"


class ModbusDevice:
    """One Modbus device (one ``device_id`` behind a link), by register name.

    Reusable: after a lost link, :meth:`connect` again. Requests are serialised, each
    bounded by ``timeout_s``.
    """

    def __init__(
        self,
        link: TcpLink | SerialLink,
        registers: RegisterMap,
        *,
        device_id: int = 1,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not 0 <= device_id <= 247:
            raise ConfigError(field="device_id", problem=f"must be 0..247, got {device_id!r}")
        if not timeout_s > 0:
            raise ConfigError(field="timeout_s", problem=f"must be > 0 s, got {timeout_s!r}")
        if isinstance(link, SerialLink) and link.parity not in ("N", "E", "O"):
            raise ConfigError(field="parity", problem=f"must be N, E or O, got {link.parity!r}")
        self.link = link
        self.registers = registers
        self.device_id = device_id
        self.timeout_s = timeout_s
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None

    def __str__(self) -> str:
        return f"Modbus device {self.device_id} at {self.link}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    # ------------------------------------------------------------------ the link

    async def connect(self) -> None:
        """Open the link (closing a previous one first)."""
        await self.close()
        client = self._new_client()
        try:
            async with asyncio.timeout(self.timeout_s):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            client.close()
            msg = f"cannot connect to {self.link} (nothing answers there, or it refused)"
            raise InstrumentConnectionError(msg)
        self._client = client

    async def close(self) -> None:
        """Close the link; never raises."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

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

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # pymodbus' timeout is set above ours so that ours always fires first and the
        # error names our limit; reconnect_delay=0 keeps pymodbus from starting its own
        # reconnect task.
        inner_timeout_s = 2 * self.timeout_s + 1.0
        link = self.link
        if isinstance(link, TcpLink):
            return AsyncModbusTcpClient(
                link.host,
                port=link.port,
                timeout=inner_timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        return AsyncModbusSerialClient(
            link.port,
            framer=FramerType.RTU,
            baudrate=link.baudrate,
            bytesize=link.bytesize,
            parity=link.parity,
            stopbits=link.stopbits,
            timeout=inner_timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    # ------------------------------------------------------------------ reading

    async def read(self, names: Iterable[str]) -> dict[str, float]:
        """Read the named registers now; values in the units their names declare."""
        regs = [self.registers[n] for n in names]
        values: dict[str, float] = {}
        for block in plan_reads(regs):
            values.update(await self._read_block(block))
        return {r.name: values[r.name] for r in regs}

    async def read_all(self) -> dict[str, float]:
        """Read every register of the map."""
        return await self.read(self.registers.names)

    async def _read_block(self, block: ReadBlock) -> dict[str, float]:
        client = self._require_client()
        method = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.table]
        call = partial(method, block.address, count=block.count, device_id=self.device_id)
        what = f"read {block.table} {block.address}..{block.address + block.count - 1}"
        response = await self._execute(what, block.registers, _READ_FC[block.table], call)
        raw: Sequence[int]
        if block.table in ("coil", "discrete"):
            raw = [int(b) for b in response.bits]
        else:
            raw = list(response.registers)
        try:
            return decode_block(block, raw)
        except ValueError as err:
            msg = f"{self}: malformed answer to {what}: {err}"
            raise ProtocolViolation(msg) from err

    # ------------------------------------------------------------------ writing

    async def write(self, name: str, value: float) -> None:
        """Write one value (in the unit its name declares)."""
        await self.write_many({name: value})

    async def write_many(self, values: Mapping[str, float]) -> None:
        """Write several values, in the given order; touching registers in one request.

        Every value is checked (access, range) before anything is sent, so a bad one
        leaves the device untouched.
        """
        encoded: dict[Register, tuple[int, ...]] = {}
        for name, value in values.items():
            reg = self.registers[name]
            if not reg.writable:
                raise ConfigError(
                    field=name, problem=f'is read-only ({reg.table} {reg.address}, access "r")'
                )
            encoded[reg] = reg.encode(value)
        for group in plan_writes(dict.fromkeys(encoded, 0.0)):
            await self._write_group(group, [w for reg in group for w in encoded[reg]])

    async def _write_group(self, group: tuple[Register, ...], words: list[int]) -> None:
        client = self._require_client()
        first = group[0]
        call: Callable[[], Awaitable[ModbusPDU]]
        if first.table == "coil":
            fc = 5
            call = partial(
                client.write_coil, first.address, bool(words[0]), device_id=self.device_id
            )
        elif len(words) == 1:
            fc = 6
            call = partial(client.write_register, first.address, words[0], device_id=self.device_id)
        else:
            fc = 16
            call = partial(client.write_registers, first.address, words, device_id=self.device_id)
        what = f"write {first.table} {first.address}..{first.address + len(words) - 1}"
        await self._execute(what, group, fc, call)

    # ------------------------------------------------------------------ identity

    async def identify(self) -> dict[str, str]:
        """Basic Device Identification (FC 43/14): vendor, product code, revision...

        Empty when the device does not implement it (most do not) or does not answer.
        """
        client = self._require_client()
        try:
            response = await self._execute(
                "read device identification",
                (),
                0x2B,
                partial(client.read_device_information, device_id=self.device_id),
            )
        except (CommandRefused, InstrumentTimeout, ProtocolViolation) as err:
            log.debug("%s: no device identification: %s", self, err)
            return {}
        info: dict[int, object] = getattr(response, "information", {}) or {}
        keys = {0: "vendor", 1: "product_code", 2: "revision", 4: "product_name", 5: "model"}
        out: dict[str, str] = {}
        for object_id, key in keys.items():
            value = info.get(object_id)
            if isinstance(value, bytes):
                out[key] = value.decode("utf-8", "replace")
        return out

    # ------------------------------------------------------------------ one request

    def _require_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is None or not self._client.connected:
            msg = f"not connected to {self.link}: connect() first"
            raise InstrumentConnectionError(msg)
        return self._client

    async def _execute(
        self,
        what: str,
        registers: Sequence[Register],
        function_code: int,
        call: Callable[[], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        """One request, its answer checked; pymodbus' outcomes become our errors."""
        targets = [r.name for r in registers]
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await call()
        except TimeoutError:
            if not self.connected:
                msg = f"link to {self.link} lost during {what}"
                raise InstrumentConnectionError(msg) from None
            msg = f"{self}: no answer within {self.timeout_s:g} s to {what}"
            raise InstrumentTimeout(msg) from None
        except ConnectionException as err:
            msg = f"link to {self.link} lost during {what}: {err}"
            raise InstrumentConnectionError(msg) from err
        except ModbusIOException as err:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # pymodbus turned our cancellation into an I/O error: give it back.
                raise asyncio.CancelledError from err
            msg = f"{self}: bad answer to {what}: {err}"
            raise ProtocolViolation(msg) from err
        except ModbusException as err:
            msg = f"{self}: {what} failed: {err}"
            raise ProtocolViolation(msg) from err
        if isinstance(response, ExceptionResponse) or response.isError():
            code = response.exception_code
            detail = f"Modbus exception {code} ({_EXC_NAMES.get(code, 'unknown')})"
            raise CommandRefused(what, targets or [str(self)], detail)
        if response.function_code != function_code:
            # An answer to another request (a late one to a cancelled request on a line
            # without transaction ids): never take it for ours.
            msg = (
                f"{self}: answer with function code {response.function_code} "
                f"to {what} (function code {function_code})"
            )
            raise ProtocolViolation(msg)
        return response
