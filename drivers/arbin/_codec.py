"""Sans-IO codec of Arbin's CTI: bytes in, typed messages out, and back.

No sockets and no awaits: every rule is testable and fuzzable on plain bytes. The
layouts are those of Arbin's documents (see :mod:`._messages`). Two quirks of the
wire, both documented by Arbin and both seen in the example messages:

* ``m_dwLen`` counts the bytes after the 12-byte head in a *request*, but the whole
  frame in a *feedback*; so a splitter must know which side of the link it is on.
* the checksum is the sum of every byte before it, kept to 16 bits.

Anything that does not follow the layout raises :class:`MalformedFrame`, which names
the field that is wrong; a value the caller gives that does not fit a field (a name
too long, a channel out of range) raises :class:`~cellguard.drivers.errors.ConfigError`
naming that field.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from typing import Any, Literal, assert_never, cast

import numpy as np

from cellguard.drivers.arbin._messages import (
    AUX_KINDS,
    TOKEN,
    AssignSchedule,
    BmsValue,
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
    SmbValue,
    StartSchedule,
    StopSchedule,
    UnknownRequest,
)
from cellguard.drivers.errors import ConfigError, ProtocolViolation

HEAD_BYTES = 12  # token + length
CODE_BYTES = 8  # command code + extension
CHECKSUM_BYTES = 2
MIN_FRAME_BYTES = HEAD_BYTES + CODE_BYTES + CHECKSUM_BYTES
# A login feedback carries a picture of the cycler; nothing else is larger than a
# channel-info feedback of a few thousand channels (~2 kB each). Past this it is not
# a CTI frame, and buffering it would only eat memory.
MAX_FRAME_BYTES = 16 * 1024 * 1024
# A feedback of 128 bytes answers assign, start, stop and set-MV.
COMMAND_FEEDBACK_BYTES = 128
_RESERVED_FEEDBACK = 101
# The fixed part of one channel in a channel-info feedback (no aux, BMS or SMB values).
_MIN_READING_BYTES = 1753

# From this size on, numpy sums the bytes faster than Python does.
_NUMPY_SUM_BYTES = 4096

Side = Literal["request", "feedback"]


class MalformedFrame(ProtocolViolation):
    """A CTI frame that does not follow Arbin's layout; ``field`` says where."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"malformed CTI frame: {field}: {problem}")


def checksum(data: bytes | bytearray) -> int:
    """The CTI checksum of ``data``: the sum of its bytes, kept to 16 bits."""
    if len(data) < _NUMPY_SUM_BYTES:
        return sum(data) & 0xFFFF
    # A rack's channel-info feedback is ~0.5 MB: summed in C, not byte by byte.
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFF


# ------------------------------------------------------------------ framing


def frame_length(head: bytes | bytearray, side: Side) -> int:
    """The whole frame's length from its first 12 bytes (token checked)."""
    if len(head) < HEAD_BYTES:
        raise MalformedFrame(
            field="header", problem=f"{len(head)} bytes, a frame starts with {HEAD_BYTES}"
        )
    token, length = cast(tuple[int, int], struct.unpack_from("<QI", head))
    if token != TOKEN:
        raise MalformedFrame(field="token", problem=f"0x{token:016x}, must be 0x{TOKEN:016x}")
    total = length + HEAD_BYTES if side == "request" else length
    if not MIN_FRAME_BYTES <= total <= MAX_FRAME_BYTES:
        raise MalformedFrame(
            field="length",
            problem=f"{length} gives a {total}-byte {side}; "
            f"allowed {MIN_FRAME_BYTES}..{MAX_FRAME_BYTES}",
        )
    return total


