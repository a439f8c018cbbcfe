"""The Neware BTS codec against what a real BTS 8 server sends, and against itself.

Fixtures are replies recorded from a real server (see the fixtures README); the
round-trip and fuzz tests use hypothesis. No sockets here: the codec is sans-IO.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared import NEWARE_API_FIXTURES

from cellguard.drivers import VirtualClock
from cellguard.drivers.errors import ProtocolViolation
from cellguard.drivers.neware import (
    ChannelAddress,
    ChannelId,
    ChannelInfo,
    ChannelStatus,
    ClearFlag,
    CommandReply,
    CommandResult,
    Connect,
    ConnectReply,
    Continue,
    DataCount,
    DevInfoReply,
    Download,
    DownloadLog,
    DownloadLogReply,
    DownloadRecord,
    DownloadReply,
    DownloadStepLayer,
    FrameSplitter,
    GetChlStatus,
    GetDevInfo,
    Inquire,
    InquireDf,
    InquireDfReply,
    InquireRecord,
    InquireReply,
    Light,
    LogRecord,
    NewareSimulator,
    Pause,
    Reply,
    Request,
    Start,
    StartItem,
    StatusReply,
    StepLayerRecord,
    StepLayerReply,
    Stop,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from cellguard.drivers.neware._codec import (
    TERMINATOR,
    _decode_reply_checked,
    _download_reply_fast,
)
from cellguard.protocols import Cell, GalvanostaticCycling, disc_area_cm2, write_step_file

FIXTURES = NEWARE_API_FIXTURES
FIXTURE_FILES = sorted(p.name for p in FIXTURES.glob("*.xml"))
DEFAULT_IP = "127.0.0.1"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def ch(text: str) -> ChannelId:
    return ChannelId.parse(text)


# ================================================================ real fixtures

EXPECTED_KINDS: dict[str, tuple[type, int]] = {
    "clear_flag_response.xml": (CommandReply, 1),
    "connect_response.xml": (ConnectReply, 0),
    "download_21_1_1_repsonse.xml": (DownloadReply, 10),
    "download_step_layer_21_1_1_response.xml": (StepLayerReply, 3),
    "downloadlog_21_1_1_response.xml": (DownloadLogReply, 5),
    "get_devinfo_bad_response.xml": (DevInfoReply, 0),
    "get_devinfo_response.xml": (DevInfoReply, 16),
    "get_status_21_1_1_response.xml": (StatusReply, 1),
    "get_status_all_response.xml": (StatusReply, 16),
    "inquire_21_1_1_and_2_response.xml": (InquireReply, 2),
    "inquire_21_1_1_response.xml": (InquireReply, 1),
    "inquire_21_1_2_response.xml": (InquireReply, 1),
    "inquire_21_1_4_response.xml": (InquireReply, 1),
    "inquire_all_response.xml": (InquireReply, 16),
    "inquiredf_21_1_1_response.xml": (InquireDfReply, 1),
    "inquiredf_all_response.xml": (InquireDfReply, 16),
    "light_response.xml": (CommandReply, 1),
    "start_21_1_1_response.xml": (CommandReply, 1),
    "start_21_1_4_bad_response.xml": (CommandReply, 1),
    "stop_21_1_1_and_21_1_2_response.xml": (CommandReply, 2),
    "stop_21_1_1_response.xml": (CommandReply, 1),
    "stop_21_1_4_bad_reponse.xml": (CommandReply, 1),
}


def _size(reply: Reply) -> int:
    match reply:
        case ConnectReply():
            return 0
        case DevInfoReply(channels=channels):
            return len(channels)
        case DownloadReply(records=r) | DownloadLogReply(records=r) | StepLayerReply(records=r):
            return len(r)
        case _:
            return len(reply.items)


def test_every_fixture_file_is_covered() -> None:
    """A new fixture file must be added to the expectations, not silently skipped."""
    assert sorted(EXPECTED_KINDS) == FIXTURE_FILES


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_every_real_reply_decodes_to_its_type_with_every_item(name: str) -> None:
    """Every recorded reply decodes; item counts come from the items, not `count`."""
    kind, size = EXPECTED_KINDS[name]
    reply = decode_reply(fixture(name))
    assert type(reply) is kind
    assert _size(reply) == size


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_a_real_reply_decodes_with_or_without_its_terminator_and_as_text(name: str) -> None:
    """The decoder takes the frame as bytes or str; the splitter strips the terminator."""
    raw = fixture(name)
    frames = FrameSplitter().feed(raw + TERMINATOR)
    assert frames == [raw]
    assert decode_reply(raw.decode("utf-8")) == decode_reply(raw)


def test_inquire_reports_volts_amperes_and_seconds_as_the_server_printed_them() -> None:
    """inquire 21-1-2: 4.6947 V, -0.0003 A (discharge), 3189199.3 s total time."""
    reply = decode_reply(fixture("inquire_21_1_2_response.xml"))
    assert isinstance(reply, InquireReply)
    (record,) = reply.items
    assert record.address == ChannelAddress(ch("21-1-2"), 27)
    assert record.voltage_v == 4.6947
    assert record.current_a == -0.0003
    assert record.capacity_ah == 0.001
    assert record.energy_wh == 0.0047
    assert record.total_time_s == 3189199.3
    assert record.relative_time_s == 12319.0
    assert (record.cycle_id, record.step_id, record.step_type) == (44, 4, "dc")
    assert record.workstatus == "working"
    assert record.barcode == "251203_kigr_gen17_02"
    assert (record.log_code, record.aux) == (102000, 0)


def test_inquire_of_an_idle_channel_has_no_step() -> None:
    """step_type "--" and a missing step_id mean no test runs: both decode to None."""
    reply = decode_reply(fixture("inquire_21_1_1_response.xml"))
    assert isinstance(reply, InquireReply)
    (record,) = reply.items
    assert (record.step_id, record.step_type, record.workstatus) == (None, None, "finish")
    assert record.voltage_v == 3.8834


def test_inquire_all_lists_both_sub_devices_in_order() -> None:
    reply = decode_reply(fixture("inquire_all_response.xml"))
    assert isinstance(reply, InquireReply)
    expected = [ch(f"21-{sub}-{n}") for sub in (1, 2) for n in range(1, 9)]
    assert [r.address.channel for r in reply.items] == expected
    # the same channel reads the same in "all" and in its own reply
    alone = decode_reply(fixture("inquire_21_1_2_response.xml"))
    assert isinstance(alone, InquireReply)
    assert reply.items[1] == alone.items[0]


def test_download_records_carry_volts_amperes_milliseconds_and_wall_time() -> None:
    """download 21-1-1: first record seqid 219576 at test time 36070000 ms."""
    reply = decode_reply(fixture("download_21_1_1_repsonse.xml"))
    assert isinstance(reply, DownloadReply)
    assert reply.address.channel == ch("21-1-1")
    assert (reply.test_id, reply.start_pos, reply.count) == (143, 219576, 1000)
    first = reply.records[0]
    assert first == DownloadRecord(
        seq_id=219576,
        step_id=24,
        cycle_id=29,
        step_type="dc",
        test_time_ms=36070000,
        wall_time=datetime(2025, 12, 28, 22, 29, 5),
        voltage_v=3.6780698299408,
        current_a=-0.000295051460852847,
        capacity_ah=0.00295628436449786,
        energy_wh=0.0135611368830335,
    )
    assert [r.seq_id for r in reply.records] == list(range(219576, 219586))


def test_the_misspelt_donwload_reply_names_are_decoded() -> None:
    """The real server answers `donwload_resp` and `donwloadlog_resp` (sic)."""
    assert b"<cmd>donwload_resp</cmd>" in fixture("download_21_1_1_repsonse.xml")
    assert b"<cmd>donwloadlog_resp</cmd>" in fixture("downloadlog_21_1_1_response.xml")
    log = decode_reply(fixture("downloadlog_21_1_1_response.xml"))
    assert isinstance(log, DownloadLogReply)
    assert log.test_id == 143
    assert log.records[0] == LogRecord(1, 100000, datetime(2025, 12, 3, 16, 44, 2))
    assert log.records[-1] == LogRecord(219585, 100001, datetime(2025, 12, 28, 22, 30, 11))


def test_the_correct_spellings_are_accepted_too() -> None:
    """A fixed server (or another client's simulator) may spell the names right."""
    for raw, kind in [
        (fixture("download_21_1_1_repsonse.xml"), DownloadReply),
        (fixture("downloadlog_21_1_1_response.xml"), DownloadLogReply),
    ]:
        fixed = raw.replace(b"donwload", b"download")
        assert fixed != raw
        assert type(decode_reply(fixed)) is kind
        assert decode_reply(fixed) == decode_reply(raw)


def test_step_layer_summarises_each_step() -> None:
    reply = decode_reply(fixture("download_step_layer_21_1_1_response.xml"))
    assert isinstance(reply, StepLayerReply)
    cc = reply.records[1]
    assert (cc.step_type, cc.start_seq_id, cc.end_seq_id, cc.step_time_ms) == (
        "cc",
        4322,
        7518,
        31799100,
    )
    assert cc.end_voltage_v == 4.9000171875
    assert cc.end_wall_time == datetime(2025, 12, 4, 13, 34, 1)


def test_devinfo_lists_sixteen_channels_with_availability() -> None:
    reply = decode_reply(fixture("get_devinfo_response.xml"))
    assert isinstance(reply, DevInfoReply)
    assert (reply.server_ip, reply.server_port) == ("127.0.0.1", 3306)
    assert reply.channels[0] == ChannelInfo(ChannelAddress(ch("21-1-1"), 27, "127.0.0.1"), True)
    assert reply.channels[1].available is False
    assert [c.address.channel for c in reply.channels] == [
        ch(f"21-{sub}-{n}") for sub in (1, 2) for n in range(1, 9)
    ]


def test_devinfo_of_a_server_without_units_has_zero_channels() -> None:
    reply = decode_reply(fixture("get_devinfo_bad_response.xml"))
    assert isinstance(reply, DevInfoReply)
    assert reply.channels == ()
    assert reply.server_port == 3306


def test_status_reports_the_work_status_text() -> None:
    reply = decode_reply(fixture("get_status_all_response.xml"))
    assert isinstance(reply, StatusReply)
    assert [s.status for s in reply.items[:3]] == ["finish", "working", "working"]
    assert reply.items[0].reserve_pause == 1


def test_refused_commands_decode_as_false_items() -> None:
    """A refused start/stop answers `false`; the item names the refused channel."""
    start = decode_reply(fixture("start_21_1_4_bad_response.xml"))
    assert start == CommandReply(
        "start", (CommandResult(ChannelAddress(ch("21-1-2"), 27, "127.0.0.1"), False),)
    )
    stop = decode_reply(fixture("stop_21_1_4_bad_reponse.xml"))
    assert isinstance(stop, CommandReply)
    assert [(str(r.address.channel), r.ok) for r in stop.items] == [("21-1-4", False)]
    clear = decode_reply(fixture("clear_flag_response.xml"))
    assert isinstance(clear, CommandReply)
    assert (clear.command, clear.items[0].ok) == ("clearflag", False)


def test_the_count_attribute_is_not_trusted() -> None:
    """stop of two channels says count="1" but lists two items: both are decoded."""
    raw = fixture("stop_21_1_1_and_21_1_2_response.xml")
    assert b'count="1"' in raw
    reply = decode_reply(raw)
    assert isinstance(reply, CommandReply)
    assert [(str(r.address.channel), r.ok) for r in reply.items] == [
        ("21-1-1", True),
        ("21-1-2", True),
    ]


def test_inquiredf_reports_record_counts() -> None:
    reply = decode_reply(fixture("inquiredf_21_1_1_response.xml"))
    assert reply == InquireDfReply(
        (DataCount(ChannelAddress(ch("21-1-1"), 27, "127.0.0.1"), 143, 219585, True),)
    )


# ================================================================ error messages


def test_malformed_xml_says_it_is_malformed_and_where() -> None:
    """The message names the problem (expat's), the place and the start of the frame."""
    with pytest.raises(ProtocolViolation, match=r"malformed reply XML \(.*line 1") as info:
        decode_reply(b"<bts><cmd>inquire_resp</cmd><list>")
    assert "<bts><cmd>inquire_resp" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.replace('voltage="4.6947"', 'voltage="4,69"'), r"'voltage' must be a number"),
        (lambda s: s.replace('voltage="4.6947"', 'voltage="nan"'), r"'voltage' is not finite"),
        (lambda s: s.replace('voltage="4.6947" ', ""), r"'voltage' is missing"),
        (lambda s: s.replace('cycle_id="44"', 'cycle_id="4.5"'), r"'cycle_id' must be an integer"),
        (lambda s: s.replace("27-21-1-2-0", "27-21-x-2-0"), r"'dev' must be devtype-devid"),
        (lambda s: s.replace("27-21-1-2-0", "27-21-1-\u00b2-0"), r"'dev' must be devtype-devid"),
        (lambda s: s.replace("inquire_resp", "bogus_resp"), r"item 1 is <inquire>, expected <bo"),
        (lambda s: s.replace("<cmd>inquire_resp</cmd>", ""), r"<cmd> is missing"),
        (lambda s: s.replace("<bts", "<btx").replace("</bts", "</btx"), r"root element must be"),
        (lambda s: s.replace("<inquire ", "<stop "), r"item 1 is <stop>, expected <inquire>"),
    ],
)
def test_a_broken_reply_names_the_attribute_and_what_is_wrong(mutate: object, message: str) -> None:
    raw = fixture("inquire_21_1_2_response.xml").decode()
    broken = mutate(raw)  # type: ignore[operator]
    assert broken != raw
    with pytest.raises(ProtocolViolation, match=message):
        decode_reply(broken)


