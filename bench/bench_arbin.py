"""Halt latency, CPU and memory of the daemon guarding a 256-channel Arbin cycler at 1 Hz.

The simulator (this file with ``--serve``: an ``ArbinSimulator`` of symmetric Li
cells behind a CTI server, a random tenth of them with a hard short at a random
moment) runs in its own process. This process is the daemon's side alone: one
``ArbinSupervisor`` polling every channel each second (``GET_CHANNELS_INFO`` for all
channels: CTI has no recorded history to download), the detectors, and the SQLite
store as the sink, wired as ``cellguard run`` wires them.

Simulated time runs ``--speed`` times faster than the wall clock so that cells learn
and fail within a minute; the schedule is scaled with it (1 mA cm⁻², 3-min half
cycles: 6 s of wall time at ×30), so the detectors see what a lab sees at 30 s
sampling, while the daemon's work per wall second is that of polling 256 channels at
1 Hz.

Halt latency: an ``ArbinWireTap`` on the client stamps when the first bytes of each
feedback arrive and when each request frame is handed to the OS; a halt's latency is
from the arrival of the channel-info feedback that carried the failing value to its
``STOP_SCHEDULE`` frame (CTI stops one channel or all: one request per channel). A
splitter that stamps when the whole feedback is in gives the part after it (negative:
the stop went out while the feedback was still arriving).

``--path`` picks the guard: ``streamed`` (the daemon's: each channel judged as its
record arrives, a failing one stopped at once) or ``whole`` (the baseline: the whole
feedback read and decoded, every channel judged, then the stops). ``--compare``
measures both, each in its own process on a fresh simulator with the same seed, and
prints streamed/whole ratios; with ``--neighbour`` it does so again beside a CPU-bound
process (``bench_supervise.cpu_neighbour``).

    .venv/bin/python bench/bench_arbin.py [--channels 256] [--seconds 90] [--json]
    .venv/bin/python bench/bench_arbin.py --compare [--neighbour] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import percentile, process
from bench_present_value import (
    BENCH_PROGRAM,
    INTERPHASE,
    POLL_S,
    SPEED,
    bench_cells,
    measure,
    result,
    serve_until_signalled,
)
from bench_supervise import NEIGHBOUR_MARGIN_S, RATIO_KEYS, cpu_neighbour

from cellguard.daemon.guard.gc_policy import apply_service_policy
from cellguard.daemon.guard.links.arbin import ArbinChannelSpec, ArbinRuntime, ArbinSupervisor
from cellguard.daemon.mqtt import LogPublisher
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.service import QUEUE_SIZE
from cellguard.daemon.store import Store
from cellguard.drivers.arbin import (
    BUILTIN_SCHEDULES,
    ArbinClient,
    ArbinSimulator,
    ChannelReading,
    FrameSplitter,
    GetChannelsInfo,
    Request,
    StopSchedule,
)
from cellguard.drivers.clock import ScaledClock, WallClock
from cellguard.protocols.detectors import Verdict

LOGIN = ("bench", "bench")
SCHEDULE = "bench.sdx"


# ------------------------------------------------------------------ the simulator side


async def serve(channels: int, speed: float, seed: int) -> None:
    cells, faults = bench_cells(channels, seed)
    simulator = ArbinSimulator(
        ScaledClock(speed),
        channels=channels,
        cells=cells,
        login=LOGIN,
        schedules={**BUILTIN_SCHEDULES, SCHEDULE: BENCH_PROGRAM},
        seed=seed,
    )
    await serve_until_signalled(
        simulator.serve("127.0.0.1", 0), lambda bound: bound, faults, simulator.advance
    )


# ------------------------------------------------------------------ the daemon side


@dataclass
class HaltTap:
    """Stop frames timed from the channel-info feedback that carried the halt, and from
    the moment that whole feedback was in (negative: the stop went out before it)."""

    last_request: Request | None = None
    info_reply_s: float = math.nan
    info_requests: int = 0
    awaiting_info: bool = False
    info_complete_s: dict[int, float] = field(default_factory=dict)  # by info request
    latencies_s: list[float] = field(default_factory=list)
    stops: list[tuple[int, float]] = field(default_factory=list)  # (info request, t)

    def reply_arrived(self, t_s: float) -> None:
        if isinstance(self.last_request, GetChannelsInfo):
            self.info_reply_s = t_s

    def request_written(self, request: Request, t_s: float) -> None:
        if isinstance(request, GetChannelsInfo):
            self.info_requests += 1
            self.awaiting_info = True
        elif isinstance(request, StopSchedule) and isinstance(
            self.last_request, GetChannelsInfo | StopSchedule
        ):
            self.latencies_s.append(t_s - self.info_reply_s)
            self.stops.append((self.info_requests, t_s))
        self.last_request = request

    def frame_complete(self, t_s: float) -> None:
        if self.awaiting_info:
            self.info_complete_s[self.info_requests] = t_s
            self.awaiting_info = False

    def after_complete_s(self) -> list[float]:
        return [t - self.info_complete_s[n] for n, t in self.stops if n in self.info_complete_s]


class TimedSplitter(FrameSplitter):
    """Stamps when the splitter hands out the whole channel-info feedback."""

    def __init__(self, tap: HaltTap) -> None:
        super().__init__("feedback")
        self._tap = tap

    def feed(self, data: bytes) -> list[bytes]:
        frames = super().feed(data)
        if frames:
            self._tap.frame_complete(time.perf_counter())
        return frames


class TimedClient(ArbinClient):
    def __init__(self, host: str, port: int, *, halt_tap: HaltTap) -> None:
        self.halt_tap = halt_tap  # before the splitter is made
        super().__init__(host, port, username=LOGIN[0], password=LOGIN[1], timeout_s=60)
        self.tap = halt_tap

    def _new_splitter(self) -> FrameSplitter:
        return TimedSplitter(self.halt_tap)


class WholeFeedbackSupervisor(ArbinSupervisor):
    """The guard as it was before (the baseline): read and decode the whole feedback,
    judge every channel, then stop the failing ones one request after another."""

    async def poll_once(self, client: ArbinClient) -> None:
        self._outbox.flush()
        readings = await client.channels_info()
        received_at = time.perf_counter()
        self.polls += 1
        halts: list[tuple[ArbinRuntime, Verdict]] = []
        warns: list[tuple[ArbinRuntime, Verdict]] = []
        seen: list[tuple[ArbinRuntime, ChannelReading]] = []
        for runtime in self.channels.values():
            reading = readings.get(runtime.spec.index)
            if reading is None:
                continue
            seen.append((runtime, reading))
            if reading.test_name != runtime.test_name or (
                reading.running and reading.test_time_s < runtime.last_test_time_s
            ):
                self._new_test(runtime, reading.test_name)
            verdict = self._judge(runtime, reading)
            if verdict is None:
                continue
            if verdict.severity == "halt":
                halts.append((runtime, verdict))
            elif verdict.severity == "warn":
                warns.append((runtime, verdict))
        if halts:
            await self._stop_halting(client, halts, received_at)
            await self._report_halts([r for r, _ in halts])
        await self._after_judging(seen, warns)


GUARDS: dict[str, type[ArbinSupervisor]] = {
    "whole": WholeFeedbackSupervisor,
    "streamed": ArbinSupervisor,
}


async def supervise(
    *, channels: int, seconds: float, seed: int, speed: float, path: str = "streamed"
) -> dict[str, Any]:
    apply_service_policy()
    argv = [sys.executable, __file__, "--serve", f"--channels={channels}", f"--speed={speed}",
            f"--seed={seed}"]  # fmt: skip
    with (
        process(argv, what="the Arbin simulator") as (_, first),
        tempfile.TemporaryDirectory() as tmp,
    ):
        info = json.loads(first)
        host, port = info["host"], info["port"]
        async with ArbinClient(host, port, username=LOGIN[0], password=LOGIN[1]) as starter:
            for index in range(channels):
                await starter.assign_schedule(index, SCHEDULE)
                await starter.start(index, f"bench-{index + 1}")
        tap = HaltTap()

        def connect() -> ArbinClient:
            return TimedClient(host, port, halt_tap=tap)

        specs = [
            ArbinChannelSpec(c, "symmetric", interphase=INTERPHASE) for c in range(1, channels + 1)
        ]
        async with Store(Path(tmp) / "state") as store:
            queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=QUEUE_SIZE)
            sup = GUARDS[path](
                "bench", connect, specs, queue, LogPublisher(), clock=WallClock(),
                poll_interval_s=POLL_S, state=store,
            )  # fmt: skip
            measured = await measure(sup, queue, store, seconds)

    after_ms = [s * 1e3 for s in tap.after_complete_s()]
    return result(
        channels=channels,
        seconds=seconds,
        speed=speed,
        info=info,
        sup=sup,
        measured=measured,
        latencies_s=tap.latencies_s,
        extra={
            "path": path,
            "after_whole_feedback_p50_ms": percentile(after_ms, 0.5),
            "after_whole_feedback_max_ms": max(after_ms, default=0.0),
            "stops_before_feedback_end": sum(1 for a in after_ms if a < 0),
        },
    )


# ------------------------------------------------------------------ before/after, loaded


def _measured_apart(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process (the collector's once-per-process steps then
    apply to each alike)."""
    out = subprocess.run(
        [sys.executable, __file__, "--json", f"--path={path}", f"--channels={args.channels}",
         f"--seconds={args.seconds}", f"--seed={args.seed}", f"--speed={args.speed}"],
        capture_output=True, text=True, check=False, timeout=args.seconds + NEIGHBOUR_MARGIN_S,
    )  # fmt: skip
    if out.returncode != 0:
        msg = f"bench_arbin.py failed: {out.stderr.strip()[-2000:]}"
        raise RuntimeError(msg)
    figures: dict[str, Any] = json.loads(out.stdout)
    return figures


