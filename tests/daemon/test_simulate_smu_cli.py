"""`cellguard simulate smu` serves the SMU client over a real pty pair, as a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellguard.drivers.smu import SmuClient


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A socat pty pair ``(host_end, instrument_end)``; socat is killed at teardown."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is required (apt-get install -y socat)")
    host, instrument = tmp_path / "host-tty", tmp_path / "instrument-tty"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={host}", f"pty,raw,echo=0,link={instrument}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # ready once socat relays
        if "starting data transfer loop" in line:
            break
    try:
        yield str(host), str(instrument)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def start_simulator(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "smu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_the_cli_simulator_answers_the_client_over_a_pty(
    ptys: tuple[str, str],
) -> None:
    host, instrument = ptys
    proc = start_simulator("--serial", instrument, "--speed", "3600", "--seed", "2")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the port is open
        assert f"MODEL 2400 (SCPI) on {instrument}" in line, (line, proc.stderr)
        assert "cell SEI-symmetric" in line
        async with SmuClient(host, timeout_s=5.0) as client:
            assert client.info is not None
            assert client.info.model == "2400"
            await client.source_current(0.3927e-3, compliance_v=5.0)
            measured = await client.measure()
            assert measured.output_on
            assert measured.current_a == pytest.approx(0.3927e-3)
            assert 0 < measured.voltage_v < 0.1  # a Li|Li cell polarising, not a short
            await client.output_off()
            rest = await client.measure()
            assert not rest.output_on
            assert rest.current_a == 0.0
            assert rest.t_s > measured.t_s
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # a clean shutdown on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_port_that_cannot_be_opened_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tty"
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "smu", "--serial", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cellguard: error: cannot open the serial port")
    assert str(missing) in lines[0]


def test_bad_arguments_name_the_option() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellguard.daemon.cli",
            "simulate",
            "smu",
            "--serial",
            "x",
            "--cell",
            "LFP",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "--cell" in out.stderr
    assert "SEI-symmetric" in out.stderr
