"""Fault suite: the BTS codec under 100,000+ hostile frames, and hostile XML.

A seeded mutation fuzzer (fast, deterministic, reproducible from its seed) damages
real frames recorded from a BTS 8 server and frames the codec itself writes (the
download fast path): truncation, flipped bytes, splices of two frames, garbage,
repeated slices (oversize), other text encodings (UTF-16/32, latin-1), swapped
command names and entity payloads. Rule for every frame: the decoder returns a typed
message or raises a :class:`CellguardError` (in practice :class:`ProtocolViolation`),
never anything else, and the splitter never buffers past its bound. Hypothesis adds
structure-aware cases on top (a reply's elements reshuffled).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime

import defusedxml.ElementTree
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared import NEWARE_API_FIXTURES

from cellguard.drivers.errors import CellguardError, ProtocolViolation
from cellguard.drivers.neware import (
    ChannelAddress,
    ChannelId,
    DownloadRecord,
    DownloadReply,
    FrameSplitter,
    decode_reply,
    decode_request,
    encode_reply,
)
from cellguard.drivers.neware._codec import TERMINATOR
from cellguard.drivers.neware._messages import Reply, Request

SEED = 20260901
FRAMES = 100_000

_REAL = [p.read_bytes() for p in sorted(NEWARE_API_FIXTURES.glob("*.xml"))]


def _download_frame(records: int) -> bytes:
    """A download page as the codec writes it: the fast path's input."""
    address = ChannelAddress(ChannelId(21, 1, 1))
    rows = tuple(
        DownloadRecord(
            i, 2, 1, "cc", i * 60_000, datetime(2026, 3, 1, 8, i % 60), 0.0123, 3.9e-4, 1e-6, 4e-6
        )
        for i in range(1, records + 1)
    )
    return encode_reply(DownloadReply(address, 7, 1, records, rows)).removesuffix(TERMINATOR)


_SEEDS = [*_REAL, _download_frame(5), _download_frame(40)]

_REPLY_CMDS = [
    b"connect_resp",
    b"getdevinfo_resp",
    b"getchlstatus_resp",
    b"inquire_resp",
    b"inquiredf_resp",
    b"start_resp",
    b"stop_resp",
    b"donwload_resp",
    b"download_resp",
    b"donwloadlog_resp",
    b"downloadStepLayer_resp",
    b"setpause_resp",
    b"nonsense_resp",
]

_HOSTILE_VALUES = [
    b"",
    b"-1",
    b"1e999",
    b"nan",
    b"inf",
    b"9" * 5000,
    b"\xc2\xb2",
    b"27-21-1-1-\xc2\xb9",
    b"0x1f",
    b"1_000",
    b"&amp;",
    b"\xff\xfe",
    b"2026-13-45 25:61:61",
    b" 3.9 ",
]

# Entity payloads: every one must be refused before expat expands anything.
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE bts [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
    )
    + b"]><bts><cmd>connect_resp</cmd><result>&j;</result></bts>"
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE bts [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<bts><cmd>connect_resp</cmd><result>&x;</result></bts>"
)
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE bts [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x.dtd">%p;]>'
    b"<bts><cmd>connect_resp</cmd><result>ok</result></bts>"
)
EXTERNAL_DTD = (
    b'<?xml version="1.0"?><!DOCTYPE bts SYSTEM "http://127.0.0.1:1/bts.dtd">'
    b"<bts><cmd>connect_resp</cmd><result>ok</result></bts>"
)
UNDECLARED_ENTITY = b"<bts><cmd>connect_resp</cmd><result>&x;</result></bts>"
HOSTILE_XML = {
    "billion laughs": BILLION_LAUGHS,
    "external entity": EXTERNAL_ENTITY,
    "parameter entity": PARAMETER_ENTITY,
    "external DTD": EXTERNAL_DTD,
    "undeclared entity": UNDECLARED_ENTITY,
    "UTF-16 billion laughs": BILLION_LAUGHS.decode().encode("utf-16"),
    "UTF-32 external entity": EXTERNAL_ENTITY.decode().encode("utf-32"),
    "lower-case doctype": BILLION_LAUGHS.replace(b"<!DOCTYPE", b"<!doctype"),
}


