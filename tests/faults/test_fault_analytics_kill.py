"""Fault suite: the analytics row of a failure reaches InfluxDB as soon as it exists.

``cellguard run`` (a real subprocess) writes to a real VictoriaMetrics; a simulated
CT-4008 at ×SPEED has one cell that shorts. Once the short is halted, the cycle row
that carries the failure must reach the database while the daemon runs, not at a
clean shutdown: the daemon is then killed -9 and the row is still there.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime
from pathlib import Path

from faults import INSTRUMENT, PausableClock, daemon_config, spawn_daemon, ticking
from test_influx import export
from victoria import VictoriaMetrics

from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

SPEED = 300.0  # one wall second is five instrument minutes
HEALTHY = ChannelId(1, 1, 1)
FAULTY = ChannelId(1, 1, 2)
SHORT_AT_H = 2.2  # the detectors learn one half cycle per direction first
WAIT_WALL_S = 60.0


async def test_the_failure_row_is_in_influxdb_before_a_kill_9(
    tmp_path: Path, victoria_metrics_process: VictoriaMetrics
) -> None:
    vm = victoria_metrics_process
    cells = {
        HEALTHY: CellSlot(SimCellSpec("SEI", never_short=True)),
        FAULTY: CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", SHORT_AT_H))),
    }
    sim = NewareSimulator(PausableClock(SPEED), cells=cells, seed=5, epoch=datetime(2026, 5, 1, 8))
    selector = f'cellguard_cycles_cycle{{instrument="{INSTRUMENT}",failure!=""}}'
    async with sim.serve() as (_, port), ticking(sim):
        config = tmp_path / "cellguard.toml"
        config.write_text(
            daemon_config(
                str(tmp_path / "state"),
                port,
                (HEALTHY, FAULTY),
                poll_interval_s=0.1,
                download_interval_s=0.5,
                record_interval_s=30.0,
                extra=f'[influxdb]\nurl = "{vm.url}"\norg = "lab"\nbucket = "cycling"\n',
            )
        )
        proc = await spawn_daemon(config, tmp_path / "daemon.log")
        try:
            give_up = time.monotonic() + WAIT_WALL_S
            # Another process's work: watched, bounded (no event to await across it).
            while sim.channels[FAULTY].workstatus != "stop":
                assert time.monotonic() < give_up, "the short was not halted"
                await asyncio.sleep(0.1)
            halted = time.monotonic()
            rows = await export(vm.url, selector, 1)
            row_wall_s = time.monotonic() - halted
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    rows = await export(vm.url, selector, 1)
    print(f"\nthe failure's cycle row was in VictoriaMetrics {row_wall_s:.1f} s after the halt")
    assert [r["metric"]["channel"] for r in rows] == [str(FAULTY)]
    assert rows[0]["metric"]["failure"] == "short"
    assert sim.channels[HEALTHY].workstatus == "working"
