"""`cellguard check CONFIG [--connect]`: the real CLI against real simulator processes.

Without --connect the config is judged as `run` judges it and nothing is started or
created; with --connect each instrument is asked, read-only, over its real transport
(TCP for the BTS API and Modbus, a socat pty for the source-meter).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "cellguard.daemon.cli"]


def cellguard(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def bound_port(proc: subprocess.Popen[str]) -> int:
    """The port from the simulator's first line ("... on HOST:PORT, ..." or "... PORT ...")."""
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the port is bound
    if " on " not in line:
        stop(proc)
        pytest.fail(f"simulator did not start: {line!r}")
    where = line.split(" on ")[1].split()[0].rstrip(",")
    return int(where.rsplit(":", 1)[1])


@pytest.fixture
def neware_port() -> Iterator[int]:
    proc = start("neware", "--port", "0", "--units", "1", "--speed", "60")
    try:
        yield bound_port(proc)
    finally:
        stop(proc)


@pytest.fixture
def modbus_port() -> Iterator[int]:
    proc = start("modbus", "--port", "0", "--speed", "60")
    try:
        yield bound_port(proc)
    finally:
        stop(proc)


@pytest.fixture
def smu_port(tmp_path: Path) -> Iterator[str]:
    """The host end of a socat pty pair with `cellguard simulate smu` on the other."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is required (apt-get install -y socat)")
    host, instrument = tmp_path / "host-tty", tmp_path / "instrument-tty"
    relay = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={host}", f"pty,raw,echo=0,link={instrument}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert relay.stderr is not None
    for line in relay.stderr:  # ready once socat relays
        if "starting data transfer loop" in line:
            break
    smu = start("smu", "--serial", str(instrument), "--speed", "60")
    try:
        assert smu.stdout is not None
        assert "2400" in smu.stdout.readline()  # printed once the port is open
        yield str(host)
    finally:
        stop(smu)
        relay.terminate()
        relay.communicate(timeout=10)


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def neware_config(port: int, *channels: str) -> str:
    text = f"""
[daemon]
state_dir = "state"

[[instruments]]
name = "ct-sim"
driver = "neware"
host = "127.0.0.1"
port = {port}
poll_interval_s = 1.0
timeout_s = 5.0
"""
    for channel in channels:
        text += f"""
[[channels]]
instrument = "ct-sim"
channel = "{channel}"
mode = "monitor"
cell = {{ type = "symmetric", diameter_mm = 10, thick_li_um = 100 }}
"""
    return text


def write(folder: Path, text: str, name: str = "cellguard.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- without --connect


def test_a_good_config_passes_and_nothing_is_created(tmp_path: Path) -> None:
    """check starts nothing: no state_dir, no lock, no store appear (run would make them)."""
    path = write(tmp_path, neware_config(free_port(), "1-1-3"))
    out = cellguard("check", str(path))
    assert out.returncode == 0, out.stderr
    assert "ok as `cellguard run` reads it" in out.stdout
    assert "1 instrument(s), 1 channel(s)" in out.stdout
    # The cell's diameter_mm (as in protocol files) is a 10 mm disc's area.
    assert "1-1-3 monitor symmetric 0.785398 cm² Li 100|100 µm" in out.stdout
    assert out.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cellguard.toml"]


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("diameter_mm = 10", "diameter_mm = -1", "channels[0].cell.diameter_mm"),
        ("poll_interval_s = 1.0", "poll_intervall_s = 1.0", "instruments[0].poll_intervall_s"),
        ('channel = "1-1-3"', 'channel = "1-1"', "channels[0].channel"),
        ("diameter_mm = 10", "diameter_mm = 10, area_cm2 = 0.785", "channels[0].cell.diameter_mm"),
    ],
)
def test_a_refused_key_exits_2_with_one_line_naming_it(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    text = neware_config(free_port(), "1-1-3")
    assert old in text
    path = write(tmp_path, text.replace(old, new))
    out = cellguard("check", str(path))
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"cellguard: error: {key}: ")


def test_what_run_would_warn_about_is_shown_and_still_passes(tmp_path: Path) -> None:
    text = neware_config(free_port(), "1-1-3") + (
        '\n[mqtt]\nhost = "127.0.0.1"\ntopic_prefix = "lab"\n'
        'username = "cellguard"\npassword = "written-inline"\n'
    )
    out = cellguard("check", str(write(tmp_path, text)))
    assert out.returncode == 0, out.stderr
    assert "warning: mqtt.password: the MQTT password is written inline" in out.stdout
    assert "written-inline" not in out.stdout


def test_a_state_dir_run_could_not_make_is_refused_as_run_refuses_it(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    text = neware_config(free_port(), "1-1-3").replace('"state"', '"a-file/state"')
    out = cellguard("check", str(write(tmp_path, text)))
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("cellguard: error: daemon.state_dir: ")


def test_a_secret_run_would_miss_is_refused_as_run_refuses_it(tmp_path: Path) -> None:
    text = neware_config(free_port(), "1-1-3") + (
        '\n[mqtt]\nhost = "127.0.0.1"\ntopic_prefix = "lab"\n'
        'username = "cellguard"\npassword_file = "no-such-file"\n'
    )
    out = cellguard("check", str(write(tmp_path, text)))
    assert out.returncode == 2
    assert out.stderr.startswith("cellguard: error: mqtt.password_file: cannot read ")
    assert len(out.stderr.splitlines()) == 1


# ---------------------------------------------------------------- --connect


def test_connect_asks_the_bts_server_for_the_channels(tmp_path: Path, neware_port: int) -> None:
    path = write(tmp_path, neware_config(neware_port, "1-1-3", "1-1-8"))
    out = cellguard("check", str(path), "--connect")
    assert out.returncode == 0, out.stderr
    assert f"BTS server at 127.0.0.1:{neware_port} answered: 8 channel(s)" in out.stdout
    assert "channels[0].channel: ct-sim 1-1-3: present" in out.stdout
    assert "channels[1].channel: ct-sim 1-1-8: present" in out.stdout


def test_connect_refuses_a_channel_the_server_does_not_have(
    tmp_path: Path, neware_port: int
) -> None:
    path = write(tmp_path, neware_config(neware_port, "1-1-3", "1-2-1"))
    out = cellguard("check", str(path), "--connect")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "cellguard: error: channels[1].channel: ct-sim has no channel 1-2-1 (it has 1-1-1 .. 1-1-8)"
    ]


def test_an_unreachable_instrument_is_one_line_and_exit_4(tmp_path: Path) -> None:
    port = free_port()
    out = cellguard("check", str(write(tmp_path, neware_config(port, "1-1-3"))), "--connect")
    assert out.returncode == 4
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("cellguard: error: instruments[0]: ct-sim cannot be reached: ")
    assert f"127.0.0.1:{port}" in lines[0]


def test_connect_reads_modbus_identity_and_registers(tmp_path: Path, modbus_port: int) -> None:
    text = f"""