def test_a_bad_wall_time_names_the_expected_form() -> None:
    raw = fixture("downloadlog_21_1_1_response.xml").replace(
        b"2025-12-03 16:44:02", b"03/12/2025 16:44"
    )
    with pytest.raises(ProtocolViolation, match=r"'atime' must be 'YYYY-MM-DD HH:MM:SS'"):
        decode_reply(raw)


def test_a_yes_no_answer_other_than_ok_true_false_is_refused() -> None:
    raw = fixture("stop_21_1_1_response.xml").replace(b">ok<", b">maybe<")
    with pytest.raises(ProtocolViolation, match=r"expected ok, true or false, got 'maybe'"):
        decode_reply(raw)


def test_xml_entity_expansion_is_refused_as_a_protocol_violation() -> None:
    """Entity declarations (the root of entity bombs) are refused before parsing."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE bts [<!ENTITY a "aaaaaaaaaa">]><bts><cmd>&a;</cmd></bts>'
    )
    with pytest.raises(ProtocolViolation, match="DTD, entity declaration or NUL"):
        decode_reply(bomb)
    utf16 = bomb.decode().replace('"1.0"?>', '"1.0" encoding="UTF-16"?>').encode("utf-16")
    with pytest.raises(ProtocolViolation, match="DTD, entity declaration or NUL"):
        decode_reply(utf16)


# ================================================================ frame splitter


def test_splitter_keeps_a_partial_frame_until_fed_byte_by_byte() -> None:
    raw = fixture("inquire_all_response.xml")
    splitter = FrameSplitter()
    stream = raw + TERMINATOR
    frames: list[bytes] = []
    for i in range(len(stream)):
        got = splitter.feed(stream[i : i + 1])
        if i < len(stream) - 1:
            assert got == []
        frames += got
    assert frames == [raw]
    assert splitter.pending_bytes == 0


def test_splitter_returns_several_frames_from_one_chunk_in_order() -> None:
    a, b, c = (fixture(n) for n in FIXTURE_FILES[:3])
    splitter = FrameSplitter()
    assert splitter.feed(a + TERMINATOR + b + TERMINATOR + c[:10]) == [a, b]
    assert splitter.pending_bytes == 10
    assert splitter.feed(c[10:] + TERMINATOR) == [c]


@pytest.mark.parametrize("cut", range(1, len(TERMINATOR)))
def test_splitter_finds_a_terminator_split_across_chunks(cut: int) -> None:
    raw = fixture("connect_response.xml")
    splitter = FrameSplitter()
    assert splitter.feed(raw + TERMINATOR[:cut]) == []
    assert splitter.feed(TERMINATOR[cut:] + b"<next") == [raw]
    assert splitter.pending_bytes == len(b"<next")


def test_splitter_allows_empty_chunks_and_empty_frames() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"") == []
    assert splitter.feed(TERMINATOR) == [b""]


def test_splitter_refuses_an_oversize_frame_instead_of_buffering_it() -> None:
    splitter = FrameSplitter(max_frame_bytes=100)
    assert splitter.feed(b"x" * 100) == []
    with pytest.raises(ProtocolViolation, match=r"no frame terminator within 101 bytes"):
        splitter.feed(b"y")
    # the buffer was dropped, so memory does not grow with the garbage
    assert splitter.pending_bytes == 0


@given(
    frames=st.lists(st.binary(max_size=200).filter(lambda b: TERMINATOR not in b), max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_splitter_output_does_not_depend_on_how_the_stream_is_chunked(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(f + TERMINATOR for f in frames)
    whole = FrameSplitter()
    reference = whole.feed(stream)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    chunked = FrameSplitter()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += chunked.feed(stream[start:end])
    assert out == reference
    assert chunked.pending_bytes == whole.pending_bytes


# ================================================================ round trips

# Text XML 1.0 can carry (no control characters, surrogates or non-characters).
xml_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), max_size=20)
# Element text is stripped by the decoder, so generated text has no outer whitespace.
stripped_text = xml_text.map(str.strip)
uint = st.integers(0, 2**31 - 1)
ip = st.one_of(st.ip_addresses(v=4).map(str), xml_text)
channel_ids = st.builds(ChannelId, uint, st.integers(1, 64), st.integers(1, 64))
addresses = st.builds(ChannelAddress, channel_ids, uint, ip)
address_lists = st.lists(addresses, max_size=5).map(tuple)
wall_times = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)).map(
    lambda t: t.replace(microsecond=0)
)
finite = st.floats(allow_nan=False, allow_infinity=False)


def rounded(decimals: int, limit: float) -> st.SearchStrategy[float]:
    """What inquire prints: fixed point, ``decimals`` places."""
    return st.floats(-limit, limit).map(lambda x: round(x, decimals))


inquire_records = st.builds(
    InquireRecord,
    address=addresses,
    cycle_id=uint,
    step_id=st.none() | uint,
    step_type=st.none() | st.sampled_from(["cc", "dc", "cv", "rest"]) | xml_text,
    workstatus=st.sampled_from(["working", "stop", "finish", "protect", "pause"]) | xml_text,
    barcode=xml_text,
    current_a=rounded(4, 1e4),
    voltage_v=rounded(4, 1e4),
    capacity_ah=rounded(4, 1e6),
    energy_wh=rounded(4, 1e6),
    total_time_s=rounded(1, 1e9),
    relative_time_s=rounded(1, 1e9),
    open_or_close=uint,
    log_code=uint,
    aux=uint,
)
download_records = st.builds(
    DownloadRecord, uint, uint, uint, xml_text, uint, wall_times, finite, finite, finite, finite
)
step_layer_records = st.builds(
    StepLayerRecord,
    *[uint] * 5,
    xml_text,
    uint,
    wall_times,
    *[finite] * 6,
)
server = st.one_of(st.tuples(st.none(), st.none()), st.tuples(ip, st.integers(0, 65535)))

replies: st.SearchStrategy[Reply] = st.one_of(
    st.builds(ConnectReply, st.booleans()),
    st.builds(
        lambda chans, srv: DevInfoReply(chans, *srv),
        st.lists(st.builds(ChannelInfo, addresses, st.booleans()), max_size=5).map(tuple),
        server,
    ),
    st.builds(
        StatusReply,
        st.lists(
            st.builds(
                ChannelStatus,
                addresses,
                st.sampled_from(["working", "stop", "finish", "protect", "pause"]) | stripped_text,
                uint,
            ),
            max_size=5,
        ).map(tuple),
    ),
    st.builds(InquireReply, st.lists(inquire_records, max_size=5).map(tuple)),
    st.builds(
        InquireDfReply,
        st.lists(st.builds(DataCount, addresses, uint, uint, st.booleans()), max_size=5).map(tuple),
    ),
    st.builds(
        CommandReply,
        st.sampled_from(["start", "stop", "clearflag", "light"]),
        st.lists(st.builds(CommandResult, addresses, st.booleans()), max_size=5).map(tuple),
    ),
    st.builds(
        DownloadReply,
        addresses,
        uint,
        uint,
        uint,
        st.lists(download_records, max_size=5).map(tuple),
    ),
    st.builds(
        DownloadLogReply,
        addresses,
        uint,
        st.lists(st.builds(LogRecord, uint, uint, wall_times), max_size=5).map(tuple),
    ),
    st.builds(StepLayerReply, addresses, uint, st.lists(step_layer_records, max_size=5).map(tuple)),
)


def _no_ip(a: ChannelAddress) -> ChannelAddress:
    return ChannelAddress(a.channel, a.devtype, DEFAULT_IP)


def as_on_the_wire(reply: Reply) -> Reply:
    """What survives the wire by design: these forms carry no ``ip``."""
    match reply:
        case InquireReply(items):
            return InquireReply(
                tuple(
                    InquireRecord(
                        **{
                            **{f: getattr(r, f) for f in InquireRecord.__dataclass_fields__},
                            "address": _no_ip(r.address),
                            # "--" is the wire's "no step"; an empty step type is written as "--"
                            "step_type": None if r.step_type in ("", "--") else r.step_type,
                        }
                    )
                    for r in items
                )
            )
        case InquireDfReply(items):
            return InquireDfReply(
                tuple(DataCount(_no_ip(d.address), d.test_id, d.count, d.flag) for d in items)
            )
        case DownloadReply(address, test_id, start_pos, count, records):
            return DownloadReply(_no_ip(address), test_id, start_pos, count, records)
        case DownloadLogReply(address, test_id, records):
            return DownloadLogReply(_no_ip(address), test_id, records)
        case StepLayerReply(address, test_id, records):
            return StepLayerReply(_no_ip(address), test_id, records)
    return reply


@settings(max_examples=300)
@given(replies)
def test_every_reply_kind_survives_encode_then_decode(reply: Reply) -> None:
    """decode_reply(encode_reply(r)) == r, up to what the wire form cannot carry."""
    raw = encode_reply(reply)
    assert raw.endswith(TERMINATOR)
    assert raw.count(TERMINATOR) == 1
    assert decode_reply(raw.removesuffix(TERMINATOR)) == as_on_the_wire(reply)


def test_the_reply_encoder_writes_what_the_real_server_writes() -> None:
    """Re-encoding a decoded real reply gives the recorded bytes back."""
    for name in ["connect_response.xml", "stop_21_1_4_bad_reponse.xml", "light_response.xml"]:
        raw = fixture(name)
        assert encode_reply(decode_reply(raw)) == raw + TERMINATOR


requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(Connect, xml_text, xml_text, xml_text),
    st.builds(GetDevInfo),
    st.builds(GetChlStatus, address_lists),
    st.builds(Inquire, address_lists),
    st.builds(InquireDf, address_lists),
    st.builds(
        Start,
        st.lists(st.builds(StartItem, addresses, xml_text, stripped_text), max_size=5).map(tuple),
        xml_text,
    ),
    st.builds(Stop, address_lists),
    st.builds(ClearFlag, address_lists),
    # with no channel there is no item to carry on/off
    st.builds(Light, st.lists(addresses, min_size=1, max_size=5).map(tuple), st.booleans()),
    st.builds(Download, addresses, uint, uint, uint, uint),
    st.builds(DownloadLog, addresses, uint),
    st.builds(DownloadStepLayer, addresses, uint),
)


def request_on_the_wire(request: Request) -> Request:
    """Requests that name one channel without ``ip``, as BTS clients send them."""
    match request:
        case InquireDf(channels):
            return InquireDf(tuple(_no_ip(a) for a in channels))
        case Download(address, start_pos, count, test_id, aux_id):
            return Download(_no_ip(address), start_pos, count, test_id, aux_id)
        case DownloadLog(address, test_id):
            return DownloadLog(_no_ip(address), test_id)
        case DownloadStepLayer(address, test_id):
            return DownloadStepLayer(_no_ip(address), test_id)
    return request


@settings(max_examples=300)
@given(requests)
def test_every_request_kind_survives_encode_then_decode(request: Request) -> None:
    raw = encode_request(request)
    assert raw.endswith(TERMINATOR)
    assert decode_request(raw.removesuffix(TERMINATOR)) == request_on_the_wire(request)


# ================================================================ fuzzing


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_protocol_violation(data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        decode_reply(data)


@settings(max_examples=500)
@given(
    name=st.sampled_from(FIXTURE_FILES),
    edits=st.lists(
        st.tuples(st.integers(0, 5000), st.integers(0, 8), st.binary(max_size=8)),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_real_replies_raise_only_protocol_violation(
    name: str, edits: list[tuple[int, int, bytes]]
) -> None:
    """Byte-level damage (replace, insert, delete) to real frames."""
    data = bytearray(fixture(name))
    for position, length, replacement in edits:
        at = position % (len(data) + 1)
        data[at : at + length] = replacement
    with contextlib.suppress(ProtocolViolation):
        decode_reply(bytes(data))


_ATTR_VALUE = re.compile(rb'="[^"]*"')


@settings(max_examples=500)
@given(
    name=st.sampled_from(FIXTURE_FILES),
    which=st.integers(0, 10_000),
    value=st.one_of(
        xml_text,
        st.sampled_from(
            ["", "-1", "1e999", "nan", "9" * 5000, "1.5", "\u00b2", "27-21-1-1-\u00b9"]
        ),
    ),
)
def test_real_replies_with_a_wrong_attribute_value_raise_only_protocol_violation(
    name: str, which: int, value: str
) -> None:
    """Well-formed XML with one attribute replaced: the decoder's typing is exercised."""
    raw = fixture(name)
    spots = list(_ATTR_VALUE.finditer(raw))
    spot = spots[which % len(spots)]
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    data = raw[: spot.start()] + b'="' + escaped.encode() + b'"' + raw[spot.end() :]
    with contextlib.suppress(ProtocolViolation):
        decode_reply(data)


