"""The plumbing of a client that talks in frames over one :class:`TcpStream`: the link's
state, reading whole frames, losing and dropping the link, ``async with``.

What a request looks like, how a reply is checked and what connecting means is each
driver's; this is the part that was the same in each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import ClassVar, Protocol, Self

from cellguard.drivers._tcp import TcpStream
from cellguard.drivers.errors import (
    ConfigError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)


class Splitter(Protocol):
    """A sans-IO frame splitter: bytes in, whole frames out."""

    @property
    def pending_bytes(self) -> int: ...
    def feed(self, data: bytes) -> list[bytes]: ...


class ReplyTap(Protocol):
    """What the client stamps on the wire tap (the vendors' taps stamp more)."""

    def reply_arrived(self, t_s: float) -> None: ...


class FramedClient:
    """A client's link to one server: host, port, timeout, transport, frames, lock."""

    _server: ClassVar[str]  # how errors name the peer: "the Arbin CTI server"
    _link_name: ClassVar[str]  # how log lines name the link: "Arbin CTI"
    _log: ClassVar[logging.Logger]
    tap: ReplyTap | None = None

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ConfigError(field="timeout_s", problem=f"must be > 0 seconds, got {timeout_s}")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._where = f"{host}:{port}"
        self._transport: TcpStream | None = None
        self._splitter = self._new_splitter()
        self._frames: deque[bytes] = deque()
        self._lock = asyncio.Lock()

    @abstractmethod
    def _new_splitter(self) -> Splitter:
        """A splitter that has seen no bytes (one per link)."""

    @abstractmethod
    async def connect(self) -> object: ...

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.closed

    async def aclose(self) -> None:
        """Close the link; safe twice; a request in flight fails as a lost link."""
        await self._drop_link()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _drop_link(self) -> None:
        transport, self._transport = self._transport, None
        # Bytes of the old link must never be read as replies on a new one.
        self._frames.clear()
        self._splitter = self._new_splitter()
        if transport is not None:
            await asyncio.shield(transport.aclose())

    async def _next_frame(self, transport: TcpStream) -> bytes:
        while not self._frames:
            data = await transport.receive()
            if self.tap is not None and data and not self._splitter.pending_bytes:
                self.tap.reply_arrived(time.perf_counter())
            if not data:
                msg = f"{self._server} at {self._where} closed the connection"
                raise InstrumentConnectionError(msg)
            self._frames.extend(self._splitter.feed(data))
        return self._frames.popleft()

    async def _lose_link(self, why: str) -> None:
        self._log.warning("lost the link to %s %s: %s", self._link_name, self._where, why)
        await self._drop_link()

    @contextlib.asynccontextmanager
    async def _round_trip(self, name: str) -> AsyncIterator[TcpStream]:
        """The link for one round trip, within the timeout; whatever goes wrong in it
        closes the link (a reply half read leaves the stream out of step)."""
        transport = self._transport
        if transport is None:
            msg = f"not connected to {self._server} at {self._where}; call connect()"
            raise InstrumentConnectionError(msg)
        try:
            async with asyncio.timeout(self.timeout_s):
                yield transport
        except TimeoutError as err:
            await self._lose_link(f"no reply to {name} within {self.timeout_s} s")
            msg = (
                f"{self._server} at {self._where} did not answer {name} within "
                f"{self.timeout_s} s; the connection was closed, call connect() to retry"
            )
            raise InstrumentTimeout(msg) from err
        except (InstrumentConnectionError, ProtocolViolation) as err:
            # Out of step or unframed: nothing after this on the link can be trusted.
            await self._lose_link(str(err))
            raise
        except ConfigError:
            raise  # a request that cannot be encoded was not sent: still in step
        except BaseException:
            # Cancelled, or the caller's judge failed mid-reply.
            await self._drop_link()
            raise
