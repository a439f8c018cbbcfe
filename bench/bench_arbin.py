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
``STOP_SCHEDULE`` frame (CTI stops one channel per request: the second halt of one
poll waits for the first stop's feedback).

    .venv/bin/python bench/bench_arbin.py [--channels 256] [--seconds 90] [--json]
"""

from __future__ import annotations

import asyncio
import json
import math
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
    bench_cells,
    main,
    measure,
    result,
    serve_until_signalled,
)

from cellguard.daemon.guard.gc_policy import apply_service_policy
from cellguard.daemon.guard.links.arbin import ArbinChannelSpec, ArbinSupervisor
from cellguard.daemon.mqtt import LogPublisher
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.service import QUEUE_SIZE
from cellguard.daemon.store import Store
from cellguard.drivers.arbin import (
    BUILTIN_SCHEDULES,
    ArbinClient,
    ArbinSimulator,
    CtiTransport,
    GetChannelsInfo,
    Request,
    StopSchedule,
)
from cellguard.drivers.clock import ScaledClock, WallClock

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
    """Stop frames timed from the channel-info feedback that carried the halt."""

    last_reply_s: float = math.nan
    last_request: Request | None = None
    info_reply_s: float = math.nan
    info_complete_s: float = math.nan
    latencies_s: list[float] = field(default_factory=list)
    # The part after the whole feedback was in: decode, judge, persist, stop frame.
    after_complete_s: list[float] = field(default_factory=list)

    def reply_arrived(self, t_s: float) -> None:
        self.last_reply_s = t_s
        if isinstance(self.last_request, GetChannelsInfo):
            self.info_reply_s = t_s

    def request_written(self, request: Request, t_s: float) -> None:
        if isinstance(request, StopSchedule) and isinstance(
            self.last_request, GetChannelsInfo | StopSchedule
        ):
            self.latencies_s.append(t_s - self.info_reply_s)
            self.after_complete_s.append(t_s - self.info_complete_s)
        self.last_request = request


class TimedClient(ArbinClient):
    """Also stamps when a whole feedback frame is in (the bench's own split of the
    latency: the transfer of a ~0.5 MB feedback, then the daemon's own work)."""

    halt_tap: HaltTap

    async def _next_frame(self, transport: CtiTransport) -> bytes:
        frame = await super()._next_frame(transport)
        if isinstance(self.halt_tap.last_request, GetChannelsInfo):
            self.halt_tap.info_complete_s = time.perf_counter()
        return frame


async def supervise(*, channels: int, seconds: float, seed: int, speed: float) -> dict[str, Any]:
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
            client = TimedClient(host, port, username=LOGIN[0], password=LOGIN[1], timeout_s=60)
            client.tap = tap
            client.halt_tap = tap
            return client

        specs = [
            ArbinChannelSpec(c, "symmetric", interphase=INTERPHASE) for c in range(1, channels + 1)
        ]
        async with Store(Path(tmp) / "state") as store:
            queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=QUEUE_SIZE)
            sup = ArbinSupervisor(
                "bench", connect, specs, queue, LogPublisher(), clock=WallClock(),
                poll_interval_s=POLL_S, state=store,
            )  # fmt: skip
            measured = await measure(sup, queue, store, seconds)

    return result(
        channels=channels,
        seconds=seconds,
        speed=speed,
        info=info,
        sup=sup,
        measured=measured,
        latencies_s=tap.latencies_s,
        extra={
            "after_whole_feedback_p50_ms": percentile([s * 1e3 for s in tap.after_complete_s], 0.5),
            "after_whole_feedback_max_ms": max(tap.after_complete_s, default=0.0) * 1e3,
        },
    )


if __name__ == "__main__":
    main(__doc__, serve, supervise)
