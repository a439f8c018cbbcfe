"""Halt latency, CPU and memory of the daemon guarding a 256-channel Maccor tester at 1 Hz.

The simulator (this file with ``--serve``: a ``MaccorSimulator`` of symmetric Li
cells behind MacNet's JSON port, a random tenth of them with a hard short at a random
moment) runs in its own process. This process is the daemon's side alone: one
``MaccorSupervisor`` reading every channel each second (one (4, 7) request per
channel: MacNet has no all-channel readings message and no record history), the
detectors, and the SQLite store as the sink, wired as ``cellguard run`` wires them.

Simulated time runs ``--speed`` times faster than the wall clock so that cells learn
and fail within a minute; the procedure is scaled with it (1 mA cm⁻², 3-min half
cycles: 6 s of wall time at ×30), so the detectors see what a lab sees at 30 s
sampling, while the daemon's work per wall second is that of polling 256 channels at
1 Hz.

Halt latency: a ``MaccorWireTap`` on the client stamps when the first bytes of each
reply arrive and when each request is handed to the OS; a halt's latency is from the
arrival of the (4, 7) reply that carried the failing value to the (6, 3) suspend
request for that channel (sent before the next channel is read).

    .venv/bin/python bench/bench_maccor.py [--channels 256] [--seconds 90] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import percentile, process, rss_mb

from cellguard.daemon.guard.gc_policy import apply_service_policy
from cellguard.daemon.guard.links.maccor import MaccorChannelSpec, MaccorSupervisor
from cellguard.daemon.guard.links.neware import drain_queue
from cellguard.daemon.mqtt import LogPublisher
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.service import QUEUE_SIZE
from cellguard.daemon.store import Store
from cellguard.drivers.clock import ScaledClock, WallClock
from cellguard.drivers.maccor import BUILTIN_PROCEDURES, MaccorClient, MaccorSimulator
from cellguard.drivers.neware import CellSlot, Step, StepFile, StepType
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 1.0
SPEED = 30.0
FAULT_FRACTION = 0.1
ONSET_H = (0.2, 0.5)
INTERPHASE = "MII-3"  # the steadiest polarization: only the injected shorts should halt
PROCEDURE = "bench"
# 1 mA cm⁻² on the simulator's 0.785 cm² cells, 3-min half cycles (0.05 mAh cm⁻²).
BENCH_PROGRAM = StepFile(
    steps=(
        Step(StepType.CC_CHARGE, current_ma=0.785, time_s=180.0),
        Step(StepType.CC_DISCHARGE, current_ma=0.785, time_s=180.0),
        Step(StepType.CYCLE, loop_start_step=1, cycle_count=60_000),
        Step(StepType.END),
    ),
)


# ------------------------------------------------------------------ the simulator side


async def serve(channels: int, speed: float, seed: int) -> None:
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
    simulator = MaccorSimulator(
        ScaledClock(speed),
        channels=channels,
        cells=cells,
        procedures={**BUILTIN_PROCEDURES, PROCEDURE: BENCH_PROGRAM},
        seed=seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with simulator.serve("127.0.0.1", 0, 0) as (host, port, _):
        print(json.dumps({"host": host, "port": port, "faults": faults}), flush=True)
        while not stop.is_set():
            simulator.advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


# ------------------------------------------------------------------ the daemon side


@dataclass
class HaltTap:
    """Suspend requests timed from the (4, 7) reply that carried the halt."""

    last_function: tuple[int, int] | None = None
    status_reply_s: float = math.nan
    latencies_s: list[float] = field(default_factory=list)

    def reply_arrived(self, t_s: float) -> None:
        if self.last_function == (4, 7):
            self.status_reply_s = t_s

    def request_written(self, function: tuple[int, int], t_s: float) -> None:
        if function == (6, 3) and self.last_function == (4, 7):
            self.latencies_s.append(t_s - self.status_reply_s)
        self.last_function = function


async def supervise(*, channels: int, seconds: float, seed: int, speed: float) -> dict[str, Any]:
    apply_service_policy()
    argv = [sys.executable, __file__, "--serve", f"--channels={channels}", f"--speed={speed}",
            f"--seed={seed}"]  # fmt: skip
    with (
        process(argv, what="the Maccor simulator") as (_, first),
        tempfile.TemporaryDirectory() as tmp,
    ):
        info = json.loads(first)
        host, port = info["host"], info["port"]
        async with MaccorClient(host, port) as starter:
            for index in range(channels):
                await starter.start_test(index, PROCEDURE, f"bench-{index + 1}")
        tap = HaltTap()

        def connect() -> MaccorClient:
            client = MaccorClient(host, port, timeout_s=60)
            client.tap = tap
            return client

        specs = [
            MaccorChannelSpec(c, "symmetric", interphase=INTERPHASE) for c in range(1, channels + 1)
        ]
        async with Store(Path(tmp) / "state") as store:
            queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=QUEUE_SIZE)
            sup = MaccorSupervisor(
                "bench", connect, specs, queue, LogPublisher(), clock=WallClock(),
                poll_interval_s=POLL_S, state=store,
            )  # fmt: skip
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

    run_h = seconds * speed / 3600.0
    faults = set(info["faults"])
    halted = {str(c) for c, r in sup.channels.items() if r.halt is not None}
    expected = {c for c, onset in info["faults"].items() if onset < run_h}
    lat_ms = [s * 1e3 for s in tap.latencies_s]
    return {
        "channels": channels,
        "seconds": wall_s,
        "polls_per_s": polls / wall_s if wall_s else None,
        "samples_stored": written,
        "live_dropped": sup.live_dropped,
        "faults_injected_before_end": len(expected),
        "halts": len(halted),
        "halts_on_faulty_channels": len(halted & faults),
        "false_halts": len(halted - faults),
        "halt_latency_n": len(lat_ms),
        "halt_latency_p50_ms": percentile(lat_ms, 0.50),
        "halt_latency_p99_ms": percentile(lat_ms, 0.99),
        "halt_latency_max_ms": max(lat_ms) if lat_ms else None,
        "cpu_fraction": cpu_s / wall_s if wall_s else None,
        "rss_mb": peak_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    result = asyncio.run(
        supervise(channels=args.channels, seconds=args.seconds, seed=args.seed, speed=args.speed)
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<28} {value}")


if __name__ == "__main__":
    main()
