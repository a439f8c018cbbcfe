"""Async client of MacNet's native binary port (``MacNet_TCP_Port``, 57560 by default).

The help defines every MacNet function on this port first (the JSON port mirrors it);
cellguard speaks here only what a guard needs when the JSON port is not enough:

* (0, 0) echo: "the received message will be replied as is" (a link check);
* (4, 7) all status and readings of one channel;
* (6, 3) suspend, (6, 4) resume, (6, 5) reset;
* (6, 8) set direct mode output, rest included (pymacnet sends rest here because, its
  authors note, MacTest32's JSON (6, 8) did not set rest in 2022; the help does not
  say so, and cellguard's JSON client still sends rest as JSON).

Not spoken here: (4, 1)/(4, 2)/(4, 3), whose replies the help lays out with ``Len``
"Number of channels" against its general rule "Rx: Number of bytes of data" (a
reply cannot be framed safely until a real tester's answer settles which), and the
start functions (6, 2)/(6, 7), whose fixed 25-byte names JSON does not need.

``Chan`` is 0-based, as on the JSON port: the help's frame layout ("Chan Word Test
channel. 0-based.") is "the same for messages sent to the Maccor program as well as
the replies", and (6, 8)'s own table says "Chan WORD Test channel. 0-based.".

One request at a time; a reply must carry the request's function and channel or the
link is out of step and closed. A timeout, lost link or cancellation mid-request
closes the connection; reconnecting is the caller's (:meth:`connect`).
"""

from __future__ import annotations

import logging
from typing import ClassVar

from cellguard.drivers._framed import FramedClient
from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    ProtocolViolation,
)
from cellguard.drivers.maccor._codec import (
    BinaryFrame,
    BinaryReplySplitter,
    decode_bin_reply,
    decode_bin_result,
    decode_bin_state,
    encode_bin,
    encode_bin_direct_output,
)
from cellguard.drivers.maccor._messages import (
    CHARGE_MODES,
    CURRENT_RANGES,
    DEFAULT_BIN_PORT,
    DIRECT_OUTPUT_RESULTS,
    ECHO,
    FUNCTION_NAMES,
    RESET,
    RESUME,
    SET_DIRECT_OUTPUT,
    STATUS_ONE,
    SUSPEND,
    ChannelState,
    DirectOutput,
)
from cellguard.drivers.maccor._transport import MacNetBinaryTransport

__all__ = ["REST", "MaccorBinaryClient"]

_log = logging.getLogger(__name__)

REST = DirectOutput(current_a=0.0, voltage_v=0.0, power_w=0.0, mode="R")
"""The (6, 8) set-point that rests a direct-mode channel (output off, test kept)."""


