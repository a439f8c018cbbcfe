"""Fault suite: storage is never on the halt path.

A running daemon (simulated CT-4008, virtual time) whose store or spool cannot be
written: SQLite's own "database or disk is full" (SQLITE_FULL, what ENOSPC gives),
made by capping the file's page count on the store's connection, so the real error
path of a full disk is taken. The daemon keeps guarding: a Li depletion hours later
is halted while nothing is recorded; once there is room again every recorded sample
is in the store, in order, once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest
from faults import PausableClock, daemon_config, spawn_daemon, ticking
from mqtt_broker import PASSWORDS, PREFIX, Broker
from test_influx import export
from victoria import VictoriaMetrics

from cellguard.daemon import service
from cellguard.daemon.config import parse_config
from cellguard.daemon.mqtt import MqttPublisher, OutboxError
from cellguard.daemon.recording import RECORDING_TAGS
from cellguard.daemon.service import Daemon, started_daemon
from cellguard.daemon.store import STORE_FILENAME, SqliteWorker, Store
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

INSTRUMENT = "ct4008-disk"
POLL_S = 60.0
DEPLETING = ChannelId(1, 1, 2)  # MII-1 asymmetric 100|20 µm: Li runs out after ~2 days
HEALTHY = ChannelId(1, 1, 3)


def _config_text(state_dir: Path, port: int, influx_url: str | None = None) -> str:
    parts = [f'[daemon]\nstate_dir = "{state_dir}"\n']
    if influx_url is not None:
        parts.append(f'[influxdb]\nurl = "{influx_url}"\norg = "lab"\nbucket = "cycling"\n')
    parts.append(
        f'[[instruments]]\nname = "{INSTRUMENT}"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = {POLL_S}\n"
    )
    for channel, cell in (
        (DEPLETING, 'type = "asymmetric", thin_li_um = 20, interphase = "MII-1"'),
        (HEALTHY, 'type = "symmetric", thin_li_um = 100, interphase = "SEI"'),
    ):
        parts.append(
            f'[[channels]]\ninstrument = "{INSTRUMENT}"\nchannel = "{channel}"\nmode = "run"\n'
            f"cell = {{ area_cm2 = 0.785, thick_li_um = 100, {cell} }}\n"
            'protocol = { kind = "galvanostatic", current_density_ma_cm2 = 0.5, '
            "areal_capacity_mah_cm2 = 0.5, cycles = 500, record_interval_s = 60 }\n"
        )
    return "\n".join(parts)


def _simulator(clock: VirtualClock) -> NewareSimulator:
    cells = {
        DEPLETING: CellSlot(SimCellSpec("MII-1", li_working_um=20, never_short=True)),
        HEALTHY: CellSlot(SimCellSpec("SEI", never_short=True)),
    }
    return NewareSimulator(clock, cells=cells, seed=9, epoch=datetime(2026, 4, 1, 9))


async def _cap_pages(db: SqliteWorker, pages: int | None) -> None:
    """Make the file "full" at its present size (None: room again), on its own connection."""

    def cap(conn: sqlite3.Connection) -> None:
        limit = pages if pages is not None else 1 << 30
        if pages == 0:
            limit = int(conn.execute("PRAGMA page_count").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {limit}")

    await db.call(cap)


# A hang guard on the wall clock, never a timing: a sink settles in milliseconds.
SINK_SETTLE_WALL_S = 60.0


class _SettlingClock(VirtualClock):
    """A virtual clock that says when a task starts sleeping on it (see _sink_settled)."""

    def __init__(self) -> None:
        super().__init__()
        self.slept = asyncio.Event()

    async def sleep(self, duration_s: float) -> None:
        self.slept.set()
        await super().sleep(duration_s)


async def _sink_settled(daemon: Daemon) -> None:
    """Wait until everything queued is written, or the sink waits on the clock to retry.

    The sink writes on the store's own thread, and the virtual clock waits only for
    its sleepers: without this the polls (virtual time) outrun the writes (wall time),
    and whether 3,000 samples are stored "within 12 h" depends on the machine's load.
    """
    clock = daemon.clock
    assert isinstance(clock, _SettlingClock)
    joined = asyncio.ensure_future(daemon.queue.join())
    try:
        async with asyncio.timeout(SINK_SETTLE_WALL_S):
            while not joined.done() and not daemon.recording.waiting_to_retry:
                # A retry's backoff begins with a sleep on the clock: woken to look again.
                clock.slept.clear()
                slept = asyncio.ensure_future(clock.slept.wait())
                try:
                    await asyncio.wait({joined, slept}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    slept.cancel()
                    await asyncio.gather(slept, return_exceptions=True)
    finally:
        joined.cancel()
        await asyncio.gather(joined, return_exceptions=True)


async def _drive_until(
    clock: VirtualClock,
    done: Callable[[], bool],
    hours: float,
    *,
    settle: Daemon | None = None,
) -> float:
    """Advance poll by poll until ``done()``; return the virtual hours it took.

    With ``settle``, each poll's samples are written (or the write waits to be
    retried) before time moves on: what is stored then follows virtual time only.
    """
    for step in range(round(hours * 3600 / POLL_S)):
        if settle is not None:
            await _sink_settled(settle)
        if done():
            return step * POLL_S / 3600
        await clock.advance(POLL_S)
    pytest.fail(f"not done within {hours} h")


async def _drive(clock: VirtualClock, hours: float, *, settle: Daemon | None = None) -> None:
    for _ in range(round(hours * 3600 / POLL_S)):
        await clock.advance(POLL_S)
        if settle is not None:
            await _sink_settled(settle)


def _halted(sim: NewareSimulator) -> Callable[[], bool]:
    return lambda: sim.channels[DEPLETING].workstatus == "stop"


def _alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    where = f"{RECORDING_TAGS.instrument}/{RECORDING_TAGS.channel}"
    return [r.getMessage() for r in caplog.records if where in r.getMessage()]


async def _recorded_seqs(state_dir: Path) -> dict[ChannelId, list[int]]:
    async with Store(state_dir) as store:
        return {
            c: [
                s.seq
                for s in await store.query_samples(INSTRUMENT, str(c))
                if s.source == "recorded"
            ]
            for c in (DEPLETING, HEALTHY)
        }


@pytest.mark.parametrize("queue_size", [service.QUEUE_SIZE, 500])
async def test_a_full_disk_stops_recording_not_halting_and_the_rows_come_back(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    queue_size: int,
) -> None:
    """With the default queue the outage's samples wait in it; with a small one it
    fills, and recorded samples wait on the instrument to be fetched again."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(service, "QUEUE_SIZE", queue_size)
    clock = _SettlingClock()
    sim = _simulator(clock)
    state_dir = tmp_path / "state"
    async with sim.serve() as (_, port):
        config = parse_config(_config_text(state_dir, port))
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 10.0, settle=daemon)
            await _cap_pages(_store_db(daemon), 0)  # the disk is full from now on
            await _drive(clock, 0.5, settle=daemon)
            assert not daemon.recording.recording
            down = _alerts(caplog)
            assert len(down) == 1
            assert "UNAVAILABLE" in down[0]
            assert "NOT RECORDING" in down[0]
            assert "database or disk is full" in down[0]

            hours = await _drive_until(clock, _halted(sim), 80.0, settle=daemon)
            sup = daemon.supervisor(INSTRUMENT)
            halt = sup.channels[DEPLETING].halt
            assert halt is not None
            assert halt.kind == "depletion"
            assert not daemon.recording.recording  # halted while nothing was recorded
            assert sim.channels[HEALTHY].workstatus == "working"
            on_instrument = {c: sim.channels[c].record_count for c in (DEPLETING, HEALTHY)}
            deferred = sup.recorded_deferred
            assert (deferred > 0) == (queue_size < sum(on_instrument.values()))

            await _cap_pages(_store_db(daemon), None)  # room again
            # The backlog is fetched again and stored; how many polls that takes
            # depends on the queue size: driven until the positions have caught up.
            runtimes = [sup.channels[c] for c in (DEPLETING, HEALTHY)]
            await _drive_until(
                clock,
                lambda: all(r.stored_seq >= on_instrument[r.spec.channel] for r in runtimes),
                12.0,
                settle=daemon,
            )
            assert daemon.recording.recording
            up = _alerts(caplog)[1:]
            assert len(up) == 1
            assert "AVAILABLE" in up[0]
            assert "recording again" in up[0]
    print(
        f"\nfull disk at 10 h; depletion halted {hours + 10.5:.1f} h into the test "
        f"while not recording; recorded on the instrument {on_instrument}; queue "
        f"{queue_size}: {deferred} fetches of recorded samples deferred to the instrument"
    )
    stored = await _recorded_seqs(state_dir)
    for channel, seqs in stored.items():
        assert seqs == list(range(1, len(seqs) + 1)), channel  # in order, once
        assert len(seqs) >= on_instrument[channel], channel  # the outage is backfilled
    async with Store(state_dir) as store:
        halts = await store.query_events(INSTRUMENT, str(DEPLETING), kind="halt")
        states = await store.load_channel_states()
    assert [e.fault for e in halts] == ["depletion"]
    assert states[(INSTRUMENT, str(DEPLETING))].state == "halted"


