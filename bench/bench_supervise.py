"""Halt latency, CPU and memory of the daemon supervising 2,048 channels at 1 Hz.

The simulator (``bench/sim_server.py``: 256 CT-4008 units of symmetric Li cells, a
random tenth of them with a hard short at a random moment) runs in its own process.
This process is the daemon's side alone: one ``InstrumentSupervisor`` polling every
channel each second (live ``inquire``) and downloading the recorded history, the
detectors, and the SQLite store as the sink, wired as ``cellguard run`` wires them.

Simulated time runs ``--speed`` times faster than the wall clock so that cells learn
and fail within a minute; the protocol is scaled with it (1 mA cm⁻², 0.05 mAh cm⁻²
half cycles of 3 min, one sample per poll: 30 s at ×30) so the detectors see what a
lab sees at 30 s sampling. The daemon's work per wall second is that of a real lab
polling 2,048 channels at 1 Hz and recording each at 1 Hz.

Halt latency: a ``WireTap`` on the client stamps when the first bytes of each reply
arrive and when each request frame is handed to the OS; a halt's latency is from the
arrival of the reply that carried the halting sample (an ``inquire`` or a
``download``) to the ``stop`` frame that follows it. The reply's first bytes are the
earliest the sample's bytes can have arrived, so this never understates.
CPU: process CPU time (every thread: the loop and the SQLite writer) over wall time,
after the first download. RSS: the largest resident size seen, sampled each second.

With ``--neighbour`` the same invocation measures twice, each against a fresh rack:
first on the machine as it is, then with a CPU-bound neighbour process (a Python busy
loop, pinned to no core, like the BTS software taking a core of the lab PC), and
prints both figures and their ratios.

    .venv/bin/python bench/bench_supervise.py [--units 256] [--seconds 90] [--neighbour] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import fault_simulator, percentile, rss_mb

from cellguard.daemon.guard.gc_policy import apply_service_policy
from cellguard.daemon.guard.links.neware import ChannelSpec, InstrumentSupervisor, drain_queue
from cellguard.daemon.mqtt import LogPublisher
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.service import QUEUE_SIZE
from cellguard.daemon.store import Store
from cellguard.drivers.clock import WallClock
from cellguard.drivers.neware import Download, Inquire, NewareClient, Request, Stop
from cellguard.protocols import Cell, GalvanostaticCycling, disc_area_cm2, write_step_file

POLL_S = 1.0
SPEED = 30.0
FAULT_FRACTION = 0.1
# Cell time (h) at which the injected shorts begin: after the detectors have learnt
# both current directions (three 3-min half cycles), spread over the run.
ONSET_H = (0.2, 0.5)
# The neighbour: a busy loop that ends by itself after the given seconds, so that not
# even a killed benchmark leaves it burning a core of a shared machine.
BUSY_LOOP = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)
# Beyond the window: the rack's start and the first download come before it.
NEIGHBOUR_MARGIN_S = 300.0
# The figures compared with and without the neighbour.
RATIO_KEYS = ("halt_latency_p50_ms", "halt_latency_p99_ms", "halt_latency_max_ms")


@contextlib.contextmanager
def cpu_neighbour(seconds: float) -> Iterator[subprocess.Popen[bytes]]:
    """A CPU-bound process, at most ``seconds`` long, on whichever core the OS gives it
    (no affinity: the BTS software is not pinned either); killed on the way out."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@dataclass
class HaltTap:
    """The client's ``WireTap``: stop frames timed from the reply that caused them."""

    last_reply_s: float = math.nan
    last_request: Request | None = None
    latencies_s: list[float] = field(default_factory=list)
    from_download: int = 0  # halts judged on a recorded page rather than a live poll
    download_latencies_s: list[float] = field(default_factory=list)

    def reply_arrived(self, t_s: float) -> None:
        self.last_reply_s = t_s

    def request_written(self, request: Request, t_s: float) -> None:
        # A stop right after a data reply is a halt; one after a status reply is a retry.
        if isinstance(request, Stop) and isinstance(self.last_request, Inquire | Download):
            self.latencies_s.extend([t_s - self.last_reply_s] * len(request.channels))
            if isinstance(self.last_request, Download):
                self.from_download += len(request.channels)
                self.download_latencies_s.extend([t_s - self.last_reply_s] * len(request.channels))
        self.last_request = request


@dataclass
class GcPauses:
    """The garbage collector's pauses (they stop the loop, so they show in halt latency)."""

    started_s: float = math.nan
    pauses_s: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started_s = time.perf_counter()
        else:
            self.pauses_s[info["generation"]].append(time.perf_counter() - self.started_s)

    def summary(self) -> dict[str, Any]:
        return {
            f"gc{gen}": [len(p), round(max(p, default=0.0) * 1e3, 2)]
            for gen, p in self.pauses_s.items()
        }


async def supervise(
    *, units: int, seconds: float, seed: int = 0, speed: float = SPEED
) -> dict[str, Any]:
    """Run the daemon's side against a faulty rack for ``seconds``; the figures."""
    # As ``cellguard run`` does at start (a second call in the process changes nothing).
    apply_service_policy()
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    try:
        return await _supervise(
            units=units, seconds=seconds, seed=seed, speed=speed, gc_pauses=gc_pauses
        )
    finally:
        gc.callbacks.remove(gc_pauses)