[daemon]
state_dir = "state"

[[instruments]]
name = "supply"
driver = "modbus"
host = "127.0.0.1"
port = {modbus_port}
device_id = 1
register_map = "cellguard-sim-cycler"
current_range_a = 0.01
voltage_range_v = 5.0

[[instruments]]
name = "chamber"
driver = "modbus-aux"
host = "127.0.0.1"
port = {modbus_port}
device_id = 2
register_map = "cellguard-sim-chamber"

[[channels]]
instrument = "supply"
channel = "1"
mode = "run"
cell = {{ type = "asymmetric", diameter_mm = 10, thick_li_um = 100, thin_li_um = 20 }}
protocol_file = "asymmetric-0.5-0.5"
aux = ["chamber"]
"""
    out = cellguard("check", str(write(tmp_path, text)), "--connect")
    assert out.returncode == 0, out.stderr
    assert "range 10 mA, 5 V" in out.stdout
    assert "channels[0].protocol_file: 'asymmetric 0.5/0.5' fits" in out.stdout
    assert f"chamber: Modbus device 2 at 127.0.0.1:{modbus_port}: " in out.stdout
    assert "chamber_temperature_c = 25" in out.stdout


def test_a_modbus_device_id_the_server_refuses_is_one_line_and_exit_2(
    tmp_path: Path, modbus_port: int
) -> None:
    """The link is up but the unit id is answered with a Modbus exception: the config's
    device_id is wrong (or the device is broken), not the network."""
    text = f"""
[daemon]
state_dir = "state"

[[instruments]]
name = "chamber"
driver = "modbus-aux"
host = "127.0.0.1"
port = {modbus_port}
device_id = 9
register_map = "cellguard-sim-chamber"
timeout_s = 1.0
"""
    out = cellguard("check", str(write(tmp_path, text)), "--connect")
    assert out.returncode == 2, out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("cellguard: error: instruments[0]: chamber (modbus-aux at ")
    assert "refused" in lines[0]


SMU_CONFIG = """
[daemon]
state_dir = "state"

[[instruments]]
name = "smu-1"
driver = "smu"
serial_port = "{port}"
timeout_s = 5.0

[[channels]]
instrument = "smu-1"
channel = "1"
mode = "run"
cell = {{ type = "{cell}", diameter_mm = 10, thick_li_um = 100{thin} }}
protocol_file = "{protocol}"
"""

BIG_CURRENT = """
[cell]
type = "symmetric"
diameter_mm = 10
thick_li_um = 100

[protocol]
name = "1.5 A pulses"
record_every = "1 s"
steps = ["Strip at 1.5 A for 1 s", "Plate at 1.5 A for 1 s"]
"""


def test_connect_identifies_the_source_meter_and_checks_the_protocol_fits(
    tmp_path: Path, smu_port: str
) -> None:
    text = SMU_CONFIG.format(
        port=smu_port, cell="asymmetric", thin=", thin_li_um = 20", protocol="asymmetric-0.5-0.5"
    )
    path = write(tmp_path, text)
    out = cellguard("check", str(path), "--connect")
    assert out.returncode == 0, out.stderr
    assert "2400" in out.stdout
    assert "range 1050 mA, 21 V" in out.stdout


def test_connect_refuses_a_protocol_beyond_the_source_meter_range(
    tmp_path: Path, smu_port: str
) -> None:
    write(tmp_path, BIG_CURRENT, "pulses.toml")
    text = SMU_CONFIG.format(port=smu_port, cell="symmetric", thin="", protocol="pulses.toml")
    path = write(tmp_path, text)
    assert cellguard("check", str(path)).returncode == 0  # the range is the instrument's
    out = cellguard("check", str(path), "--connect")
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("cellguard: error: channels[0].protocol_file: ")
    assert "1050" in lines[0] or "1.05" in lines[0]


def test_a_protocol_file_that_is_neither_a_file_nor_an_example_names_both(
    tmp_path: Path,
) -> None:
    text = SMU_CONFIG.format(port="/dev/null", cell="symmetric", thin="", protocol="soak-60C")
    out = cellguard("check", str(write(tmp_path, text)))
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("cellguard: error: channels[0].protocol_file: no file ")
    assert str(tmp_path / "soak-60C") in lines[0]
    assert "symmetric-60C-soak" in lines[0]