class Mutator:
    """Seeded damage to a frame; ``kind`` names what was done, for the report."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.kinds = [
            self.truncate,
            self.flip,
            self.splice,
            self.garbage,
            self.repeat,
            self.encoding,
            self.swap_cmd,
            self.attribute,
            self.entity,
            self.nest,
        ]

    def __call__(self) -> tuple[str, bytes]:
        rng = self.rng
        data = rng.choice(_SEEDS)
        mutate = rng.choice(self.kinds)
        data = mutate(data)
        if rng.random() < 0.25:  # stack a second kind of damage
            data = rng.choice(self.kinds)(data)
        return mutate.__name__, data

    def truncate(self, data: bytes) -> bytes:
        return data[: self.rng.randrange(len(data) + 1)]

    def flip(self, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            if out:
                out[self.rng.randrange(len(out))] = self.rng.randrange(256)
        return bytes(out)

    def splice(self, data: bytes) -> bytes:
        other = self.rng.choice(_SEEDS)
        return data[: self.rng.randrange(len(data) + 1)] + other[self.rng.randrange(len(other)) :]

    def garbage(self, data: bytes) -> bytes:
        at = self.rng.randrange(len(data) + 1)
        junk = self.rng.randbytes(self.rng.randint(1, 64))
        return data[:at] + junk + data[at:]

    def repeat(self, data: bytes) -> bytes:
        """A slice repeated (rarely 2000 times): oversize frames and duplicate elements."""
        if not data:
            return data
        a = self.rng.randrange(len(data))
        b = min(len(data), a + self.rng.randint(1, 200))
        return (
            data[:b]
            + data[a:b] * self.rng.randint(2, 2000 if self.rng.random() < 0.02 else 50)
            + data[b:]
        )

    def encoding(self, data: bytes) -> bytes:
        text = data.decode("utf-8", errors="replace")
        if self.rng.random() < 0.5:  # non-ASCII text where a name or number goes
            text = text.replace('barcode="', 'barcode="Zelle-\u00e9\u00df\u20ac-', 1)
            text = text.replace("<cmd>", "<cmd>\u00e9", self.rng.randint(0, 1))
        codec = self.rng.choice(
            ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "utf-8-sig"]
        )
        return text.encode(codec, errors="replace")

    def swap_cmd(self, data: bytes) -> bytes:
        start = data.find(b"<cmd>")
        end = data.find(b"</cmd>")
        if start < 0 or end < start:
            return data
        return data[: start + 5] + self.rng.choice(_REPLY_CMDS) + data[end:]

    def attribute(self, data: bytes) -> bytes:
        quotes = [i for i, c in enumerate(data) if c == 0x22]
        if len(quotes) < 2:
            return data
        k = self.rng.randrange(len(quotes) // 2) * 2
        a, b = quotes[k], quotes[k + 1]
        return data[: a + 1] + self.rng.choice(_HOSTILE_VALUES) + data[b:]

    def entity(self, data: bytes) -> bytes:
        payload = self.rng.choice(list(HOSTILE_XML.values()))
        if self.rng.random() < 0.5:
            return payload
        # A DTD slipped in after the declaration of a real frame.
        head, sep, tail = data.partition(b"?>")
        return head + sep + payload[payload.find(b"<!DOCTYPE") : payload.find(b"]>") + 2] + tail

    def nest(self, data: bytes) -> bytes:
        depth = self.rng.randint(10, 5000 if self.rng.random() < 0.02 else 100)
        at = data.find(b"</bts>")
        if at < 0:
            return data
        return data[:at] + b"<x>" * depth + b"</x>" * depth + data[at:]


def _decode(decoder: object, data: bytes) -> str:
    """``"ok"`` for a typed message, the error class name for a refusal."""
    try:
        result = decoder(data)  # type: ignore[operator]
    except CellguardError as err:
        return type(err).__name__
    assert isinstance(result, Reply | Request), f"untyped result {result!r}"
    return "ok"


def test_100k_mutated_frames_give_a_typed_reply_or_a_protocol_violation() -> None:
    mutator = Mutator(SEED)
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    foreign: list[tuple[str, bytes, BaseException]] = []
    biggest = 0
    started = time.perf_counter()
    for n in range(FRAMES):
        kind, data = mutator()
        kinds[kind] += 1
        biggest = max(biggest, len(data))
        decoder = decode_request if n % 10 == 0 else decode_reply
        try:
            outcomes[_decode(decoder, data)] += 1
        except Exception as err:
            foreign.append((kind, data[:120], err))
    elapsed_s = time.perf_counter() - started
    print(
        f"\nfuzz: injected {FRAMES} frames (seed {SEED}, largest {biggest} B) by kind "
        f"{dict(sorted(kinds.items()))}; counted {dict(outcomes)}; foreign errors "
        f"{len(foreign)}; {FRAMES / elapsed_s:,.0f} frames/s"
    )
    assert foreign == []
    assert sum(outcomes.values()) == FRAMES
    # The fuzzer reaches both sides: typed replies out of damaged frames, and refusals.
    assert outcomes["ok"] > 1000
    assert outcomes["ProtocolViolation"] > FRAMES // 2
    assert set(outcomes) <= {"ok", "ProtocolViolation"}


def test_a_stream_of_damaged_frames_in_random_chunks_never_outgrows_the_splitter() -> None:
    """Frames and garbage in random chunk sizes: only ProtocolViolation, memory bounded."""
    rng = random.Random(SEED + 1)
    mutator = Mutator(SEED + 2)
    limit = 64 * 1024
    splitter = FrameSplitter(max_frame_bytes=limit)
    frames = refusals = chunks = 0
    for _ in range(20_000):
        _, data = mutator()
        stream = data + (TERMINATOR if rng.random() < 0.7 else b"")
        while stream:
            cut = rng.randint(1, 4096)
            chunk, stream = stream[:cut], stream[cut:]
            chunks += 1
            try:
                for one in splitter.feed(chunk):
                    frames += 1
                    _decode(decode_reply, one)
            except ProtocolViolation:
                refusals += 1
            assert splitter.pending_bytes <= limit
    print(
        f"\nsplitter: injected 20000 damaged frames in {chunks} chunks; counted {frames} "
        f"frames out, {refusals} oversize refusals, never more than {limit} B buffered"
    )
    assert frames > 10_000
    assert refusals > 0


def test_an_oversize_frame_is_refused_once_past_the_bound_without_a_terminator() -> None:
    splitter = FrameSplitter(max_frame_bytes=1_000_000)
    chunk = b"<data volt='1'/>" * 4096
    fed = 0
    while splitter.pending_bytes + len(chunk) <= 1_000_000:
        assert splitter.feed(chunk) == []
        fed += 1
    with pytest.raises(ProtocolViolation, match="no frame terminator within"):
        splitter.feed(chunk)
    assert splitter.pending_bytes == 0
    # And the stream is usable again: the next whole frame comes out.
    assert splitter.feed(_REAL[0] + TERMINATOR) == [_REAL[0]]
    assert fed * 16 * 4096 <= 1_000_000


@pytest.mark.parametrize("name", sorted(HOSTILE_XML))
def test_hostile_xml_is_refused_as_a_protocol_violation(name: str) -> None:
    """Entity expansion and external entities never reach expat; defusedxml agrees."""
    data = HOSTILE_XML[name]
    with pytest.raises(ProtocolViolation):
        decode_reply(data)
    with pytest.raises(ProtocolViolation):
        decode_request(data)
    # The reference guard refuses (or cannot read) the same documents.
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal from defusedxml
        defusedxml.ElementTree.fromstring(data, forbid_dtd=True)


def test_frames_in_other_encodings_are_typed_errors_or_read_by_their_declaration() -> None:
    """UTF-16/32 (BOM or NUL bytes) are refused; latin-1 with a declaration is read."""
    base = _REAL[0].decode()
    for codec in ("utf-16", "utf-16-le", "utf-32", "utf-32-be"):
        with pytest.raises(ProtocolViolation):
            decode_reply(base.encode(codec))
    latin = base.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    assert _decode(decode_reply, latin.encode("latin-1")) in ("ok", "ProtocolViolation")
    with pytest.raises(ProtocolViolation, match="malformed"):
        decode_reply(base.replace("<cmd>", "<cmd>\u00e9").encode("latin-1"))


_ELEMENT = st.sampled_from(
    [
        b"<cmd>inquire_resp</cmd>",
        b"<cmd>donwload_resp</cmd>",
        b"<cmd>getdevinfo_resp</cmd>",
        b"<cmd>stop_resp</cmd>",
        b'<list count="1">',
        b"</list>",
        b'<middle count="2">',
        b"</middle>",
        b'<inquire dev="27-21-1-1-0" cycle_id="1" step_type="--" workstatus="working" '
        b'current="0" voltage="3.88" capacity="0" energy="0" totaltime="0" relativetime="0"/>',
        b'<download ip="1" devtype="27" devid="21" subdevid="1" chlid="1" testid="1" '
        b'startpos="1" count="1"/>',
        b'<data seqid="1" stepid="1" cycleid="1" steptype="cc" testtime="60" '
        b'atime="2026-03-01 08:00:00" volt="3.9" curr="0.001" cap="0" eng="0"/>',
        b'<channel ip="1" devtype="27" devid="21" subdevid="1" Channelid="1">true</channel>',
        b'<stop ip="1" devtype="27" devid="21" subdevid="1" chlid="1">ok</stop>',
        b"<result>ok</result>",
        b"&lt;&amp;",
        b"<![CDATA[x]]>",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_ELEMENT, max_size=12))
def test_reshuffled_reply_elements_give_a_typed_reply_or_a_protocol_violation(
    parts: list[bytes],
) -> None:
    data = b'<?xml version="1.0"?><bts version="1.0">' + b"".join(parts) + b"</bts>"
    assert _decode(decode_reply, data) in ("ok", "ProtocolViolation")
