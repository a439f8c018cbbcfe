"""Serial transport for SCPI instruments: moves bytes, knows nothing of lines or SCPI.

Built on ``pyserial-asyncio-fast``, so the same code opens a device path
(``/dev/ttyUSB0``, one end of a socat pty pair) or a pyserial URL
(``socket://127.0.0.1:5025`` for a serial-to-Ethernet bridge). Received bytes are
handed to a callback the moment they arrive instead of waiting for somebody to read
them: the client matches replies to the queries it sent as they come, so a halt never
has to wait for another task's read to finish (see :mod:`._client`).

Writes are synchronous and ordered: :meth:`SerialLink.write` puts the whole message
into the transport before returning, so a message is never split by another one and
is on its way even if the writing task is cancelled right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from serial_asyncio_fast import create_serial_connection

from cellguard.drivers.errors import ConfigError, InstrumentConnectionError

__all__ = [
    "DEFAULT_BAUDRATE",
    "Parity",
    "SerialLink",
    "SerialSettings",
]

_log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 9600
"""A 2400's factory setting (with 8 data bits, no parity, 1 stop bit: 8N1)."""

Parity = Literal["N", "E", "O", "M", "S"]
_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


class SerialSettings:
    """Line settings of a serial port; checked here so a typo is named, not an OS error."""

    __slots__ = ("baudrate", "bytesize", "parity", "stopbits")

    def __init__(
        self,
        baudrate: int = DEFAULT_BAUDRATE,
        bytesize: int = 8,
        parity: Parity = "N",
        stopbits: float = 1,
    ) -> None:
        if baudrate not in _BAUDRATES:
            raise ConfigError(
                field="baudrate",
                problem=f"must be one of {', '.join(map(str, _BAUDRATES))}, got {baudrate!r}",
            )
        if bytesize not in (5, 6, 7, 8):
            raise ConfigError(field="bytesize", problem=f"must be 5..8 bits, got {bytesize!r}")
        if parity not in ("N", "E", "O", "M", "S"):
            raise ConfigError(field="parity", problem=f"must be N, E, O, M or S, got {parity!r}")
        if stopbits not in (1, 1.5, 2):
            raise ConfigError(field="stopbits", problem=f"must be 1, 1.5 or 2, got {stopbits!r}")
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity: Parity = parity
        self.stopbits = stopbits

    def __repr__(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits:g}"


class _LinkProtocol(asyncio.Protocol):
    """Forwards received bytes and the end of the link to the owner's callbacks."""

    def __init__(
        self, on_data: Callable[[bytes], None], on_lost: Callable[[Exception | None], None]
    ) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def eof_received(self) -> bool:
        # A socket:// peer that hangs up; returning False lets asyncio close the transport.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(exc)


class SerialLink:
    """One open serial port (or pyserial URL), bytes in through a callback, bytes out.

    Build it with :meth:`open`. Every OS-level failure is translated into
    :class:`InstrumentConnectionError` naming the port.
    """

    def __init__(
        self, port: str, transport: asyncio.BaseTransport, protocol: _LinkProtocol
    ) -> None:
        self.port = port
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    @classmethod
    async def open(
        cls,
        port: str,
        *,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[Exception | None], None],
        settings: SerialSettings | None = None,
        timeout_s: float,
    ) -> SerialLink:
        """Open ``port`` (device path or pyserial URL) within ``timeout_s`` seconds.

        ``on_data`` gets every chunk of received bytes as it arrives; ``on_lost`` is
        called once when the link ends (``None`` after :meth:`aclose`, else the error).
        """
        if not port:
            raise ConfigError(field="port", problem="name a serial device or a pyserial URL")
        settings = settings or SerialSettings()
        loop = asyncio.get_running_loop()
        protocol = _LinkProtocol(on_data, on_lost)
        try:
            async with asyncio.timeout(timeout_s):
                transport, _ = await create_serial_connection(
                    loop,
                    lambda: protocol,
                    port,
                    baudrate=settings.baudrate,
                    bytesize=settings.bytesize,
                    parity=settings.parity,
                    stopbits=settings.stopbits,
                )
        except TimeoutError as err:
            msg = f"could not open the serial port {port} within {timeout_s} s"
            raise InstrumentConnectionError(msg) from err
        except ValueError as err:
            # pyserial says ValueError for a URL scheme it does not know.
            raise ConfigError(
                field="port",
                problem=f"{port!r} is neither a serial device nor a pyserial URL ({err})",
            ) from err
        except OSError as err:  # serial.SerialException is an OSError
            msg = (
                f"cannot open the serial port {port} ({err}); check the device path or URL, "
                "the cable, and that no other program holds the port"
            )
            raise InstrumentConnectionError(msg) from err
        return cls(port, transport, protocol)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called or the link ended."""
        return self._closed or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        """Queue ``data`` whole, in order; never waits (a few bytes per SCPI message)."""
        if self.closed:
            msg = f"the serial link {self.port} is closed"
            raise InstrumentConnectionError(msg)
        assert isinstance(self._transport, asyncio.WriteTransport)
        try:
            self._transport.write(data)
        except OSError as err:
            msg = f"lost the serial link {self.port} while sending ({err})"
            raise InstrumentConnectionError(msg) from err

    async def aclose(self) -> None:
        """Close the port; safe to call twice, and completes even when cancelled."""
        if self._closed:
            return
        self._closed = True
        self._transport.close()
        # Closing a serial port finishes in a worker thread; wait for it (shielded, so a
        # cancelled caller does not leave the port half closed, or a task behind).
        with contextlib.suppress(OSError):
            await asyncio.shield(self._protocol.closed)
