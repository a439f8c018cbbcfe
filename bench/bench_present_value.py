"""What the Arbin and Maccor benchmarks share: the simulated cells with their injected
shorts, the simulator process's serve loop, the measuring of a running supervisor
(polls, CPU, peak RSS, samples written) and the command line. A vendor's bench says
only how its simulator is built, how channels are started, and how halts are timed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from bench_common import percentile, rss_mb

from cellguard.daemon.guard.links.neware import drain_queue
from cellguard.daemon.guard.links.present_value import PresentValueGuard
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.store import Store
from cellguard.drivers.neware import CellSlot, Step, StepFile, StepType
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 1.0
SPEED = 30.0
FAULT_FRACTION = 0.1
ONSET_H = (0.2, 0.5)
INTERPHASE = "MII-3"  # the steadiest polarization: only the injected shorts should halt
# 1 mA cm⁻² on the simulator's 0.785 cm² cells, 3-min half cycles (0.05 mAh cm⁻²).
BENCH_PROGRAM = StepFile(
    steps=(
        Step(StepType.CC_CHARGE, current_ma=0.785, time_s=180.0),
        Step(StepType.CC_DISCHARGE, current_ma=0.785, time_s=180.0),
        Step(StepType.CYCLE, loop_start_step=1, cycle_count=60_000),
        Step(StepType.END),
    ),
)

B = TypeVar("B")  # what the simulator's serve() yields


def bench_cells(channels: int, seed: int) -> tuple[dict[int, CellSlot], dict[str, float]]:
    """Symmetric Li cells, a random tenth with a hard short; the onsets (h) by channel."""
    rng = random.Random(seed)
    faulty = set(rng.sample(range(channels), round(FAULT_FRACTION * channels)))
    cells: dict[int, CellSlot] = {}
    faults: dict[str, float] = {}
    for index in range(channels):
        if index in faulty:
            onset = rng.uniform(*ONSET_H)
            faults[str(index + 1)] = onset
            spec = SimCellSpec(interphase=INTERPHASE, short=ShortSpec("hard", onset))
        else:
            spec = SimCellSpec(interphase=INTERPHASE, never_short=True)
        cells[index] = CellSlot(spec)
    return cells, faults


async def serve_until_signalled(
    serving: AbstractAsyncContextManager[B],
    address: Callable[[B], tuple[str, int]],
    faults: dict[str, float],
    advance: Callable[[], object],
) -> None:
    """Print the address and the faults as one JSON line, then tick until signalled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving as bound:
        host, port = address(bound)
        print(json.dumps({"host": host, "port": port, "faults": faults}), flush=True)
        while not stop.is_set():
            advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


@dataclass
class Measured:
    written: int
    cpu_s: float
    wall_s: float
    polls: int
    peak_rss: float


async def measure(
    sup: PresentValueGuard[Any, Any, Any],
    queue: asyncio.Queue[SampleRecord | EventRecord],
    store: Store,
    seconds: float,
) -> Measured:
    """Run ``sup`` and its sink for ``seconds`` of wall time, measured from its 2nd poll."""
    written = 0

    async def write(samples: list[SampleRecord], events: list[EventRecord]) -> None:
        nonlocal written
        written += len(samples)
        await store.write(samples, events)

    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(sup.run(), name="instrument bench")
        sink = tg.create_task(drain_queue(queue, write), name="sink")
        started = time.perf_counter()
        # Polled on purpose: the supervisor signals nothing.
        while sup.polls < 2 and time.perf_counter() - started < seconds:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        cpu0, wall0, polls0 = time.process_time(), time.perf_counter(), sup.polls
        peak_rss = rss_mb()
        while time.perf_counter() - started < seconds:
            await asyncio.sleep(1.0)
            peak_rss = max(peak_rss, rss_mb())
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        polls = sup.polls - polls0
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await queue.join()
        sink.cancel()
    return Measured(written, cpu_s, wall_s, polls, peak_rss)


def result(
    *,
    channels: int,
    seconds: float,
    speed: float,
    info: dict[str, Any],
    sup: PresentValueGuard[Any, Any, Any],
    measured: Measured,
    latencies_s: list[float],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The bench's figures; ``extra`` (the vendor's own) goes before CPU and RSS."""
    run_h = seconds * speed / 3600.0
    faults = set(info["faults"])
    halted = {str(c) for c, r in sup.channels.items() if r.halt is not None}
    expected = {c for c, onset in info["faults"].items() if onset < run_h}
    lat_ms = [s * 1e3 for s in latencies_s]
    wall_s = measured.wall_s
    return {
        "channels": channels,
        "seconds": wall_s,
        "polls_per_s": measured.polls / wall_s if wall_s else None,
        "samples_stored": measured.written,
        "live_dropped": sup.live_dropped,
        "faults_injected_before_end": len(expected),
        "halts": len(halted),
        "halts_on_faulty_channels": len(halted & faults),
        "false_halts": len(halted - faults),
        "halt_latency_n": len(lat_ms),
        "halt_latency_p50_ms": percentile(lat_ms, 0.50),
        "halt_latency_p99_ms": percentile(lat_ms, 0.99),
        "halt_latency_max_ms": max(lat_ms) if lat_ms else None,
        **extra,
        "cpu_fraction": measured.cpu_s / wall_s if wall_s else None,
        "rss_mb": measured.peak_rss,
    }


def main(
    doc: str,
    serve: Callable[[int, float, int], Awaitable[None]],
    supervise: Callable[..., Awaitable[dict[str, Any]]],
) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=90.0, help="wall seconds")
    parser.add_argument("--speed", type=float, default=SPEED)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object only")
    parser.add_argument("--serve", action="store_true", help="be the simulator (a subprocess)")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.channels, args.speed, args.seed))
        return
    logging.basicConfig(level=logging.ERROR)  # 26 halts would otherwise flood the log
    figures = asyncio.run(
        supervise(channels=args.channels, seconds=args.seconds, seed=args.seed, speed=args.speed)
    )
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:<28} {value}")
