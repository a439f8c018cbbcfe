"""`cellguard simulate modbus` answers pymodbus' own client, as a separate process."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pymodbus.client import ModbusTcpClient


@pytest.fixture
def simulator() -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cellguard.daemon.cli",
            "simulate",
            "modbus",
            "--port",
            "0",
            "--speed",
            "600",
            "--seed",
            "2",
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
    port = int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
    banner = line
    for _ in range(3 + 9 + 2 + 2):  # three "device id" headers and their registers
        banner += proc.stdout.readline()
    try:
        yield proc, port, banner
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_pymodbus_client_reads_and_drives_the_simulated_instruments(
    simulator: tuple[subprocess.Popen[str], int, str],
) -> None:
    proc, port, banner = simulator
    assert "device id 1: cycler" in banner
    assert "device id 2: temperature chamber" in banner
    assert "device id 3: stack-pressure cell" in banner
    assert "set_current_a" in banner

    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    try:
        holding = client.read_holding_registers(1, count=9, device_id=1).registers
        assert holding[0] == 1  # constant-current mode
        assert struct.unpack(">f", struct.pack(">2H", *holding[5:7]))[0] == 5.0  # compliance V
        assert client.read_holding_registers(1, count=1, device_id=2).registers == [250]

        # 0.4 mA as float32 mA, output on; the cell answers with a positive voltage.
        current = struct.unpack(">2H", struct.pack(">f", 0.4))
        assert not client.write_registers(2, list(current), device_id=1).isError()
        assert not client.write_coil(1, True, device_id=1).isError()
        measured = client.read_input_registers(1, count=4, device_id=1).registers
        while measured[0] == 0 and measured[1] == 0:  # until the physics has stepped
            measured = client.read_input_registers(1, count=4, device_id=1).registers
        voltage_uv = struct.unpack(">i", struct.pack(">2H", measured[1], measured[0]))[0]
        assert voltage_uv > 0
        assert struct.unpack(">f", struct.pack(">2H", *measured[2:4]))[0] == pytest.approx(0.4)

        refused = client.read_holding_registers(100, count=1, device_id=1)
        assert refused.isError()  # an address that does not exist
    finally:
        client.close()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0  # a clean shutdown on SIGTERM


def test_simulate_modbus_needs_a_port_or_a_serial_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "modbus"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "--port" in out.stderr
    assert "--serial" in out.stderr


def test_simulate_modbus_reports_a_port_in_use_clearly(
    simulator: tuple[subprocess.Popen[str], int, str],
) -> None:
    _, port, _ = simulator
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "modbus", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert f"port: cannot listen on 127.0.0.1:{port}" in out.stderr
