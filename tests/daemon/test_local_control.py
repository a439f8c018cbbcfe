"""``cellguard protocol start`` without MQTT, and with the broker down (issue 17 item 4).

The real CLI in a subprocess talks to a daemon running here (a simulated CT-4008 over
TCP, virtual time) through the local control socket in its state_dir; a broker that is
down is one line on stderr, not a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from shared import EXAMPLE_PROTOCOL

from cellguard.daemon.config import parse_config
from cellguard.daemon.control import control_socket_path
from cellguard.daemon.service import started_daemon
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec

INSTRUMENT = "ct4008-lc"
CHANNEL = ChannelId(1, 1, 2)
POLL_S = 60.0
NOBODY_UID = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's; the probe needs only the standard library


def _config(state_dir: Path, port: int, mqtt_port: int | None = None) -> str:
    text = f'[daemon]\nstate_dir = "{state_dir}"\n\n'
    if mqtt_port is not None:
        text += (
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "cellguard/lc"\n'
            'username = "cellguard"\npassword = "pw"\n\n'
        )
    return text + (
        f'[[instruments]]\nname = "{INSTRUMENT}"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = {POLL_S}\n\n"
        f'[[channels]]\ninstrument = "{INSTRUMENT}"\nchannel = "{CHANNEL}"\nmode = "monitor"\n'
        'cell = { type = "asymmetric", area_cm2 = 0.785, thick_li_um = 100, thin_li_um = 20 }\n'
    )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cellguard.daemon.cli", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder other users may pass through (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="cg-lc-", dir="/tmp"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=True)


async def test_protocol_start_reaches_a_daemon_without_mqtt(tmp_path: Path) -> None:
    script = tmp_path / "asym.toml"
    script.write_text(EXAMPLE_PROTOCOL)
    clock = VirtualClock()
    cells = {CHANNEL: CellSlot(SimCellSpec("SEI", li_working_um=20.0, never_short=True))}
    sim = NewareSimulator(clock, cells=cells, seed=2, epoch=datetime(2026, 4, 1, 9))
    async with sim.serve() as (_, port):
        text = _config(tmp_path / "state", port)
        config_path = tmp_path / "cellguard.toml"
        config_path.write_text(text)
        async with started_daemon(parse_config(text), clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            async with asyncio.timeout(10):
                await daemon.control_ready.wait()
            folder = control_socket_path(tmp_path / "state").parent
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            assert stat.S_IMODE(control_socket_path(tmp_path / "state").stat().st_mode) == 0o600
            proc = await asyncio.create_subprocess_exec(
                *_cli("protocol", "start", str(config_path), INSTRUMENT, str(CHANNEL), str(script)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            waiting = asyncio.create_task(proc.communicate())
            async with asyncio.timeout(60):
                while not waiting.done():
                    await clock.advance(POLL_S)  # the daemon answers at its next poll
                    await asyncio.wait({waiting}, timeout=0.02)
            out, err = await waiting
            for _ in range(30):
                await clock.advance(POLL_S)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"{INSTRUMENT} {CHANNEL}: started 'asymmetric 0.5/0.5'"
    channel = sim.channels[CHANNEL]
    assert channel.workstatus == "working"
    assert channel.inquire().step_type == "cc"  # the script: 10 min rest, then a strip


def test_protocol_start_with_the_broker_down_says_one_line(tmp_path: Path) -> None:
    script = tmp_path / "asym.toml"
    script.write_text(EXAMPLE_PROTOCOL)
    config_path = tmp_path / "cellguard.toml"
    config_path.write_text(_config(tmp_path / "state", 502, mqtt_port=_free_port()))
    done = subprocess.run(
        _cli("protocol", "start", str(config_path), INSTRUMENT, str(CHANNEL), str(script)),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CELLGUARD_OPERATOR_PASSWORD": "x"},
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "MQTT broker at 127.0.0.1" in lines[0]
    assert "--via local" in lines[0]


def test_protocol_start_with_no_daemon_running_says_one_line(tmp_path: Path) -> None:
    script = tmp_path / "asym.toml"
    script.write_text(EXAMPLE_PROTOCOL)
    config_path = tmp_path / "cellguard.toml"
    config_path.write_text(_config(tmp_path / "state", 502))
    done = subprocess.run(
        _cli("protocol", "start", str(config_path), INSTRUMENT, str(CHANNEL), str(script)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no cellguard daemon serves" in lines[0]
    assert "is it running?" in lines[0]


async def test_another_user_is_refused_even_if_the_folder_is_opened_by_mistake(
    open_dir: Path,
) -> None:
    """The kernel says who connected: a command from another account is answered with a
    refusal and never executed, whatever the permissions of the folder."""
    clock = VirtualClock()
    sim = NewareSimulator(clock, seed=2, epoch=datetime(2026, 4, 1, 9))
    async with sim.serve() as (_, port):
        state_dir = open_dir / "state"
        async with started_daemon(parse_config(_config(state_dir, port)), clock=clock) as daemon:
            async with asyncio.timeout(10):
                await daemon.control_ready.wait()
            path = control_socket_path(state_dir)
            state_dir.chmod(0o755)
            path.parent.chmod(0o777)  # the mistake
            path.chmod(0o777)
            request = {
                "instrument": INSTRUMENT,
                "channel": str(CHANNEL),
                "action": "stop",
                "request_id": "r-nobody",
            }
            line = json.dumps(request).encode() + b"\n"
            probe = (
                "import socket\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                f"s.connect({str(path)!r})\n"
                f"s.sendall({line!r})\n"
                "print(s.makefile('rb').readline().decode(), end='')\n"
            )
            proc = await asyncio.create_subprocess_exec(
                SYSTEM_PYTHON,  # the venv's may live where the other user cannot reach
                "-c",
                probe,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                user=NOBODY_UID,
            )
            async with asyncio.timeout(30):
                out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    answer = json.loads(out)
    assert answer["ok"] is False
    assert "not the daemon's user" in answer["detail"]
    assert sim.channels[CHANNEL].workstatus == "finish"  # nothing was run on it
