"""Interop with someone else's CTI code, over real sockets, both ways.

* pycti-arbin's CyclerInterface and ChannelInterface (a client written by BattGenie
  from Arbin's documents) drive our simulated cycler: login, read channel status,
  assign a schedule, start, set a meta-variable, stop. Every call is counted; the
  goal is all of them working.
* Our client drives pycti-arbin's ArbinSpoofer (its stand-in for MITS Pro).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyctiarbin import ChannelInterface, CyclerInterface
from pyctiarbin.arbinspoofer import ArbinSpoofer

from cellguard.drivers.arbin import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    ArbinClient,
    ArbinSimulator,
    ChannelStatus,
)
from cellguard.drivers.clock import VirtualClock


@pytest.fixture
def env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pycti-arbin reads its login from a .env file into os.environ: restored after."""
    monkeypatch.setenv("ARBIN_CTI_USERNAME", "")
    monkeypatch.setenv("ARBIN_CTI_PASSWORD", "")
    path = tmp_path / ".env"
    path.write_text(
        f"ARBIN_CTI_USERNAME='{DEFAULT_USERNAME}'\nARBIN_CTI_PASSWORD='{DEFAULT_PASSWORD}'\n"
    )
    return path


def _their_session(port: int, env: Path) -> dict[str, Any]:
    """What a pycti-arbin user does, call by call (blocking sockets: run in a thread)."""
    results: dict[str, Any] = {}
    cycler = CyclerInterface({"ip_address": "127.0.0.1", "port": port}, env_path=str(env))
    results["cycler.login"] = cycler.get_login_feedback()["result"] == "success"
    results["cycler.num_channels"] = cycler.get_num_channels()
    status = cycler.read_channel_status(channel=3)  # 1-based, as pycti-arbin counts
    results["cycler.read_channel_status"] = status.get("channel") == 2
    channel = ChannelInterface(
        {
            "ip_address": "127.0.0.1",
            "port": port,
            "channel": 3,
            "test_name": "pycti-run",
            "schedule_name": "cellguard-cycling.sdx",
        },
        env_path=str(env),
    )
    results["channel.assign_schedule"] = channel.assign_schedule()
    results["channel.start_test"] = channel.start_test()  # assigns again, then starts
    running = channel.read_channel_status()
    results["channel.read_channel_status"] = running.get("status") == "Charge"
    results["status.test_name"] = running.get("testname")
    results["channel.set_meta_variable"] = channel.set_meta_variable(mv_num=5, mv_value=1.5)
    results["channel.stop_test"] = channel.stop_test()
    results["after_stop"] = channel.read_channel_status().get("status")
    # pycti-arbin never closes its socket (a warning, an error here): close it for it.
    for interface in (cycler, channel):
        interface._CyclerInterface__sock.close()  # type: ignore[attr-defined]
    return results


async def test_pycti_arbin_drives_our_simulator(env_file: Path) -> None:
    clock = VirtualClock()
    sim = ArbinSimulator(clock, channels=16)
    async with sim.serve() as (_, port):
        results = await asyncio.to_thread(_their_session, port, env_file)
    calls = [
        "cycler.login",
        "cycler.read_channel_status",
        "channel.assign_schedule",
        "channel.start_test",
        "channel.read_channel_status",
        "channel.set_meta_variable",
        "channel.stop_test",
    ]
    working = [c for c in calls if results[c] is True]
    assert working == calls, results  # 7 of 7 pycti-arbin calls work
    assert results["cycler.num_channels"] == 16
    assert results["status.test_name"] == "pycti-run"
    assert results["after_stop"] == "Idle"
    assert sim.channels[2].meta_variables == {105: 1.5}  # MV_UD5
    # Every message kind pycti-arbin has was served.
    assert set(sim.calls) == {
        "Login",
        "GetChannelsInfo",
        "AssignSchedule",
        "StartSchedule",
        "StopSchedule",
        "SetMetaVariable",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def spoofer() -> Iterator[int]:
    port = _free_port()
    spoof = ArbinSpoofer({"ip": "127.0.0.1", "port": port, "num_channels": 16})
    spoof.start()
    try:
        yield port
    finally:
        spoof.stop()


async def _connect_when_listening(client: ArbinClient) -> None:
    # The spoofer listens from a thread of its own: poll until it accepts (bounded).
    for _ in range(200):
        try:
            await client.connect()
        except OSError:
            await asyncio.sleep(0.01)
        except Exception as err:  # InstrumentConnectionError while it is not up yet
            if "cannot connect" not in str(err):
                raise
            await asyncio.sleep(0.01)
        else:
            return
    await client.connect()


async def test_our_client_drives_pycti_arbins_spoofer(spoofer: int) -> None:
    client = ArbinClient("127.0.0.1", spoofer, username="lab", password="pw", timeout_s=5.0)
    await _connect_when_listening(client)
    try:
        assert client.channel_count == 16
        reading = (await client.channels_info(4))[4]
        assert reading.status == ChannelStatus.IDLE
        assert reading.schedule == "fake_schedule"
        assert reading.test_name == "fake_testname"
        await client.assign_schedule(4, "Rest+207855.sdx")
        await client.start(4, "cg")
        await client.set_meta_variable(4, 16, 2.0)
        await client.stop(4)
        assert client.connected
    finally:
        await client.aclose()
