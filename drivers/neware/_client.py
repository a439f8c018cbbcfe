"""Async client of the Neware BTS 8 API: one request at a time, typed replies.

The client owns request/response matching, the lock, timeouts and the channel map; it
hands bytes to :class:`TcpTransport` and parses them with the sans-IO codec. The BTS
protocol has no request ids, so a reply can only be matched to the request it follows.
That is why every timeout, lost link or cancellation in the middle of a request closes
the connection: a reply arriving late would otherwise be taken for the answer to the
next request. Reconnecting is the caller's policy; the client is reusable after
:meth:`NewareClient.connect`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import groupby, pairwise
from types import TracebackType
from typing import Protocol, Self, TypeAlias, TypeVar, assert_never

from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    DriverError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)
from cellguard.drivers.neware._codec import FrameSplitter, decode_reply, encode_request, reply_name
from cellguard.drivers.neware._messages import (
    ChannelAddress,
    ChannelId,
    ChannelInfo,
    ClearFlag,
    CommandReply,
    Connect,
    ConnectReply,
    Continue,
    DataCount,
    DevInfoReply,
    Download,
    DownloadLog,
    DownloadLogReply,
    DownloadRecord,
    DownloadReply,
    DownloadStepLayer,
    DownloadUnits,
    GetChlStatus,
    GetDevInfo,
    Inquire,
    InquireDf,
    InquireDfReply,
    InquireRecord,
    InquireReply,
    Light,
    OtherCommand,
    OtherReply,
    Pause,
    Reply,
    Request,
    Start,
    StartItem,
    StatusReply,
    StepLayerReply,
    Stop,
)
from cellguard.drivers.neware._transport import TcpTransport
from cellguard.drivers.neware._units import beyond_range, judge_units, to_amperes

__all__ = ["DEFAULT_TIMEOUT_S", "NewareClient", "WireTap"]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
"""Seconds to wait for a TCP connection or for the reply to one request."""

ChannelArg: TypeAlias = ChannelId | str
_R = TypeVar("_R", bound=Reply)


class WireTap(Protocol):
    """Timestamps at the wire, for measuring what the daemon adds (``bench/``).

    Set :attr:`NewareClient.tap` to an object with these methods; times are
    ``time.perf_counter()`` seconds. Off (``None``) it costs one attribute test per
    request and per read, so it may stay in the production path.
    """

    def reply_arrived(self, t_s: float) -> None:
        """The first bytes of a reply were read from the socket at ``t_s``."""

    def request_written(self, request: Request, t_s: float) -> None:
        """The whole frame of ``request`` was handed to the OS at ``t_s``."""


def _reply_cmd(reply: Reply) -> str:
    """The ``<cmd>`` the decoded ``reply`` carried (aliases already folded by the codec)."""
    match reply:
        case ConnectReply():
            return "connect_resp"
        case DevInfoReply():
            return "getdevinfo_resp"
        case StatusReply():
            return "getchlstatus_resp"
        case InquireReply():
            return "inquire_resp"
        case InquireDfReply():
            return "inquiredf_resp"
        case CommandReply(command=command):
            return f"{command}_resp"
        case DownloadReply():
            return "donwload_resp"
        case DownloadLogReply():
            return "donwloadlog_resp"
        case StepLayerReply():
            return "downloadStepLayer_resp"
        case OtherReply(cmd=cmd):
            return f"{cmd}_resp"
    assert_never(reply)


def _describe_channels(ids: Iterable[ChannelId]) -> str:
    """``21-1-1..21-1-8, 21-2-1..21-2-8``: runs of consecutive channels, compactly."""
    runs: list[str] = []
    ordered = sorted(set(ids))
    for _, group in groupby(ordered, key=lambda c: (c.devid, c.subdevid)):
        members = list(group)
        first = prev = members[0]
        for ch in [*members[1:], None]:
            if ch is not None and ch.chlid == prev.chlid + 1:
                prev = ch
                continue
            runs.append(str(first) if first == prev else f"{first}..{prev}")
            if ch is not None:
                first = prev = ch
    return ", ".join(runs) if runs else "no channels"


class NewareClient:
    """Client of one Neware BTS 8 server (the PC running BTS Server, API port 502).

    Use it as ``async with NewareClient(host) as client:`` or call :meth:`connect` and
    :meth:`aclose`. Requests are serialised: the protocol cannot tell replies apart, so
    only one may be in flight. Every request waits at most ``timeout_s`` seconds.
    Errors: :class:`InstrumentConnectionError` (and its :class:`InstrumentTimeout`) when
    the link is lost, after which the connection is closed and ``connect()`` may be
    called again; :class:`ProtocolViolation` for replies that break the protocol;
    :class:`CommandRefused` when the server answers ``false``.
    """

    def __init__(
        self,
        host: str,
        port: int = 502,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        username: str = "admin",
        password: str = "neware",
    ) -> None:
        if not timeout_s > 0:
            raise ConfigError(
                field="timeout_s", problem=f"must be a positive number of seconds, got {timeout_s}"
            )
        if not 0 < port < 65536:
            raise ConfigError(field="port", problem=f"must be a TCP port 1..65535, got {port}")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._username = username
        self._password = password
        self._transport: TcpTransport | None = None
        self._splitter = FrameSplitter()
        self._frames: deque[bytes] = deque()
        self._lock = asyncio.Lock()
        self._channels: tuple[ChannelInfo, ...] = ()
        self._addresses: dict[ChannelId, ChannelAddress] = {}
        self.tap: WireTap | None = None
        """Optional timestamps at the wire (see :class:`WireTap`); ``None``: off."""
        self.current_range_a: float | None = None
        """The channels' current range, A, if known: a help in judging download units."""
        self.download_units: dict[ChannelId, DownloadUnits] = {}
        """Per channel, the unit its ``download`` was found in (``"A"`` or ``"mA"``)."""
        self._units_unsure: set[ChannelId] = set()  # warned once until judged

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<NewareClient {self._where} {state}>"

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """True between a successful :meth:`connect` and a close or a lost link."""
        return self._transport is not None

    @property
    def channels(self) -> tuple[ChannelInfo, ...]:
        """Every channel the server reported at the last :meth:`connect`, in its order."""
        return self._channels

    async def connect(self) -> None:
        """Open the TCP link, log in and read the channel map.

        Closes any previous link first, so it also reconnects after a lost link.
        Raises :class:`InstrumentConnectionError` if the server cannot be reached,
        :class:`CommandRefused` if it refuses the login, and :class:`DriverError` if it
        reports no channels.
        """
        async with self._lock:
            await self._drop_link()
            self._transport = await TcpTransport.open(self.host, self.port, self.timeout_s)
            try:
                channels = await self._handshake()
            except BaseException:
                # A half-made connection (logged out, or no channel map) is no connection.
                await self._drop_link()
                raise
            self._channels = channels
            self._addresses = {c.address.channel: c.address for c in channels}
        _log.info(
            "connected to BTS server %s: %s", self._where, _describe_channels(self._addresses)
        )

    async def _handshake(self) -> tuple[ChannelInfo, ...]:
        """Log in and read the channel map; the caller holds the lock."""
        login = await self._exchange(Connect(self._username, self._password), self.timeout_s)
        assert isinstance(login, ConnectReply), login  # _exchange checked the <cmd>
        if not login.ok:
            raise CommandRefused(
                command="connect",
                targets=[self._where],
                detail=f"check the BTS API user name ({self._username!r}) and password",
            )
        info = await self._exchange(GetDevInfo(), self.timeout_s)
        assert isinstance(info, DevInfoReply), info  # _exchange checked the <cmd>
        if not info.channels:
            msg = (
                f"the BTS server at {self._where} reports no channels; "
                "check that the units are online in BTS Client"
            )
            raise DriverError(msg)
        return info.channels

    async def aclose(self) -> None:
        """Close the link; safe to call twice, and completes even when cancelled.

        A request in flight in another task fails with
        :class:`InstrumentConnectionError`.
        """
        # No lock: closing must not wait behind a request that may never be answered.
        if self._transport is not None:
            _log.info("closing the link to BTS server %s", self._where)
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
        self._splitter = FrameSplitter()
        if transport is not None:
            await asyncio.shield(transport.aclose())

    # ------------------------------------------------------------ channels

    def address(self, channel: ChannelArg) -> ChannelAddress:
        """The address of ``channel`` (``ChannelId`` or ``"21-1-3"``) on this server.

        Raises :class:`ConfigError` naming the channels that exist if it is unknown.
        """
        self._require_channel_map()
        channel_id = ChannelId.parse(channel) if isinstance(channel, str) else channel
        try:
            return self._addresses[channel_id]
        except KeyError:
            raise ConfigError(
                field="channel",
                problem=f"{channel_id} is not on this server; it has "
                f"{_describe_channels(self._addresses)}",
            ) from None

    def _require_channel_map(self) -> None:
        if not self._addresses:
            msg = f"not connected to the BTS server at {self._where}; call connect()"
            raise InstrumentConnectionError(msg)

    def _resolve(
        self, channels: Iterable[ChannelArg] | ChannelArg | None, *, default_all: bool
    ) -> tuple[ChannelAddress, ...]:
        if channels is None:
            if not default_all:
                raise ConfigError(field="channels", problem="name the channels explicitly")
            self._require_channel_map()
            return tuple(c.address for c in self._channels)
        if isinstance(channels, ChannelId | str):
            channels = [channels]
        # Duplicates are dropped: one command per channel, and replies stay unambiguous.
        addresses = tuple(dict.fromkeys(self.address(c) for c in channels))
        if not addresses:
            raise ConfigError(field="channels", problem="name at least one channel")
        return addresses

    # ------------------------------------------------------------ requests

    async def request(self, req: Request, *, timeout_s: float | None = None) -> Reply:
        """Send ``req`` and return its reply, waiting at most ``timeout_s`` seconds.

        ``timeout_s`` defaults to the client's. Raises :class:`InstrumentTimeout` or
        :class:`InstrumentConnectionError` (the link is then closed),
        :class:`ProtocolViolation` for a malformed reply (the frame is consumed and the
        link stays usable) or for a reply to another command (the link is closed: the
        stream is out of step). Cancellation closes the link too.
        """
        if timeout_s is None:
            timeout_s = self.timeout_s
        elif not timeout_s > 0:
            raise ConfigError(
                field="timeout_s", problem=f"must be a positive number of seconds, got {timeout_s}"
            )
        async with self._lock:
            return await self._exchange(req, timeout_s)

    async def _call(
        self,
        req: Request,
        reply_type: type[_R],
        about: tuple[ChannelAddress, ...] | None = None,
    ) -> _R:
        """Request ``req``; with ``about``, a reply about any other channel is refused.

        Such a reply is not data: most likely it is a late answer to an earlier
        request, so the link is closed (replies are out of step) and
        :class:`ProtocolViolation` raised.
        """
        async with self._lock:
            reply = await self._exchange(req, self.timeout_s)
            # _exchange() already checked the <cmd>, and each <cmd> decodes to one type.
            assert isinstance(reply, reply_type), reply
            if about is not None:
                strangers = _strangers(reply, about)
                if strangers:
                    cmd = reply_name(req)
                    why = (
                        f"{cmd} about {', '.join(strangers)}, which the request did not "
                        f"name (asked: {_describe_channels(a.channel for a in about)})"
                    )
                    await self._lose_link(why)
                    msg = (
                        f"the BTS server at {self._where} answered with a {why}; not taken "
                        "as data, and the connection was closed because replies are out of step"
                    )
                    raise ProtocolViolation(msg)
            return reply

    async def _exchange(self, req: Request, timeout_s: float) -> Reply:
        """One request/reply round trip; the caller holds the lock."""
        transport = self._transport
        if transport is None:
            msg = f"not connected to the BTS server at {self._where}; call connect()"
            raise InstrumentConnectionError(msg)
        expected = reply_name(req)
        try:
            async with asyncio.timeout(timeout_s):
                await transport.send(encode_request(req))
                if self.tap is not None:
                    self.tap.request_written(req, time.perf_counter())
                frame = await self._next_frame(transport)
        except TimeoutError as err:
            await self._lose_link(f"no reply to {expected} within {timeout_s} s")
            msg = (
                f"the BTS server at {self._where} did not answer within {timeout_s} s "
                f"(waiting for {expected}); the connection was closed, call connect() to retry"
            )
            raise InstrumentTimeout(msg) from err
        except InstrumentConnectionError as err:
            await self._lose_link(str(err))
            raise
        except ProtocolViolation as err:
            # Only the frame splitter raises here (a frame without end): framing is lost.
            await self._lose_link(str(err))
            raise
        except asyncio.CancelledError:
            # The reply may still come; it must not be read as the next request's.
            await self._drop_link()
            raise

        reply = decode_reply(frame)  # a malformed frame is consumed; the link stays usable
        got = _reply_cmd(reply)
        if got != expected:
            await self._lose_link(f"expected {expected}, got {got}")
            msg = (
                f"the BTS server at {self._where} answered {got!r} to a request expecting "
                f"{expected!r}; the connection was closed because replies are out of step"
            )
            raise ProtocolViolation(msg)
        return reply

    async def _next_frame(self, transport: TcpTransport) -> bytes:
        while not self._frames:
            data = await transport.receive()
            if self.tap is not None and data and not self._splitter.pending_bytes:
                self.tap.reply_arrived(time.perf_counter())
            if not data:
                middle = " in the middle of a reply" if self._splitter.pending_bytes else ""
                msg = (
                    f"the BTS server at {self._where} closed the connection{middle}; "
                    "call connect() to reconnect"
                )
                raise InstrumentConnectionError(msg)
            self._frames.extend(self._splitter.feed(data))
        return self._frames.popleft()

    async def _lose_link(self, why: str) -> None:
        _log.warning("lost the link to BTS server %s: %s", self._where, why)
        await self._drop_link()

    # ------------------------------------------------------------ typed helpers

    async def get_status(
        self, channels: Iterable[ChannelArg] | ChannelArg | None = None
    ) -> dict[ChannelId, str]:
        """Work status of each channel (``working``, ``stop``, ``finish``, ...).

        ``channels`` defaults to every channel of the server. Replies are matched by
        position, because some servers sometimes report a wrong ``subdevid`` (one said 10
        for unit 2): the address asked for is the one the answer is about.
        """
        addresses = self._resolve(channels, default_all=True)
        reply = await self._call(GetChlStatus(addresses), StatusReply)
        if len(reply.items) != len(addresses):
            msg = f"getchlstatus: asked for {len(addresses)} channels, got {len(reply.items)}"
            raise ProtocolViolation(msg)
        out: dict[ChannelId, str] = {}
        for asked, item in zip(addresses, reply.items, strict=True):
            got = item.address.channel
            # subdevid is unreliable here; devid and chlid still prove the order.
            if (got.devid, got.chlid) != (asked.channel.devid, asked.channel.chlid):
                msg = f"getchlstatus: reply item for {got} where {asked.channel} was asked"
                raise ProtocolViolation(msg)
            out[asked.channel] = item.status
        return out

    async def inquire(
        self, channels: Iterable[ChannelArg] | ChannelArg | None = None
    ) -> dict[ChannelId, InquireRecord]:
        """The newest value of each channel (V, A, Ah, Wh, s) in one request.

        ``channels`` defaults to every channel of the server.
        """
        addresses = self._resolve(channels, default_all=True)
        reply = await self._call(Inquire(addresses), InquireReply, addresses)
        return _by_channel("inquire", addresses, reply.items)

    async def inquire_df(
        self, channels: Iterable[ChannelArg] | ChannelArg | None = None
    ) -> dict[ChannelId, DataCount]:
        """How many records each channel's latest test holds (for :meth:`download`).

        ``channels`` defaults to every channel of the server.
        """
        addresses = self._resolve(channels, default_all=True)
        reply = await self._call(InquireDf(addresses), InquireDfReply, addresses)
        return _by_channel("inquiredf", addresses, reply.items)

    async def start(
        self, items: Sequence[tuple[ChannelArg, str, str]], backup_dir: str = ""
    ) -> None:
        """Start tests: each item is ``(channel, barcode, step-file path on the server)``.

        Raises :class:`CommandRefused` naming exactly the channels the server refused.
        """
        if not items:
            raise ConfigError(
                field="items", problem="name at least one (channel, barcode, step file)"
            )
        starts = tuple(
            StartItem(self.address(channel), barcode, step_file_path)
            for channel, barcode, step_file_path in items
        )
        addresses = tuple(item.address for item in starts)
        if len(set(addresses)) != len(addresses):
            raise ConfigError(
                field="items", problem="each channel may be started only once per call"
            )
        await self._command(Start(starts, backup_dir), addresses)

    async def stop(self, channels: Iterable[ChannelArg] | ChannelArg) -> None:
        """Stop the tests on ``channels`` (no default: stopping all must be said).

        Raises :class:`CommandRefused` naming exactly the channels the server refused.
        """
        addresses = self._resolve(channels, default_all=False)
        await self._command(Stop(addresses), addresses)

    async def clear_flag(self, channels: Iterable[ChannelArg] | ChannelArg) -> None:
        """Clear the finished/protected flag of ``channels`` so they can start again.

        Raises :class:`CommandRefused` naming exactly the channels the server refused.
        """
        addresses = self._resolve(channels, default_all=False)
        await self._command(ClearFlag(addresses), addresses)

    async def pause(self, channels: Iterable[ChannelArg] | ChannelArg) -> None:
        """Pause the tests on ``channels`` now (BTS ``setpause``); resume with :meth:`resume`.

        Raises :class:`CommandRefused` naming exactly the channels the server refused.
        """
        addresses = self._resolve(channels, default_all=False)
        await self._command(Pause(addresses), addresses)

    async def resume(self, channels: Iterable[ChannelArg] | ChannelArg) -> None:
        """Resume paused tests on ``channels`` where they stopped (BTS ``continue``).

        Raises :class:`CommandRefused` naming exactly the channels the server refused.
        """
        addresses = self._resolve(channels, default_all=False)
        await self._command(Continue(addresses), addresses)

    async def light(self, channels: Iterable[ChannelArg] | ChannelArg, on: bool = True) -> None:
        """Switch the locator light of ``channels`` on or off.

        Raises :class:`CommandRefused` naming exactly the channels the server refused.
        """
        addresses = self._resolve(channels, default_all=False)
        await self._command(Light(addresses, on), addresses)

    async def _command(
        self,
        req: Start | Stop | ClearFlag | Light | Pause | Continue,
        addresses: tuple[ChannelAddress, ...],
    ) -> None:
        reply = await self._call(req, CommandReply, addresses)
        name = reply.command
        answered = {r.address.channel for r in reply.items}
        # A channel the server did not answer for is not known to have obeyed; for a
        # stop that matters, so it is never taken as a success.
        missing = [str(a.channel) for a in addresses if a.channel not in answered]
        refused = [str(r.address.channel) for r in reply.items if not r.ok]
        if refused:
            _log.warning("BTS server %s refused %s for %s", self._where, name, refused)
            detail = "the server answered false"
            if missing:
                detail += f"; no answer for {', '.join(missing)}"
            raise CommandRefused(command=name, targets=refused, detail=detail)
        if missing:
            msg = f"{name}: the BTS server at {self._where} did not answer for {', '.join(missing)}"
            raise ProtocolViolation(msg)
        _log.info(
            "%s done on BTS server %s for %s",
            name,
            self._where,
            _describe_channels(a.channel for a in addresses),
        )

    async def command(
        self, cmd: str, channels: Iterable[ChannelArg] | ChannelArg | None = None
    ) -> OtherReply:
        """Send a command without a typed helper (``getpause``, ``goto``, ...) as is.

        ``channels`` are listed in its ``<list>`` (none: no list). The reply's items
        say ok or false per channel; a reply without a list carries one ``result``.
        """
        addresses = () if channels is None else self._resolve(channels, default_all=False)
        return await self._call(OtherCommand(cmd, addresses), OtherReply, addresses or None)

    async def download(
        self,
        channel: ChannelArg,
        start_pos: int,
        count: int,
        test_id: int = 0,
        *,
        programmed_current_a: float | None = None,
    ) -> DownloadReply:
        """Recorded samples of a test: ``count`` records from seqid ``start_pos``.

        ``test_id`` 0 means the channel's latest test. Records carry V, A, Ah, Wh, the
        test time in ms and the local wall-clock time, whatever unit the server used:
        the unit (A/Ah/Wh or mA/mAh/mWh) is judged against ``programmed_current_a``
        (the step file's current, if known) or the live ``inquire`` current, logged,
        kept in :attr:`download_units` and given in the reply's ``units``.

        Records come in seqid order from ``start_pos``, each once (a repeated record is
        dropped, so counting positions never skips one). A record that cannot be read
        is left out and listed in ``skipped`` with its position; the others are kept.
        A reply about another channel raises :class:`ProtocolViolation` (link closed).
        """
        if start_pos < 0:
            raise ConfigError(field="start_pos", problem=f"must be 0 or more, got {start_pos}")
        if count < 1:
            raise ConfigError(field="count", problem=f"must be 1 or more, got {count}")
        address = self.address(channel)
        req = Download(address, start_pos, count, test_id)
        reply = await self._call(req, DownloadReply, (address,))
        for skip in reply.skipped:
            seq = f"seqid {skip.seq_id}" if skip.seq_id is not None else "seqid unreadable"
            _log.warning(
                "download %s from %d: record at position %d of the page (%s) skipped: %s",
                address.channel,
                start_pos,
                skip.position,
                seq,
                skip.reason,
            )
        records = _in_seq_order(address.channel, start_pos, reply.records)
        units = await self._download_units(address.channel, records, programmed_current_a)
        return dataclasses.replace(reply, records=to_amperes(records, units), units=units)

    async def _download_units(
        self,
        channel: ChannelId,
        records: Sequence[DownloadRecord],
        programmed_current_a: float | None,
    ) -> DownloadUnits:
        known = self.download_units.get(channel)
        if known is not None:
            return known
        currents = [r.current_a for r in records]
        if not any(currents):
            return "A"  # no current in the page: nothing the unit could scale
        units = judge_units(currents, programmed_current_a)
        basis = "the programmed current"
        if units is None:
            live_a = await self._live_current_a(channel)
            units = judge_units(currents, live_a)
            basis = f"the live inquire current ({live_a} A)"
        if units is None and self.current_range_a and beyond_range(currents, self.current_range_a):
            units = "mA"
            basis = f"the current range ({self.current_range_a:g} A)"
        if units is None:
            if channel not in self._units_unsure:
                self._units_unsure.add(channel)
                _log.warning(
                    "download %s on BTS server %s: cannot tell yet whether current, capacity "
                    "and energy are in A/Ah/Wh or mA/mAh/mWh (no live or programmed current "
                    "to compare); read as A/Ah/Wh, as the API document gives them, until one is",
                    channel,
                    self._where,
                )
            return "A"
        self._units_unsure.discard(channel)
        self.download_units[channel] = units
        names = "A/Ah/Wh" if units == "A" else "mA/mAh/mWh"
        _log.warning(
            "download %s on BTS server %s reports current, capacity and energy in %s "
            "(found against %s)%s",
            channel,
            self._where,
            names,
            basis,
            "; converted to A/Ah/Wh" if units == "mA" else "",
        )
        return units

    async def _live_current_a(self, channel: ChannelId) -> float | None:
        """The channel's live current, A; None if the server's inquire says nothing usable.

        A malformed inquire must not fail the download it only helps to read (a caller
        would take the page for unreadable); a lost link still raises.
        """
        try:
            return (await self.inquire(channel))[channel].current_a
        except ProtocolViolation as err:
            if not self.connected:
                raise
            _log.info("download units of %s: inquire gave no current (%s)", channel, err)
            return None

    async def download_log(self, channel: ChannelArg, test_id: int = 0) -> DownloadLogReply:
        """The event log (log codes with wall-clock times) of a test; 0 = latest test."""
        address = self.address(channel)
        return await self._call(DownloadLog(address, test_id), DownloadLogReply, (address,))

    async def download_step_layer(self, channel: ChannelArg, test_id: int = 0) -> StepLayerReply:
        """Per-step summary of a test (ms, V, A, Ah, Wh per step); 0 = latest test."""
        address = self.address(channel)
        req = DownloadStepLayer(address, test_id)
        return await self._call(req, StepLayerReply, (address,))


