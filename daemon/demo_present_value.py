"""What the Arbin and Maccor demos share: the paper's eight cells as run-mode
channels, the virtual-time loop that drives the daemon until every cell has ended
(or the hours are up), and the summary table. A demo module says only which
simulator serves which settings, and in which vendor's words."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from cellguard.daemon.config import CellSettings, ChannelSettings, Config
from cellguard.daemon.guard.links.present_value import PresentValueGuard
from cellguard.daemon.service import started_daemon
from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.neware import demo_layout
from cellguard.protocols import disc_area_cm2
from cellguard.protocols.detectors import CellProfile, DetectorSettings

ENDED = ("halted", "finished", "stopped", "protected")


@dataclass
class ChannelReport:
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


def demo_channels(
    instrument: str, program: str
) -> tuple[list[ChannelSettings], list[ChannelReport]]:
    """The demo layout's cells, each a run-mode channel that starts ``program``."""
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
                instrument=instrument,
                channel=str(index),
                mode="run",
                cell=cell,
                detector=DetectorSettings(cell=cell_type),
                schedule=program,
            )
        )
        label = "sym 100|100" if cell_type == "symmetric" else f"asym 100|{spec.li_working_um:g}"
        reports.append(ChannelReport(index, spec.interphase, label))
    return channels, reports


def _update(
    reports: list[ChannelReport], guard: PresentValueGuard[Any, Any, Any], now_s: float
) -> None:
    for report in reports:
        runtime = guard.channels[report.channel]
        report.state = runtime.state
        report.samples = runtime.samples
        if runtime.halt is not None:
            report.hours, report.reason = runtime.halt.t_s / 3600.0, runtime.halt.kind
        elif runtime.state not in ENDED:
            report.hours = now_s / 3600.0


async def drive(
    config: Config,
    clock: VirtualClock,
    instrument: str,
    guard_type: type[PresentValueGuard[Any, Any, Any]],
    reports: list[ChannelReport],
    *,
    hours: float,
    poll_s: float,
) -> list[float]:
    """Run the daemon in virtual time until every cell ended or ``hours`` are up; the
    halt latencies in ms."""
    async with started_daemon(config, clock=clock) as daemon:
        guard = daemon.host(instrument)
        assert isinstance(guard, guard_type)
        await clock.wait_until_sleeping(daemon.instrument_tasks[instrument])
        while clock.now_s() < hours * 3600.0:
            await clock.advance(poll_s)
            if all(r.state in ENDED for r in reports):
                break
            _update(reports, guard, clock.now_s())
        _update(reports, guard, clock.now_s())
        return [x * 1e3 for r in guard.channels.values() for x in r.halt_latencies_s]


def summarize(
    kind: str,
    reports: list[ChannelReport],
    clock: VirtualClock,
    *,
    hours: float,
    wall0: float,
    requests: int,
    latencies_ms: list[float],
) -> dict[str, Any]:
    wall_s = time.perf_counter() - wall0
    return {
        "instrument": kind,
        "channels": [r.summary() for r in reports],
        "simulated_hours": round(min(clock.now_s(), hours * 3600.0) / 3600.0, 2),
        "wall_s": round(wall_s, 3),
        "samples": sum(r.samples for r in reports),
        "requests": requests,
        "halt_latency_ms": [round(x, 3) for x in latencies_ms],
    }


def render(summary: dict[str, Any], link: str) -> Table:
    table = Table(
        title=f"cellguard demo ({link}) — summary after {summary['simulated_hours']:.0f} "
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


async def run_cli(
    run: Callable[[], Awaitable[dict[str, Any]]],
    *,
    as_json: bool,
    link: str,
    footer: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """A demo as the CLI shows it: a summary table and ``footer`` (or one JSON object)."""
    # The daemon logs every halt and start as a warning; here the table shows them. The
    # level is put back after: the demo may run inside a longer-lived process (tests).
    logger = logging.getLogger("cellguard")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        summary = await run()
    finally:
        logger.setLevel(level)
    if not as_json:
        console = Console() if Console().is_terminal else Console(width=100)
        console.print(render(summary, link))
        console.print(footer(summary))
    return summary
