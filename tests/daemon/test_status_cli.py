"""`cellguard status`: local state only, every configured channel, the daemon's liveness.

The store is filled through the daemon's own Store and states (a host-driven channel's
state is saved as its HostState JSON, exactly as the running daemon saves it); the lock
is held by a real second process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellguard.daemon.cli import main
from cellguard.daemon.guard.links.host import HostState
from cellguard.daemon.store import ChannelState, Store

CONFIG = """
[daemon]
state_dir = "state"

[mqtt]
host = "127.0.0.1"
topic_prefix = "cellguard/lab1"
username_env = "CELLGUARD_TEST_UNSET_USER"
password_file = "/root-only/mqtt-password"

[[instruments]]
name = "ct4008-a"
driver = "neware"
host = "127.0.0.1"
port = 502
poll_interval_s = 1.0

[[instruments]]
name = "smu-1"
driver = "smu"
serial_port = "/dev/ttyUSB0"

[[channels]]
instrument = "ct4008-a"
channel = "21-1-3"
mode = "monitor"
cell = { type = "symmetric", diameter_mm = 10, thick_li_um = 100 }

[[channels]]
instrument = "ct4008-a"
channel = "21-1-4"
mode = "monitor"
cell = { type = "symmetric", diameter_mm = 10, thick_li_um = 100 }

[[channels]]
instrument = "smu-1"
channel = "1"
mode = "monitor"
cell = { type = "symmetric", diameter_mm = 10, thick_li_um = 100 }
"""

HOST_DETAIL = "started protocol 'symmetric 0.5/0.5'"


def _config(folder: Path) -> Path:
    path = folder / "cellguard.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


async def _save_states(state_dir: Path) -> None:
    """21-1-3 running (a Neware state), the SMU running (its JSON state); 21-1-4 never ran."""
    host = HostState(state="running", seq=12, test_start_unix_s=1.7e9, detail=HOST_DETAIL)
    host.position = {"step": 2, "repeat": 0}
    async with Store(state_dir) as store:
        await store.save_channel_state(
            ChannelState("ct4008-a", "21-1-3", "running", "7", 420, None, "started")
        )
        await store.save_channel_state(
            ChannelState("smu-1", "1", "running", "", 12, None, host.to_json())
        )


@pytest.fixture
def with_states(tmp_path: Path) -> Path:
    path = _config(tmp_path)
    asyncio.run(_save_states(tmp_path / "state"))
    return path


def _status(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["status", *args]) == 0
    return capsys.readouterr().out


def test_status_needs_no_secret(with_states: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unset *_env and an unreadable *_file, which `run` would refuse, do not stop it."""
    out = _status(capsys, str(with_states))
    assert "21-1-3" in out
    out = _status(capsys, str(with_states), "--watch", "--count", "1")
    assert "21-1-3" in out


def test_a_misspelt_key_still_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "cellguard.toml"
    path.write_text(CONFIG.replace("poll_interval_s", "poll_intervall_s"), encoding="utf-8")
    assert main(["status", str(path)]) == 2


@pytest.mark.parametrize("watch", [False, True], ids=["table", "watch"])
def test_idle_channels_are_listed(
    with_states: Path, capsys: pytest.CaptureFixture[str], watch: bool
) -> None:
    args = ["--watch", "--count", "1"] if watch else []
    out = _status(capsys, str(with_states), *args)
    idle = [line for line in out.splitlines() if "21-1-4" in line]
    assert len(idle) == 1, out
    assert " idle " in idle[0]


def test_host_driven_rows_are_text(with_states: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _status(capsys, str(with_states))
    assert "{" not in out, out
    assert "started protocol" in out
    assert "'symmetric 0.5/0.5'" in out


def test_no_daemon_is_stopped_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    for args in ([], ["--watch", "--count", "1"]):
        out = _status(capsys, str(path), *args)
        assert "daemon: stopped" in out
        assert out.count(" idle ") == 3, out
    assert not (tmp_path / "state").exists()


def test_status_with_states_and_no_daemon_says_stopped(
    with_states: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _status(capsys, str(with_states))
    assert out.splitlines()[0].startswith("daemon: stopped")


@pytest.fixture
def lock_holder(with_states: Path) -> Iterator[int]:
    """A second process holding the state_dir lock as `cellguard run` holds it."""
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from cellguard.daemon.instance_lock import state_dir_lock\n"
        "with state_dir_lock(Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.read()\n"  # held until the test closes stdin
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(with_states.parent / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    try:
        yield proc.pid
    finally:
        proc.communicate(timeout=10)


def test_a_running_daemon_is_named_by_its_pid(
    with_states: Path, lock_holder: int, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in ([], ["--watch", "--count", "1"]):
        out = _status(capsys, str(with_states), *args)
        assert f"daemon: running (PID {lock_holder})" in out
    # Asking did not take the lock from it, nor leave it taken.
    assert (with_states.parent / "state" / "cellguard.lock").read_text().strip() == str(lock_holder)


def test_a_lock_file_it_cannot_open_makes_the_daemon_unknown_not_stopped(
    with_states: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As for an operator's account without access to the daemon's lock (tests run as
    root, so a directory in the lock's place stands in for a permission error)."""
    (with_states.parent / "state" / "cellguard.lock").mkdir()
    out = _status(capsys, str(with_states))
    assert out.splitlines()[0].startswith("daemon: unknown (cannot open ")