def test_pause_and_continue_round_trip_as_the_bts_setpause_and_continue_commands() -> None:
    address = ChannelAddress(ChannelId(21, 1, 3))
    for request, cmd in ((Pause((address,)), "setpause"), (Continue((address,)), "continue")):
        frame_bytes = encode_request(request)
        assert f"<cmd>{cmd}</cmd>".encode() in frame_bytes
        assert decode_request(frame_bytes[: -len(TERMINATOR)]) == request
        reply = CommandReply(cmd, (CommandResult(address, True),))  # type: ignore[arg-type]
        assert decode_reply(encode_reply(reply)[: -len(TERMINATOR)]) == reply
    assert b'cycleid="-1" stepid="-1"' in encode_request(Pause((address,)))


# ================================================================ download pages, column-wise
#
# decode_reply reads a download page's items column-wise when they are written as the
# server writes them; the checked decoder (the XML tree) must give the very same reply,
# or the very same error, for any frame.


def _checked_or_error(raw: bytes) -> Reply | str:
    try:
        return _decode_reply_checked(raw)
    except ProtocolViolation as err:
        return f"ProtocolViolation: {err}"


def _decoded_or_error(raw: bytes) -> Reply | str:
    try:
        return decode_reply(raw)
    except ProtocolViolation as err:
        return f"ProtocolViolation: {err}"


