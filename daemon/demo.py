"""``cellguard demo``: the paper's eight cells on a simulated CT-4008, end to end.

A simulated Neware CT-4008 serves the BTS 8 API on a loopback TCP port, and the very
daemon that ``cellguard run`` starts guards it, on embedded defaults (SQLite store
under a temporary state_dir, alerts to the log): it writes a 0.5 mA cm⁻² /
0.5 mAh cm⁻² step file for every channel, starts them through the Neware driver,
watches both streams the server offers (``inquire`` every poll, ``download`` of the
recorded history by position) and halts failing cells through the detectors.
Everything runs in virtual time: hundreds of simulated hours in seconds, identical
on every run for a seed.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cellguard.daemon.config import (
    CellSettings,
    ChannelSettings,
    Config,
    NewareSettings,
    default_config,
)
from cellguard.daemon.export import samples_frame, write_bdf
from cellguard.daemon.guard.links.neware import InstrumentSupervisor
from cellguard.daemon.plots import cell_file_name
from cellguard.daemon.records import SampleRecord
from cellguard.daemon.service import started_daemon
from cellguard.daemon.store import Store
from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator, demo_layout
from cellguard.protocols import GalvanostaticCycling, disc_area_cm2
from cellguard.protocols.detectors import CellProfile, DetectorSettings
from cellguard.protocols.polarization import PolarizationTracker

DEMO_EPOCH = datetime(2026, 1, 5, 9, 0, 0)
# Recorded history is fetched every this many simulated seconds (live values every poll).
DOWNLOAD_EVERY_S = 3600.0


@dataclass
class ChannelReport:
    """What the demo shows about one channel, live and at the end."""

    channel: ChannelId
    interphase: str
    cell_type: str
    thin_li_um: float
    state: str = "idle"
    cycle: int = 0
    hours: float = 0.0
    outcome: str | None = None
    reason: str | None = None
    samples: int = 0
    detail: str | None = None
    tracker: PolarizationTracker = field(default_factory=PolarizationTracker)

    def summary(self) -> dict[str, Any]:
        latest = self.tracker.latest_polarization_v
        peak = self.tracker.max_polarization_v
        return {
            "channel": str(self.channel),
            "interphase": self.interphase,
            "cell_type": self.cell_type,
            "thin_li_um": self.thin_li_um,
            "outcome": self.outcome,
            "reason": self.reason,
            "hours": round(self.hours, 2),
            "cycles": self.cycle,
            "polarization_mv": round(latest * 1000, 2) if latest is not None else None,
            "max_polarization_mv": round(peak * 1000, 2) if peak is not None else None,
            "samples": self.samples,
            "detail": self.detail,
        }


@dataclass
class DemoResult:
    channels: list[ChannelReport]
    simulated_hours: float
    wall_s: float
    samples: int
    requests: int
    halt_latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": [c.summary() for c in self.channels],
            "simulated_hours": round(self.simulated_hours, 2),
            "wall_s": round(self.wall_s, 3),
            "samples": self.samples,
            "samples_per_s": round(self.samples / self.wall_s) if self.wall_s > 0 else None,
            "requests": self.requests,
            "halt_latency_ms": [round(x, 3) for x in self.halt_latencies_ms],
        }


INSTRUMENT = "ct4008-demo"
_ENDED = ("halted", "finished", "stopped", "protected")


def _demo_config(
    tmp: Path, host: str, port: int, hours: float, poll_s: float
) -> tuple[Config, list[ChannelReport]]:
    """The daemon's configuration for the paper's 8 cells, on embedded defaults."""
    area_cm2 = disc_area_cm2(10.0)
    channels = []
    reports = []
    for index, slot in enumerate(demo_layout(), start=1):
        spec = slot.spec
        cell_type: CellProfile = (
            "asymmetric" if spec.li_working_um < spec.li_counter_um else "symmetric"
        )
        cell = CellSettings(
            cell_type, area_cm2, spec.li_counter_um, spec.li_working_um, spec.interphase
        )
        one_cycle = GalvanostaticCycling(cell.to_cell())  # type: ignore[arg-type]
        cycles = max(1, math.ceil(hours * 3600.0 / (2 * one_cycle.half_cycle_s)))
        channel = ChannelId(1, 1, index)
        channels.append(
            ChannelSettings(
                instrument=INSTRUMENT,
                channel=channel,
                mode="run",
                cell=cell,
                detector=DetectorSettings(cell=cell_type),
                protocol=GalvanostaticCycling(cell.to_cell(), cycles=cycles),  # type: ignore[arg-type]
            )
        )
        reports.append(ChannelReport(channel, spec.interphase, cell_type, spec.li_working_um))
    instrument = NewareSettings(
        name=INSTRUMENT,
        host=host,
        port=port,
        poll_interval_s=poll_s,
        step_file_dir=str(tmp / "steps"),
        download_interval_s=DOWNLOAD_EVERY_S,
    )
    config = default_config(tmp / "state", instruments=(instrument,), channels=tuple(channels))
    return config, reports


def _update(reports: list[ChannelReport], sup: InstrumentSupervisor) -> None:
    for report in reports:
        runtime = sup.channels[report.channel]
        report.state = runtime.state
        report.cycle = runtime.cycle
        report.samples = runtime.samples
        if runtime.halt is not None:
            report.hours = runtime.halt.t_s / 3600.0
            report.outcome, report.reason = "halted", runtime.halt.kind
            report.detail = runtime.halt.detail
        else:
            report.hours = runtime.test_time_s / 3600.0
            if runtime.state == "protected":
                report.outcome, report.reason = "halted", "limit"
            elif runtime.state in _ENDED:
                report.outcome = "completed"


async def run_demo(
    *,
    hours: float = 600.0,
    seed: int = 1,
    poll_s: float = 300.0,
    on_poll: Callable[[list[ChannelReport], float], None] | None = None,
    export_dir: Path | None = None,
) -> DemoResult:
    """Run the cellguard daemon on a simulated CT-4008 in virtual time.

    ``export_dir``: also write each channel's recorded samples there as a BDF CSV
    named for its cell (``MII-1_asymmetric-20um.csv``), what ``cellguard plot --grid``
    reads.
    """
    wall0 = time.perf_counter()
    clock = VirtualClock()
    simulator = NewareSimulator(clock, units=1, devid=1, seed=seed, epoch=DEMO_EPOCH)
    with tempfile.TemporaryDirectory(prefix="cellguard-demo-") as tmp_name:
        tmp = Path(tmp_name)
        async with simulator.serve() as (host, port):
            config, reports = _demo_config(tmp, host, port, hours, poll_s)
            async with started_daemon(config, clock=clock) as daemon:
                sup = daemon.supervisor(INSTRUMENT)
                await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
                end_s = hours * 3600.0
                # One poll past the end lets the instrument report the last "finish".
                while clock.now_s() <= end_s:
                    await clock.advance(poll_s)
                    _update(reports, sup)
                    if on_poll is not None:
                        on_poll(reports, clock.now_s())
                    if all(r.state in _ENDED for r in reports):
                        break
                latencies = [x * 1e3 for r in sup.channels.values() for x in r.halt_latencies_s]
            requests = simulator.requests_served
        # The stored series (the daemon's embedded SQLite store) gives the polarization.
        last_recorded_h: dict[ChannelId, float] = {}
        async with Store(config.daemon.state_dir) as store:
            for report in reports:
                stored = await store.query_samples(INSTRUMENT, str(report.channel))
                if export_dir is not None:
                    _export(export_dir, report, [s for s in stored if s.source == "recorded"])
                for sample in stored:
                    if sample.source == "recorded":
                        last_recorded_h[report.channel] = sample.test_time_s / 3600.0
                        report.tracker.add(
                            sample.test_time_s,
                            sample.voltage_v,
                            sample.current_a,
                            sample.cycle,
                            sample.step,
                        )
    _update(reports, sup)
    for report in reports:
        if report.reason is None:  # ran to the end: its last recorded sample says when
            report.hours = max(report.hours, last_recorded_h.get(report.channel, 0.0))
        report.tracker.finish()
        if report.outcome is None:
            report.outcome = "completed"
    return DemoResult(
        channels=reports,
        simulated_hours=min(clock.now_s(), hours * 3600.0) / 3600.0,
        wall_s=time.perf_counter() - wall0,
        samples=sum(r.samples for r in reports),
        requests=requests,
        halt_latencies_ms=latencies,
    )


def _export(export_dir: Path, report: ChannelReport, samples: list[SampleRecord]) -> None:
    export_dir.mkdir(parents=True, exist_ok=True)
    name = cell_file_name(report.interphase, report.cell_type, report.thin_li_um)
    write_bdf(samples_frame(samples), export_dir / name, "bdf-csv")


def _fmt_mv(value_v: float | None) -> str:
    return "—" if value_v is None else f"{value_v * 1000:.1f}"


def render_table(reports: list[ChannelReport], t_s: float, *, final: bool = False) -> Table:
    title = (
        f"cellguard demo — summary after {t_s / 3600:.0f} simulated h"
        if final
        else f"cellguard demo — {t_s / 3600:6.1f} simulated h"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in (
        "channel",
        "interphase",
        "cell",
        "cycle",
        "pol. mV",
        "max mV",
        "hours",
        "state",
    ):
        table.add_column(
            name,
            justify="right" if name not in ("interphase", "cell", "state") else "left",
            no_wrap=True,
        )
    for r in reports:
        cell = "sym 100|100" if r.cell_type == "symmetric" else f"asym 100|{r.thin_li_um:g}"
        state = r.state
        if final:
            state = r.outcome or state
            if r.reason:
                state += f": {r.reason}"
        table.add_row(
            str(r.channel),
            r.interphase,
            cell,
            str(r.cycle),
            _fmt_mv(r.tracker.latest_polarization_v),
            _fmt_mv(r.tracker.max_polarization_v),
            f"{r.hours:.1f}",
            state,
        )
    return table


async def run_demo_cli(
    *, hours: float, seed: int, poll_s: float, as_json: bool, export_dir: Path | None = None
) -> dict[str, Any]:
    """The demo as the CLI shows it: a live table in place, then a summary table."""
    # The daemon logs every halt and start as a warning; here the tables show them.
    logging.getLogger("cellguard").setLevel(logging.ERROR)
    console = Console()
    if not console.is_terminal:
        console = Console(width=100)  # a log file or a pipe: no terminal to fit
    if as_json or not console.is_terminal:
        result = await run_demo(hours=hours, seed=seed, poll_s=poll_s, export_dir=export_dir)
    else:
        with Live(console=console, auto_refresh=False, transient=True) as live:
            last = [0.0]

            def on_poll(reports: list[ChannelReport], t_s: float) -> None:
                now = time.perf_counter()
                if now - last[0] >= 0.1:
                    last[0] = now
                    live.update(render_table(reports, t_s), refresh=True)

            result = await run_demo(
                hours=hours, seed=seed, poll_s=poll_s, on_poll=on_poll, export_dir=export_dir
            )
    summary = result.as_dict()
    if not as_json:
        console.print(render_table(result.channels, result.simulated_hours * 3600, final=True))
        console.print(
            f"{result.simulated_hours:.0f} simulated h in {result.wall_s:.1f} s wall "
            f"({result.simulated_hours * 3600 / max(result.wall_s, 1e-9):,.0f}× real time); "
            f"{result.samples:,} recorded samples through the driver "
            f"({summary['samples_per_s']:,}/s), {result.requests:,} requests."
        )
    return summary
