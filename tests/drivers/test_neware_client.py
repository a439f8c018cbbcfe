"""NewareClient over real TCP against a replay server that answers with real replies.

The replay server decodes each request and answers with the recorded reply of a real
BTS 8 server (fixtures/neware-bts-api) plus the frame terminator. Failure modes
(malformed frames, split and merged writes, a peer that hangs up or never answers)
are scripted per test. Nothing here sleeps to wait for time to pass.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from shared import NEWARE_API_FIXTURES

from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    DriverError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)
from cellguard.drivers.neware import (
    DEFAULT_TIMEOUT_S,
    ChannelAddress,
    ChannelId,
    ClearFlag,
    Connect,
    Download,
    DownloadLog,
    DownloadReply,
    DownloadStepLayer,
    FrameSplitter,
    GetChlStatus,
    GetDevInfo,
    Inquire,
    InquireDf,
    InquireReply,
    Light,
    NewareClient,
    Request,
    Start,
    Stop,
    TcpTransport,
    decode_request,
)
from cellguard.drivers.neware._codec import TERMINATOR

FIXTURES = NEWARE_API_FIXTURES
ALL_CHANNELS = [f"21-{sub}-{n}" for sub in (1, 2) for n in range(1, 9)]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def names(addresses: tuple[ChannelAddress, ...]) -> list[str]:
    return [str(a.channel) for a in addresses]


def real_reply(request: Request) -> bytes | None:
    """The recorded reply of the real server to ``request`` (without terminator)."""
    match request:
        case Connect():
            return fixture("connect_response.xml")
        case GetDevInfo():
            return fixture("get_devinfo_response.xml")
        case GetChlStatus(channels) if names(channels) == ALL_CHANNELS:
            return fixture("get_status_all_response.xml")
        case GetChlStatus(channels) if len(channels) == 1:
            # One recorded single-channel status exists (21-1-1). The real server says
            # subdevid 1 whatever was asked, so the reply for another channel is that
            # recording with only the chlid changed.
            chlid = channels[0].channel.chlid
            return fixture("get_status_21_1_1_response.xml").replace(
                b'chlid="1"', f'chlid="{chlid}"'.encode()
            )
        case Inquire(channels) | InquireDf(channels):
            kind = "inquire" if isinstance(request, Inquire) else "inquiredf"
            asked = names(channels)
            if asked == ALL_CHANNELS:
                return fixture(f"{kind}_all_response.xml")
            key = "_and_".join(c.replace("-", "_") for c in asked).replace("_and_21_1_", "_and_")
            path = FIXTURES / f"{kind}_{key}_response.xml"
            return path.read_bytes() if path.exists() else None
        case Start(items):
            ok = [str(i.address.channel) for i in items] == ["21-1-1"]
            return fixture("start_21_1_1_response.xml" if ok else "start_21_1_4_bad_response.xml")
        case Stop(channels):
            return {
                ("21-1-1",): fixture("stop_21_1_1_response.xml"),
                ("21-1-1", "21-1-2"): fixture("stop_21_1_1_and_21_1_2_response.xml"),
                ("21-1-4",): fixture("stop_21_1_4_bad_reponse.xml"),
            }.get(tuple(names(channels)))
        case ClearFlag():
            return fixture("clear_flag_response.xml")
        case Light():
            return fixture("light_response.xml")
        case Download():
            return fixture("download_21_1_1_repsonse.xml")
        case DownloadLog():
            return fixture("downloadlog_21_1_1_response.xml")
        case DownloadStepLayer():
            return fixture("download_step_layer_21_1_1_response.xml")
    return None


class Peer:
    """One accepted connection, as the scripts see it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.splitter = FrameSplitter()
        self.pending: deque[bytes] = deque()

    async def next_request(self) -> Request | None:
        """The next request, or None when the client closed its end."""
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.pending.extend(self.splitter.feed(data))
        return decode_request(self.pending.popleft())

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


# A script gets the request and the peer, and answers (or not) as it likes.
Script = Callable[[Request, Peer], Awaitable[None]]


async def replay(request: Request, peer: Peer) -> None:
    reply = real_reply(request)
    assert reply is not None, f"no recorded reply for {request}"
    await peer.send(reply + TERMINATOR)