class FrameSplitter:
    """Cuts a byte stream into whole CTI frames (partial ones are kept for later).

    ``side`` is what the stream carries: ``"feedback"`` on a client, ``"request"`` on
    a server. A bad token or length raises :class:`MalformedFrame`: the stream cannot
    be resynchronised after that (CTI has no frame delimiter), so the link must go.

    One quirk is repaired on the feedback side: pycti-arbin's ArbinSpoofer (0.0.13)
    sends each feedback two bytes longer than its length field says, with zeros where
    the checksum belongs and the checksum after them. A frame whose checksum field is
    zero, followed by exactly the checksum it should have had, is taken as that frame
    (counted in :attr:`repaired_frames`); anything else is left to the decoder.
    """

    def __init__(self, side: Side) -> None:
        self.side: Side = side
        self._buffer = bytearray()
        self.repaired_frames = 0

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= HEAD_BYTES:
            try:
                total = frame_length(self._buffer, self.side)
            except MalformedFrame:
                self._buffer.clear()
                raise
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            if self.side == "feedback" and frame[-CHECKSUM_BYTES:] == b"\0\0":
                wanted = struct.pack("<H", checksum(frame[:-CHECKSUM_BYTES]))
                if wanted != b"\0\0":
                    if len(self._buffer) < total + CHECKSUM_BYTES:
                        break  # the checksum may come after: wait for two more bytes
                    if self._buffer[total : total + CHECKSUM_BYTES] == wanted:
                        frame = frame[:-CHECKSUM_BYTES] + wanted
                        del self._buffer[total : total + CHECKSUM_BYTES]
                        self.repaired_frames += 1
            frames.append(frame)
            del self._buffer[:total]
        return frames


# ------------------------------------------------------------------ reading


class Truncated(MalformedFrame):
    """A field runs past the bytes at hand: malformed in a whole frame, but in a frame
    still arriving (:mod:`._stream`) it only means "wait for more"."""


class _Reader:
    """Reads fields in order; a field past the end names itself in the error.

    ``frame`` may be a ``bytearray`` that is still growing (a feedback read as it
    arrives): ``end`` is then where the bytes at hand end, not the frame.
    """

    def __init__(
        self, frame: bytes | bytearray, end: int, pos: int = HEAD_BYTES + CODE_BYTES
    ) -> None:
        self._frame = frame
        self._end = end
        self.pos = pos

    def _take(self, size: int, field: str) -> bytes | bytearray:
        if self.pos + size > self._end:
            raise Truncated(
                field, f"needs {size} bytes at byte {self.pos}, the frame ends at {self._end}"
            )
        chunk = self._frame[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, field: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self._take(struct.calcsize("<" + fmt), field))

    def int_(self, fmt: str, field: str) -> int:
        value = self.unpack(fmt, field)[0]
        assert isinstance(value, int)
        return value

    def float_(self, fmt: str, field: str) -> float:
        return float(self.unpack(fmt, field)[0])

    def raw(self, size: int, field: str) -> bytes:
        return bytes(self._take(size, field))

    def wide(self, chars: int, field: str) -> str:
        """A ``wchar_t[chars]`` field: UTF-16-LE up to the first zero character."""
        return _wide_text(bytes(self._take(2 * chars, field)), field)

    def narrow(self, size: int, field: str) -> str:
        """A ``BYTE[size]`` text field up to its first zero byte (8-bit, UTF-8)."""
        return _narrow_text(bytes(self._take(size, field)), field)

    def fixed(self, layout: struct.Struct, field: str) -> tuple[Any, ...]:
        """Several fields at once (the hot path of a channel-info feedback)."""
        return layout.unpack(self._take(layout.size, field))

    def cstring(self, field: str) -> bytes:
        """A zero-terminated byte string of any length (BMS and SMB units)."""
        end = self._frame.find(b"\0", self.pos, self._end)
        if end < 0:
            raise Truncated(field, "no terminating zero before the end of the frame")
        value = bytes(self._frame[self.pos : end])
        self.pos = end + 1
        return value

    def done(self, what: str) -> None:
        if self.pos != self._end:
            raise MalformedFrame(
                field="length", problem=f"{self._end - self.pos} bytes left over after the {what}"
            )


def _wide_text(data: bytes, field: str) -> str:
    text = _utf16(data)
    if text is None:
        raise MalformedFrame(field=field, problem="not UTF-16 text")
    return text


def _narrow_text(data: bytes, field: str) -> str:
    text = _utf8(data)
    if text is None:
        raise MalformedFrame(field=field, problem="not UTF-8 text")
    return text


# A rack's feedback repeats the same schedule and test names every poll: the text of a
# field's bytes is remembered rather than found and decoded again (a quarter of the
# time a 256-channel feedback takes to decode).
@functools.lru_cache(maxsize=8192)
def _utf16(data: bytes) -> str | None:
    end = data.find(b"\0\0")
    while end >= 0 and end % 2:  # a zero character starts at an even offset
        end = data.find(b"\0\0", end + 1)
    try:
        return (data if end < 0 else data[:end]).decode("utf-16-le")
    except UnicodeDecodeError:
        return None