def test_the_real_download_reply_is_read_column_wise_with_the_checked_records() -> None:
    raw = fixture("download_21_1_1_repsonse.xml")
    fast = _download_reply_fast(raw)
    assert fast is not None, "the real server's page must take the column-wise path"
    assert fast == _decode_reply_checked(raw)
    assert len(fast.records) == 10
    assert fast.records[-1].voltage_v == 3.49995565414429
    assert all(type(r) is DownloadRecord for r in fast.records)


step_names = st.sampled_from(["cc", "dc", "cv", "rest", "cccv", "cvd", "", "Rest_2"])


@settings(max_examples=200)
@given(
    addresses,
    uint,
    uint,
    uint,
    st.lists(
        st.builds(DownloadRecord, uint, uint, uint, step_names, uint, wall_times, *[finite] * 4),
        max_size=30,
    ),
)
def test_generated_pages_are_read_column_wise_with_the_checked_records(
    address: ChannelAddress, test_id: int, start: int, count: int, records: list[DownloadRecord]
) -> None:
    raw = encode_reply(DownloadReply(address, test_id, start, count, tuple(records)))
    raw = raw.removesuffix(TERMINATOR)
    fast = _download_reply_fast(raw)
    assert fast is not None
    assert fast == _decode_reply_checked(raw)
    assert fast.records == tuple(records)


