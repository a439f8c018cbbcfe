"""A channel-info feedback read as it arrives gives exactly what the whole-frame decoder
gives, each channel as soon as its record is in, and refuses what the decoder refuses."""

from __future__ import annotations

import itertools
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellguard.drivers.arbin import (
    AUX_KINDS,
    BmsValue,
    ChannelReading,
    ChannelsInfoFeedback,
    LoginFeedback,
    MalformedFrame,
    SmbValue,
    decode_feedback,
    encode_feedback,
)
from cellguard.drivers.arbin._stream import ChannelsInfoStream
from tests.drivers.test_arbin_fuzz import _SEEDS, SEED, _mutate

FIXTURES = Path(__file__).parent.parent / "fixtures" / "arbin-cti"
HEAD_AND_COUNT_BYTES = 24


def _streamed(frame: bytes, cuts: list[int]) -> tuple[list[ChannelReading], ChannelsInfoStream]:
    """Feed ``frame`` cut at ``cuts``; every reading the stream yielded, in order."""
    stream = ChannelsInfoStream()
    readings: list[ChannelReading] = []
    edges = [0, *sorted(c for c in cuts if 0 < c < len(frame)), len(frame)]
    for start, end in itertools.pairwise(edges):
        readings += stream.feed(frame[start:end])
    return readings, stream


