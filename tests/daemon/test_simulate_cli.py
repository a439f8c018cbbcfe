"""`cellguard simulate neware` serves any BTS API client: one written by someone else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aurora_neware.neware import NewareAPI

from cellguard.protocols import Cell, GalvanostaticCycling, write_step_file


@pytest.fixture
def simulator() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cellguard.daemon.cli",
            "simulate",
            "neware",
            "--port",
            "0",
            "--units",
            "2",
            "--devid",
            "13",
            "--speed",
            "600",
            "--seed",
            "4",
        ],
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
    port = int(line.split(" on ")[1].split(",")[0].rsplit(":", 1)[1])
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_aurora_neware_client_connects_lists_inquires_starts_and_stops(
    simulator: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    proc, port = simulator
    step_file = write_step_file(
        tmp_path / "sym.xml",
        GalvanostaticCycling(Cell.symmetric(0.785), cycles=10).to_step_file(),
    )
    with NewareAPI("127.0.0.1", port) as api:
        channels = api.channel_map
        assert len(channels) == 16
        assert "13-1-1" in channels
        assert "13-2-8" in channels

        before = api.inquire(["13-2-5"])["13-2-5"]
        assert before["workstatus"] == "finish"

        started = api.start("13-2-5", "aurora-cell", str(step_file))
        assert started[0]["start"] == "ok"

        # The real server reports a wrong subdevid here; aurora maps by position.
        status = api.getchlstatus(["13-2-5"])
        assert status["13-2-5"]["status"] == "working"

        now = api.inquire(["13-2-5", "13-1-1"])
        assert now["13-2-5"]["workstatus"] == "working"
        assert now["13-2-5"]["barcode"] == "aurora-cell"
        assert now["13-2-5"]["step_type"] in ("cc", "dc")

        stopped = api.stop(["13-2-5"])
        assert stopped[0]["stop"] == "ok"
        assert api.inquire(["13-2-5"])["13-2-5"]["workstatus"] == "stop"

        again = api.stop(["13-2-5"])
        assert again[0]["stop"] == "false"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0  # a clean shutdown on SIGTERM


def test_simulate_reports_a_port_in_use_clearly(
    simulator: tuple[subprocess.Popen[str], int],
) -> None:
    _, port = simulator
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "neware", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert f"port: cannot listen on 127.0.0.1:{port}" in out.stderr


def test_simulate_rejects_bad_arguments_naming_the_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "neware", "--speed", "-3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "--speed" in out.stderr
    assert "must be > 0" in out.stderr
