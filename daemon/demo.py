"""``cellguard demo``: the paper's eight cells on a simulated CT-4008, end to end.

A simulated Neware CT-4008 serves the BTS 8 API on a loopback TCP port; the real
Neware driver connects to it, starts a 0.5 mA cm⁻² / 0.5 mAh cm⁻² step file on every
channel, and watches both streams the server offers: ``inquire`` (the newest value
of every channel, every poll) and ``download`` (the recorded history, by position,
so nothing is lost between polls). Everything runs in virtual time: hundreds of
simulated hours in seconds, identical on every run for a seed.
"""

from __future__ import annotations

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

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.neware import (
    ChannelId,
    InquireRecord,
    NewareClient,
    NewareSimulator,
    demo_layout,
)
from cellguard.protocols import (
    Cell,
    GalvanostaticCycling,
    InstrumentLimits,
    disc_area_cm2,
    write_step_file,
)
from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict, make_detector
from cellguard.protocols.polarization import PolarizationTracker

DEMO_EPOCH = datetime(2026, 1, 5, 9, 0, 0)
DOWNLOAD_PAGE = 1000
# Recorded history is fetched every this many simulated seconds (live values every poll).
DOWNLOAD_EVERY_S = 3600.0
_DONE = ("finish", "protect", "stop")


@dataclass
class ChannelReport:
    """What the demo knows about one channel, live and at the end."""

    channel: ChannelId
    interphase: str
    cell_type: str
    thin_li_um: float
    state: str = "idle"
    cycle: int = 0
    hours: float = 0.0
    outcome: str | None = None
    reason: str | None = None
    next_seq: int = 1
    samples: int = 0
    tracker: PolarizationTracker = field(default_factory=PolarizationTracker)
    # Two streams, two detectors: inquire values are rounded to 0.1 mV / 0.1 mA on the
    # wire, so each stream is judged against a profile learnt from itself.
    live_detector: Detector | None = None
    recorded_detector: Detector | None = None
    verdict: Verdict | None = None
    halt_requested: bool = False

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
            "detail": self.verdict.detail if self.verdict is not None else None,
        }


@dataclass
class DemoResult:
    channels: list[ChannelReport]
    simulated_hours: float
    wall_s: float
    samples: int
    requests: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": [c.summary() for c in self.channels],
            "simulated_hours": round(self.simulated_hours, 2),
            "wall_s": round(self.wall_s, 3),
            "samples": self.samples,
            "samples_per_s": round(self.samples / self.wall_s) if self.wall_s > 0 else None,
            "requests": self.requests,
        }


async def run_demo(
    *,
    hours: float = 600.0,
    seed: int = 1,
    poll_s: float = 300.0,
    on_poll: Callable[[list[ChannelReport], float], None] | None = None,
) -> DemoResult:
    """Run the demo; ``on_poll(reports, t_s)`` is called after every live poll."""
    wall0 = time.perf_counter()
    clock = VirtualClock()
    simulator = NewareSimulator(clock, units=1, devid=1, seed=seed, epoch=DEMO_EPOCH)
    limits = InstrumentLimits(current_range_ma=simulator.current_range_ma)
    area_cm2 = disc_area_cm2(10.0)
    layout = demo_layout()
    reports: list[ChannelReport] = []
    requests = 0
    with tempfile.TemporaryDirectory(prefix="cellguard-demo-") as tmp:
        async with simulator.serve() as (host, port), NewareClient(host, port) as client:
            starts = []
            for index, slot in enumerate(layout, start=1):
                channel = ChannelId(1, 1, index)
                spec = slot.spec
                if spec.li_working_um < spec.li_counter_um:
                    cell = Cell.asymmetric(
                        area_cm2,
                        li_thin_um=spec.li_working_um,
                        li_source_um=spec.li_counter_um,
                        interphase=spec.interphase,
                    )
                else:
                    cell = Cell.symmetric(
                        area_cm2, li_um=spec.li_counter_um, interphase=spec.interphase
                    )
                protocol = GalvanostaticCycling(cell)
                cycles = max(1, math.ceil(hours * 3600.0 / (2 * protocol.half_cycle_s)))
                protocol = GalvanostaticCycling(cell, cycles=cycles)
                path = write_step_file(Path(tmp) / f"{channel}.xml", protocol.to_step_file(limits))
                barcode = f"demo-{spec.interphase}-{cell.cell_type}-{channel.chlid}"
                starts.append((channel, barcode, str(path)))
                settings = DetectorSettings(
                    cell=cell.cell_type, voltage_range_v=limits.voltage_range_v
                )
                reports.append(
                    ChannelReport(
                        channel,
                        spec.interphase,
                        cell.cell_type,
                        cell.thin_li_um,
                        live_detector=make_detector(settings),
                        recorded_detector=make_detector(settings),
                    )
                )
            await client.start(starts)
            requests += 1

            t_s = 0.0
            next_download_s = DOWNLOAD_EVERY_S
            end_s = hours * 3600.0
            while True:
                t_s = min(t_s + poll_s, end_s)
                clock.set(t_s)
                live = await client.inquire([r.channel for r in reports])
                requests += 1
                for report in reports:
                    _apply_live(report, live[report.channel])
                await _halt_flagged(client, reports)
                if t_s >= next_download_s or t_s >= end_s or all(r.state in _DONE for r in reports):
                    requests += await _download_new(client, reports)
                    await _halt_flagged(client, reports)
                    next_download_s = t_s + DOWNLOAD_EVERY_S
                if on_poll is not None:
                    on_poll(reports, t_s)
                if all(r.state in _DONE for r in reports) or t_s >= end_s:
                    break
            running = [r.channel for r in reports if r.state not in _DONE]
            if running:
                await client.stop(running)
                requests += 1
                live = await client.inquire([r.channel for r in reports])
                for report in reports:
                    _apply_live(report, live[report.channel])
                requests += await _download_new(client, reports)
    for report in reports:
        report.tracker.finish()
        if report.outcome is None:
            report.outcome = "completed"
    return DemoResult(
        channels=reports,
        simulated_hours=t_s / 3600.0,
        wall_s=time.perf_counter() - wall0,
        samples=sum(r.samples for r in reports),
        requests=requests,
    )


