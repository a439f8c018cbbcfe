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

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from cellguard.daemon.config import (
    CellSettings,
    ChannelSettings,
    MaccorSettings,
    default_config,
)
from cellguard.daemon.guard.links.maccor import MaccorSupervisor
from cellguard.daemon.service import started_daemon
from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.maccor import MaccorSimulator
from cellguard.drivers.neware import demo_layout
from cellguard.protocols import disc_area_cm2
from cellguard.protocols.detectors import CellProfile, DetectorSettings

INSTRUMENT = "maccor-demo"
PROCEDURE = "cellguard-cycling"  # ±0.4 mA, 1 h each way: 0.5 mA cm⁻², 0.5 mAh cm⁻²
_ENDED = ("halted", "finished", "stopped", "protected")


@dataclass
class MaccorChannelReport:
    channel: int
    interphase: str
    cell: str
    state: str = "idle"
    hours: float = 0.0
    reason: str = ""
    samples: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "channel": str(self.channel),
            "interphase": self.interphase,
            "cell": self.cell,
            "outcome": "halted" if self.reason else "completed",
            "reason": self.reason or None,
            "hours": round(self.hours, 2),
            "samples": self.samples,
            "state": self.state,
        }


def _config(tmp: Path, host: str, port: int, poll_s: float) -> Any:
    channels = []
    reports = []
    for index, slot in enumerate(demo_layout(), start=1):
        spec = slot.spec
        cell_type: CellProfile = (
            "asymmetric" if spec.li_working_um < spec.li_counter_um else "symmetric"
        )
        cell = CellSettings(
            cell_type, disc_area_cm2(10.0), spec.li_counter_um, spec.li_working_um, spec.interphase
        )
        channels.append(
            ChannelSettings(
                instrument=INSTRUMENT,
                channel=str(index),
                mode="run",
                cell=cell,
                detector=DetectorSettings(cell=cell_type),
                schedule=PROCEDURE,
            )
        )
        label = "sym 100|100" if cell_type == "symmetric" else f"asym 100|{spec.li_working_um:g}"
        reports.append(MaccorChannelReport(index, spec.interphase, label))
    instrument = MaccorSettings(name=INSTRUMENT, host=host, port=port, poll_interval_s=poll_s)
    return default_config(tmp / "state", instruments=(instrument,), channels=channels), reports


def _update(reports: list[MaccorChannelReport], guard: MaccorSupervisor, now_s: float) -> None:
    for report in reports:
        runtime = guard.channels[report.channel]
        report.state = runtime.state
        report.samples = runtime.samples
        if runtime.halt is not None:
            report.hours, report.reason = runtime.halt.t_s / 3600.0, runtime.halt.kind
        elif runtime.state not in _ENDED:
            report.hours = now_s / 3600.0


async def run_maccor_demo(
    *, hours: float = 600.0, seed: int = 1, poll_s: float = 300.0
) -> dict[str, Any]:
    """Run the daemon on a simulated Maccor in virtual time; the summary."""
    wall0 = time.perf_counter()
    clock = VirtualClock()
    cells = dict(enumerate(demo_layout()))
    simulator = MaccorSimulator(clock, channels=8, cells=cells, seed=seed)
    with tempfile.TemporaryDirectory(prefix="cellguard-demo-maccor-") as tmp_name:
        async with simulator.serve() as (host, port, _):
            config, reports = _config(Path(tmp_name), host, port, poll_s)
            async with started_daemon(config, clock=clock) as daemon:
                guard = daemon.host(INSTRUMENT)
                assert isinstance(guard, MaccorSupervisor)
                await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
                while clock.now_s() < hours * 3600.0:
                    await clock.advance(poll_s)
                    if all(r.state in _ENDED for r in reports):
                        break
                    _update(reports, guard, clock.now_s())
                _update(reports, guard, clock.now_s())
                latencies_ms = [
                    x * 1e3 for r in guard.channels.values() for x in r.halt_latencies_s
                ]
    wall_s = time.perf_counter() - wall0
    return {
        "instrument": "maccor",
        "channels": [r.summary() for r in reports],
        "simulated_hours": round(min(clock.now_s(), hours * 3600.0) / 3600.0, 2),
        "wall_s": round(wall_s, 3),
        "samples": sum(r.samples for r in reports),
        "requests": simulator.requests_served,
        "halt_latency_ms": [round(x, 3) for x in latencies_ms],
    }


def render(summary: dict[str, Any]) -> Table:
    table = Table(
        title=f"cellguard demo (Maccor MacNet) — summary after {summary['simulated_hours']:.0f} "
        "simulated h",
        box=box.SIMPLE_HEAD,
    )
    for name in ("channel", "interphase", "cell", "hours", "samples", "outcome"):
        table.add_column(name, no_wrap=True)
    for c in summary["channels"]:
        outcome = f"halted: {c['reason']}" if c["reason"] else c["state"]
        table.add_row(
            c["channel"],
            c["interphase"],
            c["cell"],
            f"{c['hours']:.1f}",
            str(c["samples"]),
            outcome,
        )
    return table


async def run_maccor_demo_cli(
    *, hours: float, seed: int, poll_s: float, as_json: bool
) -> dict[str, Any]:
    """The Maccor demo as the CLI shows it: a summary table (or one JSON object)."""
    # The daemon logs every halt and start as a warning; here the table shows them. The
    # level is put back after: the demo may run inside a longer-lived process (tests).
    logger = logging.getLogger("cellguard")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        summary = await run_maccor_demo(hours=hours, seed=seed, poll_s=poll_s)
    finally:
        logger.setLevel(level)
    if not as_json:
        console = Console() if Console().is_terminal else Console(width=100)
        console.print(render(summary))
        console.print(
            f"{summary['simulated_hours']:.0f} simulated h in {summary['wall_s']:.1f} s wall; "
            f"{summary['samples']:,} live values judged and stored through the Maccor driver, "
            f"{summary['requests']:,} MacNet requests (present values only: no backfill)."
        )
    return summary