def _ratios(new: dict[str, Any], old: dict[str, Any]) -> dict[str, float | None]:
    return {k: new[k] / old[k] if old[k] and new[k] is not None else None for k in RATIO_KEYS}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline (whole feedback) and the streamed guard, each in its own process on
    a fresh simulator (same seed), as the machine is; with ``--neighbour`` again beside a
    CPU-bound process. Ratios are streamed / whole within each condition."""
    figures: dict[str, Any] = {}
    conditions = ["quiet", "neighbour"] if args.neighbour else ["quiet"]
    for condition in conditions:
        busy = cpu_neighbour(2 * (args.seconds + NEIGHBOUR_MARGIN_S))
        with busy if condition == "neighbour" else contextlib.nullcontext():
            whole = _measured_apart("whole", args)
            streamed = _measured_apart("streamed", args)
        figures[condition] = {
            "whole": whole,
            "streamed": streamed,
            "ratio_streamed_to_whole": _ratios(streamed, whole),
        }
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=90.0, help="wall seconds")
    parser.add_argument("--speed", type=float, default=SPEED)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object only")
    parser.add_argument("--serve", action="store_true", help="be the simulator (a subprocess)")
    parser.add_argument("--path", choices=sorted(GUARDS), default="streamed")
    parser.add_argument(
        "--compare", action="store_true", help="the baseline and the streamed guard, apart"
    )
    parser.add_argument(
        "--neighbour", action="store_true", help="with --compare: also beside a busy process"
    )
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.channels, args.speed, args.seed))
        return
    logging.basicConfig(level=logging.ERROR)  # 26 halts would otherwise flood the log
    if args.compare:
        figures = compare(args)
    else:
        figures = asyncio.run(
            supervise(channels=args.channels, seconds=args.seconds, seed=args.seed,
                      speed=args.speed, path=args.path)
        )  # fmt: skip
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    cli()