class ReplayServer:
    """A TCP server on 127.0.0.1 that answers each request through ``script``."""

    def __init__(self, script: Script = replay) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.connections = 0
        self.request_seen = asyncio.Event()
        self.client_hung_up = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        peer = Peer(reader, writer)
        try:
            while (request := await peer.next_request()) is not None:
                self.requests.append(request)
                self.request_seen.set()
                await self.script(request, peer)
            self.client_hung_up.set()
        except ConnectionError:
            self.client_hung_up.set()
        finally:
            writer.close()
            self._handlers.discard(task)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            # Python 3.11's wait_closed() does not wait for handlers: end them here.
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()


@asynccontextmanager
async def connected(
    script: Script = replay, timeout_s: float = DEFAULT_TIMEOUT_S
) -> AsyncIterator[tuple[NewareClient, ReplayServer]]:
    server = ReplayServer(script)
    async with (
        server.running() as port,
        NewareClient("127.0.0.1", port, timeout_s=timeout_s) as client,
    ):
        yield client, server


def ch(text: str) -> ChannelId:
    return ChannelId.parse(text)


# ================================================================ happy paths


async def test_connect_logs_in_and_reads_the_channel_map_from_getdevinfo() -> None:
    async with connected() as (client, server):
        assert client.connected
        assert [str(c.address.channel) for c in client.channels] == ALL_CHANNELS
        assert client.channels[0].available is True
        assert client.channels[1].available is False
        assert client.address("21-2-5") == ChannelAddress(ch("21-2-5"), 27, "127.0.0.1")
        assert server.requests == [Connect("admin", "neware"), GetDevInfo()]
    assert not client.connected


async def test_an_unknown_channel_is_a_config_error_listing_what_exists() -> None:
    async with connected() as (client, _):
        with pytest.raises(ConfigError) as info:
            client.address("21-1-9")
        assert info.value.field == "channel"
        assert "21-1-9 is not on this server; it has 21-1-1..21-1-8, 21-2-1..21-2-8" in str(
            info.value
        )
        with pytest.raises(ConfigError, match="not a Neware channel id"):
            await client.inquire(["21/1/1"])


async def test_inquire_without_channels_asks_for_every_channel_in_one_request() -> None:
    async with connected() as (client, server):
        values = await client.inquire()
        assert [str(c) for c in values] == ALL_CHANNELS
        assert len(server.requests) == 3  # connect, getdevinfo, one inquire
        assert values[ch("21-1-2")].voltage_v == 4.6947
        assert values[ch("21-1-2")].current_a == -0.0003
        assert values[ch("21-1-2")].total_time_s == 3189199.3


async def test_inquire_of_one_and_of_two_channels_accepts_ids_and_strings() -> None:
    async with connected() as (client, server):
        one = await client.inquire("21-1-4")
        assert list(one) == [ch("21-1-4")]
        assert one[ch("21-1-4")].voltage_v == 0.5741
        two = await client.inquire([ch("21-1-1"), "21-1-2"])
        assert list(two) == [ch("21-1-1"), ch("21-1-2")]
        assert two[ch("21-1-1")].step_type is None
        assert two[ch("21-1-2")].step_type == "dc"
        last = server.requests[-1]
        assert isinstance(last, Inquire)
        assert names(last.channels) == ["21-1-1", "21-1-2"]


async def test_status_is_matched_by_position_because_the_server_misreports_subdevid() -> None:
    """Asked for 21-2-5, the real server says subdevid 1; the answer is for 21-2-5."""
    async with connected() as (client, _):
        assert await client.get_status("21-2-5") == {ch("21-2-5"): "finish"}
        everything = await client.get_status()
        assert list(everything) == [ch(c) for c in ALL_CHANNELS]
        assert everything[ch("21-1-2")] == "working"


async def test_status_items_out_of_order_are_a_protocol_violation() -> None:
    """Position matching is only safe while devid and chlid agree with the request."""

    async def wrong_channel(request: Request, peer: Peer) -> None:
        if isinstance(request, GetChlStatus):
            await peer.send(fixture("get_status_21_1_1_response.xml") + TERMINATOR)
        else:
            await replay(request, peer)

    async with connected(wrong_channel) as (client, _):
        with pytest.raises(ProtocolViolation, match="reply item for 21-1-1 where 21-2-5"):
            await client.get_status("21-2-5")


async def test_inquire_df_reports_record_counts() -> None:
    async with connected() as (client, _):
        counts = await client.inquire_df(["21-1-1"])
        assert counts[ch("21-1-1")].count == 219585
        assert counts[ch("21-1-1")].test_id == 143
        assert len(await client.inquire_df()) == 16


