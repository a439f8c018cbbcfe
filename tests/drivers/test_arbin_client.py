"""Our CTI client against our simulated cycler over a real TCP socket: login, live
values, assign, start, stop, meta-variables, refusals with a reply and a clear error,
and a link that is closed (not left out of step) when a request is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from cellguard.drivers.arbin import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    ArbinClient,
    ArbinSimulator,
    ChannelReading,
    ChannelsInfoFeedback,
    ChannelStatus,
    Command,
    CommandFeedback,
    LoginFeedback,
    UnknownRequest,
    decode_feedback,
    encode_feedback,
    encode_request,
)
from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.errors import CommandRefused, InstrumentConnectionError


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def _client(port: int, **login: str) -> ArbinClient:
    return ArbinClient(
        "127.0.0.1",
        port,
        username=login.get("username", DEFAULT_USERNAME),
        password=login.get("password", DEFAULT_PASSWORD),
        timeout_s=5.0,
    )


async def test_login_reports_the_cycler_and_its_channels(clock: VirtualClock) -> None:
    sim = ArbinSimulator(clock, channels=8)
    async with sim.serve() as (_, port), _client(port) as client:
        assert client.channel_count == 8
        assert client.login is not None
        assert client.login.serial_number == "cellguard-sim"


async def test_a_wrong_password_is_refused_with_a_clear_error(clock: VirtualClock) -> None:
    sim = ArbinSimulator(clock, channels=2, login=("lab", "secret"))
    async with sim.serve() as (_, port):
        client = _client(port, username="lab", password="wrong")
        with pytest.raises(CommandRefused, match=r"user name .*'lab'.* password"):
            await client.connect()
        assert not client.connected


async def test_a_schedule_runs_a_cell_and_stops(clock: VirtualClock) -> None:
    """Assign, start, read the live values as time passes, stop: Idle again."""
    sim = ArbinSimulator(clock, channels=4)
    async with sim.serve() as (_, port), _client(port) as client:
        await client.assign_schedule(2, "cellguard-cycling.sdx")
        await client.start(2, "cg-test")
        clock.set(600.0)
        reading = (await client.channels_info(2))[2]
        assert reading.status == ChannelStatus.CHARGE
        assert reading.test_name == "cg-test"
        assert reading.schedule == "cellguard-cycling.sdx"
        assert reading.current_a == pytest.approx(4e-4, rel=1e-3)
        assert reading.test_time_s == pytest.approx(600.0)
        assert 0.001 < reading.voltage_v < 0.5  # a Li|Li cell's overpotential
        assert reading.step_and_cycle.startswith("[1] 1:")
        clock.set(4000.0)
        reading = (await client.channels_info(2))[2]
        assert reading.status == ChannelStatus.DISCHARGE
        assert reading.current_a < 0
        await client.set_meta_variable(2, 1, 0.25)
        assert sim.channels[2].meta_variables == {52: 0.25}
        await client.stop(2)
        everything = await client.channels_info()
        assert sorted(everything) == [0, 1, 2, 3]
        assert everything[2].status == ChannelStatus.IDLE
        assert not everything[2].running


async def test_refused_commands_get_a_reply_and_a_clear_error(clock: VirtualClock) -> None:
    sim = ArbinSimulator(clock, channels=4)
    async with sim.serve() as (_, port), _client(port) as client:
        with pytest.raises(CommandRefused, match="no such channel"):
            await client.channels_info(9)
        with pytest.raises(CommandRefused, match="channel does not exist"):
            await client.assign_schedule(9, "rest.sdx")
        with pytest.raises(CommandRefused, match="schedule not found"):
            await client.assign_schedule(0, "nope.sdx")
        with pytest.raises(CommandRefused, match="no schedule assigned"):
            await client.start(0, "t")
        with pytest.raises(CommandRefused, match="channel is not running"):
            await client.set_meta_variable(0, 1, 1.0)
        await client.assign_schedule(0, "rest.sdx")
        await client.start(0, "t")
        with pytest.raises(CommandRefused, match="running or unsafe"):
            await client.start(0, "t")
        with pytest.raises(CommandRefused, match="channel is running"):
            await client.assign_schedule(0, "rest.sdx")
        with pytest.raises(CommandRefused, match="channel index does not exist"):
            await client.stop(9)
        # Each refusal was a reply: the link stayed in step and usable.
        assert client.connected
        assert (await client.channels_info(0))[0].running


async def test_an_unknown_command_gets_a_reply(clock: VirtualClock) -> None:
    """The simulator answers even a command it does not implement (never silence)."""
    sim = ArbinSimulator(clock, channels=1)
    async with sim.serve() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_request(UnknownRequest(Command.START_SCHEDULE + 2, bytes(109))))
        head = await reader.readexactly(12)
        rest = await reader.readexactly(int.from_bytes(head[8:12], "little") - 12)
        feedback = decode_feedback(head + rest)
        assert isinstance(feedback, CommandFeedback)
        assert feedback.command_code == 0xBB230006
        assert not feedback.ok
        writer.close()
        await writer.wait_closed()


async def test_a_cancelled_request_closes_the_link(clock: VirtualClock) -> None:
    """A feedback arriving after a cancel must never be read as the next request's."""
    server_got = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        server_got.set()
        await reader.read(100)  # never answers; ends when the client closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = _client(port)
    task = asyncio.create_task(client.connect())
    await asyncio.wait_for(server_got.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not client.connected
    with pytest.raises(InstrumentConnectionError):
        await client.stop(0)
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("judged_as_read", [False, True])
async def test_all_channels_may_come_as_one_feedback_per_channel(judged_as_read: bool) -> None:
    """Arbin's v1.1 document says a separate feedback per channel, v4.5 one feedback
    with every channel: a server of the first kind is read to the last channel."""
    login = encode_feedback(LoginFeedback(1, channel_count=3))
    per_channel = b"".join(
        encode_feedback(ChannelsInfoFeedback((ChannelReading(i, int(ChannelStatus.REST)),)))
        for i in range(3)
    )

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(86)  # the login
        writer.write(login)
        await reader.read(62)  # channel info for all channels
        writer.write(per_channel)
        await writer.drain()
        await reader.read(100)  # until the client closes
        writer.close()

    listener = await asyncio.start_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    judged: list[int] = []
    async with _client(port) as client:
        if judged_as_read:
            readings, stops = await client.channels_info_judged(
                lambda reading: judged.append(reading.channel) is not None
            )
            assert judged == [0, 1, 2]  # the first as it came, the others whole
            assert stops == {}
        else:
            readings = await client.channels_info()
    assert sorted(readings) == [0, 1, 2]
    assert all(r.status == ChannelStatus.REST for r in readings.values())
    listener.close()
    await listener.wait_closed()
