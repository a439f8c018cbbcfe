"""Async client of Arbin's CTI: log in, read channels, assign, start, stop, set MVs.

One request at a time (CTI has no request ids: a feedback can only be matched to the
request it follows, by its command code and channel). A timeout, a lost link or a
cancellation in the middle of a request closes the connection, so that a late
feedback is never taken for the next request's. Reconnecting is the caller's policy;
the client is reusable after :meth:`ArbinClient.connect`.

Channels are 0-based here, as on the wire (``channel_index``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import ClassVar, Protocol

from cellguard.drivers._framed import FramedClient
from cellguard.drivers._tcp import TcpStream
from cellguard.drivers.arbin._codec import FrameSplitter, decode_feedback, encode_request
from cellguard.drivers.arbin._messages import (
    ALL_CHANNELS,
    ASSIGN_RESULTS,
    LOGIN_RESULTS,
    META_CODES,
    SET_MV_RESULTS,
    START_RESULTS,
    STOP_RESULTS,
    AssignSchedule,
    ChannelReading,
    ChannelsInfoFeedback,
    Command,
    CommandFeedback,
    Feedback,
    GetChannelsInfo,
    Login,
    LoginFeedback,
    Request,
    SetMetaVariable,
    StartSchedule,
    StopSchedule,
    UnknownRequest,
    feedback_code,
)
from cellguard.drivers.arbin._stream import ChannelsInfoStream
from cellguard.drivers.arbin._transport import CtiTransport
from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)

__all__ = ["DEFAULT_TIMEOUT_S", "ArbinClient", "ArbinWireTap", "StopsSent"]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
"""Seconds to wait for a connection or a feedback (Arbin recommends 10 s)."""


StopsSent = dict[int, CommandRefused | None]
"""Stops sent during a channel-info feedback, by channel index: None where the cycler
carried the stop out, the refusal where it did not."""


class ArbinWireTap(Protocol):
    """Timestamps at the wire (``time.perf_counter()`` s), for ``bench/``: set
    :attr:`ArbinClient.tap`. Off (``None``) it costs one attribute test per request."""

    def reply_arrived(self, t_s: float) -> None:
        """The first bytes of a feedback were read from the socket at ``t_s``."""

    def request_written(self, request: Request, t_s: float) -> None:
        """The whole frame of ``request`` was handed to the OS at ``t_s``."""


class ArbinClient(FramedClient):
    """One CTI connection to MITS Pro (or a simulator of it)."""

    tap: ArbinWireTap | None = None
    _server: ClassVar[str] = "the Arbin CTI server"
    _link_name: ClassVar[str] = "Arbin CTI"
    _log: ClassVar[logging.Logger] = _log

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str,
        password: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(host, port, timeout_s=timeout_s)
        self._username = username
        self._password = password
        self.login: LoginFeedback | None = None

    # ------------------------------------------------------------ connection

    def _new_splitter(self) -> FrameSplitter:
        return FrameSplitter("feedback")

    @property
    def channel_count(self) -> int:
        """Channels of the cycler, as the login feedback said (0 before connect)."""
        return self.login.channel_count if self.login is not None else 0

    async def connect(self) -> LoginFeedback:
        """Open the link and log in (closing any previous link first).

        Raises :class:`InstrumentConnectionError` if the server cannot be reached and
        :class:`CommandRefused` if it refuses the login.
        """
        async with self._lock:
            await self._drop_link()
            self._transport = await CtiTransport.open(self.host, self.port, self.timeout_s)
            try:
                feedback = await self._exchange(Login(self._username, self._password))
            except BaseException:
                await self._drop_link()
                raise
            assert isinstance(feedback, LoginFeedback)  # _exchange checked the code
            if not feedback.ok:
                await self._drop_link()
                detail = LOGIN_RESULTS.get(feedback.result, f"result {feedback.result}")
                raise CommandRefused(
                    command="login",
                    targets=[self._where],
                    detail=f"{detail}; check the CTI user name ({self._username!r}) and password "
                    "registered in MITS Pro",
                )
            self.login = feedback
        _log.info(
            "logged in to Arbin CTI %s: serial %s, %d channels",
            self._where,
            feedback.serial_number or "?",
            feedback.channel_count,
        )
        return feedback

    # ------------------------------------------------------------ round trips

    async def _exchange(self, request: Request) -> Feedback:
        """Send ``request`` and read its feedback; the caller holds the lock."""
        async with self._round_trip(type(request).__name__) as transport:
            await self._send(transport, request)
            frame = await self._next_frame(transport)
            return self._check(request, decode_feedback(frame))

    async def _send(self, transport: TcpStream, request: Request) -> None:
        await transport.send(encode_request(request))
        if self.tap is not None:
            self.tap.request_written(request, time.perf_counter())

    def _check(self, request: Request, feedback: Feedback) -> Feedback:
        expected = feedback_code(_code_of(request))
        got = _code_of_feedback(feedback)
        if got != expected:
            msg = (
                f"the Arbin CTI server at {self._where} answered 0x{got:08x} to "
                f"{type(request).__name__} (expected 0x{expected:08x}): out of step"
            )
            raise ProtocolViolation(msg)
        return feedback

    async def _command(self, request: Request, channel_index: int) -> CommandFeedback:
        async with self._lock:
            feedback = await self._exchange(request)
            assert isinstance(feedback, CommandFeedback)  # the code was checked
            if feedback.channel in (channel_index, ALL_CHANNELS):
                return CommandFeedback(feedback.command_code, channel_index, feedback.result)
            await self._lose_link(f"feedback for channel {feedback.channel}")
            msg = (
                f"the Arbin CTI server at {self._where} answered for channel index "
                f"{feedback.channel} where {channel_index} was asked: out of step"
            )
            raise ProtocolViolation(msg)

    # ------------------------------------------------------------ commands

    async def channels_info(self, channel_index: int | None = None) -> dict[int, ChannelReading]:
        """The live values of one channel, or of every channel (``None``), by index.

        Arbin's documents differ on whether "all channels" comes as one feedback with
        every channel or one feedback per channel: both are read. An unknown channel
        raises :class:`CommandRefused`.
        """
        asked = ALL_CHANNELS if channel_index is None else channel_index
        wanted = self.channel_count if channel_index is None else 1
        readings: dict[int, ChannelReading] = {}
        async with self._lock:
            feedback = await self._exchange(GetChannelsInfo(asked))
            assert isinstance(feedback, ChannelsInfoFeedback)
            readings.update((r.channel, r) for r in feedback.channels)
            while feedback.channels and len(readings) < wanted:
                transport = self._transport
                assert transport is not None
                try:
                    async with asyncio.timeout(self.timeout_s):
                        frame = await self._next_frame(transport)
                except TimeoutError as err:
                    await self._lose_link("channel info stopped before every channel")
                    msg = (
                        f"the Arbin CTI server at {self._where} sent {len(readings)} of "
                        f"{wanted} channels"
                    )
                    raise InstrumentTimeout(msg) from err
                more = self._check(GetChannelsInfo(asked), decode_feedback(frame))
                assert isinstance(more, ChannelsInfoFeedback)
                readings.update((r.channel, r) for r in more.channels)
        if channel_index is not None and channel_index not in readings:
            raise CommandRefused(
                command="channel info",
                targets=[f"channel index {channel_index}"],
                detail=f"the cycler has no such channel (it has {self.channel_count}, "
                "indexes from 0)",
            )
        return readings

    async def channels_info_judged(
        self, judge: Callable[[ChannelReading], bool]
    ) -> tuple[dict[int, ChannelReading], StopsSent]:
        """Every channel's values, each handed to ``judge`` as soon as its record is in;
        a channel ``judge`` returns True for is stopped at once, before the rest of
        the feedback is read.

        Arbin's own library posts requests without waiting for the feedback of the
        one before (``PostStopChannel`` returns when sent; feedbacks come to
        callbacks), and the CTI server answers requests in order: so a stop written
        while the channel-info feedback still arrives is answered after it. Those
        feedbacks are read here, after the channel-info feedback, in order; how each
        stop went is in the second value returned (CTI stops one channel or all of
        them: one request per channel).

        The readings come before the frame's checksum: the returned mapping is only
        given once the whole frame checked out (a frame that does not loses the
        link, as in :meth:`channels_info`).
        """
        request = GetChannelsInfo(ALL_CHANNELS)
        readings: dict[int, ChannelReading] = {}
        stopped: list[int] = []
        async with self._lock, self._round_trip("GetChannelsInfo") as transport:
            if self._frames or self._splitter.pending_bytes:
                msg = f"bytes before the channel-info feedback from {self._where}: out of step"
                raise ProtocolViolation(msg)
            await self._send(transport, request)
            stream = ChannelsInfoStream()
            while not self._frames:
                data = await transport.receive()
                if not data:
                    msg = f"{self._server} at {self._where} closed the connection"
                    raise InstrumentConnectionError(msg)
                if self.tap is not None and not self._splitter.pending_bytes:
                    self.tap.reply_arrived(time.perf_counter())
                for reading in stream.feed(data):
                    readings[reading.channel] = reading
                    if judge(reading):
                        await self._send(transport, StopSchedule(reading.channel))
                        stopped.append(reading.channel)
                self._frames.extend(self._splitter.feed(data))
            frame = self._frames.popleft()
            if not stream.streaming:
                # Not a channel-info feedback: malformed, or out of step (_check says).
                self._check(request, decode_feedback(frame))
            stream.verify(frame)
            # "All channels" may also come as one feedback per channel (the documents
            # differ): the others are judged whole, as they come.
            while stream.readings and len(readings) < self.channel_count:
                more = self._check(request, decode_feedback(await self._next_frame(transport)))
                assert isinstance(more, ChannelsInfoFeedback)
                if not more.channels:
                    break
                for reading in more.channels:
                    readings[reading.channel] = reading
                    if judge(reading):
                        await self._send(transport, StopSchedule(reading.channel))
                        stopped.append(reading.channel)
            stops: StopsSent = {}
            for index in stopped:
                feedback = self._check(
                    StopSchedule(index), decode_feedback(await self._next_frame(transport))
                )
                assert isinstance(feedback, CommandFeedback)
                if feedback.channel not in (index, ALL_CHANNELS):
                    msg = (
                        f"the Arbin CTI server at {self._where} answered for channel index "
                        f"{feedback.channel} where {index} was asked: out of step"
                    )
                    raise ProtocolViolation(msg)
                stops[index] = _refusal(
                    CommandFeedback(feedback.command_code, index, feedback.result),
                    "stop",
                    STOP_RESULTS,
                )
        return readings, stops

    async def assign_schedule(
        self, channel_index: int, schedule: str, *, barcode: str = "", capacity_ah: float = 0.0
    ) -> None:
        """Assign ``schedule`` (a .sdx name MITS Pro knows) to a channel."""
        request = AssignSchedule(channel_index, schedule, False, capacity_ah, barcode)
        _refused(await self._command(request, channel_index), "assign schedule", ASSIGN_RESULTS)

    async def start(self, channel_index: int, test_name: str) -> None:
        """Start the assigned schedule on a channel as test ``test_name``."""
        request = StartSchedule(test_name, (channel_index,))
        _refused(await self._command(request, channel_index), "start", START_RESULTS)

    async def stop(self, channel_index: int) -> None:
        """Stop the test on a channel."""
        _refused(
            await self._command(StopSchedule(channel_index), channel_index), "stop", STOP_RESULTS
        )

    async def set_meta_variable(self, channel_index: int, number: int, value: float) -> None:
        """Set user meta-variable MV_UD``number`` (1..16) of the test running there."""
        if not 1 <= number <= len(META_CODES):
            raise ConfigError(field="number", problem=f"must be 1..16 (MV_UD1..16), got {number}")
        request = SetMetaVariable(channel_index, META_CODES[number - 1], value)
        _refused(await self._command(request, channel_index), "set meta-variable", SET_MV_RESULTS)


def _refused(feedback: CommandFeedback, command: str, results: dict[int, str]) -> None:
    refusal = _refusal(feedback, command, results)
    if refusal is not None:
        raise refusal


def _refusal(
    feedback: CommandFeedback, command: str, results: dict[int, str]
) -> CommandRefused | None:
    if feedback.ok:
        return None
    detail = results.get(feedback.result, f"result code 0x{feedback.result:02x}")
    return CommandRefused(
        command=command, targets=[f"channel index {feedback.channel}"], detail=detail
    )


def _code_of(request: Request) -> int:
    codes: dict[type, int] = {  # IntEnum members are ints
        Login: Command.LOGIN,
        GetChannelsInfo: Command.GET_CHANNELS_INFO,
        AssignSchedule: Command.ASSIGN_SCHEDULE,
        StartSchedule: Command.START_SCHEDULE,
        StopSchedule: Command.STOP_SCHEDULE,
        SetMetaVariable: Command.SET_META_VARIABLE,
    }
    if isinstance(request, UnknownRequest):
        return request.command_code
    return int(codes[type(request)])


def _code_of_feedback(feedback: Feedback) -> int:
    if isinstance(feedback, LoginFeedback):
        return int(Command.LOGIN_FEEDBACK)
    if isinstance(feedback, ChannelsInfoFeedback):
        return int(Command.CHANNELS_INFO_FEEDBACK)
    return feedback.command_code
