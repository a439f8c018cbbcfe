"""`cellguard check --connect` on a Maccor: MacNet general information and each configured channel,
read only, against `cellguard simulate maccor` in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "cellguard.daemon.cli"]


@pytest.fixture
def maccor_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [*CLI, "simulate", "maccor", "--port", "0", "--bin-port", "0", "--channels", "4"],
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
        yield int(line.split(" JSON ")[1].split(",")[0])
    finally:
        proc.kill()
        proc.communicate()


def _config(tmp_path: Path, port: int, *channels: str) -> Path:
    text = (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[instruments]]\nname = "maccor-a"\ndriver = "maccor"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = 1.0\n"
    )
    for channel in channels:
        text += (
            f'[[channels]]\ninstrument = "maccor-a"\nchannel = "{channel}"\nmode = "monitor"\n'
            'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }\n'
        )
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_connect_reads_the_tester_and_each_channel(tmp_path: Path, maccor_port: int) -> None:
    out = subprocess.run(
        [*CLI, "check", str(_config(tmp_path, maccor_port, "1", "4")), "--connect"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"Maccor MacNet at 127.0.0.1:{maccor_port} answered: cellguard-sim, 4" in out.stdout
    assert "channels[0].channel: maccor-a 1: present, Available" in out.stdout
    assert "channels[1].channel: maccor-a 4: present, Available" in out.stdout


def test_connect_refuses_a_channel_the_tester_lacks(tmp_path: Path, maccor_port: int) -> None:
    out = subprocess.run(
        [*CLI, "check", str(_config(tmp_path, maccor_port, "2", "9")), "--connect"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "cellguard: error: channels[1].channel: maccor-a has no channel 9 (it has 1..4)"
    ]
