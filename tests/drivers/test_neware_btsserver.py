"""``NewareSimulator`` as a real BTS 8 server, judged against ``realworld.md`` and the
recorded fixtures: every request framing answered, a reply (ok, false or an error) to
every command, each unit's own ``subdevid``, one ``testid`` per batch start, and the
server-version options (mA/mAh/mWh downloads, cycles from 0). All over real TCP."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from xml.etree.ElementTree import fromstring

import pytest
from shared import NEWARE_API_FIXTURES

from cellguard.drivers import ConfigError, VirtualClock
from cellguard.drivers.neware import (
    ChannelId,
    ClearFlag,
    Connect,
    Download,
    DownloadLog,
    DownloadStepLayer,
    GetChlStatus,
    GetDevInfo,
    Inquire,
    InquireDf,
    Light,
    NewareClient,
    NewareSimulator,
    OtherReply,
    Request,
    RequestSplitter,
    Start,
    StartItem,
    StepLayerReply,
    Stop,
    decode_reply,
    encode_reply,
)
from cellguard.drivers.neware._codec import TERMINATOR
from cellguard.drivers.neware._messages import EXTRA_COMMANDS
from cellguard.protocols import Cell, GalvanostaticCycling, write_step_file

EPOCH = datetime(2026, 1, 5, 9, 0, 0)
HEAD = b'<?xml version="1.0" encoding="UTF-8" ?><bts version="1.0">'
# What follows a request's </bts> in each framing real servers accept (realworld.md).
FRAMINGS = {
    "doc #CRLF": b"#\r\n",
    "LF LF #CRLF": b"\n\n#\r\n",
    "CRLF #CRLF": b"\r\n#\r\n",
    "LF #CRLF": b"\n#\r\n",
}
REPLY_TIMEOUT_S = 5.0


def _request(body: bytes, framing: bytes = b"\n\n#\r\n") -> bytes:
    return HEAD + body + b"</bts>" + framing


class RawPeer:
    """A client that writes bytes exactly as given and reads one reply frame back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def ask(self, raw: bytes) -> bytes:
        self.writer.write(raw)
        await self.writer.drain()
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            reply = await self.reader.readuntil(TERMINATOR)
        return reply.removesuffix(TERMINATOR)


