"""The CTI codec under 10,000 damaged frames (seeded, reproducible) and hypothesis.

Rule for every frame: the decoder returns a typed message or raises
:class:`MalformedFrame` (our exception root's, naming a field), never anything else;
the splitter never buffers past one frame's declared length.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cellguard.drivers.arbin import (
    ChannelReading,
    ChannelsInfoFeedback,
    FrameSplitter,
    MalformedFrame,
    StartSchedule,
    checksum,
    decode_feedback,
    decode_request,
    encode_feedback,
    encode_request,
)
from cellguard.drivers.arbin._codec import MAX_FRAME_BYTES
from cellguard.drivers.errors import CellguardError

SEED = 20261204
FRAMES = 10_000
FIXTURES = Path(__file__).parent.parent / "fixtures" / "arbin-cti"
_SEEDS = {
    "request": [p.read_bytes() for p in sorted(FIXTURES.glob("client_*.bin"))],
    "feedback": [p.read_bytes() for p in sorted(FIXTURES.glob("server_*.bin"))]
    + [encode_feedback(ChannelsInfoFeedback((ChannelReading(0, 2), ChannelReading(1, 0))))],
}


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    kind = rng.randrange(8)
    if kind == 0:  # truncated
        return bytes(data[: rng.randrange(len(data))])
    if kind == 1:  # flipped bytes, checksum left wrong
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # flipped bytes past the head, checksum made right: the fields must hold
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(12, len(data) - 2)] = rng.randrange(256)
    elif kind == 3:  # a count field set to anything
        offset = rng.choice([20, 164, 1749, 1751, 1773, 1775]) if len(data) > 1780 else 20
        data[offset : offset + 2] = struct.pack("<H", rng.randrange(1 << 16))
    elif kind == 4:  # another command code
        data[12:16] = struct.pack("<I", rng.randrange(1 << 32))
    elif kind == 5:  # the length field lies
        data[8:12] = struct.pack("<I", rng.randrange(1 << 32))
    elif kind == 6:  # garbage
        return rng.randbytes(rng.randrange(0, 200))
    else:  # a text field full of random bytes
        start = rng.randrange(20, max(21, len(data) - 40))
        data[start : start + 32] = rng.randbytes(32)
    if kind in (2, 3, 4, 7) and len(data) >= 2:
        data[-2:] = struct.pack("<H", checksum(data[:-2]))
    return bytes(data)


def test_ten_thousand_damaged_frames_decode_or_raise_a_typed_error() -> None:
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    for _ in range(FRAMES):
        side = rng.choice(["request", "feedback"])
        frame = _mutate(rng, rng.choice(_SEEDS[side]))
        decode = decode_request if side == "request" else decode_feedback
        try:
            decode(frame)
        except MalformedFrame as err:
            # Every refusal names what is wrong (an empty name counts as "unnamed").
            outcomes[err.field.split("[")[0].split(".")[0] or "unnamed"] += 1
        else:
            outcomes["decoded"] += 1
        # The splitter, fed the same bytes in two pieces, never raises anything else.
        splitter = FrameSplitter(side)  # type: ignore[arg-type]
        try:
            cut = rng.randrange(len(frame) + 1)
            for piece in (frame[:cut], frame[cut:]):
                splitter.feed(piece)
        except MalformedFrame:
            pass
        assert splitter.pending_bytes <= MAX_FRAME_BYTES
    # The mutator reaches the checksum, the framing and the fields themselves.
    assert outcomes["checksum"] > 500
    assert outcomes["token"] + outcomes["length"] + outcomes["header"] > 500
    assert outcomes["decoded"] > 100
    assert sum(outcomes.values()) == FRAMES
    assert outcomes["unnamed"] == 0


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(max_size=72),
    channels=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=64).map(tuple),
)
def test_start_requests_round_trip(name: str, channels: tuple[int, ...]) -> None:
    message = StartSchedule(name, channels)
    try:
        frame = encode_request(message)
    except CellguardError:
        return  # a name that does not fit 72 UTF-16 units: refused at encode, by field
    decoded = decode_request(frame)
    assert decoded == StartSchedule(name.split("\0", 1)[0], channels)
