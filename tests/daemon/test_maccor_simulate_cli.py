"""`cellguard simulate maccor` serves any MacNet client on its two ports: pymacnet, over
JSON and binary, loopback by default; SIGTERM ends it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pymacnet import ChannelInterface

ARGS = ["--port", "0", "--bin-port", "0", "--channels", "4", "--speed", "1"]


@pytest.fixture
def simulator() -> Iterator[tuple[subprocess.Popen[str], str, int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "maccor", *ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until both ports are bound
    if " on " not in line:
        proc.kill()
        pytest.fail(f"simulator did not start: {line!r} {proc.communicate()[1]}")
    # "Simulated Maccor tester (MacNet) on 127.0.0.1: JSON 41234, binary 41235, ..."
    host = line.split(" on ")[1].split(":")[0]
    port = int(line.split(" JSON ")[1].split(",")[0])
    bin_port = int(line.split(" binary ")[1].split(",")[0])
    try:
        yield proc, host, port, bin_port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_pymacnet_starts_and_resets_a_channel_on_the_simulator(
    simulator: tuple[subprocess.Popen[str], str, int, int],
) -> None:
    proc, host, port, bin_port = simulator
    assert host == "127.0.0.1"  # loopback unless --host says otherwise
    assert port != bin_port
    channel = ChannelInterface(
        {
            "server_ip": host,
            "json_msg_port": port,
            "bin_msg_port": bin_port,
            "msg_buffer_size_bytes": 4096,
            "channel": 2,
            "test_name": "cli-test",
            "test_procedure": "cellguard-plating",
            "c_rate_ah": 0.001,
            "v_max_safety_limit_v": 4.5,
            "v_min_safety_limit_v": -1.0,
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
    )
    try:
        assert channel.get_num_channels() == 4
        assert channel.start_test_with_procedure()
        assert channel.read_channel_status()["Stat"] == 2  # Active
        assert channel.reset_channel()
        assert channel.read_channel_status()["Stat"] == 0  # Available
    finally:
        for name in ("json", "bin"):
            getattr(channel, f"_CyclerInterface__{name}_msg_socket").close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
