"""Interop with someone else's MacNet code, over real sockets, both ways.

* pymacnet's CyclerInterface and ChannelInterface (BattGenie's client, written from
  Maccor's MacNet help) drive our simulated tester, JSON port and binary port. Every
  call is counted; the goal is all of them working.
* Our client drives pymacnet's MaccorSpoofer (its stand-in for MacTest32).
"""

from __future__ import annotations

import asyncio
import copy
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pymacnet.messages
import pytest
from pymacnet import ChannelInterface, CyclerInterface
from pymacnet.maccorspoofer import MaccorSpoofer

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.errors import InstrumentConnectionError, ProtocolViolation
from cellguard.drivers.maccor import (
    BinaryReplySplitter,
    MaccorClient,
    MaccorSimulator,
    SafetyLimits,
    decode_bin_reply,
    decode_bin_result,
)
from cellguard.drivers.maccor._messages import DIRECT_OUTPUT_RESULTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(port: int, bin_port: int, channel: int) -> dict[str, Any]:
    return {
        "server_ip": "127.0.0.1",
        "json_msg_port": port,
        "bin_msg_port": bin_port,
        "msg_buffer_size_bytes": 4096,
        "channel": channel,  # 1-based, as pymacnet counts
        "test_name": "pymacnet-run",
        "test_procedure": "cellguard-cycling",
        "c_rate_ah": 0.001,
        "v_max_safety_limit_v": 4.5,
        "v_min_safety_limit_v": -1.0,  # a Li|Li cell discharges below 0 V
        "i_max_safety_limit_a": 0.005,
        "i_min_safety_limit_a": 0.005,
        "power_safety_limit_chg_w": 1.0,
        "power_safety_limit_dsg_w": 1.0,
        "v_max_v": 4.4,
        "v_min_v": -1.0,
        "data_record_time_s": 1.0,
        "data_record_voltage_delta_vbys": 0,
        "data_record_current_delta_abys": 0,
    }


async def test_pymacnet_drives_our_simulated_tester() -> None:
    clock = VirtualClock()
    sim = MaccorSimulator(clock, channels=4)
    results: dict[str, bool] = {}

    async with sim.serve() as (_, port, bin_port):

        async def call(name: str, fn: Callable[[], Any], ok: Callable[[Any], bool]) -> Any:
            value = await asyncio.to_thread(fn)
            results[name] = bool(ok(value))
            await clock.advance(1.0)  # MacNet wants >= 100 ms between direct outputs
            return value

        cycler = await asyncio.to_thread(CyclerInterface, _config(port, bin_port, 2))
        results["CyclerInterface()"] = cycler.get_num_channels() == 4
        await call("read_system_info", cycler.read_system_info, lambda r: r["APIVersion"] == 1)
        await call("read_general_info", cycler.read_general_info, lambda r: r["TestChannels"] == 4)
        await call(
            "read_channel_status",
            lambda: cycler.read_channel_status(2),
            lambda r: r["Chan"] == 2 and r["Stat"] == 0,
        )
        # pymacnet's template is the help's layout with Chan 0, and its JSON path then
        # subtracts 1 from every Chan (its channels are 1-based): it asks (4, 1) with
        # Chan -1, Len 4. The help, (4, 1): "The status of "Len" channels starting from
        # "Chan" will be returned", "Chan WORD Test channel. 0-based." -- no channel -1
        # exists (a WORD cannot even hold it), so the tester refuses with one of the
        # JSON errors the help lists, "Illegal value"; pymacnet then indexes "result".
        await call("read_all_channel_statuses", _safe(cycler.read_all_channel_statuses), _ok_list)
        request = copy.deepcopy(pymacnet.messages.tx_channel_status_multiple_channels)
        request["params"]["Len"] = 4  # what read_all_channel_statuses sends, byte for byte
        refusal = await asyncio.to_thread(cycler._send_receive_json_msg, request)
        assert request["params"]["Chan"] == -1
        assert "result" not in refusal
        assert refusal["error"]["message"] == "Illegal value"
        assert "Chan: no channel -1" in refusal["error"]["data"]

        channel = await asyncio.to_thread(ChannelInterface, _config(port, bin_port, 2))
        await call("ch.read_channel_status", channel.read_channel_status, lambda r: r["Chan"] == 2)
        await call("ch.read_aux", channel.read_aux, lambda r: r == [25.0])
        await call("ch.set_channel_variable", lambda: channel.set_channel_variable(3, 2.5), bool)
        assert sim.channels[1].variables == {3: 2.5}
        await call("ch.start_test_with_procedure", channel.start_test_with_procedure, bool)
        assert sim.channels[1].procedure == "cellguard-cycling"
        assert sim.channels[1].safety == SafetyLimits(4.5, -1.0, 0.005, 0.005, 1.0, 1.0)
        await call("ch.reset_channel", channel.reset_channel, bool)
        await call(
            "ch.start_test_with_direct_control", channel.start_test_with_direct_control, bool
        )
        await call(
            "ch.set_direct_mode_output(+I)", lambda: channel.set_direct_mode_output(0.0004), bool
        )
        assert sim.state(1).current_a == pytest.approx(0.0004)
        await call(
            "ch.set_direct_mode_output(-I)", lambda: channel.set_direct_mode_output(-0.0002), bool
        )
        assert sim.state(1).current_a == pytest.approx(-0.0002)
        # Rest goes over the binary port, where pymacnet adds 1 to its already 1-based
        # channel: its channel 2 goes out as Chan 3. The help, (6, 8) on the binary
        # port: "Chan WORD Test channel. 0-based." (and of every frame: "This structure
        # is the same for messages sent to the Maccor program and well as the
        # replies"), so Chan 3 is the fourth channel, which runs no test: the tester
        # answers Result 2, "The channel is not active" (the help's (6, 8) table).
        # pymacnet only checks that a reply came and says True; the count here is of
        # the effect.
        tap = _RecordingSocket(channel, "bin")
        rest = await call(
            "ch.set_direct_mode_output(0)",
            lambda: channel.set_direct_mode_output(0),
            lambda ok: ok and sim.state(1).current_a == 0.0,
        )
        assert rest is True
        assert sim.calls["bin(6, 8)"] == 1
        assert sim.state(1).current_a == pytest.approx(-0.0002)
        (answer,) = BinaryReplySplitter().feed(tap.received)
        reply = decode_bin_reply(answer)
        assert (reply.function, reply.chan, decode_bin_result(reply)) == ((6, 8), 3, 2)
        assert DIRECT_OUTPUT_RESULTS[2] == "The channel is not active"
        _close(cycler)
        _close(channel)

    working = sorted(name for name, ok in results.items() if ok)
    failing = sorted(name for name, ok in results.items() if not ok)
    assert len(results) == 14
    # 12 of 14 do what they ask; the two that do not are pymacnet's own channel
    # arithmetic against the help (see above), answered as the help says a tester does.
    assert failing == ["ch.set_direct_mode_output(0)", "read_all_channel_statuses"], (
        working,
        failing,
    )


