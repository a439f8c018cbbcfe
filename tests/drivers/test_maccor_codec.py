"""The MacNet codec on pymacnet's example messages (from Maccor's help) and on bad input:
every malformed frame is a MalformedFrame naming the field."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from cellguard.drivers.errors import CellguardError
from cellguard.drivers.maccor import (
    BinarySplitter,
    ChannelState,
    DirectOutput,
    JsonError,
    JsonReply,
    JsonSplitter,
    MalformedFrame,
    decode_bin_direct_output,
    decode_bin_state,
    decode_json_reply,
    decode_json_request,
    decode_state,
    encode_bin,
    encode_bin_direct_output,
    encode_bin_state,
    encode_json_error,
    encode_json_reply,
    encode_json_request,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "maccor-macnet"


def _fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def test_every_example_request_decodes_with_its_function() -> None:
    requests = sorted(FIXTURES.glob("tx_*.json"))
    assert len(requests) == 11
    for path in requests:
        request = decode_json_request(path.read_bytes())
        params = json.loads(path.read_text())["params"]
        assert request.function == (params["FClass"], params["FNum"])
        assert request.request_id == 1987


def test_every_example_reply_decodes_and_the_status_is_typed() -> None:
    for path in sorted(FIXTURES.glob("rx_*.json")):
        reply = decode_json_reply(path.read_bytes())
        assert isinstance(reply, JsonReply), path.name
    reply = decode_json_reply(_fixture("rx_read_status_msg"))
    assert isinstance(reply, JsonReply)
    state = decode_state(reply.result | {"Chan": 3})
    assert (state.channel, state.stat, state.rf2, state.voltage_v) == (3, 0, 192, 3.85)
    assert state.status == "Available"
    assert state.tester_time == "2022-10-13T12:32:56"


def test_the_splitter_cuts_objects_whatever_the_chunks() -> None:
    # pymacnet sends indented JSON and no terminator; the tester ends replies with CRLF.
    stream = _fixture("tx_read_status_msg") + _fixture("tx_set_direct_output_msg").strip()
    stream += encode_json_reply({"FClass": 0, "FNum": 0, "Note": 'a "}" in a string\\'}, 1)
    for chunk in (1, 7, len(stream)):
        splitter = JsonSplitter()
        frames = []
        for i in range(0, len(stream), chunk):
            frames += splitter.feed(stream[i : i + chunk])
        assert len(frames) == 3, chunk
        assert json.loads(frames[2])["result"]["Note"] == 'a "}" in a string\\'
        assert splitter.pending_bytes == 0


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        (
            b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FNum": 7}, "id": 1}',
            "params.FClass",
        ),
        (
            b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": "4", "FNum": 7}, '
            b'"id": 1}',
            "params.FClass",
        ),
        (
            b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": 4, "FNum": 70000}, '
            b'"id": 1}',
            "params.FNum",
        ),
        (b'{"jsonrpc": "2.0", "method": "Other", "params": {}, "id": 1}', "method"),
        (b'{"jsonrpc": "1.0", "method": "MacNet", "params": {}, "id": 1}', "jsonrpc"),
        (b'{"jsonrpc": "2.0", "method": "MacNet", "params": [], "id": 1}', "params"),
        (b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": 1, "FNum": 1}}', "id"),
        (b'{"jsonrpc": "2.0", "method": "MacNet", "params": {', "frame"),
        (b"[1, 2]", "frame"),
        (b"\xff{}", "frame"),
    ],
)
def test_a_malformed_request_names_the_field(frame: bytes, field: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        decode_json_request(frame)
    assert caught.value.field == field
    assert isinstance(caught.value, CellguardError)


def test_a_malformed_status_names_the_field() -> None:
    reply = decode_json_reply(_fixture("rx_read_status_msg"))
    assert isinstance(reply, JsonReply)
    reply.result["Chan"] = 3  # the example's -1 is a placeholder
    for key, bad, problem in [
        ("Voltage", "3.8", "is not a number"),
        ("Stat", 1.5, "is not an integer"),
        ("RF1", 300, "outside 0..255"),
        ("TesterTime", 5, "is not a string"),
    ]:
        with pytest.raises(MalformedFrame, match=rf"result\.{key}: .*{problem}"):
            decode_state(reply.result | {key: bad})
    with pytest.raises(MalformedFrame, match=r"result\.Current: missing"):
        decode_state({k: v for k, v in reply.result.items() if k != "Current"})


def test_an_error_reply_is_decoded_not_raised() -> None:
    frame = encode_json_error(-32602, "Illegal value", 1987, "Chan: no channel 9")
    assert frame.endswith(b"\r\n")
    assert decode_json_reply(frame) == JsonError(
        -32602, "Illegal value", "Chan: no channel 9", 1987
    )


def test_a_request_round_trips() -> None:
    frame = encode_json_request((6, 3), {"Chan": 2}, 1987)
    request = decode_json_request(frame)
    assert (request.function, request.chan, request.request_id) == ((6, 3), 2, 1987)


def test_the_splitter_refuses_a_stream_that_is_not_json_objects() -> None:
    with pytest.raises(MalformedFrame, match="frame: byte b'x'"):
        JsonSplitter().feed(b"  x{}")
    with pytest.raises(MalformedFrame, match="longer than 64 bytes"):
        JsonSplitter(max_bytes=64).feed(b"{" + b'"a":1,' * 20)


def test_binary_frames_follow_the_helps_layout() -> None:
    # pymacnet's rest message: '<HHHHffffBB', (6, 8), Len 18.
    theirs = struct.pack("<HHHHffffBB", 6, 8, 2, 18, 0.0, 0.0, 0.0, 0.0, 4, ord("R"))
    frames = BinarySplitter("request").feed(theirs[:5]) or BinarySplitter("request").feed(theirs)
    assert len(frames) == 1
    output = decode_bin_direct_output(frames[0])
    assert (frames[0].chan, output.mode, output.current_range) == (2, "R", 4)
    ours = encode_bin((6, 8), 2, encode_bin_direct_output(DirectOutput(0, 0, 0, "R")))
    assert ours == theirs
    state = ChannelState(5, 1, 0, 2, 10, 0, 1, 2.5, 1.5, 0.001, 0.002, 0.0004, 0.02, "x")
    frame = encode_bin_state(state, 1_700_000_000_000)
    assert len(frame) == 8 + 46
    (back,) = BinarySplitter("reply").feed(frame)
    decoded = decode_bin_state(back)
    assert (decoded.channel, decoded.stat, decoded.tester_time) == (5, 2, "1700000000000")
    assert decoded.current_a == pytest.approx(0.0004)


def test_a_binary_request_of_an_unknown_length_cannot_be_framed() -> None:
    with pytest.raises(MalformedFrame, match=r"FClass/FNum: \(9, 9\)"):
        BinarySplitter("request").feed(encode_bin((9, 9), 0))
    bad_mode = encode_bin((6, 8), 0, struct.pack("<ffffBB", 0, 0, 0, 0, 4, ord("X")))
    (frame,) = BinarySplitter("request").feed(bad_mode)
    with pytest.raises(MalformedFrame, match="Charge mode: 88"):
        decode_bin_direct_output(frame)