def _store_db(daemon: Daemon) -> SqliteWorker:
    return daemon.store._db  # the test reaches the store's own connection


async def test_influxdb_down_and_the_spool_full_stops_recording_not_halting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, victoria_metrics_process: VictoriaMetrics
) -> None:
    caplog.set_level(logging.INFO)
    vm = victoria_metrics_process
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (_, port):
        config = parse_config(_config_text(tmp_path / "state", port, vm.url))
        async with started_daemon(config, clock=clock) as daemon:
            assert daemon.influx is not None
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 10.0)
            vm.stop()
            await _cap_pages(daemon.influx.spool._db, 0)  # nowhere to put the points
            hours = await _drive_until(clock, _halted(sim), 80.0)
            halt = daemon.supervisor(INSTRUMENT).channels[DEPLETING].halt
            assert halt is not None
            assert halt.kind == "depletion"
            assert not daemon.recording.recording
            assert "NOT RECORDING" in _alerts(caplog)[0]
            assert sim.channels[HEALTHY].workstatus == "working"

            await _cap_pages(daemon.influx.spool._db, None)
            vm.start()
            give_up = time.monotonic() + 60.0
            # Recovery is watched, bounded: the retries run on the virtual clock.
            while not daemon.recording.recording and time.monotonic() < give_up:
                await clock.advance(POLL_S)
            while daemon.influx.spool.pending_batches and time.monotonic() < give_up:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert daemon.recording.recording
            assert "recording again" in _alerts(caplog)[-1]
            await _drive(clock, 1.0)
            await daemon.queue.join()
        on_instrument = {c: sim.channels[c].record_count for c in (DEPLETING, HEALTHY)}
    print(f"\nInfluxDB down and spool full from 10 h; depletion halted at {hours + 10:.1f} h")
    for channel, n in on_instrument.items():
        selector = (
            f'cellguard_samples_seq{{instrument="{INSTRUMENT}",channel="{channel}",'
            'source="recorded"}'
        )
        series = await export(vm.url, selector, n)
        seqs = sorted({int(v) for s in series for v in s["values"]})
        # Everything up to the last download before the stop is in the database.
        assert seqs == list(range(1, len(seqs) + 1)), channel
        assert len(seqs) >= n - 2, channel