@settings(max_examples=300)
@given(st.lists(download_records, min_size=1, max_size=5), st.data())
def test_any_page_or_mutation_of_it_decodes_as_the_checked_decoder_says(
    records: list[DownloadRecord], data: st.DataObject
) -> None:
    """Odd step types, and bytes changed, inserted or deleted anywhere: same answer."""
    address = ChannelAddress(ChannelId(21, 1, 1), 27)
    raw = bytearray(encode_reply(DownloadReply(address, 1, 1, 1000, tuple(records))))
    raw = raw[: -len(TERMINATOR)]
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        what = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.sampled_from(list(b' \t\r\n"<>&/=-.eE0123456789a\x00\x01\xc3')))
        if what == "replace":
            raw[at] = byte
        elif what == "insert":
            raw.insert(at, byte)
        else:
            del raw[at]
    assert _decoded_or_error(bytes(raw)) == _checked_or_error(bytes(raw))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # legal, but not as the server writes it: the checked path reads it
        (b'steptype="dc"', b'steptype="d&amp;c"', "d&c"),
        (b'steptype="dc"', b"steptype='dc'", "dc"),
        (b'steptype="dc"', b'steptype="d\tc"', "d c"),
        (b'" />\r\n  </list>', b'"/>\r\n  </list>', "dc"),
        # broken: the checked path names what is wrong
        (b'volt="3.49995565414429"', b'volt="inf"', "'volt' is not finite"),
        (b'atime="2025-12-28 22:30:11"', b'atime="2025-13-28 22:30:11"', "'atime' must be"),
        (b'steptype="dc"', b'steptype="d\x01c"', "malformed reply XML"),
        (b'steptype="dc"', b'steptype="d<c"', "malformed reply XML"),
    ],
)
def test_a_page_not_in_the_server_form_goes_through_the_checked_decoder(
    old: bytes, new: bytes, expected: str
) -> None:
    raw = fixture("download_21_1_1_repsonse.xml")
    at = raw.rindex(old)
    changed = raw[:at] + new + raw[at + len(old) :]
    assert _download_reply_fast(changed) is None
    if not expected.startswith(("'", "malformed")):  # a step type, not an error
        reply = decode_reply(changed)
        assert isinstance(reply, DownloadReply)
        assert reply == _decode_reply_checked(changed)
        assert reply.records[-1].step_type == expected
    elif expected.startswith("'"):
        # One unreadable record costs itself, not the page: reported with its place.
        reply = decode_reply(changed)
        assert isinstance(reply, DownloadReply)
        assert reply == _decode_reply_checked(changed)
        assert len(reply.records) == 9
        (skipped,) = reply.skipped
        assert skipped.position == 10
        assert skipped.seq_id == 219585
        assert expected in skipped.reason
    else:
        with pytest.raises(ProtocolViolation, match=re.escape(expected)):
            decode_reply(changed)


