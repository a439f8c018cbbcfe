"""A channel-info feedback read as it arrives: each channel's reading as soon as its
record is in, before the rest of the frame (sans-IO, like :mod:`._codec`).

Why: CTI asks for one channel or all of them, so a rack's poll is one ~0.45 MB
feedback (256 channels). Decoded whole, a failing value early in it waits for the
transfer, the decode and the judging of every channel after it before its channel
can be stopped; read record by record, it is judged when its own ~1.75 kB are in.

What is not known before the last byte is the checksum. The readings this yields
are the bytes the server sent, not yet checked: :meth:`ChannelsInfoStream.verify`
checks the whole frame (length, command extension, checksum, nothing left over)
when it is in, and a caller keeps what it stores until then. A stop sent on an
unchecked value errs on the safe side; a frame that then fails its checksum still
loses the link as before.
"""

from __future__ import annotations

import struct

from cellguard.drivers.arbin._codec import (
    _READING,
    CHECKSUM_BYTES,
    CODE_BYTES,
    HEAD_BYTES,
    READING_FIXED_BYTES,
    MalformedFrame,
    Truncated,
    _open,
    _Reader,
    channel_reading,
    frame_length,
)
from cellguard.drivers.arbin._messages import ChannelReading, ChannelsInfoFeedback, Command

__all__ = ["ChannelsInfoStream"]

_BODY_START = HEAD_BYTES + CODE_BYTES
_COUNT_END = _BODY_START + 4


class ChannelsInfoStream:
    """Feed it the bytes of one feedback as they arrive (:meth:`feed`): it returns the
    readings whose records are whole. Not a channel-info feedback (an error feedback,
    a login) → :attr:`streaming` is False and it yields nothing: the whole frame is
    then the decoder's as before. Bytes past the frame's end are ignored (they are
    the next frame's, which the caller's :class:`~._codec.FrameSplitter` also gets).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._body_end = -1  # where the checksum starts; -1 until the head is in
        self._count = 0
        self._pos = _COUNT_END
        self.streaming: bool | None = None  # None until the command code is in
        self.readings: list[ChannelReading] = []

    @property
    def complete(self) -> bool:
        """Every channel the feedback announced has been yielded."""
        return self.streaming is True and len(self.readings) == self._count

    def feed(self, data: bytes) -> list[ChannelReading]:
        if self.streaming is False or self.complete:
            return []
        self._buffer += data
        if self.streaming is None and not self._start():
            return []
        return self._records()

    def _start(self) -> bool:
        """Read the head once it is in; False while it is not (or not ours)."""
        buffer = self._buffer
        if len(buffer) < _COUNT_END:
            return False
        total = frame_length(buffer, "feedback")
        code, extend, count = struct.unpack_from("<III", buffer, HEAD_BYTES)
        if code != Command.CHANNELS_INFO_FEEDBACK:
            self.streaming = False
            return False
        if extend != 0:
            raise MalformedFrame(field="command_extend", problem=f"0x{extend:08x}, must be 0")
        if count * READING_FIXED_BYTES > total:
            raise MalformedFrame(
                field="channel_count", problem=f"{count} channels cannot fit in the frame"
            )
        self.streaming = True
        self._body_end = total - CHECKSUM_BYTES
        self._count = count
        return True

    def _records(self) -> list[ChannelReading]:
        buffer = self._buffer
        at_hand = min(len(buffer), self._body_end)
        whole = at_hand == self._body_end  # nothing more of this frame will come
        out: list[ChannelReading] = []
        while len(self.readings) < self._count:
            pos = self._pos
            n = len(self.readings)
            if pos + READING_FIXED_BYTES > at_hand:
                if whole:
                    raise MalformedFrame(
                        field=f"channels[{n}]",
                        problem=f"needs {READING_FIXED_BYTES} bytes at byte {pos}, "
                        f"the frame ends at {self._body_end}",
                    )
                break
            fields = _READING.unpack_from(buffer, pos)
            reader = _Reader(buffer, at_hand, pos + READING_FIXED_BYTES)
            try:
                reading = channel_reading(fields, reader, n)
            except Truncated:
                if whole:
                    raise
                break  # its aux, BMS or SMB values are still on the way
            self._pos = reader.pos
            self.readings.append(reading)
            out.append(reading)
        return out

    def verify(self, frame: bytes) -> ChannelsInfoFeedback:
        """The whole frame, once in: checked as :func:`~._codec.decode_feedback` checks
        it, and the feedback of the readings already yielded (the same bytes)."""
        _open(frame, "feedback")  # length, command extension, checksum
        if frame[: self._body_end] != self._buffer[: self._body_end]:
            # Not the bytes the readings came from (a caller that fed another stream).
            raise MalformedFrame(field="frame", problem="differs from the bytes streamed")
        if not self.complete:
            raise MalformedFrame(
                field="channel_count",
                problem=f"{len(self.readings)} of {self._count} channels read at the frame's end",
            )
        if self._pos != self._body_end:
            raise MalformedFrame(
                field="length",
                problem=f"{self._body_end - self._pos} bytes left over after the "
                "ChannelsInfoFeedback",
            )
        return ChannelsInfoFeedback(tuple(self.readings))
