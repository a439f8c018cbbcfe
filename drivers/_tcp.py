"""A TCP byte stream to an instrument's server: moves bytes, knows nothing of frames.

Framing and parsing are each driver's sans-IO codec; request/response matching, the
lock and timeouts are its client's. Keeping this layer dumb is what lets the codecs
be fuzzed without a socket and the clients be tested against a real socket. Every
driver that speaks TCP subclasses :class:`TcpStream` to say only who it talks to, so
its errors name the vendor's server and the vendor's hint.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar, Self

from cellguard.drivers.errors import InstrumentConnectionError

# One read is at most this many bytes; the frame splitter reassembles the rest.
READ_CHUNK_BYTES = 64 * 1024


class TcpStream:
    """A connected TCP stream (:meth:`open` builds one).

    Every OS-level failure becomes :class:`InstrumentConnectionError` naming the
    server and ``host:port``, chained with ``from``.
    """

    _server: ClassVar[str] = "the server"  # how errors name the peer
    _timeout_hint: ClassVar[str] = ""  # appended to a connect timeout's message
    _connect_hint: ClassVar[str] = "check the host and port"  # after a refused connect

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False
        self.host = host
        self.port = port
        self.where = f"{host}:{port}"

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float) -> Self:
        """Connect to ``host:port`` within ``timeout_s`` seconds."""
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError as err:
            msg = (
                f"no TCP connection to {cls._server} at {where} within {timeout_s} s"
                f"{cls._timeout_hint}"
            )
            raise InstrumentConnectionError(msg) from err
        except OSError as err:
            msg = f"cannot connect to {cls._server} at {where} ({err}); {cls._connect_hint}"
            raise InstrumentConnectionError(msg) from err
        return cls(reader, writer, host, port)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the OS has taken it (flow control)."""
        if self._closed:
            msg = f"the link to {self.where} is closed"
            raise InstrumentConnectionError(msg)
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as err:
            msg = f"lost the link to {self._server} at {self.where} while sending ({err})"
            raise InstrumentConnectionError(msg) from err

    async def receive(self) -> bytes:
        """The next bytes, however many arrived; ``b""`` at the end of the stream."""
        if self._closed:
            msg = f"the link to {self.where} is closed"
            raise InstrumentConnectionError(msg)
        try:
            return await self._reader.read(READ_CHUNK_BYTES)
        except OSError as err:
            msg = f"lost the link to {self._server} at {self.where} while receiving ({err})"
            raise InstrumentConnectionError(msg) from err

    async def aclose(self) -> None:
        """Close the socket; safe twice, and finishes even when the caller is cancelled."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        # Shielded so that a cancelled caller still leaves no half-closed socket behind
        # (an unclosed transport also warns, and warnings are errors in our tests).
        # If the caller is cancelled anyway, the close itself already happened above;
        # only the wait for the peer's acknowledgement is left to the shielded task.
        await asyncio.shield(self._wait_closed())

    async def _wait_closed(self) -> None:
        # A reset peer makes wait_closed() raise; the socket is closed either way.
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
