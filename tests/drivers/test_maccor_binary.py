"""Our client on MacNet's binary port, over real TCP: against our simulated tester (rest,
suspend, status, refusals with the help's Result codes) and against pymacnet's
MaccorSpoofer, whose binary port is an echo server (it "just echos back client
message"), so only the echo is a call it serves."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from pymacnet.maccorspoofer import MaccorSpoofer

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    InstrumentConnectionError,
    ProtocolViolation,
)
from cellguard.drivers.maccor import (
    BinaryReplySplitter,
    DirectOutput,
    MaccorBinaryClient,
    MaccorClient,
    MaccorSimulator,
    MalformedFrame,
    decode_bin_reply,
    encode_bin,
)

CHARGE = DirectOutput(current_a=0.0004, voltage_v=4.5, power_w=50.0, mode="C")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def test_the_reply_splitter_cuts_frames_whatever_the_chunks() -> None:
    stream = encode_bin((6, 8), 3, b"\x04\x00") + encode_bin((0, 0), 0, b"abc")
    for cut in range(len(stream) + 1):
        splitter = BinaryReplySplitter()
        frames = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert [decode_bin_reply(f).function for f in frames] == [(6, 8), (0, 0)]
        assert splitter.pending_bytes == 0
    with pytest.raises(MalformedFrame, match=r"Len: 5, but 2 data bytes follow"):
        decode_bin_reply(encode_bin((6, 8), 3, b"\x04\x00", length=5))


async def test_rest_over_the_binary_port_stops_the_current(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=4)
    async with (
        sim.serve() as (host, port, bin_port),
        MaccorClient(host, port, timeout_s=5, bin_port=bin_port) as client,
    ):
        await client.start_direct(1, CHARGE)
        await clock.advance(1.0)
        assert (await client.binary.state(1)).current_a == pytest.approx(0.0004)
        await client.binary.rest(1)
        state = await client.binary.state(1)
        # Rest (RF1 4) in an Active test: the test goes on, the output is off.
        assert (state.channel, state.stat, state.rf1, state.current_a) == (1, 2, 4, 0.0)
        assert sim.calls["bin(6, 8)"] == 1
        assert (await client.state(1)).current_a == 0.0  # the JSON port sees the same


async def test_suspend_over_the_binary_port_halts_and_resume_goes_on(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with (
        sim.serve() as (host, port, bin_port),
        MaccorClient(host, port, timeout_s=5, bin_port=bin_port) as client,
    ):
        await client.start_test(0, "cellguard-cycling", "run-1")
        await clock.advance(5.0)
        await client.binary.suspend(0)
        assert (await client.state(0)).status == "Suspended"
        with pytest.raises(CommandRefused, match=r"suspend.*channel 0.*Result 1"):
            await client.binary.suspend(0)
        await client.binary.resume(0)
        assert (await client.binary.state(0)).status == "Active"
        await client.binary.reset(0)
        assert (await client.state(0)).status == "Available"


async def test_binary_refusals_carry_the_helps_result_text(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with (
        sim.serve() as (host, port, bin_port),
        MaccorClient(host, port, timeout_s=5, bin_port=bin_port) as client,
    ):
        with pytest.raises(CommandRefused, match=r"channel 1.*Result 2: The channel is not active"):
            await client.binary.rest(1)
        await client.start_direct(1, CHARGE)
        await clock.advance(0.05)
        with pytest.raises(CommandRefused, match=r"Result 3: Command sent too fast"):
            await client.binary.rest(1)
        await client.start_test(0, "cellguard-cycling", "run-1")
        await clock.advance(1.0)
        with pytest.raises(CommandRefused, match=r"Result 4: Direct mode is not active"):
            await client.binary.rest(0)
        with pytest.raises(ConfigError, match=r"channel: 2 is not a channel of this 2-channel"):
            await client.binary.state(2)
        with pytest.raises(ConfigError, match=r"current_range: must be 1\.\.4"):
            await client.binary.set_direct_output(1, DirectOutput(0, 0, 0, "R", current_range=7))
        assert client.binary.connected
        assert await client.binary.echo(b"still here") == b"still here"


async def test_a_channel_the_tester_lacks_is_refused_on_the_wire(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with sim.serve() as (host, _, bin_port):
        link = MaccorBinaryClient(host, bin_port, timeout_s=5)  # channel count unknown
        async with link:
            with pytest.raises(CommandRefused, match=r"suspend.*channel 7.*no Result"):
                await link.suspend(7)
            with pytest.raises(CommandRefused, match=r"channel 7.*no readings"):
                await link.state(7)
            assert link.connected


async def test_without_a_bin_port_the_binary_commands_say_so(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        with pytest.raises(ConfigError, match=r"bin_port: not given"):
            await client.binary.rest(0)


async def test_a_closed_binary_port_fails_the_whole_connect(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    closed = _free_port()
    async with sim.serve() as (host, port, _):
        client = MaccorClient(host, port, timeout_s=5, bin_port=closed)
        with pytest.raises(InstrumentConnectionError, match=rf"binary server at {host}:{closed}"):
            await client.connect()
        assert not client.connected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def spoofer() -> Iterator[tuple[int, int]]:
    port, bin_port = _free_port(), _free_port()
    spoof = MaccorSpoofer(
        {"server_ip": "127.0.0.1", "json_port": port, "tcp_port": bin_port, "num_channels": 8}
    )
    spoof.start()
    try:
        yield port, bin_port
    finally:
        spoof.stop()


async def _connect(port: int, bin_port: int) -> MaccorClient:
    """Polled (with a bound): the spoofer's threads listen shortly after start()."""
    client = MaccorClient("127.0.0.1", port, timeout_s=5, bin_port=bin_port)
    for _ in range(500):
        try:
            await client.connect()
        except InstrumentConnectionError:
            await asyncio.sleep(0.01)
        else:
            return client
    raise AssertionError("MaccorSpoofer did not listen within 5 s")


async def test_our_binary_client_against_pymacnets_spoofer(spoofer: tuple[int, int]) -> None:
    client = await _connect(*spoofer)
    try:
        # The spoofer's binary port echoes every frame: (0, 0) is the one call it serves.
        assert await client.binary.echo(b"\x01\x02macnet") == b"\x01\x02macnet"
        # A rest comes back as its own 18 data bytes, not a Result word: refused, named.
        with pytest.raises(ProtocolViolation, match=r"Len: 18 data bytes in the reply to \(6, 8\)"):
            await client.binary.rest(3)
        assert not client.binary.connected  # an unreadable reply ends the link
    finally:
        await client.aclose()
