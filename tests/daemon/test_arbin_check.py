"""`cellguard check --connect` on an Arbin: the CTI login and each configured channel,
read only, against `cellguard simulate arbin` in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "cellguard.daemon.cli"]


@pytest.fixture
def arbin_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [*CLI, "simulate", "arbin", "--port", "0", "--channels", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        if " on " not in line:
            pytest.fail(f"simulator did not start: {line!r}")
        yield int(line.split(" on ")[1].split(",")[0].rsplit(":", 1)[1])
    finally:
        proc.kill()
        proc.communicate()


def _config(tmp_path: Path, port: int, *channels: str) -> Path:
    text = (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[instruments]]\nname = "arbin-a"\ndriver = "arbin"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = 1.0\n"
        'username = "not a username"\npassword = "not a password"\n'
    )
    for channel in channels:
        text += (
            f'[[channels]]\ninstrument = "arbin-a"\nchannel = "{channel}"\nmode = "monitor"\n'
            'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }\n'
        )
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_connect_logs_in_and_finds_each_channel(tmp_path: Path, arbin_port: int) -> None:
    out = subprocess.run(
        [*CLI, "check", str(_config(tmp_path, arbin_port, "1", "4")), "--connect"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"Arbin CTI at 127.0.0.1:{arbin_port} answered: serial cellguard-sim, 4" in out.stdout
    assert "channels[0].channel: arbin-a 1: present, idle" in out.stdout
    assert "channels[1].channel: arbin-a 4: present, idle" in out.stdout


def test_connect_refuses_a_channel_the_cycler_lacks(tmp_path: Path, arbin_port: int) -> None:
    out = subprocess.run(
        [*CLI, "check", str(_config(tmp_path, arbin_port, "2", "9")), "--connect"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "cellguard: error: channels[1].channel: arbin-a has no channel 9 (it has 1..4)"
    ]