# Values exact in float32/float64 as the wire carries them, texts that fit their fields.
_f32 = st.floats(width=32, allow_nan=False)
_f64 = st.floats(allow_nan=False)
_cbytes = st.binary(max_size=6).map(lambda b: b.replace(b"\0", b"x"))
_readings = st.builds(
    ChannelReading,
    channel=st.integers(0, 0xFFFF),
    status=st.integers(0, 30),
    comm_failure=st.integers(0, 255),
    schedule=st.text(max_size=20).filter(lambda t: "\0" not in t),
    test_name=st.text(max_size=20).filter(lambda t: "\0" not in t),
    step_and_cycle=st.text(st.characters(max_codepoint=127, blacklist_characters="\0"), max_size=9),
    test_time_s=_f64,
    voltage_v=_f32,
    current_a=_f32,
    charge_capacity_ah=_f32,
    aux=st.lists(
        st.lists(st.tuples(_f32, _f32), max_size=2).map(tuple),
        min_size=len(AUX_KINDS),
        max_size=len(AUX_KINDS),
    ).map(tuple),
    bms=st.lists(st.builds(BmsValue, st.integers(0, 2**32 - 1), _f64, _cbytes), max_size=2).map(
        tuple
    ),
    smb=st.lists(
        st.one_of(
            st.builds(SmbValue, st.integers(0, 9), st.just(0), _f64, st.just(b""), _cbytes),
            st.builds(SmbValue, st.integers(0, 9), st.just(1), st.just(0.0), _cbytes, _cbytes),
        ),
        max_size=2,
    ).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(
    readings=st.lists(_readings, max_size=4).map(tuple),
    cuts=st.lists(st.integers(0, 4 * 2200), max_size=12),
)
def test_any_feedback_streamed_in_any_pieces_gives_what_the_decoder_gives(
    readings: tuple[ChannelReading, ...], cuts: list[int]
) -> None:
    frame = encode_feedback(ChannelsInfoFeedback(readings))
    whole = decode_feedback(frame)
    assert whole == ChannelsInfoFeedback(readings)  # the decoder's fast path included
    assert [hash(r) for r in whole.channels] == [hash(r) for r in readings]
    streamed, stream = _streamed(frame, cuts)
    assert tuple(streamed) == whole.channels  # every field, in order
    assert stream.verify(frame) == whole


@pytest.mark.parametrize("piece_bytes", [1, 7, 1753, 65536])
def test_pycti_arbins_example_feedback_streams_to_the_decoded_fields(piece_bytes: int) -> None:
    frame = (FIXTURES / "server_channel_info_msg.bin").read_bytes()
    cuts = list(range(piece_bytes, len(frame), piece_bytes))
    streamed, stream = _streamed(frame, cuts)
    whole = decode_feedback(frame)
    assert isinstance(whole, ChannelsInfoFeedback)
    assert tuple(streamed) == whole.channels
    assert stream.verify(frame) == whole


def _rack(channels: int) -> bytes:
    readings = tuple(
        ChannelReading(i, 7, test_name=f"t{i}", voltage_v=0.5, test_time_s=float(i))
        for i in range(channels)
    )
    return encode_feedback(ChannelsInfoFeedback(readings))


def test_each_channel_comes_out_as_soon_as_its_record_is_in() -> None:
    frame = _rack(8)
    record_bytes = (len(frame) - HEAD_AND_COUNT_BYTES - 2) // 8
    stream = ChannelsInfoStream()
    assert stream.feed(frame[: HEAD_AND_COUNT_BYTES + record_bytes - 1]) == []
    first = stream.feed(
        frame[HEAD_AND_COUNT_BYTES + record_bytes - 1 : HEAD_AND_COUNT_BYTES + record_bytes]
    )
    assert [r.channel for r in first] == [0]
    # Every channel before the checksum; the frame is whole only with it.
    rest = stream.feed(frame[HEAD_AND_COUNT_BYTES + record_bytes : -2])
    assert [r.channel for r in rest] == list(range(1, 8))
    assert stream.complete


def test_a_bad_checksum_is_refused_when_the_frame_is_in() -> None:
    frame = bytearray(_rack(3))
    frame[-2:] = struct.pack("<H", (struct.unpack("<H", frame[-2:])[0] + 1) & 0xFFFF)
    streamed, stream = _streamed(bytes(frame), [1000])
    assert len(streamed) == 3  # read before the checksum could be known
    with pytest.raises(MalformedFrame) as err:
        stream.verify(bytes(frame))
    assert err.value.field == "checksum"


def test_a_channel_count_the_frame_cannot_hold_is_refused_from_the_head() -> None:
    frame = bytearray(_rack(1))
    frame[20:24] = struct.pack("<I", 1000)
    with pytest.raises(MalformedFrame) as err:
        ChannelsInfoStream().feed(bytes(frame[:HEAD_AND_COUNT_BYTES]))
    assert err.value.field == "channel_count"


def test_a_record_cut_short_by_the_frames_end_names_the_channel() -> None:
    # Enough aux values that a third channel's fixed part would fit the frame's
    # length: the count passes the head's check, the third record is not there.
    aux = (((0.5, 0.0),) * 20,) * len(AUX_KINDS)
    readings = (ChannelReading(0, 7, aux=aux), ChannelReading(1, 7))
    short = bytearray(encode_feedback(ChannelsInfoFeedback(readings)))
    short[20:24] = struct.pack("<I", 3)
    with pytest.raises(MalformedFrame) as err:
        _streamed(bytes(short), [])
    assert err.value.field == "channels[2]"
    with pytest.raises(MalformedFrame):
        decode_feedback(bytes(short))  # the decoder refuses it too


def test_another_feedback_is_left_to_the_decoder() -> None:
    frame = encode_feedback(LoginFeedback(result=1, ip_address=bytes(4), channel_count=4))
    stream = ChannelsInfoStream()
    assert stream.feed(frame) == []
    assert stream.streaming is False


def test_ten_thousand_damaged_feedbacks_stream_to_what_the_decoder_says() -> None:
    """Damaged feedbacks (the codec's fuzz mutator), fed in random pieces: the stream
    raises nothing but :class:`MalformedFrame`, and a frame the decoder accepts streams
    to the same readings and verifies to the same feedback."""
    rng = random.Random(SEED)
    agreed = 0
    for _ in range(10_000):
        frame = _mutate(rng, rng.choice(_SEEDS["feedback"]))
        try:
            whole = decode_feedback(frame)
        except MalformedFrame:
            whole = None
        cuts = [rng.randrange(len(frame) + 1) for _ in range(rng.randrange(4))]
        try:
            streamed, stream = _streamed(frame, cuts)
            verified = stream.verify(frame) if stream.streaming else None
        except MalformedFrame:
            assert not isinstance(whole, ChannelsInfoFeedback)  # the decoder refused it too
            continue
        if isinstance(whole, ChannelsInfoFeedback):
            assert tuple(streamed) == whole.channels
            assert verified == whole
            agreed += 1
        else:
            assert verified is None  # never accepted where the decoder refuses
    assert agreed > 100