class MaccorBinaryClient(FramedClient):
    """One binary MacNet connection to a Maccor tester (or a simulator of it)."""

    _server: ClassVar[str] = "the Maccor MacNet binary server"
    _link_name: ClassVar[str] = "Maccor MacNet binary"
    _log: ClassVar[logging.Logger] = _log

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_BIN_PORT,
        *,
        timeout_s: float,
        channel_count: int = 0,
    ) -> None:
        super().__init__(host, port, timeout_s=timeout_s)
        self.channel_count = channel_count
        """Channels of the tester (the JSON port's (1, 2)); 0: not known, not checked."""

    def _new_splitter(self) -> BinaryReplySplitter:
        return BinaryReplySplitter()

    async def connect(self) -> None:
        """Open the link (the binary port has no greeting; :meth:`echo` checks it)."""
        async with self._lock:
            await self._drop_link()
            self._transport = await MacNetBinaryTransport.open(self.host, self.port, self.timeout_s)
        _log.info("connected to Maccor MacNet binary %s", self._where)

    # ------------------------------------------------------------ round trips

    async def _exchange(
        self, function: tuple[int, int], chan: int, data: bytes = b"", length: int | None = None
    ) -> BinaryFrame:
        """Send one frame, return its reply; the caller holds the lock."""
        name = FUNCTION_NAMES.get(function, str(function))
        async with self._round_trip(f"{name} {function}") as transport:
            await transport.send(encode_bin(function, chan, data, length))
            reply = decode_bin_reply(await self._next_frame(transport))
        if (reply.function, reply.chan) != (function, chan):
            await self._lose_link(f"reply to {reply.function} Chan {reply.chan}")
            msg = (
                f"{self._server} at {self._where} answered {reply.function} Chan "
                f"{reply.chan} to {function} ({name}) Chan {chan}: out of step"
            )
            raise ProtocolViolation(msg)
        return reply

    def _chan(self, channel: int) -> int:
        count = self.channel_count
        if not 0 <= channel < (count or 0xFFFF):
            raise ConfigError(
                field="channel",
                problem=f"{channel} is not a channel of this {count or 'unknown'}-channel "
                f"tester (0-based: 0..{(count or 0xFFFF) - 1})",
            )
        return channel

    async def _command(
        self,
        function: tuple[int, int],
        channel: int,
        data: bytes = b"",
        results: dict[int, str] | None = None,
    ) -> None:
        name = FUNCTION_NAMES[function]
        async with self._lock:
            reply = await self._exchange(function, self._chan(channel), data)
            if not reply.data:
                # The help gives no binary reply for a refused channel; what answers with
                # a bare header (our simulator, for a channel it lacks) did not carry it out.
                raise CommandRefused(
                    command=name, targets=[f"channel {channel}"], detail="answered with no Result"
                )
            try:
                result = decode_bin_result(reply)
            except ProtocolViolation as err:
                await self._lose_link(str(err))
                raise
        if result != 0:
            text = (results or {}).get(result, "")
            raise CommandRefused(
                command=name,
                targets=[f"channel {channel}"],
                detail=f"Result {result}" + (f": {text}" if text else ""),
            )

    # ------------------------------------------------------------ functions

    async def echo(self, data: bytes = b"cellguard") -> bytes:
        """(0, 0): the tester sends the frame back as is."""
        async with self._lock:
            reply = await self._exchange(ECHO, 0, data)
            if reply.data != data:
                msg = f"{self._server} at {self._where} echoed {reply.data!r}, sent {data!r}"
                await self._lose_link(msg)
                raise ProtocolViolation(msg)
        return reply.data

    async def state(self, channel: int) -> ChannelState:
        """(4, 7): all status and readings of one channel (``tester_time``: Unix ms)."""
        async with self._lock:
            reply = await self._exchange(STATUS_ONE, self._chan(channel), length=0)
            if not reply.data:
                raise CommandRefused(
                    command=FUNCTION_NAMES[STATUS_ONE],
                    targets=[f"channel {channel}"],
                    detail="answered with no readings",
                )
            try:
                return decode_bin_state(reply)
            except ProtocolViolation as err:
                await self._lose_link(str(err))
                raise

    async def suspend(self, channel: int) -> None:
        """(6, 3): output off at once, the test kept (resumable)."""
        await self._command(SUSPEND, channel)

    async def resume(self, channel: int) -> None:
        await self._command(RESUME, channel)

    async def reset(self, channel: int) -> None:
        await self._command(RESET, channel)

    async def set_direct_output(self, channel: int, output: DirectOutput) -> None:
        """(6, 8) on a channel in direct mode; at most one per 100 ms per channel."""
        if output.mode not in CHARGE_MODES:
            raise ConfigError(field="mode", problem=f"must be 'C', 'D' or 'R', got {output.mode!r}")
        if output.current_range not in CURRENT_RANGES:
            raise ConfigError(
                field="current_range", problem=f"must be 1..4, got {output.current_range}"
            )
        data = encode_bin_direct_output(output)
        await self._command(SET_DIRECT_OUTPUT, channel, data, DIRECT_OUTPUT_RESULTS)

    async def rest(self, channel: int) -> None:
        """(6, 8) with charge mode 'R': the direct-mode channel rests."""
        await self.set_direct_output(channel, REST)
