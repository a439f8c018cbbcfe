"""The CTI codec against the example frames of pycti-arbin (tests/fixtures/arbin-cti/)
and against the rules of Arbin's documents: decode to the documented fields, encode
back byte for byte, and refuse a damaged frame with an error naming the field."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from cellguard.drivers.arbin import (
    AUX_KINDS,
    AssignSchedule,
    BmsValue,
    ChannelReading,
    ChannelsInfoFeedback,
    ChannelStatus,
    Command,
    CommandFeedback,
    FrameSplitter,
    GetChannelsInfo,
    Login,
    LoginFeedback,
    MalformedFrame,
    SetMetaVariable,
    SmbValue,
    StartSchedule,
    StopSchedule,
    UnknownRequest,
    checksum,
    decode_feedback,
    decode_request,
    encode_feedback,
    encode_request,
    feedback_code,
)
from cellguard.drivers.errors import ConfigError, ProtocolViolation

FIXTURES = Path(__file__).parent.parent / "fixtures" / "arbin-cti"
NAMES = [
    "login",
    "channel_info",
    "assign_schedule",
    "start_schedule",
    "stop_schedule",
    "set_meta_variable",
]


def _frame(side: str, name: str) -> tuple[bytes, dict[str, object]]:
    data = (FIXTURES / f"{side}_{name}_msg.bin").read_bytes()
    fields = json.loads((FIXTURES / f"{side}_{name}_msg.json").read_text())
    return data, fields


@pytest.mark.parametrize("name", NAMES)
def test_example_requests_round_trip_byte_for_byte(name: str) -> None:
    """Every example request decodes, and encodes back to the very same bytes."""
    data, fields = _frame("client", name)
    message = decode_request(data)
    assert not isinstance(message, UnknownRequest)
    assert encode_request(message) == data
    # The documented head: token, a length counting what follows the 12-byte head.
    assert struct.unpack_from("<QII", data) == (
        fields["header"],
        fields["msg_length"],
        fields["command_code"],
    )
    assert len(data) == fields["msg_length"] + 12


@pytest.mark.parametrize("name", NAMES)
def test_example_feedbacks_round_trip_byte_for_byte(name: str) -> None:
    """Every example feedback decodes, and encodes back; its length counts the whole frame."""
    data, fields = _frame("server", name)
    assert encode_feedback(decode_feedback(data)) == data
    assert len(data) == fields["msg_length"]


def test_example_requests_decode_to_the_documented_fields() -> None:
    assert decode_request(_frame("client", "login")[0]) == Login("fake username", "fake passowrd")
    assert decode_request(_frame("client", "channel_info")[0]) == GetChannelsInfo(13, 1, 0)
    assign = decode_request(_frame("client", "assign_schedule")[0])
    assert assign == AssignSchedule(13, "Rest+207855.sdx", False, 1.0, "", (1.0,) * 16)
    start = decode_request(_frame("client", "start_schedule")[0])
    assert start == StartSchedule("sample_test_name", (13,))
    assert decode_request(_frame("client", "stop_schedule")[0]) == StopSchedule(13, False)
    mv = decode_request(_frame("client", "set_meta_variable")[0])
    assert isinstance(mv, SetMetaVariable)
    assert (mv.channel, mv.meta_code, mv.mv_type, mv.value_type) == (13, 52, 1, 1)
    assert mv.value == pytest.approx(0.2)


def test_example_channel_info_feedback_decodes_to_the_documented_fields() -> None:
    data, fields = _frame("server", "channel_info")
    feedback = decode_feedback(data)
    assert isinstance(feedback, ChannelsInfoFeedback)
    (reading,) = feedback.channels
    assert reading.channel == fields["channel"] == 13
    assert reading.status == ChannelStatus.REST
    assert reading.status_name == fields["status"].lower()
    assert reading.running
    for ours, theirs in [
        ("schedule", "schedule"),
        ("test_name", "testname"),
        ("exit_condition", "exit_condition"),
        ("step_and_cycle", "step_and_cycle_format"),
        ("master_channel", "master_channel"),
        ("test_time_s", "test_time_s"),
        ("step_time_s", "step_time_s"),
        ("voltage_v", "voltage_v"),
        ("current_a", "current_a"),
        ("charge_capacity_ah", "charge_capacity_ah"),
    ]:
        assert getattr(reading, ours) == fields[theirs], ours
    assert reading.aux == ((),) * len(AUX_KINDS)


def test_example_login_feedback_decodes_to_the_documented_fields() -> None:
    data, fields = _frame("server", "login")
    login = decode_feedback(data)
    assert isinstance(login, LoginFeedback)
    assert login.ok
    assert login.serial_number == fields["cycler_sn"] == "207855"
    assert login.note == fields["note"]
    assert login.ip_address == fields["ip_address"].encode("latin-1")
    assert (login.itac, login.version, login.allow_control) == (7918320, 1, 1)
    assert login.channel_count == fields["num_channels"] == 16
    assert login.picture == b""


@pytest.mark.parametrize("name", NAMES[2:])
def test_example_command_feedbacks_carry_the_mirrored_code(name: str) -> None:
    request = decode_request(_frame("client", name)[0])
    feedback = decode_feedback(_frame("server", name)[0])
    assert isinstance(feedback, CommandFeedback)
    assert feedback.ok
    assert feedback.channel == 13
    request_code = struct.unpack_from("<I", _frame("client", name)[0], 12)[0]
    assert feedback.command_code == feedback_code(request_code)
    assert not isinstance(request, UnknownRequest)


def test_feedback_code_swaps_the_nibbles_of_byte_two() -> None:
    assert feedback_code(Command.LOGIN) == Command.LOGIN_FEEDBACK
    assert feedback_code(Command.GET_CHANNELS_INFO) == Command.CHANNELS_INFO_FEEDBACK
    assert feedback_code(Command.ASSIGN_SCHEDULE) == Command.ASSIGN_SCHEDULE_FEEDBACK
    assert feedback_code(Command.START_SCHEDULE) == Command.START_SCHEDULE_FEEDBACK
    assert feedback_code(Command.STOP_SCHEDULE) == Command.STOP_SCHEDULE_FEEDBACK
    assert feedback_code(Command.SET_META_VARIABLE) == Command.SET_META_VARIABLE_FEEDBACK


def test_several_channels_with_aux_bms_and_smb_values_round_trip() -> None:
    """The variable parts (aux values per kind, BMS and SMB entries) come back in order."""
    # Values exact in float32, the wire's type, so equality is the right check.
    aux = tuple(((1.5, 0.25),) * (i % 3) for i in range(len(AUX_KINDS)))
    readings = (
        ChannelReading(0, int(ChannelStatus.CHARGE), voltage_v=0.125, current_a=2**-11, aux=aux),
        ChannelReading(
            1,
            int(ChannelStatus.IDLE),
            test_name="Ωtest",
            bms=(BmsValue(3, 2.5, b"mV"),),
            smb=(SmbValue(1, 0, 7.0, b"", b"V"), SmbValue(2, 1, 0.0, b"ok", b"")),
        ),
    )
    frame = encode_feedback(ChannelsInfoFeedback(readings))
    assert decode_feedback(frame) == ChannelsInfoFeedback(readings)


def test_a_start_of_several_channels_round_trips() -> None:
    message = StartSchedule("run", (0, 7, 255))
    assert decode_request(encode_request(message)) == message


# ------------------------------------------------------------------ damage


def _corrupt_checksum(frame: bytes) -> bytes:
    return frame[:-2] + bytes([frame[-2] ^ 0x01, frame[-1]])


def _refix(frame: bytes) -> bytes:
    """Put a correct checksum on a frame whose body was changed on purpose."""
    return frame[:-2] + struct.pack("<H", checksum(frame[:-2]))


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda f: b"\x00" + f[1:], "token"),
        (_corrupt_checksum, "checksum"),
        (lambda f: f[:-3] + f[-2:], "length"),
        (lambda f: _refix(f[:16] + b"\x01\x00\x00\x00" + f[20:]), "command_extend"),
    ],
)
def test_a_damaged_request_names_the_field(damage: object, field: str) -> None:
    data = _frame("client", "stop_schedule")[0]
    with pytest.raises(MalformedFrame) as caught:
        decode_request(damage(data))  # type: ignore[operator]
    assert caught.value.field == field
    assert field in str(caught.value)
    assert isinstance(caught.value, ProtocolViolation)


def test_text_that_is_not_utf16_names_its_field() -> None:
    data = bytearray(_frame("client", "assign_schedule")[0])
    data[25:27] = b"\x00\xd8"  # a lone high surrogate, then the name goes on
    data[27:29] = b"A\x00"
    with pytest.raises(MalformedFrame) as caught:
        decode_request(_refix(bytes(data)))
    assert caught.value.field == "schedule"


def test_a_channel_count_the_frame_cannot_hold_is_refused() -> None:
    data = bytearray(_frame("server", "channel_info")[0])
    data[20:24] = struct.pack("<I", 1000)
    with pytest.raises(MalformedFrame) as caught:
        decode_feedback(_refix(bytes(data)))
    assert caught.value.field == "channel_count"


def test_an_aux_count_past_the_end_names_the_aux_value() -> None:
    data = bytearray(_frame("server", "channel_info")[0])
    data[1751:1753] = struct.pack("<H", 2)  # two temperatures, no values sent
    with pytest.raises(MalformedFrame) as caught:
        decode_feedback(_refix(bytes(data)))
    assert caught.value.field == "channels[0].aux_temperature[0]"


def test_values_that_do_not_fit_name_their_field() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        encode_request(AssignSchedule(0, "x" * 201))
    with pytest.raises(ConfigError, match="username"):
        encode_request(Login("u" * 33, "p"))
    with pytest.raises(ConfigError, match="channel"):
        encode_request(StopSchedule(-1))


def test_an_unknown_request_code_is_kept_with_its_payload() -> None:
    frame = encode_request(UnknownRequest(0xBB320005, bytes(109)))
    assert decode_request(frame) == UnknownRequest(0xBB320005, bytes(109))


# ------------------------------------------------------------------ framing


def test_the_splitter_cuts_a_stream_of_feedbacks_read_byte_by_byte() -> None:
    frames = [_frame("server", n)[0] for n in NAMES]
    stream = b"".join(frames)
    splitter = FrameSplitter("feedback")
    out: list[bytes] = []
    for i in range(len(stream)):
        out += splitter.feed(stream[i : i + 1])
    assert out == frames
    assert splitter.pending_bytes == 0


def test_the_splitter_knows_a_request_length_excludes_the_head() -> None:
    frames = [_frame("client", n)[0] for n in NAMES]
    assert FrameSplitter("request").feed(b"".join(frames)) == frames


def test_the_splitter_refuses_a_stream_that_lost_its_framing() -> None:
    splitter = FrameSplitter("feedback")
    with pytest.raises(MalformedFrame) as caught:
        splitter.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert caught.value.field == "token"
    huge = struct.pack("<QI", 0x11DDDDDDDDDDDDDD, 0xFFFFFFFF)
    with pytest.raises(MalformedFrame, match="length"):
        FrameSplitter("feedback").feed(huge)


def test_a_spoofer_feedback_two_bytes_too_long_is_repaired() -> None:
    """pycti-arbin's spoofer writes zeros where the checksum goes and the checksum after
    them (130 bytes for a 128-byte feedback): taken as the frame it meant, and counted."""
    good = _frame("server", "stop_schedule")[0]
    spoofed = good[:-2] + b"\0\0" + good[-2:]
    splitter = FrameSplitter("feedback")
    assert splitter.feed(spoofed[:-1]) == []  # waits for the trailing checksum
    assert splitter.feed(spoofed[-1:] + good) == [good, good]
    assert splitter.repaired_frames == 1
    assert splitter.pending_bytes == 0


def test_a_zero_checksum_without_the_trailing_one_is_left_to_the_decoder() -> None:
    good = _frame("server", "stop_schedule")[0]
    broken = good[:-2] + b"\0\0"
    frames = FrameSplitter("feedback").feed(broken + good)
    assert frames == [broken, good]
    with pytest.raises(MalformedFrame, match="checksum"):
        decode_feedback(frames[0])


def test_the_checksum_of_a_rack_sized_frame_is_the_16_bit_byte_sum() -> None:
    """Large frames are summed another way (numpy); the result must be the same."""
    data = bytes(range(256)) * 2000 + b"\xff" * 7
    assert checksum(data) == sum(data) & 0xFFFF
    assert checksum(data[:100]) == sum(data[:100]) & 0xFFFF