@asynccontextmanager
async def serving(sim: NewareSimulator) -> AsyncIterator[RawPeer]:
    async with sim.serve() as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            yield RawPeer(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()


def _sim(**options: object) -> NewareSimulator:
    return NewareSimulator(VirtualClock(), units=2, epoch=EPOCH, **options)  # type: ignore[arg-type]


def _cmd(reply: bytes) -> str:
    match = re.search(rb"<cmd>([^<]*)</cmd>", reply)
    assert match is not None, reply
    return match.group(1).decode()


def _step_file(tmp_path: Path) -> Path:
    program = GalvanostaticCycling(Cell.symmetric(0.785), cycles=5, record_interval_s=60.0)
    return write_step_file(tmp_path / "sym.xml", program.to_step_file())


def _chl(tag: str, chl: str, text: str = "true", extra: str = "") -> bytes:
    devid, sub, n = chl.split("-")
    return (
        f'<{tag} ip="127.0.0.1" devtype="27" devid="{devid}" subdevid="{sub}" '
        f'chlid="{n}"{extra}>{text}</{tag}>'
    ).encode()


# ================================================================ framing


@pytest.mark.parametrize("framing", FRAMINGS.values(), ids=FRAMINGS.keys())
async def test_every_request_framing_real_servers_accept_is_answered(framing: bytes) -> None:
    """A 2025 BTS Client answers requests ending #\\r\\n, \\n\\n#\\r\\n, </bts>#\\r\\n and
    </bts>\\r\\n#\\r\\n; replies end with \\n\\n#\\r\\n. (The old simulator answered only
    \\n\\n#\\r\\n and stayed silent otherwise.)"""
    async with serving(_sim()) as peer:
        connect = b"<cmd>connect</cmd><username>admin</username><password>neware</password>"
        assert _cmd(await peer.ask(_request(connect, framing))) == "connect_resp"
        inquire = b'<cmd>inquire</cmd><list count="1">' + _chl("inquire", "1-2-3") + b"</list>"
        reply = await peer.ask(_request(inquire, framing))
        assert _cmd(reply) == "inquire_resp"
        assert b'dev="27-1-2-3-0"' in reply


async def test_two_requests_in_two_framings_in_one_write_get_two_replies_in_order() -> None:
    async with serving(_sim()) as peer:
        both = _request(b"<cmd>getdevinfo</cmd>", b"#\r\n") + _request(
            b'<cmd>getchlstatus</cmd><list count="1">' + _chl("status", "1-1-1") + b"</list>",
            b"\r\n#\r\n",
        )
        first = await peer.ask(both)
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            second = (await peer.reader.readuntil(TERMINATOR)).removesuffix(TERMINATOR)
        assert (_cmd(first), _cmd(second)) == ("getdevinfo_resp", "getchlstatus_resp")


def test_request_splitter_cuts_every_framing_fed_byte_by_byte() -> None:
    stream = b"".join(
        _request(f"<cmd>c{i}</cmd>".encode(), f) for i, f in enumerate(FRAMINGS.values())
    )
    splitter = RequestSplitter()
    frames = [frame for byte in stream for frame in splitter.feed(bytes([byte]))]
    assert frames == [HEAD + f"<cmd>c{i}</cmd>".encode() + b"</bts>" for i in range(4)]
    assert splitter.pending_bytes == 0


def test_a_hash_crlf_inside_the_document_does_not_end_the_request() -> None:
    """A barcode may hold '#\\r\\n'; only one after </bts> ends a request."""
    body = b'<cmd>start</cmd><list count="1">' + _chl("start", "1-1-1", "p", ' barcode="a#\r\nb"')
    raw = _request(body + b"</list>", b"#\r\n")
    splitter = RequestSplitter()
    assert splitter.feed(raw[:-3]) == []
    assert splitter.feed(raw[-3:]) == [raw.removesuffix(b"#\r\n")]


# ================================================================ replies to every command


@pytest.mark.parametrize("cmd", EXTRA_COMMANDS)
async def test_every_command_a_real_server_knows_gets_a_reply_per_channel(cmd: str) -> None:
    """getpause, cancelpause, resetalarm, goto, broadcaststop, chl_ctrl, parallel,
    getparallel, reset: answered ok or false per channel, never silence (the old
    simulator dropped them)."""
    async with serving(_sim()) as peer:
        body = f'<cmd>{cmd}</cmd><list count="2">'.encode()
        body += _chl(cmd, "1-1-1") + _chl(cmd, "1-2-8") + b"</list>"
        reply = await peer.ask(_request(body))
    assert _cmd(reply) == f"{cmd}_resp"
    decoded = decode_reply(reply)
    assert isinstance(decoded, OtherReply)
    assert [str(r.address.channel) for r in decoded.items] == ["1-1-1", "1-2-8"]


async def test_an_unknown_command_and_an_unreadable_request_get_an_error_reply() -> None:
    async with serving(_sim()) as peer:
        unknown = decode_reply(await peer.ask(_request(b"<cmd>selfdestruct</cmd>")))
        broken = await peer.ask(_request(b"<cmd>inquire</cmd><list><inquire"))
    assert unknown == OtherReply(
        "selfdestruct", result="error", error="unknown command 'selfdestruct'"
    )
    # Named after the command it answers, so a client waiting for it is not left hanging.
    assert b"<cmd>inquire_resp</cmd>" in broken
    assert b"<result>error</result>" in broken
    assert b"<error>malformed request XML" in broken


async def test_the_extra_commands_act_on_the_simulated_channels(tmp_path: Path) -> None:
    sim = _sim()
    step_file = _step_file(tmp_path)
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([("1-1-1", "a", str(step_file)), ("1-1-2", "b", str(step_file))])
        assert (await client.command("getpause", "1-1-1")).items[0].ok is False
        await client.pause("1-1-1")
        assert (await client.command("getpause", "1-1-1")).items[0].ok is True
        # Jumping steps is refused (answered false), not pretended.
        assert (await client.command("goto", "1-1-1")).items[0].ok is False
        stop = await client.command("broadcaststop", ["1-1-1", "1-1-2"])
        assert [r.ok for r in stop.items] == [True, True]
        assert sim.channels[ChannelId(1, 1, 2)].workstatus == "stop"


# ================================================================ addresses, tests, refusals


async def test_getchlstatus_reports_each_units_own_subdevid() -> None:
    """The recorded server says subdevid 2 for unit 2 (the old simulator said 1)."""
    async with serving(_sim()) as peer:
        body = b'<cmd>getchlstatus</cmd><list count="2">'
        body += _chl("status", "1-1-4") + _chl("status", "1-2-5") + b"</list>"
        reply = await peer.ask(_request(body))
    assert b'devid="1" subdevid="1" chlid="4"' in reply
    assert b'devid="1" subdevid="2" chlid="5"' in reply


def test_the_recorded_status_of_both_units_is_written_back_byte_for_byte() -> None:
    raw = (NEWARE_API_FIXTURES / "get_status_all_response.xml").read_bytes()
    assert encode_reply(decode_reply(raw)) == raw + TERMINATOR


async def test_channels_started_in_one_batch_share_one_testid(tmp_path: Path) -> None:
    sim = _sim()
    step_file = str(_step_file(tmp_path))
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([("1-1-1", "a", step_file)])
        await client.stop("1-1-1")
        await client.start([("1-1-1", "a", step_file), ("1-2-3", "b", step_file)])
        ids = await client.inquire_df(["1-1-1", "1-2-3"])
    assert ids[ChannelId(1, 1, 1)].test_id == ids[ChannelId(1, 2, 3)].test_id == 2


async def test_start_on_a_running_channel_and_stop_on_an_idle_one_answer_false(
    tmp_path: Path,
) -> None:
    async with serving(_sim()) as peer:
        start = b'<cmd>start</cmd><list count="1">'
        start += _chl("start", "1-1-1", str(_step_file(tmp_path)), ' barcode="x"') + b"</list>"
        assert b">ok</start>" in await peer.ask(_request(start))
        assert b">false</start>" in await peer.ask(_request(start))
        stop = b'<cmd>stop</cmd><list count="1">' + _chl("stop", "1-1-2") + b"</list>"
        assert b">false</stop>" in await peer.ask(_request(stop))


# ================================================================ server versions


async def _first_page(sim: NewareSimulator, clock: VirtualClock, step_file: str) -> bytes:
    async with serving(sim) as peer:
        start = b'<cmd>start</cmd><list count="1">'
        start += _chl("start", "1-1-1", step_file, ' barcode="x"') + b"</list>"
        assert b">ok</start>" in await peer.ask(_request(start))
        clock.set(3 * 3600.0)
        download = (
            b'<cmd>download</cmd><download devtype="27" devid="1" subdevid="1" chlid="1" '
            b'auxid="0" testid="0" startpos="1" count="1000"/>'
        )
        return await peer.ask(_request(download))


def _column(page: bytes, name: str) -> list[float]:
    return [float(v) for v in re.findall(rf' {name}="([^"]*)"'.encode(), page)]


async def test_a_2025_server_reports_download_in_milliamperes_and_cycles_from_zero(
    tmp_path: Path,
) -> None:
    """download_units="mA": curr/cap/eng 1000× on the wire, volt unchanged;
    first_cycle_id=0: download cycleids from 0 (the step layer keeps 1)."""
    step_file = str(_step_file(tmp_path))
    plain_clock, newer_clock = VirtualClock(), VirtualClock()
    plain = await _first_page(NewareSimulator(plain_clock, epoch=EPOCH), plain_clock, step_file)
    newer_sim = NewareSimulator(newer_clock, epoch=EPOCH, download_units="mA", first_cycle_id=0)
    newer = await _first_page(newer_sim, newer_clock, step_file)
    assert _column(plain, "volt") == _column(newer, "volt")
    for name in ("curr", "cap", "eng"):
        assert _column(newer, name) == pytest.approx([1000 * v for v in _column(plain, name)])
    assert max(abs(c) for c in _column(newer, "curr")) == pytest.approx(0.5 * 0.785)  # mA
    assert min(_column(plain, "cycleid")) == 1
    assert min(_column(newer, "cycleid")) == 0
    assert _column(newer, "cycleid") == [c - 1 for c in _column(plain, "cycleid")]
    layers = newer_sim.handle(DownloadStepLayer(newer_sim.channels[ChannelId(1, 1, 1)].address))
    assert isinstance(layers, StepLayerReply)
    assert min(r.cycle_id for r in layers.records) == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [({"download_units": "A/Ah"}, "download_units"), ({"first_cycle_id": 2}, "first_cycle_id")],
)
def test_a_server_option_outside_its_choices_is_refused_naming_it(
    options: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        NewareSimulator(VirtualClock(), **options)  # type: ignore[arg-type]


# ================================================================ the CLI


_CLI = (sys.executable, "-m", "cellguard.daemon.cli")


@asynccontextmanager
async def _cli(*flags: str) -> AsyncIterator[tuple[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cellguard.daemon.cli",
        "simulate",
        "neware",
        "--port",
        "0",
        "--speed",
        "600",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            banner = (await proc.stdout.readline()).decode()
        port = int(banner.split(" on ")[1].split(",")[0].rsplit(":", 1)[1])
        yield banner, port
    finally:
        proc.terminate()
        await proc.communicate()


async def test_simulate_neware_serves_a_2025_server_when_asked(tmp_path: Path) -> None:
    """`cellguard simulate neware --download-units mA --first-cycle-id 0`: the driver
    finds mA and converts; cycles come from 0."""
    async with (
        _cli("--download-units", "mA", "--first-cycle-id", "0") as (banner, port),
        NewareClient("127.0.0.1", port) as client,
    ):
        assert "download in mA, cycles from 0" in banner
        await client.start([("1-1-1", "cli", str(_step_file(tmp_path)))])
        page = await client.download("1-1-1", 1, 100)
        async with asyncio.timeout(30):
            while not any(r.current_a for r in page.records):  # polls the running test
                page = await client.download("1-1-1", 1, 100)
    assert page.units == "mA"
    assert min(r.cycle_id for r in page.records) == 0
    charging = [r.current_a for r in page.records if r.current_a]
    assert charging == pytest.approx([0.5e-3 * 0.785] * len(charging))


def test_simulate_neware_refuses_a_unit_it_does_not_know() -> None:
    done = subprocess.run(
        [*_CLI, "simulate", "neware", "--download-units", "Ah"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--download-units" in done.stderr
    assert "'A', 'mA'" in done.stderr


# ================================================================ against the recordings


def _vocabulary(raw: bytes) -> dict[str, set[tuple[str, ...]]]:
    """Each element name of a reply with the attribute lists (in order) it carries."""
    out: dict[str, set[tuple[str, ...]]] = {}
    for element in fromstring(raw.removesuffix(TERMINATOR)).iter():
        out.setdefault(element.tag, set()).add(tuple(element.attrib))
    return out


def _recorded_session(tmp_path: Path) -> dict[str, bytes]:
    """The simulator's reply to each request a recorded fixture answers (devid 21)."""
    clock = VirtualClock()
    sim = NewareSimulator(clock, units=2, devid=21, epoch=EPOCH)
    every = tuple(c.address for c in sim.channels.values())
    one = every[0]
    step_file = str(_step_file(tmp_path))
    replies = {"start": sim.respond(Start((StartItem(one, "x", step_file),)))}
    clock.set(3 * 3600.0)  # a few steps done: every reply has items
    requests: dict[str, Request] = {
        "connect": Connect(),
        "getdevinfo": GetDevInfo(),
        "getchlstatus": GetChlStatus(every),
        "inquire": Inquire(every),
        "inquiredf": InquireDf(every),
        "download": Download(one, 1, 10),
        "downloadlog": DownloadLog(one),
        "downloadStepLayer": DownloadStepLayer(one),
        "light": Light((one,)),
        "stop": Stop((one,)),
        "clearflag": ClearFlag((one,)),
    }
    replies |= {name: sim.respond(request) for name, request in requests.items()}
    return replies


def test_every_reply_uses_the_recorded_servers_elements_and_attributes(tmp_path: Path) -> None:
    """Element names, attribute names and their order as the recorded BTS 8 server
    writes them, reply kind by reply kind."""
    recorded: dict[str, dict[str, set[tuple[str, ...]]]] = {}
    for path in NEWARE_API_FIXTURES.glob("*.xml"):
        raw = path.read_bytes()
        cmd = _cmd(raw).removesuffix("_resp").replace("donwload", "download")
        for tag, attrs in _vocabulary(raw).items():
            recorded.setdefault(cmd, {}).setdefault(tag, set()).update(attrs)
    for cmd, reply in _recorded_session(tmp_path).items():
        ours = _vocabulary(reply)
        assert ours.keys() == recorded[cmd].keys(), cmd
        for tag, attrs in ours.items():
            assert attrs <= recorded[cmd][tag], (cmd, tag, attrs - recorded[cmd][tag])
