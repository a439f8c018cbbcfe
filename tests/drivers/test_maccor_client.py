"""Our MacNet client against our simulated Maccor tester over real TCP sockets: general
info, readings, direct control, a halt confirmed by the status, the tester's own safety
limits, refusals with a reply and a clear error, and the binary port."""

from __future__ import annotations

import asyncio
import struct

import pytest

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.errors import CommandRefused, ConfigError, ProtocolViolation
from cellguard.drivers.maccor import (
    BinarySplitter,
    DirectOutput,
    MaccorClient,
    MaccorSimulator,
    SafetyLimits,
    decode_bin_state,
    encode_bin,
    encode_bin_direct_output,
)

CHARGE = DirectOutput(current_a=0.0004, voltage_v=4.5, power_w=50.0, mode="C")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


async def test_connect_reads_the_channel_count_and_an_idle_channel(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=8)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        assert client.channel_count == 8
        state = await client.state(7)
        assert (state.channel, state.status, state.current_a) == (7, "Available", 0.0)
        assert len(await client.statuses()) == 8


async def test_direct_mode_charges_and_a_suspend_halts_at_once(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=4)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        await client.start_direct(2, CHARGE, test_name="t1")
        await clock.advance(60.0)
        state = await client.state(2)
        assert state.status == "Active"
        assert state.current_a == pytest.approx(0.0004)
        assert state.test_time_s == pytest.approx(60.0)
        assert state.capacity_ah == pytest.approx(0.0004 * 60 / 3600, rel=1e-3)
        await client.suspend(2)
        halted = await client.state(2)
        assert (halted.status, halted.current_a) == ("Suspended", 0.0)
        await clock.advance(60.0)
        assert (await client.state(2)).capacity_ah == pytest.approx(state.capacity_ah, rel=1e-3)


async def test_set_direct_output_discharges_and_keeps_the_test_time(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        await client.start_direct(0, CHARGE)
        await clock.advance(10.0)
        await client.set_direct_output(0, DirectOutput(0.0002, 0.0, 50.0, "D"))
        await clock.advance(5.0)
        state = await client.state(0)
        assert state.current_a == pytest.approx(-0.0002)
        assert state.test_time_s == pytest.approx(15.0)


async def test_refusals_answer_and_raise_a_clear_error(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        with pytest.raises(CommandRefused, match=r"set direct mode output.*channel 1.*not active"):
            await client.set_direct_output(1, CHARGE)
        with pytest.raises(CommandRefused, match=r"start test.*No test procedure"):
            await client.start_test(1, "no-such-procedure")
        await client.start_direct(1, CHARGE)
        await clock.advance(0.05)
        with pytest.raises(CommandRefused, match="too fast"):
            await client.set_direct_output(1, CHARGE)
        with pytest.raises(ConfigError, match=r"channel: 5 is not a channel of this 2-channel"):
            await client.state(5)
        # A channel the tester lacks, asked on the wire: a JSON-RPC error reply, the link kept.
        with pytest.raises(CommandRefused, match=r"Illegal value.*Chan: no channel 9"):
            await client.request((4, 7), {"Chan": 9})
        with pytest.raises(CommandRefused, match=r"Invalid FClass"):
            await client.request((9, 1), {})
        assert client.connected
        assert (await client.state(1)).status == "Active"


async def test_a_procedure_runs_and_variables_are_set(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        await client.start_test(0, "cellguard-cycling", "run-1")
        await client.set_variable(0, 3, -1.25)
        assert sim.channels[0].variables == {3: -1.25}
        with pytest.raises(ConfigError, match=r"number: must be 1\.\.15"):
            await client.set_variable(0, 16, 0.0)
        with pytest.raises(CommandRefused, match="Channel in use"):
            await client.start_test(0, "cellguard-cycling", "run-2")
        await client.reset(0)
        assert (await client.state(0)).status == "Available"


async def test_the_testers_own_safety_limits_stop_the_channel(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=1)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        limits = SafetyLimits(4.3, 0.0, 0.0001, 0.0001)
        assert await client.set_safety(0, limits) == limits
        await client.start_direct(0, CHARGE)
        await clock.advance(1.0)
        state = await client.state(0)
        assert (state.status, state.rf2, state.current_a) == ("Problem", 253, 0.0)


async def test_an_out_of_step_reply_closes_the_link(clock: VirtualClock) -> None:
    async def wrong_id(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(
            b'{"jsonrpc":"2.0","result":{"FClass":1,"FNum":2,"TestChannels":1},"id":77}\r\n'
        )
        await writer.drain()
        await reader.read(4096)  # the client closes its end
        writer.close()

    server = await asyncio.start_server(wrong_id, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MaccorClient("127.0.0.1", port, timeout_s=5)
    with pytest.raises(ProtocolViolation, match="answered id 77 to request id 1987"):
        await client.connect()
    assert not client.connected
    server.close()
    await server.wait_closed()


async def test_the_binary_port_reads_and_sets_direct_output(clock: VirtualClock) -> None:
    sim = MaccorSimulator(clock, channels=2)
    async with sim.serve() as (host, port, bin_port), MaccorClient(host, port) as client:
        await client.start_direct(1, CHARGE)
        await clock.advance(1.0)
        reader, writer = await asyncio.open_connection(host, bin_port)
        splitter = BinarySplitter("reply")
        rest = DirectOutput(0.0, 0.0, 0.0, "R")
        writer.write(encode_bin((6, 8), 1, encode_bin_direct_output(rest)))
        writer.write(encode_bin((4, 7), 1, length=0))
        frames = []
        while len(frames) < 2:
            frames += splitter.feed(await reader.read(4096))
        assert frames[0].function == (6, 8)
        assert struct.unpack("<H", frames[0].data) == (0,)
        state = decode_bin_state(frames[1])
        assert (state.channel, state.stat, state.rf1, state.current_a) == (1, 2, 4, 0.0)
        writer.close()
        await writer.wait_closed()


async def test_voltages_and_currents_of_many_channels_in_few_requests(clock: VirtualClock) -> None:
    # (4, 2)/(4, 3): up to 128 channels per request; 130 channels take two each.
    sim = MaccorSimulator(clock, channels=130)
    async with sim.serve() as (host, port, _), MaccorClient(host, port, timeout_s=5) as client:
        await client.start_direct(129, CHARGE)
        await clock.advance(10.0)
        voltages = await client.voltages()
        currents = await client.currents()
        assert len(voltages) == len(currents) == 130
        assert (sim.calls["(4, 2)"], sim.calls["(4, 3)"]) == (2, 2)
        assert currents[129] == pytest.approx(0.0004)
        assert currents[:129] == [0.0] * 129
        assert voltages[129] == pytest.approx(sim.state(129).voltage_v)
        assert await client.voltages(128, 2) == voltages[128:]