async def test_start_accepted_sends_barcode_and_step_file() -> None:
    async with connected() as (client, server):
        await client.start([("21-1-1", "cell-01", r"C:\steps\cycling.xml")], backup_dir=r"D:\b")
        sent = server.requests[-1]
        assert isinstance(sent, Start)
        assert (sent.items[0].barcode, sent.items[0].step_file_path) == (
            "cell-01",
            r"C:\steps\cycling.xml",
        )
        assert sent.backup_dir == r"D:\b"


async def test_a_start_reply_about_another_channel_is_an_error_not_a_refusal() -> None:
    """The recorded refusal names 21-1-2 where 21-1-4 was asked: not data about 21-1-4
    (nor a refusal of a channel nobody started), but replies out of step: the link is
    closed so that no later reply is taken for the wrong request."""
    async with connected() as (client, _):
        with pytest.raises(ProtocolViolation, match=r"start_resp about 21-1-2.*asked: 21-1-4"):
            await client.start([("21-1-4", "cell-04", r"C:\steps\cycling.xml")])
        assert not client.connected


async def test_stop_confirmed_for_one_and_for_two_channels() -> None:
    """The two-channel reply says count="1" but confirms both channels."""
    async with connected() as (client, _):
        await client.stop("21-1-1")
        await client.stop(["21-1-1", "21-1-2"])


async def test_stop_refused_raises_command_refused_naming_the_channel() -> None:
    async with connected() as (client, _):
        with pytest.raises(CommandRefused, match=r"refused 'stop' for 21-1-4") as info:
            await client.stop(["21-1-4"])
        assert info.value.targets == ["21-1-4"]


async def test_stop_without_a_confirmation_for_a_channel_is_not_a_success() -> None:
    """A stop the server did not confirm for a channel must not pass silently."""

    async def confirm_only_the_first(request: Request, peer: Peer) -> None:
        if isinstance(request, Stop):
            await peer.send(fixture("stop_21_1_1_response.xml") + TERMINATOR)
        else:
            await replay(request, peer)

    async with connected(confirm_only_the_first) as (client, _):
        with pytest.raises(ProtocolViolation, match="did not answer for 21-1-2"):
            await client.stop(["21-1-1", "21-1-2"])


async def test_stop_needs_explicit_channels() -> None:
    async with connected() as (client, _):
        with pytest.raises(ConfigError, match="at least one channel"):
            await client.stop([])


async def test_clear_flag_answered_false_raises_command_refused() -> None:
    async with connected() as (client, _):
        with pytest.raises(CommandRefused) as info:
            await client.clear_flag(["21-1-1"])
        assert (info.value.command, info.value.targets) == ("clearflag", ["21-1-1"])


async def test_light_on_is_confirmed() -> None:
    async with connected() as (client, server):
        await client.light("21-1-1", on=True)
        sent = server.requests[-1]
        assert isinstance(sent, Light)
        assert sent.on is True


async def test_download_downloadlog_and_step_layer_return_the_recorded_data() -> None:
    async with connected() as (client, server):
        data = await client.download("21-1-1", start_pos=219576, count=1000)
        assert isinstance(data, DownloadReply)
        assert data.records[0].seq_id == 219576
        assert data.records[0].test_time_ms == 36070000
        # The channel's live current is 0 (finished): nothing to judge the unit by, so
        # the page is read in the API document's A/Ah/Wh and no unit is settled yet.
        assert data.units == "A"
        assert data.records[0].current_a == pytest.approx(-0.000295051460852847)
        assert ch("21-1-1") not in client.download_units
        sent = next(r for r in reversed(server.requests) if isinstance(r, Download))
        assert (sent.start_pos, sent.count, sent.test_id) == (219576, 1000, 0)
        log = await client.download_log("21-1-1", test_id=143)
        assert [r.log_code for r in log.records][:2] == [100000, 100215]
        steps = await client.download_step_layer(ch("21-1-1"))
        assert [r.step_type for r in steps.records] == ["rest", "cc", "cv"]


async def test_concurrent_requests_are_serialised_and_each_gets_its_own_reply() -> None:
    async with connected() as (client, _):
        a, b, c = await asyncio.gather(
            client.inquire("21-1-1"), client.inquire("21-1-2"), client.inquire("21-1-4")
        )
        assert [list(a), list(b), list(c)] == [[ch("21-1-1")], [ch("21-1-2")], [ch("21-1-4")]]


