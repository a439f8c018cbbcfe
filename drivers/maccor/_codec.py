"""Sans-IO codec of MacNet: JSON-RPC frames (port 57570) and native binary frames (57560).

JSON: requests are JSON-RPC 2.0 objects, ``"method": "MacNet"``, the function in
``params.FClass``/``params.FNum``; the tester ends each reply with ``\\r\\n`` (clients
read up to it), requests carry no terminator. Frames are therefore cut where a
top-level object closes, not at line ends.

Binary: a header of four little-endian words, ``FClass, FNum, Chan, Len``, then data.
In a reply ``Len`` is the number of data bytes; in a request it is a channel count
for status requests and the data length for commands, so a request's data length
comes from its function (:data:`REQUEST_DATA_BYTES`), as the help lays each out; an
echo (function class 0) is the one request framed by its ``Len``.

Everything malformed raises :class:`MalformedFrame` naming the field.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Literal

from cellguard.drivers.errors import ProtocolViolation
from cellguard.drivers.maccor._messages import (
    CHARGE_MODES,
    SET_DIRECT_OUTPUT,
    START_DIRECT,
    STATUS_ONE,
    ChannelState,
    DirectOutput,
)

__all__ = [
    "BIN_HEADER_BYTES",
    "MAX_JSON_FRAME_BYTES",
    "REQUEST_DATA_BYTES",
    "BinaryFrame",
    "BinaryReplySplitter",
    "BinarySplitter",
    "JsonError",
    "JsonReply",
    "JsonRequest",
    "JsonSplitter",
    "MalformedFrame",
    "decode_bin_direct_output",
    "decode_bin_reply",
    "decode_bin_result",
    "decode_bin_state",
    "decode_json_reply",
    "decode_json_request",
    "decode_state",
    "encode_bin",
    "encode_bin_direct_output",
    "encode_bin_state",
    "encode_json_error",
    "encode_json_reply",
    "encode_json_request",
    "float_field",
    "int_field",
    "str_field",
]

MAX_JSON_FRAME_BYTES = 1 << 20
"""A JSON frame larger than this is refused (a 128-channel status is ~6 kB)."""

_HEADER = struct.Struct("<HHHH")
BIN_HEADER_BYTES = _HEADER.size
_DIRECT = struct.Struct("<ffffBB")  # (6, 8) data: I, V, P, R, range, mode
_DIRECT_START_TAIL = struct.Struct("<fff")  # (6, 7) data after (6, 8)'s: record time, dV, dI
_STATE = struct.Struct("<BBHIIHffffffQ")  # (4, 7) reply data; time in Unix ms

ECHO_CLASS = 0
"""Function class 0 is the echo: "the received message will be replied as is", so its
``Len`` is simply the number of data bytes, whatever the function number."""

REQUEST_DATA_BYTES: dict[tuple[int, int], int] = {
    (1, 1): 0,
    (1, 2): 0,
    (4, 1): 0,  # Len is the number of channels
    (4, 4): 0,
    (4, 7): 0,
    (6, 3): 0,
    (6, 4): 0,
    (6, 5): 0,
    (6, 6): 0,
    (6, 7): 25 + _DIRECT.size + _DIRECT_START_TAIL.size,  # 55, as the help says
    (6, 8): _DIRECT.size,  # 18
    (6, 9): 5,  # VarNum byte, value single
    (6, 10): 24,  # six singles (the help's "Len 5" does not fit its own layout)
}
"""Data bytes of each binary request cellguard frames (the others cannot be framed)."""


class MalformedFrame(ProtocolViolation):
    """A MacNet frame that does not follow Maccor's layout; ``field`` says where."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"malformed MacNet frame: {field}: {problem}")


# ------------------------------------------------------------------ JSON framing


