"""Fault suite: what a lab PC does to the service (realworld.md, "Lab PCs").

Two copies started on one state_dir, two daemons sharing an MQTT topic prefix, a
damaged SQLite file, a state_dir that cannot be used or is deleted while running.
``cellguard run`` runs as real subprocesses against a simulated CT-4008 and a real
Mosquitto; the state_dir deletion runs in-process on virtual time.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import pytest
from faults import INSTRUMENT, PausableClock, daemon_config, spawn_daemon
from mqtt_broker import PASSWORDS, PREFIX, Broker

from cellguard.daemon.cli import EXIT_BAD_CONFIG, EXIT_RUNTIME_ERROR, EXIT_STATE_DIR_IN_USE
from cellguard.daemon.config import parse_config
from cellguard.daemon.influx import SPOOL_FILENAME
from cellguard.daemon.instance_lock import LOCK_FILENAME, StateDirInUse, StateDirLock
from cellguard.daemon.mqtt import OUTBOX_FILENAME
from cellguard.daemon.service import started_daemon
from cellguard.daemon.store import STORE_FILENAME, Store
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = (ChannelId(1, 1, 1), ChannelId(1, 1, 2))
WAIT_WALL_S = 30.0


def _simulator(clock: PausableClock | VirtualClock) -> NewareSimulator:
    cells = {c: CellSlot(SimCellSpec("SEI", never_short=True)) for c in CHANNELS}
    return NewareSimulator(clock, cells=cells, seed=3, epoch=datetime(2026, 5, 1, 8))


def _write_config(path: Path, state_dir: Path, port: int, extra: str = "") -> Path:
    path.write_text(
        daemon_config(
            str(state_dir),
            port,
            CHANNELS,
            poll_interval_s=0.5,
            download_interval_s=1.0,
            extra=extra,
        )
    )
    return path


async def _until(what: str, done: Callable[[], bool]) -> None:
    """Wait, bounded, for something another process does (no event to await there)."""
    give_up = time.monotonic() + WAIT_WALL_S
    while not done():
        if time.monotonic() > give_up:
            pytest.fail(f"not within {WAIT_WALL_S} s: {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _daemon(config: Path, log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await spawn_daemon(config, log_path)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), WAIT_WALL_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- one instance per state_dir ------------------------------------------------------------


async def test_a_second_daemon_on_the_same_state_dir_exits_at_once_naming_the_holder(
    tmp_path: Path,
) -> None:
    sim = _simulator(PausableClock(60.0))
    state_dir = tmp_path / "state"
    async with sim.serve() as (_, port):
        config = _write_config(tmp_path / "cellguard.toml", state_dir, port)
        async with _daemon(config, tmp_path / "first.log") as first:
            lock = state_dir / LOCK_FILENAME
            await _until(
                "the first daemon holds the lock",
                lambda: lock.exists() and bool(lock.read_text().strip()),
            )
            second = await asyncio.to_thread(_run_once, config)
            assert first.returncode is None  # the first one runs on
        assert first.returncode == 0
    assert second.returncode == EXIT_STATE_DIR_IN_USE
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, second.stderr
    assert str(state_dir) in lines[0]
    assert f"PID {first.pid}" in lines[0]


async def test_two_daemons_sharing_a_topic_prefix_never_knock_each_other_off_the_broker(
    tmp_path: Path, mosquitto: Broker
) -> None:
    mqtt = (
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ntopic_prefix = "{PREFIX}"\n'
        f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n'
    )
    connected = re.compile(r"New client connected from \S+ as (cellguard\S*)")
    sim = _simulator(PausableClock(60.0))
    logs = [tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"]
    async with sim.serve() as (_, port):
        configs = [
            _write_config(tmp_path / f"cellguard-{i}.toml", tmp_path / f"state-{i}", port, mqtt)
            for i in (1, 2)
        ]
        async with _daemon(configs[0], logs[0]), _daemon(configs[1], logs[1]):
            await _until(
                "both daemons connected",
                lambda: all("MQTT connected" in p.read_text() for p in logs),
            )
    await mosquitto.stop()  # mosquitto's log reaches its file when it ends
    log = mosquitto.log_path.read_text()
    ids = connected.findall(log)
    assert len(ids) == 2, log
    assert len(set(ids)) == 2, ids
    assert "already connected, closing old connection" not in log
    for daemon_log in logs:  # each connected once, never knocked off
        assert daemon_log.read_text().count("MQTT connected") == 1


# -- exit codes and the shipped systemd unit ------------------------------------------------


def _restarts_on(unit: Path, code: int) -> bool:
    """What systemd does with a main process that exited with ``code`` (man
    systemd.service: Restart=, RestartPreventExitStatus=)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    service = parser["Service"]
    restart = service.get("Restart", "no")
    prevented = {int(c) for c in service.get("RestartPreventExitStatus", "").split() if c.isdigit()}
    if code in prevented:
        return False
    if code == 0:
        return restart == "always"
    return restart in ("always", "on-failure")


def _state_dir_is_a_file(state_dir: Path) -> None:
    state_dir.write_text("a file where the state_dir should be\n")