@functools.lru_cache(maxsize=8192)
def _utf8(data: bytes) -> str | None:
    end = data.find(b"\0")
    try:
        return (data if end < 0 else data[:end]).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _open(frame: bytes, side: Side) -> tuple[int, _Reader]:
    """Check head, length and checksum; the command code and a reader of the fields."""
    total = frame_length(frame[:HEAD_BYTES], side)
    if total != len(frame):
        raise MalformedFrame(
            field="length", problem=f"says {total} bytes, the frame has {len(frame)}"
        )
    code, extend = struct.unpack_from("<II", frame, HEAD_BYTES)
    if extend != 0:
        raise MalformedFrame(field="command_extend", problem=f"0x{extend:08x}, must be 0")
    end = total - CHECKSUM_BYTES
    (declared,) = struct.unpack_from("<H", frame, end)
    computed = checksum(frame[:end])
    if declared != computed:
        raise MalformedFrame(
            field="checksum", problem=f"0x{declared:04x}, the bytes sum to 0x{computed:04x}"
        )
    return code, _Reader(frame, end)


def decode_request(frame: bytes) -> Request:
    """One whole request frame (as a server receives it) into its message."""
    code, r = _open(frame, "request")
    message: Request
    if code == Command.LOGIN:
        message = Login(r.narrow(32, "username"), r.narrow(32, "password"))
    elif code == Command.GET_CHANNELS_INFO:
        message = GetChannelsInfo(
            r.int_("h", "channel"), r.int_("h", "selection"), r.int_("I", "aux_options")
        )
        r.raw(32, "reserved")
    elif code == Command.ASSIGN_SCHEDULE:
        channel = r.int_("i", "channel")
        all_channels = r.int_("B", "all_channels")
        schedule = r.wide(200, "schedule")
        capacity_ah = r.float_("f", "capacity_ah")
        barcode = r.wide(72, "barcode")
        mv = tuple(float(v) for v in r.unpack("16f", "meta_variables"))
        r.raw(32, "reserved")
        message = AssignSchedule(channel, schedule, bool(all_channels), capacity_ah, barcode, mv)
    elif code == Command.START_SCHEDULE:
        test_name = r.wide(72, "test_name")
        count = r.int_("I", "channel_count")
        if count > (MAX_FRAME_BYTES // 2):
            raise MalformedFrame(
                field="channel_count", problem=f"{count} channels cannot fit in a frame"
            )
        channels = tuple(int(c) for c in r.unpack(f"{count}H", "channels"))
        message = StartSchedule(test_name, channels)
    elif code == Command.STOP_SCHEDULE:
        channel = r.int_("I", "channel")
        all_channels = r.int_("B", "all_channels")
        r.raw(101, "reserved")
        message = StopSchedule(channel, bool(all_channels))
    elif code == Command.SET_META_VARIABLE:
        channel = r.int_("I", "channel")
        mv_type = r.int_("i", "mv_type")
        meta_code = r.int_("i", "meta_code")
        r.raw(16, "reserved_1")
        value_type = r.int_("i", "value_type")
        value = r.float_("f", "value")
        r.raw(16, "reserved_2")
        message = SetMetaVariable(channel, meta_code, value, mv_type, value_type)
    else:
        return UnknownRequest(code, r.raw(len(frame) - CHECKSUM_BYTES - r.pos, "payload"))
    r.done(type(message).__name__)
    return message


# The fixed part of one THIRD_PARTY_CHANNEL, in one unpack (a rack's feedback holds
# hundreds: one struct call each instead of forty keeps a halt from waiting on them).
_READING = struct.Struct("<IhB400s144s100s64s144s400s400sH2d12f14H")
# Where each text field is in the fixed part, its name, and how it is decoded.
_READING_TEXTS = (
    (3, "schedule", _utf16, "not UTF-16 text"),
    (4, "test_name", _utf16, "not UTF-16 text"),
    (5, "exit_condition", _utf8, "not UTF-8 text"),
    (6, "step_and_cycle", _utf8, "not UTF-8 text"),
    (7, "barcode", _utf16, "not UTF-16 text"),
    (8, "can_config", _utf16, "not UTF-16 text"),
    (9, "smb_config", _utf16, "not UTF-16 text"),
)


_NO_AUX: tuple[tuple[tuple[float, float], ...], ...] = ((),) * len(AUX_KINDS)
_READING_NAMES = tuple(f.name for f in dataclasses.fields(ChannelReading))[:25]
_NO_EXTRAS = {"aux": _NO_AUX, "bms": (), "smb": ()}


def _plain_reading(args: list[Any]) -> ChannelReading:
    """``ChannelReading(*args)`` without aux, BMS or SMB values, built faster.

    A frozen dataclass's ``__init__`` sets its 28 fields one ``object.__setattr__``
    call each: half the decode of a rack's 256 channels. Filled in one update of the
    instance's dict instead, it is the same object to ``==``, ``hash`` and ``repr``
    (the stream's tests compare the two).
    """
    reading = object.__new__(ChannelReading)
    values = reading.__dict__
    values.update(zip(_READING_NAMES, args, strict=True))
    values.update(_NO_EXTRAS)
    return reading


READING_FIXED_BYTES = _READING.size


def _channel_reading(r: _Reader, n: int) -> ChannelReading:
    return channel_reading(r.fixed(_READING, f"channels[{n}]"), r, n)


def channel_reading(fields: tuple[Any, ...], r: _Reader, n: int) -> ChannelReading:
    """Channel ``n`` from the fields of its fixed part (``_READING``) and, when its
    counts say it has aux, BMS or SMB values, ``r`` placed just after that part."""
    # The struct's order is the dataclass's: texts decoded in place, the rest as read.
    # Any: the fields are of several types; the dataclass's own order checks them.
    args: list[Any] = list(fields[:25])
    for i, name, text_of, problem in _READING_TEXTS:
        decoded = text_of(fields[i])
        if decoded is None:
            raise MalformedFrame(field=f"channels[{n}].{name}", problem=problem)
        args[i] = decoded
    counts = fields[25:39]
    if not any(counts):  # the usual case: no aux, BMS or SMB values
        return _plain_reading(args)
    p = f"channels[{n}]."
    aux = tuple(
        tuple(
            (r.float_("f", f"{p}aux_{kind}[{i}]"), r.float_("f", f"{p}aux_{kind}_dt[{i}]"))
            for i in range(count)
        )
        for kind, count in zip(AUX_KINDS, counts[:12], strict=True)
    )
    bms = tuple(
        BmsValue(
            r.int_("I", f"{p}bms[{i}].index"),
            r.float_("d", f"{p}bms[{i}].value"),
            r.cstring(f"{p}bms[{i}].unit"),
        )
        for i in range(counts[12])
    )
    smb: list[SmbValue] = []
    for i in range(counts[13]):
        index = r.int_("I", f"{p}smb[{i}].index")
        kind = r.int_("I", f"{p}smb[{i}].type")
        if kind == 0:
            value, text = r.float_("d", f"{p}smb[{i}].value"), b""
        elif kind == 1:
            value, text = 0.0, r.cstring(f"{p}smb[{i}].text")
        else:
            raise MalformedFrame(
                field=f"{p}smb[{i}].type", problem=f"{kind}, must be 0 (number) or 1 (text)"
            )
        smb.append(SmbValue(index, kind, value, text, r.cstring(f"{p}smb[{i}].unit")))
    args += [aux, bms, tuple(smb)]
    return ChannelReading(*args)


def decode_feedback(frame: bytes) -> Feedback:
    """One whole feedback frame (as a client receives it) into its message."""
    code, r = _open(frame, "feedback")
    message: Feedback
    if code == Command.LOGIN_FEEDBACK:
        result = r.int_("I", "result")
        ip = r.raw(4, "ip_address")
        serial = r.narrow(16, "serial_number")
        note = r.narrow(256, "note")
        wide: dict[str, Any] = {name: r.wide(n, name) for name, n in _LOGIN_WIDE}
        numbers: dict[str, Any] = {name: r.int_("I", name) for name in _LOGIN_NUMBERS}
        picture = r.raw(numbers.pop("picture_length"), "picture")
        message = LoginFeedback(result, ip, serial, note, picture=picture, **wide, **numbers)
    elif code == Command.CHANNELS_INFO_FEEDBACK:
        count = r.int_("I", "channel_count")
        if count * _MIN_READING_BYTES > len(frame):
            raise MalformedFrame(
                field="channel_count", problem=f"{count} channels cannot fit in the frame"
            )
        message = ChannelsInfoFeedback(tuple(_channel_reading(r, n) for n in range(count)))
    elif len(frame) == COMMAND_FEEDBACK_BYTES:
        # Assign, start, stop, set-MV share one layout (and so does our answer to an
        # unknown command); the code says which it answers.
        channel = r.int_("i", "channel")
        result = r.int_("B", "result")
        r.raw(_RESERVED_FEEDBACK, "reserved")
        message = CommandFeedback(code, channel, result)
    else:
        raise MalformedFrame(
            field="command", problem=f"unknown feedback code 0x{code:08x} ({len(frame)} bytes)"
        )
    r.done(type(message).__name__)
    return message


_LOGIN_WIDE = (
    ("nickname", 1024),
    ("location", 1024),
    ("emergency_contact", 1024),
    ("other_comments", 1024),
    ("email", 64),
    ("call", 16),
)
_LOGIN_NUMBERS = (
    "itac",
    "version",
    "allow_control",
    "channel_count",
    "user_type",
    "picture_length",
)
_READING_FLOATS = (
    "voltage_v",
    "current_a",
    "power_w",
    "charge_capacity_ah",
    "discharge_capacity_ah",
    "charge_energy_wh",
    "discharge_energy_wh",
    "internal_resistance_ohm",
    "dvdt_v_per_s",
    "acr_ohm",
    "aci_ohm",
    "aci_phase_deg",
)


# ------------------------------------------------------------------ writing


class _Writer:
    """Packs fields in order; a value that does not fit names its field."""

    def __init__(self) -> None:
        self.body = bytearray()

    def pack(self, fmt: str, field: str, *values: int | float) -> None:
        try:
            self.body += struct.pack("<" + fmt, *values)
        except (struct.error, OverflowError) as err:
            raise ConfigError(field=field, problem=f"{values!r} does not fit ({err})") from err

    def wide(self, text: str, chars: int, field: str) -> None:
        data = text.encode("utf-16-le", errors="strict")
        if len(data) > 2 * chars:
            problem = f"at most {chars} UTF-16 code units, got {len(data) // 2}"
            raise ConfigError(field=field, problem=problem)
        self.body += data.ljust(2 * chars, b"\0")

    def narrow(self, text: str, size: int, field: str) -> None:
        data = text.encode("utf-8")
        if len(data) > size or b"\0" in data:
            raise ConfigError(field=field, problem=f"at most {size} bytes of text, no zero byte")
        self.body += data.ljust(size, b"\0")

    def raw(self, data: bytes, field: str, size: int | None = None) -> None:
        if size is not None and len(data) != size:
            raise ConfigError(field=field, problem=f"must be {size} bytes, got {len(data)}")
        self.body += data

    def zeros(self, size: int) -> None:
        self.body += bytes(size)

    def cstring(self, data: bytes, field: str) -> None:
        if b"\0" in data:
            raise ConfigError(field=field, problem="may not hold a zero byte")
        self.body += data + b"\0"


def _frame(code: int, body: bytes | bytearray, side: Side) -> bytes:
    total = HEAD_BYTES + CODE_BYTES + len(body) + CHECKSUM_BYTES
    length = total - HEAD_BYTES if side == "request" else total
    frame = struct.pack("<QIII", TOKEN, length, code, 0) + body
    return frame + struct.pack("<H", checksum(frame))


def encode_request(message: Request) -> bytes:
    """The frame a client sends for ``message``."""
    w = _Writer()
    match message:
        case Login():
            w.narrow(message.username, 32, "username")
            w.narrow(message.password, 32, "password")
            code = Command.LOGIN
        case GetChannelsInfo():
            w.pack("hhI", "channel", message.channel, message.selection, message.aux_options)
            w.zeros(32)
            code = Command.GET_CHANNELS_INFO
        case AssignSchedule():
            w.pack("iB", "channel", message.channel, int(message.all_channels))
            w.wide(message.schedule, 200, "schedule")
            w.pack("f", "capacity_ah", message.capacity_ah)
            w.wide(message.barcode, 72, "barcode")
            if len(message.meta_variables) != 16:
                raise ConfigError(field="meta_variables", problem="must be 16 values (MV_UD1..16)")
            w.pack("16f", "meta_variables", *message.meta_variables)
            w.zeros(32)
            code = Command.ASSIGN_SCHEDULE
        case StartSchedule():
            w.wide(message.test_name, 72, "test_name")
            w.pack("I", "channels", len(message.channels))
            w.pack(f"{len(message.channels)}H", "channels", *message.channels)
            code = Command.START_SCHEDULE
        case StopSchedule():
            w.pack("IB", "channel", message.channel, int(message.all_channels))
            w.zeros(101)
            code = Command.STOP_SCHEDULE
        case SetMetaVariable():
            w.pack("Iii", "channel", message.channel, message.mv_type, message.meta_code)
            w.zeros(16)
            w.pack("if", "value", message.value_type, message.value)
            w.zeros(16)
            code = Command.SET_META_VARIABLE
        case UnknownRequest():
            w.raw(message.payload, "payload")
            return _frame(message.command_code, w.body, "request")
    return _frame(code, w.body, "request")


def encode_feedback(message: Feedback) -> bytes:
    """The frame a server sends for ``message``."""
    w = _Writer()
    match message:
        case LoginFeedback():
            w.pack("I", "result", message.result)
            w.raw(message.ip_address, "ip_address", 4)
            w.narrow(message.serial_number, 16, "serial_number")
            w.narrow(message.note, 256, "note")
            for name, chars in _LOGIN_WIDE:
                w.wide(getattr(message, name), chars, name)
            w.pack(
                "6I",
                "login numbers",
                message.itac,
                message.version,
                message.allow_control,
                message.channel_count,
                message.user_type,
                len(message.picture),
            )
            w.raw(message.picture, "picture")
            return _frame(Command.LOGIN_FEEDBACK, w.body, "feedback")
        case ChannelsInfoFeedback():
            w.pack("I", "channel_count", len(message.channels))
            for n, reading in enumerate(message.channels):
                _write_reading(w, reading, f"channels[{n}].")
            return _frame(Command.CHANNELS_INFO_FEEDBACK, w.body, "feedback")
        case CommandFeedback():
            w.pack("iB", "channel", message.channel, message.result)
            w.zeros(_RESERVED_FEEDBACK)
            return _frame(message.command_code, w.body, "feedback")
    assert_never(message)


def _write_reading(w: _Writer, c: ChannelReading, p: str) -> None:
    w.pack("IhB", p + "channel", c.channel, c.status, c.comm_failure)
    w.wide(c.schedule, 200, p + "schedule")
    w.wide(c.test_name, 72, p + "test_name")
    w.narrow(c.exit_condition, 100, p + "exit_condition")
    w.narrow(c.step_and_cycle, 64, p + "step_and_cycle")
    w.wide(c.barcode, 72, p + "barcode")
    w.wide(c.can_config, 200, p + "can_config")
    w.wide(c.smb_config, 200, p + "smb_config")
    w.pack("H2d", p + "master_channel", c.master_channel, c.test_time_s, c.step_time_s)
    w.pack("12f", p + "values", *(getattr(c, name) for name in _READING_FLOATS))
    if len(c.aux) != len(AUX_KINDS):
        raise ConfigError(field=p + "aux", problem=f"must hold {len(AUX_KINDS)} kinds")
    w.pack("14H", p + "counts", *(len(a) for a in c.aux), len(c.bms), len(c.smb))
    for kind, values in zip(AUX_KINDS, c.aux, strict=True):
        for value, dt_value in values:
            w.pack("2f", f"{p}aux_{kind}", value, dt_value)
    for i, bms in enumerate(c.bms):
        w.pack("Id", f"{p}bms[{i}]", bms.index, bms.value)
        w.cstring(bms.unit, f"{p}bms[{i}].unit")
    for i, smb in enumerate(c.smb):
        w.pack("II", f"{p}smb[{i}]", smb.index, smb.kind)
        if smb.kind == 0:
            w.pack("d", f"{p}smb[{i}].value", smb.value)
        else:
            w.cstring(smb.text, f"{p}smb[{i}].text")
        w.cstring(smb.unit, f"{p}smb[{i}].unit")