class _RecordingSocket:
    """Stands in for one of pymacnet's sockets and keeps what the tester sent back
    (pymacnet reads the binary reply and drops it)."""

    def __init__(self, interface: CyclerInterface, name: str) -> None:
        attribute = f"_CyclerInterface__{name}_msg_socket"
        self._socket: socket.socket = getattr(interface, attribute)
        self.received = b""
        setattr(interface, attribute, self)

    def send(self, data: bytes) -> int:
        return self._socket.send(data)

    def recv(self, size: int) -> bytes:
        data = self._socket.recv(size)
        self.received += data
        return data

    def close(self) -> None:
        self._socket.close()


def _close(interface: CyclerInterface) -> None:
    """pymacnet has no close(): its two sockets are closed here."""
    for name in ("json", "bin"):
        getattr(interface, f"_CyclerInterface__{name}_msg_socket").close()


def _safe(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        try:
            return fn()
        except (KeyError, TypeError) as err:  # pymacnet indexes an error reply's "result"
            return err

    return run


def _ok_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4


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


async def _connect(port: int) -> MaccorClient:
    """Polled (with a bound): the spoofer's threads listen shortly after start()."""
    client = MaccorClient("127.0.0.1", port, timeout_s=5)
    for _ in range(500):
        try:
            await client.connect()
        except InstrumentConnectionError:
            await asyncio.sleep(0.01)
        else:
            return client
    raise AssertionError("MaccorSpoofer did not listen within 5 s")


async def test_our_client_drives_pymacnets_spoofer(spoofer: tuple[int, int]) -> None:
    port, _ = spoofer
    client = await _connect(port)
    try:
        assert client.channel_count == 8
        state = await client.state(3)
        assert (state.channel, state.voltage_v, state.status) == (3, 3.85, "Available")
        assert await client.aux_values(3) == [24.75]
        limits = SafetyLimits(4.5, 2.5, 4.3, 2.5, 25.0, 25.0)
        assert await client.set_safety(3, limits) == limits
        await client.set_variable(3, 1, 0.5)
        await client.start_test(3, "proc")
        await client.reset(3)
        assert (await client.system_info())["APIVersion"] == 1
        # The spoofer does not implement suspend: it answers {"err": 1}, not JSON-RPC.
        with pytest.raises(ProtocolViolation, match="jsonrpc"):
            await client.suspend(3)
    finally:
        await client.aclose()