def _store_from_a_newer_cellguard(state_dir: Path) -> None:
    import sqlite3  # noqa: PLC0415

    state_dir.mkdir()
    conn = sqlite3.connect(state_dir / STORE_FILENAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def test_a_state_dir_that_is_a_file_is_refused_as_configuration_not_restarted(
    tmp_path: Path,
) -> None:
    """A file where the state_dir belongs is a wrong path, which no restart fixes: exit 2
    with one line naming daemon.state_dir (issue 16; it was exit 1, restarted forever)."""
    state_dir = tmp_path / "state"
    _state_dir_is_a_file(state_dir)
    out = _run_once(_write_config(tmp_path / "cellguard.toml", state_dir, 1))
    assert out.returncode == EXIT_BAD_CONFIG, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "daemon.state_dir" in lines[0]
    assert str(state_dir) in lines[0]
    assert not _restarts_on(ROOT / "deploy" / "systemd" / "cellguard.service", out.returncode)


@pytest.mark.parametrize("make", [_store_from_a_newer_cellguard])
def test_a_state_dir_that_cannot_be_used_is_a_runtime_error_the_unit_restarts_on(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    state_dir = tmp_path / "state"
    make(state_dir)
    config = _write_config(tmp_path / "cellguard.toml", state_dir, 1)
    out = _run_once(config)
    assert out.returncode == EXIT_RUNTIME_ERROR, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert str(state_dir) in lines[0]
    unit = ROOT / "deploy" / "systemd" / "cellguard.service"
    assert _restarts_on(unit, out.returncode)
    assert _restarts_on(unit, EXIT_STATE_DIR_IN_USE)  # it may start once the other ends
    assert not _restarts_on(unit, EXIT_BAD_CONFIG)


async def test_damaged_sqlite_files_are_moved_aside_and_the_daemon_runs_with_fresh_ones(
    tmp_path: Path,
) -> None:
    """Store, InfluxDB spool and MQTT outbox all damaged (broker and database are not
    there either: the daemon still guards and stores locally)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    damaged = b"SQLite format 3\x00" + b"\x13\x37" * 2048  # a header, then garbage
    names = (STORE_FILENAME, SPOOL_FILENAME, OUTBOX_FILENAME)
    for name in names:
        (state_dir / name).write_bytes(damaged)
    unreachable = (
        f'[influxdb]\nurl = "http://127.0.0.1:{_free_port()}"\norg = "lab"\nbucket = "b"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {_free_port()}\ntopic_prefix = "{PREFIX}"\n'
    )
    sim = _simulator(PausableClock(60.0))
    async with sim.serve() as (_, port):
        config = _write_config(tmp_path / "cellguard.toml", state_dir, port, unreachable)
        log_path = tmp_path / "daemon.log"
        async with _daemon(config, log_path) as proc:

            def moved() -> list[Path]:
                return sorted(state_dir.glob("*.damaged-*"))

            await _until("the damaged files moved aside", lambda: len(moved()) == len(names))
            # Events are stored locally with InfluxDB configured: the store works.
            await _until("the run events stored", lambda: _count_events(state_dir) > 0)
            assert proc.returncode is None
        assert proc.returncode == 0
    text = log_path.read_text()
    for name, what in zip(names, ("STORE", "SPOOL", "OUTBOX"), strict=True):
        (aside,) = [p for p in moved() if p.name.startswith(f"{name}.damaged-")]
        assert re.fullmatch(rf"{re.escape(name)}\.damaged-\d{{8}}T\d{{6}}Z", aside.name)
        assert aside.read_bytes() == damaged  # kept as it was, for whoever wants to rescue it
        assert f"{what} DAMAGED" in text
        assert str(aside) in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _count_events(state_dir: Path) -> int:
    import sqlite3  # noqa: PLC0415

    path = state_dir / STORE_FILENAME
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet
        return 0


# -- state_dir deleted while running --------------------------------------------------------


async def test_a_state_dir_deleted_while_running_is_noticed_alerted_and_created_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = VirtualClock()
    sim = _simulator(clock)
    state_dir = tmp_path / "state"
    async with sim.serve() as (_, port):
        text = daemon_config(
            str(state_dir), port, CHANNELS, poll_interval_s=60.0, download_interval_s=60.0
        )
        async with started_daemon(parse_config(text), clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            for _ in range(60):
                await clock.advance(60.0)
            shutil.rmtree(state_dir)
            for _ in range(60):
                await clock.advance(60.0)
            assert (state_dir / STORE_FILENAME).exists()
            # Locked again, on a new file: a second daemon still cannot start here.
            assert (state_dir / LOCK_FILENAME).read_text().strip() == str(os.getpid())
            with pytest.raises(StateDirInUse):
                StateDirLock(state_dir).acquire()
            on_instrument = {str(c): sim.channels[c].record_count for c in CHANNELS}
    messages = [r.getMessage() for r in caplog.records]
    assert any("STATE DIR DELETED" in m and str(state_dir) in m for m in messages)
    assert any("UNAVAILABLE cellguard/recording state_dir" in m for m in messages)
    assert any("AVAILABLE cellguard/recording state_dir" in m for m in messages)
    async with Store(state_dir) as store:
        states = await store.load_channel_states()
        samples = await store.query_samples(INSTRUMENT, str(CHANNELS[0]))
    # The channel states this daemon held are in the new file: a restart resumes them.
    assert {(INSTRUMENT, str(c)) for c in CHANNELS} <= set(states)
    assert states[(INSTRUMENT, str(CHANNELS[0]))].state == "running"
    assert states[(INSTRUMENT, str(CHANNELS[0]))].last_seq >= on_instrument[str(CHANNELS[0])] - 2
    # And the hour after the deletion is recorded in it.
    assert len([s for s in samples if s.source == "recorded"]) >= 50