def _fill_outbox(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox's disk is full too. Injected in its writer (an alert fits in a page
    SQLite already has, so a page cap would not stop it): the error SQLite gives."""
    outbox = daemon.publisher._outbox  # type: ignore[attr-defined]

    def full(*_: object, **__: object) -> int:
        msg = f"cannot write to the MQTT outbox {outbox.path}: database or disk is full"
        raise OutboxError(msg)

    monkeypatch.setattr(outbox, "add", full)


async def test_with_the_whole_disk_full_the_alerts_still_reach_the_broker(
    tmp_path: Path, mosquitto: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store and MQTT outbox both full: the "not recording" alert and the halt alert
    still reach an operator, from memory."""
    clock = VirtualClock()
    sim = _simulator(clock)
    mqtt = (
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ntopic_prefix = "{PREFIX}"\n'
        f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n'
    )
    async with (
        sim.serve() as (_, port),
        aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as operator,
    ):
        await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
        text = _config_text(tmp_path / "state", port).replace(
            "\n[[instruments]]", mqtt + "\n[[instruments]]", 1
        )
        async with started_daemon(parse_config(text), clock=clock) as daemon:
            assert isinstance(daemon.publisher, MqttPublisher)
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 10.0)
            _fill_outbox(daemon, monkeypatch)
            await _cap_pages(_store_db(daemon), 0)
            await _drive_until(clock, _halted(sim), 80.0)
            assert daemon.publisher.kept_in_memory > 0  # the outbox is full
            alerts: dict[str, dict[str, object]] = {}
            # A bound on wall time, not a timing assertion: under a loaded CI machine
            # the alerts drained from memory took over 20 s once.
            async with asyncio.timeout(60.0):
                async for message in operator.messages:
                    alert = json.loads(message.payload)  # type: ignore[arg-type]
                    alerts.setdefault(f"{alert['channel']} {alert['kind']}", alert)
                    if {"recording unavailable", f"{DEPLETING} halt"} <= set(alerts):
                        break
    assert str(alerts["recording unavailable"]["detail"]).startswith("NOT RECORDING")
    assert alerts[f"{DEPLETING} halt"]["fault"] == "depletion"