async def test_request_returns_the_typed_reply_of_any_request() -> None:
    async with connected() as (client, _):
        reply = await client.request(Inquire((client.address("21-1-2"),)))
        assert isinstance(reply, InquireReply)
        assert reply.items[0].voltage_v == 4.6947


# ================================================================ framing on the wire


async def test_a_reply_split_across_many_small_writes_is_reassembled() -> None:
    async def dribble(request: Request, peer: Peer) -> None:
        reply = real_reply(request)
        assert reply is not None
        data = reply + TERMINATOR
        for i in range(0, len(data), 7):
            await peer.send(data[i : i + 7])

    async with connected(dribble) as (client, _):
        values = await client.inquire()
        assert len(values) == 16


async def test_two_replies_in_one_write_are_both_used_in_order() -> None:
    """The server answers connect and getdevinfo in one write (and skips the second)."""

    async def merge_first_two(request: Request, peer: Peer) -> None:
        if isinstance(request, Connect):
            await peer.send(
                fixture("connect_response.xml")
                + TERMINATOR
                + fixture("get_devinfo_response.xml")
                + TERMINATOR
            )
        elif not isinstance(request, GetDevInfo):
            await replay(request, peer)

    async with connected(merge_first_two) as (client, _):
        assert len(client.channels) == 16
        assert list(await client.inquire("21-1-2")) == [ch("21-1-2")]


# ================================================================ failures


async def test_a_malformed_reply_is_a_protocol_violation_and_the_link_stays_usable() -> None:
    broken = {"done": False}

    async def one_broken_reply(request: Request, peer: Peer) -> None:
        if isinstance(request, Inquire) and not broken["done"]:
            broken["done"] = True
            await peer.send(b"<bts><cmd>inquire_resp</cmd><list><inquire" + TERMINATOR)
        else:
            await replay(request, peer)

    async with connected(one_broken_reply) as (client, server):
        with pytest.raises(ProtocolViolation, match="malformed reply XML"):
            await client.inquire("21-1-2")
        assert client.connected
        assert (await client.inquire("21-1-2"))[ch("21-1-2")].voltage_v == 4.6947
        assert server.connections == 1


async def test_a_reply_to_another_command_closes_the_link() -> None:
    """Replies carry no request id: a wrong <cmd> means the stream is out of step."""

    async def answer_stop(request: Request, peer: Peer) -> None:
        if isinstance(request, Inquire):
            await peer.send(fixture("stop_21_1_1_response.xml") + TERMINATOR)
        else:
            await replay(request, peer)

    async with connected(answer_stop) as (client, server):
        with pytest.raises(ProtocolViolation, match=r"answered 'stop_resp'.*'inquire_resp'"):
            await client.inquire("21-1-1")
        assert not client.connected
        await server.client_hung_up.wait()


