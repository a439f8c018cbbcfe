"""`cellguard check --connect` on an Arbin (the CTI login) and a Maccor (MacNet general
information): each configured channel, read only, against `cellguard simulate` in its
own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from present_value_kinds import KINDS, Kind

CLI = [sys.executable, "-m", "cellguard.daemon.cli"]


@pytest.fixture(params=KINDS, ids=str)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Kind, int]]:
    kind: Kind = request.param
    proc = subprocess.Popen(
        [*CLI, "simulate", kind.driver, "--port", "0", *kind.simulate_args, "--channels", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server has bound its port(s)
    try:
        if " on " not in line:
            pytest.fail(f"simulator did not start: {line!r}")
        yield kind, kind.banner_port(line)
    finally:
        proc.kill()
        proc.communicate()


def _config(tmp_path: Path, kind: Kind, port: int, *channels: str) -> Path:
    name = f"{kind.driver}-a"
    text = (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[instruments]]\nname = "{name}"\ndriver = "{kind.driver}"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = 1.0\n{kind.check_keys}"
    )
    for channel in channels:
        text += (
            f'[[channels]]\ninstrument = "{name}"\nchannel = "{channel}"\nmode = "monitor"\n'
            'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }\n'
        )
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def _check(
    tmp_path: Path, kind: Kind, port: int, *channels: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "check", str(_config(tmp_path, kind, port, *channels)), "--connect"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_connect_reaches_the_cycler_and_finds_each_channel(
    tmp_path: Path, served: tuple[Kind, int]
) -> None:
    kind, port = served
    out = _check(tmp_path, kind, port, "1", "4")
    assert out.returncode == 0, out.stderr
    assert f"{kind.title} at 127.0.0.1:{port} {kind.check_answer}" in out.stdout
    for index, channel in enumerate(("1", "4")):
        assert (
            f"channels[{index}].channel: {kind.driver}-a {channel}: present, {kind.idle_status}"
            in out.stdout
        )


def test_connect_refuses_a_channel_the_cycler_lacks(
    tmp_path: Path, served: tuple[Kind, int]
) -> None:
    kind, port = served
    out = _check(tmp_path, kind, port, "2", "9")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"cellguard: error: channels[1].channel: {kind.driver}-a has no channel 9 (it has 1..4)"
    ]