def test_the_simulator_serves_cached_download_items_byte_for_byte(tmp_path: Path) -> None:
    """respond() joins cached <data> lines; the bytes are encode_reply(handle(...))'s."""
    clock = VirtualClock()
    sim = NewareSimulator(clock, units=1, seed=3, epoch=datetime(2026, 3, 1, 8, 0, 0))
    program = GalvanostaticCycling(
        Cell.symmetric(disc_area_cm2(10.0)), record_interval_s=7.0
    ).to_step_file()
    step_file = str(write_step_file(tmp_path / "p.xml", program))
    address = next(iter(sim.channels.values())).address
    assert encode_reply(sim.handle(Start((StartItem(address, "b", step_file),)))).count(b">ok<")
    clock.set(3 * 3600.0)
    sim.advance()
    held = sim.channels[address.channel].record_count
    assert held > 1000
    for start, count in [(1, 1000), (0, 5), (500, 1000), (held - 3, 1000), (held + 1, 10)]:
        for _ in range(2):  # the second time from the cache
            request = Download(address, start, count)
            served = sim.respond(request)
            assert served == encode_reply(sim.handle(request))
            reply = decode_reply(served.removesuffix(TERMINATOR))
            assert isinstance(reply, DownloadReply)
            assert reply.records == sim.channels[address.channel].download(start, count)