_Item = TypeVar("_Item", InquireRecord, DataCount)


def _by_channel(
    cmd: str, addresses: tuple[ChannelAddress, ...], items: tuple[_Item, ...]
) -> dict[ChannelId, _Item]:
    """Replies in the order asked, matched by the address each item names."""
    got = {item.address.channel: item for item in items}
    missing = [str(a.channel) for a in addresses if a.channel not in got]
    if missing:
        msg = f"{cmd}: the reply has no item for {', '.join(missing)}"
        raise ProtocolViolation(msg)
    return {a.channel: got[a.channel] for a in addresses}


def _strangers(reply: Reply, asked: tuple[ChannelAddress, ...]) -> list[str]:
    """The channels ``reply`` is about that ``asked`` does not name."""
    named = {a.channel for a in asked}
    match reply:
        case DownloadReply(address=a) | DownloadLogReply(address=a) | StepLayerReply(address=a):
            about = [a.channel]
        case InquireReply(items) | InquireDfReply(items):
            about = [item.address.channel for item in items]
        case CommandReply(items=results) | OtherReply(items=results):
            about = [r.address.channel for r in results]
        case _:
            about = []
    return sorted({str(c) for c in about if c not in named})


def _in_seq_order(
    channel: ChannelId, start_pos: int, records: Sequence[DownloadRecord]
) -> tuple[DownloadRecord, ...]:
    """Each record once, from ``start_pos`` on, in seqid order.

    A server that repeats a record (or sends one from before ``start_pos``) must not
    make a caller counting records skip the next one: positions come from seqids.
    """
    if records and records[0].seq_id == start_pos:
        # The usual page, seqids from start_pos one by one: checked at C speed.
        seq_ids = [r.seq_id for r in records]
        if seq_ids == list(range(start_pos, start_pos + len(records))):
            return tuple(records)
    seen: dict[int, DownloadRecord] = {}
    for record in records:
        if record.seq_id >= start_pos:
            seen.setdefault(record.seq_id, record)
    if len(seen) != len(records):
        _log.warning(
            "download %s from %d: %d repeated or earlier record(s) dropped",
            channel,
            start_pos,
            len(records) - len(seen),
        )
    ordered = tuple(seen.values())
    if any(a.seq_id > b.seq_id for a, b in pairwise(ordered)):
        ordered = tuple(sorted(ordered, key=lambda r: r.seq_id))
    return ordered
