"""TCP transport of the Neware BTS 8 API: moves bytes, knows nothing of frames or XML.

Framing and parsing live in the sans-IO codec (:mod:`._codec`); request/response
matching, locking and timeouts live in the client (:mod:`._client`). Keeping this
layer dumb is what lets the codec be fuzzed without a socket and the client be
tested against a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib

from cellguard.drivers.errors import InstrumentConnectionError

# One read is at most this many bytes; the frame splitter reassembles the rest.
READ_CHUNK_BYTES = 64 * 1024


class TcpTransport:
    """A connected TCP stream to a BTS server.

    Build it with :meth:`open`. Every OS-level failure is translated into
    :class:`InstrumentConnectionError` (chained with ``from``) naming ``host:port``.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False
        self.host = host
        self.port = port

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float) -> TcpTransport:
        """Connect to ``host:port`` within ``timeout_s`` seconds."""
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError as err:
            msg = (
                f"no TCP connection to the BTS server at {where} within {timeout_s} s; "
                "check the host, the network and that the BTS server is running"
            )
            raise InstrumentConnectionError(msg) from err
        except OSError as err:
            msg = (
                f"cannot connect to the BTS server at {where} ({err}); check the host and "
                "port and that the BTS server is running with its API enabled"
            )
            raise InstrumentConnectionError(msg) from err
        return cls(reader, writer, host, port)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called or the peer's end was seen."""
        return self._closed

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the OS has taken it (flow control)."""
        if self._closed:
            msg = f"the link to {self.host}:{self.port} is closed"
            raise InstrumentConnectionError(msg)
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as err:
            msg = (
                f"lost the link to the BTS server at {self.host}:{self.port} while sending ({err})"
            )
            raise InstrumentConnectionError(msg) from err

    async def receive(self) -> bytes:
        """The next bytes from the server, however many arrived; ``b""`` at end of stream."""
        if self._closed:
            msg = f"the link to {self.host}:{self.port} is closed"
            raise InstrumentConnectionError(msg)
        try:
            return await self._reader.read(READ_CHUNK_BYTES)
        except OSError as err:
            msg = (
                f"lost the link to the BTS server at {self.host}:{self.port} while receiving "
                f"({err})"
            )
            raise InstrumentConnectionError(msg) from err

    async def aclose(self) -> None:
        """Close the socket; safe to call twice, and finishes even when cancelled."""
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