def _judge(report: ChannelReport, detector: Detector | None, verdict: Verdict) -> None:
    if verdict.severity == "halt" and report.verdict is None:
        report.verdict = verdict
        report.halt_requested = True
        report.outcome, report.reason = "halted", verdict.kind
        report.hours = verdict.t_s / 3600.0


async def _halt_flagged(client: NewareClient, reports: list[ChannelReport]) -> None:
    """Stop every channel a detector flagged, in one request, before anything else."""
    flagged = [r for r in reports if r.halt_requested and r.state == "working"]
    for report in reports:
        report.halt_requested = False
    if flagged:
        await client.stop([r.channel for r in flagged])
        for report in flagged:
            report.state = "stop"


def _apply_live(report: ChannelReport, record: InquireRecord) -> None:
    previous = report.state
    report.state = record.workstatus
    if record.workstatus == "working":
        report.cycle = record.cycle_id
        if report.verdict is None:
            report.hours = record.total_time_s / 3600.0
        detector = report.live_detector
        if detector is not None and report.verdict is None:
            verdict = detector.feed(record.total_time_s, record.voltage_v, record.current_a)
            _judge(report, detector, verdict)
    if previous != record.workstatus and report.outcome is None:
        if record.workstatus == "protect":
            report.outcome, report.reason = "halted", "limit"
        elif record.workstatus in ("finish", "stop"):
            report.outcome = "completed"


async def _download_new(client: NewareClient, reports: list[ChannelReport]) -> int:
    """Fetch every recorded sample not seen yet; returns the number of requests."""
    requests = 0
    for report in reports:
        while True:
            reply = await client.download(report.channel, report.next_seq, DOWNLOAD_PAGE)
            requests += 1
            detector = report.recorded_detector
            for rec in reply.records:
                t_s = rec.test_time_ms / 1000.0
                report.tracker.add(t_s, rec.voltage_v, rec.current_a, rec.cycle_id, rec.step_id)
                report.cycle = max(report.cycle, rec.cycle_id)
                if report.verdict is None:
                    report.hours = max(report.hours, t_s / 3600.0)
                    if detector is not None:
                        verdict = detector.feed(
                            t_s, rec.voltage_v, rec.current_a, rec.step_id, rec.cycle_id
                        )
                        _judge(report, detector, verdict)
            report.samples += len(reply.records)
            report.next_seq += len(reply.records)
            if len(reply.records) < DOWNLOAD_PAGE:
                break
    return requests


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


async def run_demo_cli(*, hours: float, seed: int, poll_s: float, as_json: bool) -> dict[str, Any]:
    """The demo as the CLI shows it: a live table in place, then a summary table."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=100)  # a log file or a pipe: no terminal to fit
    if as_json or not console.is_terminal:
        result = await run_demo(hours=hours, seed=seed, poll_s=poll_s)
    else:
        with Live(console=console, auto_refresh=False, transient=True) as live:
            last = [0.0]

            def on_poll(reports: list[ChannelReport], t_s: float) -> None:
                now = time.perf_counter()
                if now - last[0] >= 0.1:
                    last[0] = now
                    live.update(render_table(reports, t_s), refresh=True)

            result = await run_demo(hours=hours, seed=seed, poll_s=poll_s, on_poll=on_poll)
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
