"""``cellguard demo --instrument maccor``: the paper's eight cells on a simulated Maccor.

A simulated Maccor tester serves MacNet (JSON and binary) on loopback TCP ports (its
eight channels hold the same cells as the Neware demo: MII-1, MII-2, MII-3 and SEI
interphases, each in a 100|100 µm symmetric and a 100|20 µm asymmetric Li cell), and
the very daemon that ``cellguard run`` starts guards it on embedded defaults (SQLite
store under a temporary state_dir, alerts to the log): it starts the 0.5 mA cm⁻² /
0.5 mAh cm⁻² procedure on every channel through the Maccor driver, judges every live
value and suspends failing cells. MacNet serves present values only: what is stored
and judged is what each poll reads.
Everything runs in virtual time, identical on every run for a seed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from cellguard.daemon.config import Config, MaccorSettings, default_config
from cellguard.daemon.demo_present_value import demo_channels, drive, run_cli, summarize
from cellguard.daemon.guard.links.maccor import MaccorSupervisor
from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.maccor import MaccorSimulator
from cellguard.drivers.neware import demo_layout

INSTRUMENT = "maccor-demo"
PROCEDURE = "cellguard-cycling"  # ±0.4 mA, 1 h each way: 0.5 mA cm⁻², 0.5 mAh cm⁻²


def _config(tmp: Path, host: str, port: int, poll_s: float) -> Config:
    instrument = MaccorSettings(name=INSTRUMENT, host=host, port=port, poll_interval_s=poll_s)
    channels, _ = demo_channels(INSTRUMENT, PROCEDURE)
    return default_config(tmp / "state", instruments=(instrument,), channels=channels)


async def run_maccor_demo(
    *, hours: float = 600.0, seed: int = 1, poll_s: float = 300.0
) -> dict[str, Any]:
    """Run the daemon on a simulated Maccor in virtual time; the summary."""
    wall0 = time.perf_counter()
    clock = VirtualClock()
    cells = dict(enumerate(demo_layout()))
    simulator = MaccorSimulator(clock, channels=8, cells=cells, seed=seed)
    _, reports = demo_channels(INSTRUMENT, PROCEDURE)
    with tempfile.TemporaryDirectory(prefix="cellguard-demo-maccor-") as tmp_name:
        async with simulator.serve() as (host, port, _):
            config = _config(Path(tmp_name), host, port, poll_s)
            latencies_ms = await drive(
                config, clock, INSTRUMENT, MaccorSupervisor, reports, hours=hours, poll_s=poll_s
            )
    return summarize(
        "maccor",
        reports,
        clock,
        hours=hours,
        wall0=wall0,
        requests=simulator.requests_served,
        latencies_ms=latencies_ms,
    )


async def run_maccor_demo_cli(
    *, hours: float, seed: int, poll_s: float, as_json: bool
) -> dict[str, Any]:
    """The Maccor demo as the CLI shows it: a summary table (or one JSON object)."""
    return await run_cli(
        lambda: run_maccor_demo(hours=hours, seed=seed, poll_s=poll_s),
        as_json=as_json,
        link="Maccor MacNet",
        footer=lambda summary: (
            f"{summary['simulated_hours']:.0f} simulated h in {summary['wall_s']:.1f} s wall; "
            f"{summary['samples']:,} live values judged and stored through the Maccor driver, "
            f"{summary['requests']:,} MacNet requests (present values only: no backfill)."
        ),
    )
