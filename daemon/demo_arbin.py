"""``cellguard demo --instrument arbin``: the paper's eight cells on a simulated Arbin.

A simulated Arbin cycler serves CTI on a loopback TCP port (its eight channels hold
the same cells as the Neware demo: MII-1, MII-2, MII-3 and SEI interphases, each in
a 100|100 µm symmetric and a 100|20 µm asymmetric Li cell), and the very daemon that
``cellguard run`` starts guards it on embedded defaults (SQLite store under a
temporary state_dir, alerts to the log): it assigns and starts the 0.5 mA cm⁻² /
0.5 mAh cm⁻² schedule on every channel through the Arbin driver, judges every live
value and halts failing cells. CTI has no recorded history: what is stored and
judged is what each poll reads.
Everything runs in virtual time, identical on every run for a seed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from cellguard.daemon.config import ArbinSettings, Config, Secret, default_config
from cellguard.daemon.demo_present_value import demo_channels, drive, run_cli, summarize
from cellguard.daemon.guard.links.arbin import ArbinSupervisor
from cellguard.drivers.arbin import ArbinSimulator
from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.neware import demo_layout

INSTRUMENT = "arbin-demo"
SCHEDULE = "cellguard-cycling.sdx"  # ±0.4 mA, 1 h each way: 0.5 mA cm⁻², 0.5 mAh cm⁻²
LOGIN = ("cellguard-demo", "demo")


def _config(tmp: Path, host: str, port: int, poll_s: float) -> Config:
    instrument = ArbinSettings(
        name=INSTRUMENT,
        host=host,
        port=port,
        poll_interval_s=poll_s,
        username=Secret(LOGIN[0], "demo"),
        password=Secret(LOGIN[1], "demo"),
    )
    channels, _ = demo_channels(INSTRUMENT, SCHEDULE)
    return default_config(tmp / "state", instruments=(instrument,), channels=channels)


async def run_arbin_demo(
    *, hours: float = 600.0, seed: int = 1, poll_s: float = 300.0
) -> dict[str, Any]:
    """Run the daemon on a simulated Arbin in virtual time; the summary."""
    wall0 = time.perf_counter()
    clock = VirtualClock()
    cells = dict(enumerate(demo_layout()))
    simulator = ArbinSimulator(clock, channels=8, cells=cells, login=LOGIN, seed=seed)
    _, reports = demo_channels(INSTRUMENT, SCHEDULE)
    with tempfile.TemporaryDirectory(prefix="cellguard-demo-arbin-") as tmp_name:
        async with simulator.serve() as (host, port):
            config = _config(Path(tmp_name), host, port, poll_s)
            latencies_ms = await drive(
                config, clock, INSTRUMENT, ArbinSupervisor, reports, hours=hours, poll_s=poll_s
            )
    return summarize(
        "arbin",
        reports,
        clock,
        hours=hours,
        wall0=wall0,
        requests=simulator.requests_served,
        latencies_ms=latencies_ms,
    )


async def run_arbin_demo_cli(
    *, hours: float, seed: int, poll_s: float, as_json: bool
) -> dict[str, Any]:
    """The Arbin demo as the CLI shows it: a summary table (or one JSON object)."""
    return await run_cli(
        lambda: run_arbin_demo(hours=hours, seed=seed, poll_s=poll_s),
        as_json=as_json,
        link="Arbin CTI",
        footer=lambda summary: (
            f"{summary['simulated_hours']:.0f} simulated h in {summary['wall_s']:.1f} s wall; "
            f"{summary['samples']:,} live values judged and stored through the Arbin driver, "
            f"{summary['requests']:,} CTI requests (no recorded history in CTI: no backfill)."
        ),
    )