class JsonSplitter:
    """Cuts a byte stream into whole top-level JSON objects (whitespace between is skipped)."""

    def __init__(self, max_bytes: int = MAX_JSON_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._scanned = 0  # bytes of _buf already scanned for the current object

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        i = self._scanned
        start = 0
        while i < len(buf):
            c = buf[i]
            if self._depth == 0:
                if c in b" \t\r\n":
                    i += 1
                    start = i
                    continue
                if c != 0x7B:  # "{"
                    raise MalformedFrame(
                        field="frame",
                        problem=f"byte {bytes([c])!r} where a JSON object must start ('{{')",
                    )
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == 0x5C:  # backslash
                    self._escaped = True
                elif c == 0x22:
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in {0x7B, 0x5B}:
                self._depth += 1
            elif c in {0x7D, 0x5D}:
                self._depth -= 1
                if self._depth == 0:
                    frames.append(bytes(buf[start : i + 1]))
                    start = i + 1
            i += 1
            if i - start > self._max:
                raise MalformedFrame(
                    field="frame", problem=f"longer than {self._max} bytes without closing"
                )
        del buf[:start]
        self._scanned = len(buf)
        return frames


# ------------------------------------------------------------------ JSON fields


def _where(obj: str, name: str) -> str:
    return f"{obj}.{name}" if obj else name


def int_field(values: dict[str, object], name: str, obj: str, lo: int = 0, hi: int = 0xFFFF) -> int:
    """``values[name]`` as an int in ``lo..hi``; floats with no fraction pass (JSON has one
    number type)."""
    if name not in values:
        raise MalformedFrame(field=_where(obj, name), problem="missing")
    value = values[name]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedFrame(field=_where(obj, name), problem=f"{value!r} is not an integer")
    if not lo <= value <= hi:
        raise MalformedFrame(field=_where(obj, name), problem=f"{value} is outside {lo}..{hi}")
    return value


def float_field(values: dict[str, object], name: str, obj: str) -> float:
    if name not in values:
        raise MalformedFrame(field=_where(obj, name), problem="missing")
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedFrame(field=_where(obj, name), problem=f"{value!r} is not a number")
    result = float(value)
    if not math.isfinite(result):
        raise MalformedFrame(field=_where(obj, name), problem=f"{value!r} is not finite")
    return result


def str_field(values: dict[str, object], name: str, obj: str, default: str | None = None) -> str:
    if name not in values:
        if default is not None:
            return default
        raise MalformedFrame(field=_where(obj, name), problem="missing")
    value = values[name]
    if not isinstance(value, str):
        raise MalformedFrame(field=_where(obj, name), problem=f"{value!r} is not a string")
    return value


def _load_object(frame: bytes) -> dict[str, object]:
    try:
        loaded = json.loads(frame.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise MalformedFrame(field="frame", problem=f"not UTF-8 ({err.reason})") from err
    except json.JSONDecodeError as err:
        raise MalformedFrame(field="frame", problem=f"not JSON ({err.msg})") from err
    except RecursionError as err:
        raise MalformedFrame(field="frame", problem="nested too deeply") from err
    if not isinstance(loaded, dict):
        raise MalformedFrame(field="frame", problem="not a JSON object")
    return loaded


def _object(values: dict[str, object], name: str) -> dict[str, object]:
    value = values.get(name)
    if not isinstance(value, dict):
        problem = "missing" if name not in values else f"{value!r} is not an object"
        raise MalformedFrame(field=name, problem=problem)
    return value


# ------------------------------------------------------------------ JSON messages


@dataclass(frozen=True, slots=True)
class JsonRequest:
    function: tuple[int, int]
    params: dict[str, object]
    request_id: object

    @property
    def chan(self) -> int | None:
        """``Chan`` if present (not checked: its range is the function's business)."""
        value = self.params.get("Chan")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class JsonReply:
    function: tuple[int, int]
    result: dict[str, object]
    request_id: object


@dataclass(frozen=True, slots=True)
class JsonError:
    """A JSON-RPC error reply: the tester could not parse or process the request."""

    code: int
    message: str
    data: object
    request_id: object


def encode_json_request(
    function: tuple[int, int], params: dict[str, object], request_id: int
) -> bytes:
    body = {"FClass": function[0], "FNum": function[1], **params}
    message = {"jsonrpc": "2.0", "method": "MacNet", "params": body, "id": request_id}
    return json.dumps(message, allow_nan=False).encode("utf-8")


def decode_json_request(frame: bytes) -> JsonRequest:
    message = _load_object(frame)
    if message.get("jsonrpc") != "2.0":
        raise MalformedFrame(field="jsonrpc", problem=f"{message.get('jsonrpc')!r}, not '2.0'")
    if message.get("method") != "MacNet":
        raise MalformedFrame(field="method", problem=f"{message.get('method')!r}, not 'MacNet'")
    if "id" not in message:
        raise MalformedFrame(field="id", problem="missing")
    params = _object(message, "params")
    function = (int_field(params, "FClass", "params"), int_field(params, "FNum", "params"))
    return JsonRequest(function, params, message["id"])


def encode_json_reply(result: dict[str, object], request_id: object) -> bytes:
    message = {"jsonrpc": "2.0", "result": result, "id": request_id}
    return json.dumps(message, allow_nan=False).encode("utf-8") + b"\r\n"


def encode_json_error(code: int, message: str, request_id: object, data: object = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    reply = {"jsonrpc": "2.0", "error": error, "id": request_id}
    return json.dumps(reply, allow_nan=False).encode("utf-8") + b"\r\n"


def decode_json_reply(frame: bytes) -> JsonReply | JsonError:
    message = _load_object(frame)
    if message.get("jsonrpc") != "2.0":
        raise MalformedFrame(field="jsonrpc", problem=f"{message.get('jsonrpc')!r}, not '2.0'")
    request_id = message.get("id")
    if "error" in message:
        error = _object(message, "error")
        code = int_field(error, "code", "error", -(2**31), 2**31 - 1)
        return JsonError(code, str_field(error, "message", "error"), error.get("data"), request_id)
    result = _object(message, "result")
    function = (int_field(result, "FClass", "result"), int_field(result, "FNum", "result"))
    return JsonReply(function, result, request_id)


def decode_state(result: dict[str, object]) -> ChannelState:
    """The (4, 7) reply's ``result``, every field checked."""
    o = "result"
    return ChannelState(
        channel=int_field(result, "Chan", o),
        rf1=int_field(result, "RF1", o, 0, 0xFF),
        rf2=int_field(result, "RF2", o, 0, 0xFF),
        stat=int_field(result, "Stat", o),
        last_record=int_field(result, "LastRecNum", o, 0, 0xFFFFFFFF),
        cycle=int_field(result, "Cycle", o, 0, 0xFFFFFFFF),
        step=int_field(result, "Step", o),
        test_time_s=float_field(result, "TestTime", o),
        step_time_s=float_field(result, "StepTime", o),
        capacity_ah=float_field(result, "Capacity", o),
        energy_wh=float_field(result, "Energy", o),
        current_a=float_field(result, "Current", o),
        voltage_v=float_field(result, "Voltage", o),
        tester_time=str_field(result, "TesterTime", o),
    )


# ------------------------------------------------------------------ binary


@dataclass(frozen=True, slots=True)
class BinaryFrame:
    function: tuple[int, int]
    chan: int
    length: int  # the header's Len, as sent
    data: bytes


def encode_bin(
    function: tuple[int, int], chan: int, data: bytes = b"", length: int | None = None
) -> bytes:
    """A binary frame; ``length`` defaults to the data length (replies, commands)."""
    if not 0 <= chan <= 0xFFFF:
        raise MalformedFrame(field="Chan", problem=f"{chan} is outside 0..65535")
    n = len(data) if length is None else length
    return _HEADER.pack(function[0], function[1], chan, n) + data


Side = Literal["request", "reply"]


class BinarySplitter:
    """Cuts a binary MacNet stream into frames; a request of a function whose data
    length cellguard does not know cannot be framed, and ends the stream."""

    def __init__(self, side: Side) -> None:
        self._side = side
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[BinaryFrame]:
        self._buf += data
        frames: list[BinaryFrame] = []
        while len(self._buf) >= BIN_HEADER_BYTES:
            fclass, fnum, chan, length = _HEADER.unpack_from(self._buf)
            if self._side == "reply" or fclass == ECHO_CLASS:
                size = length
            else:
                known = REQUEST_DATA_BYTES.get((fclass, fnum))
                if known is None:
                    raise MalformedFrame(
                        field="FClass/FNum",
                        problem=f"({fclass}, {fnum}) is not a binary request cellguard can "
                        f"frame; known: {sorted(REQUEST_DATA_BYTES)}",
                    )
                size = known
            if len(self._buf) < BIN_HEADER_BYTES + size:
                break
            body = bytes(self._buf[BIN_HEADER_BYTES : BIN_HEADER_BYTES + size])
            del self._buf[: BIN_HEADER_BYTES + size]
            frames.append(BinaryFrame((fclass, fnum), chan, length, body))
        return frames


class BinaryReplySplitter:
    """Cuts the binary replies a client reads into whole frames (header and ``Len`` data
    bytes, the help's "Rx: Number of bytes of data"), as bytes for
    :func:`decode_bin_reply`."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= BIN_HEADER_BYTES:
            size = BIN_HEADER_BYTES + _HEADER.unpack_from(self._buf)[3]
            if len(self._buf) < size:
                break
            frames.append(bytes(self._buf[:size]))
            del self._buf[:size]
        return frames


def decode_bin_reply(frame: bytes) -> BinaryFrame:
    """One whole binary reply frame (as :class:`BinaryReplySplitter` cuts them)."""
    if len(frame) < BIN_HEADER_BYTES:
        raise MalformedFrame(field="header", problem=f"{len(frame)} bytes, a header is 8")
    fclass, fnum, chan, length = _HEADER.unpack_from(frame)
    if len(frame) != BIN_HEADER_BYTES + length:
        raise MalformedFrame(
            field="Len", problem=f"{length}, but {len(frame) - BIN_HEADER_BYTES} data bytes follow"
        )
    return BinaryFrame((fclass, fnum), chan, length, frame[BIN_HEADER_BYTES:])


def decode_bin_result(frame: BinaryFrame) -> int:
    """The ``Result`` word a channel command's binary reply carries."""
    if len(frame.data) != 2:
        raise MalformedFrame(
            field="Len",
            problem=f"{len(frame.data)} data bytes in the reply to {frame.function}; "
            "a command's reply carries one Result word (2 bytes)",
        )
    return int(struct.unpack("<H", frame.data)[0])


def encode_bin_direct_output(output: DirectOutput) -> bytes:
    """The 18 data bytes of (6, 8) (and the middle of (6, 7))."""
    return _DIRECT.pack(
        output.current_a,
        output.voltage_v,
        output.power_w,
        output.resistance_ohm,
        output.current_range,
        ord(output.mode),
    )


def decode_bin_direct_output(frame: BinaryFrame) -> DirectOutput:
    if frame.function not in (SET_DIRECT_OUTPUT, START_DIRECT):
        raise MalformedFrame(field="FClass/FNum", problem=f"{frame.function} is not direct output")
    offset = 25 if frame.function == START_DIRECT else 0
    if len(frame.data) < offset + _DIRECT.size:
        raise MalformedFrame(field="Data", problem=f"{len(frame.data)} bytes, too short")
    current, voltage, power, resistance, rng, mode = _DIRECT.unpack_from(frame.data, offset)
    if chr(mode) not in CHARGE_MODES:
        raise MalformedFrame(field="Charge mode", problem=f"{mode} is not 67 'C', 68 'D' or 82 'R'")
    values = (current, voltage, power, resistance)
    if not all(math.isfinite(v) for v in values):
        raise MalformedFrame(field="Current/Voltage/Power/Resistance", problem="not finite")
    return DirectOutput(current, voltage, power, chr(mode), rng, resistance)


def encode_bin_state(state: ChannelState, tester_time_ms: int) -> bytes:
    """The (4, 7) reply frame of ``state``."""
    data = _STATE.pack(
        state.rf1,
        state.rf2,
        state.stat,
        state.last_record,
        state.cycle,
        state.step,
        state.test_time_s,
        state.step_time_s,
        state.capacity_ah,
        state.energy_wh,
        state.current_a,
        state.voltage_v,
        tester_time_ms,
    )
    return encode_bin(STATUS_ONE, state.channel, data)


def decode_bin_state(frame: BinaryFrame) -> ChannelState:
    if frame.function != STATUS_ONE:
        raise MalformedFrame(field="FClass/FNum", problem=f"{frame.function} is not (4, 7)")
    if len(frame.data) != _STATE.size:
        raise MalformedFrame(
            field="Len", problem=f"{len(frame.data)} bytes, (4, 7) data is {_STATE.size}"
        )
    rf1, rf2, stat, rec, cycle, step, tt, st, cap, en, cur, volt, ms = _STATE.unpack(frame.data)
    return ChannelState(
        frame.chan, rf1, rf2, stat, rec, cycle, step, tt, st, cap, en, cur, volt, str(ms)
    )
