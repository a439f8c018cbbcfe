"""Fault suite: kill -9 of a daemon whose sink had not yet written a host-driven
channel's samples.

A host-driven channel (here a simulated SCPI source-meter on a real pty) has no
instrument history: the host is its only recorder, so a sample the sink has not
written is nowhere else. The first ``cellguard run`` writes to an InfluxDB URL that
accepts the connection and never answers (a hung server; the write timeout is long),
so every sample waits in the daemon when it is killed -9. The second run writes to a
real VictoriaMetrics. Counted there: every sample the channel took, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

from faults import spawn_daemon
from test_influx import export
from victoria import VictoriaMetrics

from cellguard.daemon.store import STORE_FILENAME
from cellguard.drivers.clock import ScaledClock
from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.drivers.smu import SmuSimulator

INSTRUMENT = "smu-kill"
PROTOCOL = """
[cell]
type = "symmetric"
diameter_mm = 10
thick_li_um = 100
thin_li_um = 100

[protocol]
name = "symmetric 0.5/0.5, a sample a second"
record_every = "1 s"
steps = [
  "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Plate at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Repeat steps 1-2 100 times",
]
"""
JOURNALED_AT_KILL = 4  # samples taken (and unwritten) before the kill
MORE_AFTER_RESTART = 3
WAIT_WALL_S = 60.0


class HungServer:
    """Accepts connections, reads what comes, never answers (an InfluxDB that hangs)."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.bytes_received = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HungServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while chunk := await reader.read(65536):
            self.bytes_received += len(chunk)


def _config(state_dir: Path, influx_url: str, serial_port: str, protocol: Path) -> str:
    return (
        f'[daemon]\nstate_dir = "{state_dir}"\n'
        f'[influxdb]\nurl = "{influx_url}"\norg = "lab"\nbucket = "cycling"\n'
        "timeout_s = 600.0\n"
        f'[[instruments]]\nname = "{INSTRUMENT}"\ndriver = "smu"\n'
        f'serial_port = "{serial_port}"\n'
        f'[[channels]]\ninstrument = "{INSTRUMENT}"\nchannel = "1"\nmode = "run"\n'
        'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, '
        'thin_li_um = 100, interphase = "SEI" }\n'
        f'protocol_file = "{protocol}"\n'
    )


def _saved_state(state_dir: Path) -> tuple[int, dict[str, object]]:
    """The channel's saved ``(last_seq, detail)``, read-only; ``(0, {})`` before any."""
    path = state_dir / STORE_FILENAME
    if not path.exists():
        return 0, {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        row = conn.execute(
            "SELECT last_seq, detail FROM channel_state WHERE instrument = ? AND channel = '1'",
            (INSTRUMENT,),
        ).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0, {}
    finally:
        conn.close()
    if row is None:
        return 0, {}
    return int(row[0]), json.loads(row[1])


async def _until_seq(state_dir: Path, seq: int, proc: asyncio.subprocess.Process) -> int:
    give_up = time.monotonic() + WAIT_WALL_S
    while time.monotonic() < give_up:
        last, _ = _saved_state(state_dir)
        if last >= seq:
            return last
        assert proc.returncode is None, "the daemon exited"
        await asyncio.sleep(0.1)
    raise AssertionError(f"no sample {seq} within {WAIT_WALL_S} s")


@contextlib.asynccontextmanager
async def _daemon(config: Path, log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await spawn_daemon(config, log_path)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_host_samples_waiting_for_a_hung_sink_survive_kill_9(
    tmp_path: Path,
    pty_pair: tuple[str, str],
    victoria_metrics_process: VictoriaMetrics,
) -> None:
    host_end, instrument_end = pty_pair
    cell = SimCell(SimCellSpec("SEI", never_short=True), seed=5)
    smu = SmuSimulator(ScaledClock(1.0), cell=cell, seed=5)
    protocol = tmp_path / "run.toml"
    protocol.write_text(PROTOCOL)
    state_dir = tmp_path / "state"
    config = tmp_path / "cellguard.toml"
    async with smu.serve(instrument_end), HungServer() as hung:
        config.write_text(_config(state_dir, f"http://127.0.0.1:{hung.port}", host_end, protocol))
        async with _daemon(config, tmp_path / "daemon-0.log") as proc:
            killed_seq = await _until_seq(state_dir, JOURNALED_AT_KILL, proc)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        last_seq, detail = _saved_state(state_dir)
        journal = detail.get("unsent")
        assert isinstance(journal, list)
        journaled = [e["sample"][7] for e in journal if "sample" in e]
        # The sink held every sample: the hung server got a request, never answered.
        assert hung.connections >= 1
        assert journaled == list(range(1, last_seq + 1))

        config.write_text(_config(state_dir, victoria_metrics_process.url, host_end, protocol))
        async with _daemon(config, tmp_path / "daemon-1.log") as proc:
            await _until_seq(state_dir, last_seq + MORE_AFTER_RESTART, proc)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30.0) == 0
    final_seq, detail = _saved_state(state_dir)
    series = await export(
        victoria_metrics_process.url,
        f'cellguard_samples_seq{{instrument="{INSTRUMENT}"}}',
        final_seq,
    )
    stored = sorted(int(v) for s in series for v in s["values"])
    lost = sorted(set(range(1, final_seq + 1)) - set(stored))
    duplicated = len(stored) - len(set(stored))
    log = (tmp_path / "daemon-1.log").read_text()
    print(
        f"\nkill -9 of a host-driven daemon with a hung sink: killed at sample {killed_seq}, "
        f"{len(journaled)} journaled, none written; after the restart "
        f"{final_seq} samples taken, {len(stored)} in VictoriaMetrics, lost {lost}, "
        f"duplicated {duplicated}"
    )
    assert "go to the sinks again" in log
    assert stored == list(range(1, final_seq + 1))
    assert "unsent" not in detail  # the journal is empty once written
