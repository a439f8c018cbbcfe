"""TCP transport of MacNet (JSON or binary port): moves bytes, knows nothing of frames.

Framing and parsing are the sans-IO codec's (:mod:`._codec`); request/response
matching, the lock and timeouts are the client's (:mod:`._client`).
"""

from __future__ import annotations

import asyncio
import contextlib

from cellguard.drivers.errors import InstrumentConnectionError

READ_CHUNK_BYTES = 64 * 1024


class MacNetTransport:
    """A connected TCP stream to the Maccor tester (MacTest32) (:meth:`open` builds one).

    Every OS-level failure becomes :class:`InstrumentConnectionError` naming the
    address, chained with ``from``.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False
        self.where = where

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float) -> MacNetTransport:
        """Connect to ``host:port`` within ``timeout_s`` seconds."""
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError as err:
            msg = f"no TCP connection to the Maccor MacNet server at {where} within {timeout_s} s"
            raise InstrumentConnectionError(msg) from err
        except OSError as err:
            msg = (
                f"cannot connect to the Maccor MacNet server at {where} ({err}); check the host "
                "and port (System.ini's MacNet_JSON_Port, 57570 by default, MacNet_TCP_Port, "
                "57560) and the tester PC's firewall"
            )
            raise InstrumentConnectionError(msg) from err
        return cls(reader, writer, where)

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, data: bytes) -> None:
        if self._closed:
            msg = f"the link to {self.where} is closed"
            raise InstrumentConnectionError(msg)
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as err:
            msg = f"lost the link to the Maccor MacNet server at {self.where} while sending ({err})"
            raise InstrumentConnectionError(msg) from err

    async def receive(self) -> bytes:
        """The next bytes, however many arrived; ``b""`` at the end of the stream."""
        if self._closed:
            msg = f"the link to {self.where} is closed"
            raise InstrumentConnectionError(msg)
        try:
            return await self._reader.read(READ_CHUNK_BYTES)
        except OSError as err:
            msg = (
                f"lost the link to the Maccor MacNet server at {self.where} while receiving ({err})"
            )
            raise InstrumentConnectionError(msg) from err

    async def aclose(self) -> None:
        """Close the socket; safe twice, and finishes even when the caller is cancelled."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        await asyncio.shield(self._wait_closed())

    async def _wait_closed(self) -> None:
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
