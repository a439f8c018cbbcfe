"""The live analytics tap: a daemon on virtual time against the simulated CT-4008 writes
per-cycle rows to SQLite (``cycles``) and to InfluxDB (``cellguard_cycles``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_influx import export
from test_service import _config_text, _drive, _simulator

from cellguard.daemon.config import parse_config
from cellguard.daemon.service import started_daemon
from cellguard.daemon.store import Store
from cellguard.drivers import VirtualClock

INSTRUMENT = "ct4008-tap"


async def run_daemon_hours(state_dir: Path, hours: float, influx: str | None) -> None:
    """7 h of the two SEI cells of test_service: 1-1-2 healthy, 1-1-3 hard short at 5 h."""
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (_, port):
        text = _config_text(state_dir, port, influx, None).replace("ct4008-e2e", INSTRUMENT)
        async with started_daemon(parse_config(text), clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, hours)


async def test_the_tap_writes_cycles_to_sqlite_and_victoria_metrics(
    tmp_path: Path, victoria_metrics: str
) -> None:
    await run_daemon_hours(tmp_path / "state", 7.0, victoria_metrics)
    async with Store(tmp_path / "state") as store:
        healthy = await store.query_cycles(INSTRUMENT, "1-1-2")
        shorted = await store.query_cycles(INSTRUMENT, "1-1-3")
    # The healthy SEI cell: one row per 2 h cycle, ~11 mV (21 Ω cm² at 0.5 mA cm⁻²).
    assert [r.cycle for r in healthy] == [1, 2, 3]
    assert all(r.complete and r.failure == "" for r in healthy)
    for r in healthy:
        assert 8.0 < r.polarization_v * 1e3 < 15.0
        assert r.max_polarization_v >= r.polarization_v
        assert math.isnan(r.coulombic_efficiency)
    assert [round(r.capacity_mah_cm2, 2) for r in healthy] == [1.0, 2.0, 3.0]
    assert [round(r.hours, 1) for r in healthy] == [2.0, 4.0, 6.0]
    assert healthy[0].tags.cell_type == "symmetric"
    assert healthy[0].tags.interphase == "SEI"
    # The shorted cell: two full cycles, then the row that closed it carries the fault.
    assert [r.cycle for r in shorted][:2] == [1, 2]
    last = shorted[-1]
    assert last.failure == "short"
    assert 4.9 < last.hours < 5.5
    assert not last.complete
    assert all(r.failure == "" for r in shorted[:-1])

    # The same rows reached the InfluxDB-v2-speaking server, one point per cycle.
    end = int(max(r.time_unix_s for r in healthy + shorted)) + 3600
    series = await export(
        victoria_metrics,
        f'{{__name__="cellguard_cycles_polarization_v",instrument="{INSTRUMENT}"}}',
        len(healthy) + len(shorted),
        end=end,
    )
    by_channel = {s["metric"]["channel"]: s for s in series for _ in s["values"]}
    assert set(by_channel) == {"1-1-2", "1-1-3"}
    points = {(s["metric"]["channel"], s["metric"].get("failure", "")): s["values"] for s in series}
    # (VictoriaMetrics keeps ~12 significant digits of a float.)
    assert points[("1-1-2", "")] == pytest.approx([r.polarization_v for r in healthy], rel=1e-9)
    assert ("1-1-3", "short") in points