async def test_server_closing_mid_reply_is_a_connection_error_and_connect_recovers() -> None:
    async def hang_up_mid_reply(request: Request, peer: Peer) -> None:
        if isinstance(request, Inquire) and peer is first_peer[0]:
            reply = fixture("inquire_all_response.xml")
            await peer.send(reply[: len(reply) // 2])
            peer.writer.close()
            return
        if isinstance(request, Connect) and not first_peer:
            first_peer.append(peer)
        await replay(request, peer)

    first_peer: list[Peer] = []
    async with connected(hang_up_mid_reply) as (client, server):
        with pytest.raises(InstrumentConnectionError, match="middle of a reply") as info:
            await client.inquire()
        assert not isinstance(info.value, InstrumentTimeout)
        assert not client.connected
        with pytest.raises(InstrumentConnectionError, match=r"not connected.*call connect\(\)"):
            await client.inquire()

        await client.connect()
        assert client.connected
        assert server.connections == 2
        assert len(await client.inquire()) == 16


async def test_a_server_that_never_answers_times_out_and_the_link_is_closed() -> None:
    async def silent_on_inquire(request: Request, peer: Peer) -> None:
        if not isinstance(request, Inquire):
            await replay(request, peer)

    async with connected(silent_on_inquire, timeout_s=0.2) as (client, server):
        with pytest.raises(InstrumentTimeout, match=r"did not answer within 0.2 s") as info:
            await client.inquire("21-1-1")
        assert isinstance(info.value.__cause__, TimeoutError)
        assert not client.connected
        # the server sees the client hang up: a late reply cannot be misread
        await server.client_hung_up.wait()


async def test_cancelling_a_request_mid_flight_closes_the_link_and_leaves_no_task() -> None:
    async def silent_on_inquire(request: Request, peer: Peer) -> None:
        if not isinstance(request, Inquire):
            await replay(request, peer)

    async with connected(silent_on_inquire) as (client, server):
        server.request_seen.clear()
        pending = asyncio.create_task(client.inquire("21-1-1"))
        await server.request_seen.wait()
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert pending.cancelled()
        assert not client.connected
        await server.client_hung_up.wait()
        # the lock was released: a new connection serves requests again
        await client.connect()
        assert len(await client.get_status()) == 16
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []


async def test_aclose_is_idempotent_and_safe_before_connect() -> None:
    client = NewareClient("127.0.0.1", 1)
    await client.aclose()
    async with connected() as (client, _):
        await client.aclose()
        await client.aclose()
        assert not client.connected


async def test_requests_before_connect_say_to_call_connect() -> None:
    client = NewareClient("127.0.0.1", 1)
    with pytest.raises(InstrumentConnectionError, match=r"not connected.*call connect\(\)"):
        await client.inquire()
    with pytest.raises(InstrumentConnectionError, match=r"call connect\(\)"):
        await client.request(GetDevInfo())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_port_is_a_connection_error_naming_host_and_port() -> None:
    port = _free_port()  # bound then released: nothing listens there
    client = NewareClient("127.0.0.1", port, timeout_s=5.0)
    with pytest.raises(InstrumentConnectionError, match=f"127.0.0.1:{port}") as info:
        await client.connect()
    assert "check" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert not client.connected


async def test_transport_open_translates_os_errors() -> None:
    port = _free_port()
    with pytest.raises(InstrumentConnectionError, match=f"127.0.0.1:{port}"):
        await TcpTransport.open("127.0.0.1", port, timeout_s=5.0)


async def test_a_server_without_channels_is_a_driver_error_and_leaves_no_link() -> None:
    async def no_units(request: Request, peer: Peer) -> None:
        if isinstance(request, GetDevInfo):
            await peer.send(fixture("get_devinfo_bad_response.xml") + TERMINATOR)
        else:
            await replay(request, peer)

    server = ReplayServer(no_units)
    async with server.running() as port:
        client = NewareClient("127.0.0.1", port)
        with pytest.raises(DriverError, match="reports no channels; check that the units"):
            await client.connect()
        assert not client.connected
        await server.client_hung_up.wait()


async def test_a_refused_login_is_command_refused_and_leaves_no_link() -> None:
    async def refuse_login(request: Request, peer: Peer) -> None:
        await peer.send(fixture("connect_response.xml").replace(b">ok<", b">false<") + TERMINATOR)

    server = ReplayServer(refuse_login)
    async with server.running() as port:
        client = NewareClient("127.0.0.1", port, username="someone")
        with pytest.raises(CommandRefused, match="user name") as info:
            await client.connect()
        assert info.value.command == "connect"
        assert not client.connected


def test_constructor_refuses_a_non_positive_timeout() -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        NewareClient("127.0.0.1", timeout_s=0)


# ================================================================ transport


async def test_transport_moves_bytes_and_reports_end_of_stream_as_empty() -> None:
    async def answer_then_hang_up(request: Request, peer: Peer) -> None:
        await replay(request, peer)
        peer.writer.close()

    server = ReplayServer(answer_then_hang_up)
    async with server.running() as port:
        transport = await TcpTransport.open("127.0.0.1", port, timeout_s=5.0)
        try:
            await transport.send(b'<?xml version="1.0"?><bts><cmd>connect</cmd></bts>' + TERMINATOR)
            received = b""
            while chunk := await transport.receive():
                received += chunk
            assert received == fixture("connect_response.xml") + TERMINATOR
        finally:
            await transport.aclose()


async def test_transport_close_completes_even_when_the_closer_is_cancelled() -> None:
    server = ReplayServer()
    async with server.running() as port:
        transport = await TcpTransport.open("127.0.0.1", port, timeout_s=5.0)
        closing = asyncio.create_task(transport.aclose())
        await asyncio.sleep(0)  # one turn of the loop: aclose() now waits in its shield
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert transport.closed
        await server.client_hung_up.wait()  # the socket really was closed
        await transport.aclose()  # and closing again is a no-op
        with pytest.raises(InstrumentConnectionError, match="is closed"):
            await transport.send(b"x")
