"""The MacNet codec under 10,000 damaged frames (seeded, reproducible) and hypothesis.

Rule for every frame: the decoder returns a typed message or raises
:class:`MalformedFrame` (our exception root's, naming a field), never anything else;
the simulator answers every damaged JSON frame with a reply or an error reply.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.maccor import (
    BinaryReplySplitter,
    BinarySplitter,
    JsonReply,
    JsonSplitter,
    MaccorSimulator,
    MalformedFrame,
    decode_bin_direct_output,
    decode_bin_reply,
    decode_bin_result,
    decode_bin_state,
    decode_json_reply,
    decode_json_request,
    decode_state,
    encode_bin,
    encode_bin_direct_output,
    encode_bin_state,
)
from cellguard.drivers.maccor._messages import ChannelState, DirectOutput

SEED = 20261204
FRAMES = 10_000
FIXTURES = Path(__file__).parent.parent / "fixtures" / "maccor-macnet"
_REQUESTS = [p.read_bytes() for p in sorted(FIXTURES.glob("tx_*.json"))]
_REPLIES = [p.read_bytes() for p in sorted(FIXTURES.glob("rx_*.json"))]
_ODD_VALUES: list[object] = [None, True, -1, 2**40, 1.5, "x", [], {}, 1e308, "", 0]


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:  # truncated
        return frame[: rng.randrange(len(frame))]
    if kind == 1:  # flipped bytes
        data = bytearray(frame)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 5:  # garbage
        return rng.randbytes(rng.randrange(0, 200))
    message = json.loads(frame)
    body = message.get("params", message.get("result"))
    if kind == 2 and body:  # a field's value replaced by a value of another type
        body[rng.choice(sorted(body))] = rng.choice(_ODD_VALUES)
    elif kind == 3 and body:  # a field dropped
        del body[rng.choice(sorted(body))]
    else:  # a top-level member replaced
        message[rng.choice(sorted(message))] = rng.choice(_ODD_VALUES)
    return json.dumps(message).encode()


def test_ten_thousand_damaged_json_frames_decode_or_name_a_field() -> None:
    rng = random.Random(SEED)
    sim = MaccorSimulator(VirtualClock(), channels=4)
    outcomes: Counter[str] = Counter()
    for i in range(FRAMES):
        side = i % 2
        frame = _mutate(rng, rng.choice(_REQUESTS if side == 0 else _REPLIES))
        try:
            if side == 0:
                decode_json_request(frame)
            else:
                reply = decode_json_reply(frame)
                if isinstance(reply, JsonReply) and reply.function == (4, 7):
                    decode_state(reply.result)
            outcomes["decoded"] += 1
        except MalformedFrame as err:
            # Every refusal names what is wrong (an empty name counts as "unnamed").
            outcomes["malformed"] += 1
            outcomes[err.field.split(".")[0] or "unnamed"] += 1
        if side == 0:
            # Whatever arrives, the tester answers one JSON-RPC object, reply or error.
            answer = json.loads(sim.handle_json(frame))
            assert ("result" in answer) != ("error" in answer)
        # The splitter never raises anything but MalformedFrame either.
        with contextlib.suppress(MalformedFrame):
            JsonSplitter(max_bytes=4096).feed(frame)
    assert outcomes["decoded"] > 1000
    assert outcomes["malformed"] > 1000
    assert outcomes["unnamed"] == 0
    assert outcomes["frame"] > 100  # framing, JSON syntax
    assert outcomes["params"] + outcomes["result"] > 100  # the fields themselves


def test_ten_thousand_damaged_binary_frames_decode_or_name_a_field() -> None:
    rng = random.Random(SEED)
    sim = MaccorSimulator(VirtualClock(), channels=4)
    refused: Counter[str] = Counter()
    answered: list[bool] = []
    state = ChannelState(1, 1, 0, 2, 3, 0, 1, 2.0, 1.0, 0.1, 0.2, 0.3, 0.4, "")
    seeds = [
        encode_bin((6, 8), 1, encode_bin_direct_output(DirectOutput(0.1, 4.0, 5.0, "C"))),
        encode_bin((4, 7), 1, length=0),
        encode_bin_state(state, 0),
    ]
    for _ in range(FRAMES):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        # The client's reply splitter: whole frames, each decoding or naming a field.
        for whole in BinaryReplySplitter().feed(bytes(data)):
            reply = decode_bin_reply(whole)
            try:
                decode_bin_result(reply)
            except MalformedFrame as err:
                refused[err.field or "unnamed"] += 1
        for side in ("request", "reply"):
            try:
                frames = BinarySplitter(side).feed(bytes(data))  # type: ignore[arg-type]
            except MalformedFrame as err:
                refused[err.field or "unnamed"] += 1
                continue
            for frame in frames:
                try:
                    if frame.function == (4, 7) and side == "reply":
                        decode_bin_state(frame)
                    elif frame.function in ((6, 7), (6, 8)):
                        decode_bin_direct_output(frame)
                except MalformedFrame as err:
                    refused[err.field or "unnamed"] += 1
                if side == "request":
                    # The tester answers with the request's function and channel (an
                    # echo (0, n) frame ends at its Len, so more frames may follow it).
                    head = encode_bin(frame.function, frame.chan)[:6]
                    answered.append(sim.handle_binary(frame)[:6] == head)
    assert "unnamed" not in refused
    assert refused["FClass/FNum"] > 1000
    assert all(answered)
    assert len(answered) > 1000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_split_or_refuse(data: bytes) -> None:
    fields = []
    try:
        for frame in JsonSplitter().feed(data):
            try:
                decode_json_request(frame)
            except MalformedFrame as err:
                fields.append(err.field)
    except MalformedFrame as err:
        fields.append(err.field)
    assert all(fields)