# -- the same with `cellguard run` as a real process over a file-size limit ------------------

SPEED = 300.0  # one wall second is five instrument minutes
SHORT_AT_H = 2.2  # the detectors learn one half cycle per direction first
FILE_LIMIT_BYTES = 256 * 1024
WAIT_WALL_S = 60.0


async def _until(what: str, done: Callable[[], bool]) -> None:
    """Wait, bounded, for what another process does (there is no event to await)."""
    give_up = time.monotonic() + WAIT_WALL_S
    while not done():
        if time.monotonic() > give_up:
            pytest.fail(f"not within {WAIT_WALL_S} s: {what}")
        await asyncio.sleep(0.1)


def _stored_seqs(path: Path) -> dict[str, list[int]]:
    """Recorded seqs per channel in the store, read-only (the daemon writes it)."""
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = conn.execute(
                "SELECT channel, seq FROM samples WHERE source = 'recorded' ORDER BY rowid"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet
        return {}
    out: dict[str, list[int]] = {}
    for channel, seq in rows:
        out.setdefault(channel, []).append(int(seq))
    return out


async def test_cellguard_run_over_a_full_disk_halts_and_records_again(tmp_path: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE, set on the running daemon with prlimit) makes
    every write past it fail as on a full disk (EFBIG, which Python does not die of)."""
    clock = PausableClock(SPEED)
    healthy, faulty = ChannelId(1, 1, 1), ChannelId(1, 1, 2)
    cells = {
        healthy: CellSlot(SimCellSpec("SEI", never_short=True)),
        faulty: CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", SHORT_AT_H))),
    }
    sim = NewareSimulator(clock, cells=cells, seed=5, epoch=datetime(2026, 5, 1, 8))
    state_dir = tmp_path / "state"
    store = state_dir / STORE_FILENAME
    log_path = tmp_path / "daemon.log"
    async with sim.serve() as (_, port), ticking(sim):
        config = tmp_path / "cellguard.toml"
        config.write_text(
            daemon_config(
                str(state_dir),
                port,
                (healthy, faulty),
                poll_interval_s=0.1,
                download_interval_s=0.5,
                record_interval_s=30.0,
            )
        )
        proc = await spawn_daemon(config, log_path)
        try:
            await _until("samples stored", lambda: bool(_stored_seqs(store)))
            assert log_path.stat().st_size < FILE_LIMIT_BYTES // 2  # its log stays writable
            # The soft limit only: lifting it again needs no privilege.
            resource.prlimit(
                proc.pid, resource.RLIMIT_FSIZE, (FILE_LIMIT_BYTES, resource.RLIM_INFINITY)
            )
            await _until("not recording", lambda: "NOT RECORDING" in log_path.read_text())
            await _until("the short halted", lambda: sim.channels[faulty].workstatus == "stop")
            assert "recording again" not in log_path.read_text()  # halted while down
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, unlimited)
            await _until("recording again", lambda: "recording again" in log_path.read_text())
            clock.pause()  # the instrument stops recording; the daemon catches up
            sim.advance()
            on_instrument = {str(c): sim.channels[c].record_count for c in (healthy, faulty)}
            await _until(
                "every recorded sample stored",
                lambda: all(
                    len(set(_stored_seqs(store).get(c, []))) >= n for c, n in on_instrument.items()
                ),
            )
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), WAIT_WALL_S) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = log_path.read_text()
    print(
        "\ncellguard run over RLIMIT_FSIZE: "
        + next(line for line in text.splitlines() if "NOT RECORDING" in line)[24:200]
    )
    stored = _stored_seqs(store)
    for channel, n in on_instrument.items():
        assert stored[channel] == list(range(1, n + 1)), channel  # in order, once
    assert "HALTED" in text


async def test_a_store_found_damaged_while_running_is_moved_aside_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite reports the file damaged (SQLITE_CORRUPT, injected into every job of the
    store's connection): it is moved aside while running and a fresh one takes over;
    the samples are in the two files together, each once."""
    caplog.set_level(logging.INFO)
    clock = _SettlingClock()
    sim = _simulator(clock)
    state_dir = tmp_path / "state"
    async with sim.serve() as (_, port):
        config = parse_config(_config_text(state_dir, port))
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 2.0, settle=daemon)
            damaged = _store_db(daemon)
            real_call = damaged.call

            async def corrupt(fn: Callable[[sqlite3.Connection], object]) -> object:
                def malformed(conn: sqlite3.Connection) -> object:
                    raise sqlite3.DatabaseError("database disk image is malformed")

                return await real_call(malformed)

            monkeypatch.setattr(damaged, "call", corrupt)
            await _drive(clock, 1.0, settle=daemon)
            assert _store_db(daemon) is not damaged
            assert daemon.recording.recording
            await _drive(clock, 1.0, settle=daemon)
        on_instrument = {str(c): sim.channels[c].record_count for c in (DEPLETING, HEALTHY)}
    (aside,) = sorted(state_dir.glob(f"{STORE_FILENAME}.damaged-*"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("STORE DAMAGED" in m and str(aside) in m for m in messages)
    assert any("UNAVAILABLE cellguard/recording store_damaged" in m for m in messages)
    fresh = await _recorded_seqs(state_dir)
    old = _stored_seqs(aside)
    for channel in (DEPLETING, HEALTHY):
        both = old.get(str(channel), []) + fresh[channel]
        assert sorted(both) == list(range(1, len(both) + 1)), channel  # each once
        assert len(both) >= on_instrument[str(channel)] - 2, channel
        assert fresh[channel], channel  # recorded into the fresh file after the damage
    async with Store(state_dir) as store:
        states = await store.load_channel_states()
    assert states[(INSTRUMENT, str(HEALTHY))].state == "running"
