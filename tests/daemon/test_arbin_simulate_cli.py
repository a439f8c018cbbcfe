"""`cellguard simulate arbin` serves any CTI client: pycti-arbin, logging in with the
--username/--password given (and refusing others), loopback by default."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyctiarbin import ChannelInterface

from cellguard.drivers.arbin import ArbinClient
from cellguard.drivers.errors import CommandRefused

ARGS = ["--port", "0", "--channels", "4", "--username", "lab", "--password", "s3cret"]


@pytest.fixture
def simulator() -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "arbin", *ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server has bound its port
    if " on " not in line:
        proc.kill()
        pytest.fail(f"simulator did not start: {line!r} {proc.communicate()[1]}")
    host, port = line.split(" on ")[1].split(",")[0].rsplit(":", 1)
    try:
        yield proc, host, int(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> str:
    monkeypatch.setenv("ARBIN_CTI_USERNAME", "")
    monkeypatch.setenv("ARBIN_CTI_PASSWORD", "")
    path = tmp_path / f"{user}.env"
    path.write_text(f"ARBIN_CTI_USERNAME='{user}'\nARBIN_CTI_PASSWORD='{password}'\n")
    return str(path)


def test_pycti_arbin_logs_in_starts_and_stops_on_the_simulator(
    simulator: tuple[subprocess.Popen[str], str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc, host, port = simulator
    assert host == "127.0.0.1"  # loopback unless --host says otherwise
    config = {
        "ip_address": host,
        "port": port,
        "channel": 2,
        "test_name": "cli-test",
        "schedule_name": "cellguard-plating.sdx",
    }
    channel = ChannelInterface(config, env_path=_env(tmp_path, monkeypatch, "lab", "s3cret"))
    try:
        assert channel.get_num_channels() == 4
        assert channel.start_test()
        assert channel.read_channel_status()["status"] == "Charge"
        assert channel.stop_test()
        assert channel.read_channel_status()["status"] == "Idle"
    finally:
        channel._CyclerInterface__sock.close()  # type: ignore[attr-defined]
    # A wrong password is refused, with a reply that says so.
    client = ArbinClient(host, port, username="lab", password="nope", timeout_s=5.0)
    with pytest.raises(CommandRefused, match="refused"):
        asyncio.run(client.connect())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