async def _supervise(
    *, units: int, seconds: float, seed: int, speed: float, gc_pauses: GcPauses
) -> dict[str, Any]:
    # Onsets spread over the run, after the first cycles (the detectors learn there).
    run_h = seconds * speed / 3600.0
    onset_h = (min(ONSET_H[0], 0.6 * run_h), min(ONSET_H[1], 0.9 * run_h))
    with (
        fault_simulator(
            units=units, speed=speed, fault_fraction=FAULT_FRACTION, onset_h=onset_h, seed=seed
        ) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        host, port = sim["host"], sim["port"]
        program = GalvanostaticCycling(
            Cell.symmetric(disc_area_cm2(10.0)),
            current_density_ma_cm2=1.0,
            areal_capacity_mah_cm2=0.05,
            cycles=60_000,  # within a step file's repeat bound (65,535); never finishes
            record_interval_s=POLL_S * speed,
        ).to_step_file()
        path = write_step_file(Path(tmp) / "bench.xml", program)
        async with NewareClient(host, port, timeout_s=120) as starter:
            channels = [c.address.channel for c in starter.channels]
            await starter.start([(c, f"bench-{c}", str(path)) for c in channels])

        tap = HaltTap()

        def connect() -> NewareClient:
            client = NewareClient(host, port, timeout_s=60)
            client.tap = tap
            return client

        specs = [ChannelSpec(c, "symmetric", interphase="MII-3") for c in channels]
        async with Store(Path(tmp) / "state") as store:
            queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=QUEUE_SIZE)
            sup = InstrumentSupervisor(
                "bench",
                connect,
                specs,
                queue,
                LogPublisher(),
                clock=WallClock(),
                poll_interval_s=POLL_S,
                download_interval_s=60.0,
                state=store,
            )
            written = 0

            async def write(samples: list[SampleRecord], events: list[EventRecord]) -> None:
                nonlocal written
                written += len(samples)
                await store.write(samples, events)

            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(sup.run(), name="instrument bench")
                sink = tg.create_task(drain_queue(queue, write), name="sink")
                # The window starts after the first poll and download (connect, and
                # every channel's history from its start) are done.
                started = time.perf_counter()
                # Polled on purpose: the supervisor signals nothing, and must not be changed
                # to suit the benchmark.
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

    faults = set(sim["faults"])
    halted = {str(c) for c, r in sup.channels.items() if r.halt is not None}
    expected = {c for c, onset in sim["faults"].items() if onset < run_h}
    lat_ms = [s * 1e3 for s in tap.latencies_s]
    return {
        "channels": len(channels),
        "seconds": wall_s,
        "polls_per_s": polls / wall_s if wall_s else None,
        "samples_stored": written,
        "live_dropped": sup.live_dropped,
        "faults_injected_before_end": len(expected),
        "halts": len(halted),
        "halts_on_faulty_channels": len(halted & faults),
        "false_halts": len(halted - faults),
        "halt_latency_n": len(lat_ms),
        "halts_from_recorded_pages": tap.from_download,
        "halt_latency_p50_ms": percentile(lat_ms, 0.50),
        "halt_latency_p99_ms": percentile(lat_ms, 0.99),
        "halt_latency_max_ms": max(lat_ms) if lat_ms else None,
        "halt_latency_worst_ms": sorted(lat_ms)[-5:],
        "halt_latency_recorded_max_ms": max(tap.download_latencies_s, default=0.0) * 1e3,
        "gc_pauses_count_max_ms": gc_pauses.summary(),
        "cpu_fraction": cpu_s / wall_s if wall_s else None,
        "rss_mb": peak_rss,
    }


def _measured_apart(*, units: int, seconds: float, seed: int) -> dict[str, Any]:
    """One measurement in a fresh process: the collector's once-per-process steps
    (policy, heap freeze) then apply to each measurement alike."""
    out = subprocess.run(
        [sys.executable, __file__, "--json", f"--units={units}", f"--seconds={seconds}",
         f"--seed={seed}"],
        capture_output=True, text=True, check=False, timeout=seconds + NEIGHBOUR_MARGIN_S,
    )  # fmt: skip
    if out.returncode != 0:
        msg = f"bench_supervise.py failed: {out.stderr.strip()[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def with_and_without_neighbour(*, units: int, seconds: float, seed: int) -> dict[str, Any]:
    """The figures on the machine as it is, then with a CPU-bound neighbour (each on a
    fresh rack, same seed), and the ratios of the second to the first."""
    quiet = _measured_apart(units=units, seconds=seconds, seed=seed)
    with cpu_neighbour(seconds + NEIGHBOUR_MARGIN_S):
        loaded = _measured_apart(units=units, seconds=seconds, seed=seed)
    ratios = {
        key: loaded[key] / quiet[key] if quiet[key] and loaded[key] is not None else None
        for key in RATIO_KEYS
    }
    return {"without_neighbour": quiet, "with_neighbour": loaded, "ratio_with_to_without": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=256, help="units of 8 channels")
    parser.add_argument("--seconds", type=float, default=90.0, help="wall seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object only")
    parser.add_argument(
        "--neighbour",
        action="store_true",
        help="measure twice: as is, then with a CPU-bound neighbour process",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # 200 halts would otherwise flood the log
    if args.neighbour:
        result = with_and_without_neighbour(units=args.units, seconds=args.seconds, seed=args.seed)
    else:
        result = asyncio.run(supervise(units=args.units, seconds=args.seconds, seed=args.seed))
    if args.json:
        print(json.dumps(result))
    elif args.neighbour:
        for part, figures in result.items():
            print(f"[{part}]")
            for key, value in figures.items():
                print(f"  {key:<28} {value}")
    else:
        for key, value in result.items():
            print(f"{key:<28} {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
