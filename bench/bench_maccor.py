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

import asyncio
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import process
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
from cellguard.daemon.guard.links.maccor import MaccorChannelSpec, MaccorSupervisor
from cellguard.daemon.mqtt import LogPublisher
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.service import QUEUE_SIZE
from cellguard.daemon.store import Store
from cellguard.drivers.clock import ScaledClock, WallClock
from cellguard.drivers.maccor import BUILTIN_PROCEDURES, MaccorClient, MaccorSimulator

PROCEDURE = "bench"


# ------------------------------------------------------------------ the simulator side


async def serve(channels: int, speed: float, seed: int) -> None:
    cells, faults = bench_cells(channels, seed)
    simulator = MaccorSimulator(
        ScaledClock(speed),
        channels=channels,
        cells=cells,
        procedures={**BUILTIN_PROCEDURES, PROCEDURE: BENCH_PROGRAM},
        seed=seed,
    )
    await serve_until_signalled(
        simulator.serve("127.0.0.1", 0, 0),
        lambda bound: (bound[0], bound[1]),
        faults,
        simulator.advance,
    )


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
            measured = await measure(sup, queue, store, seconds)

    return result(
        channels=channels,
        seconds=seconds,
        speed=speed,
        info=info,
        sup=sup,
        measured=measured,
        latencies_s=tap.latencies_s,
        extra={},
    )


if __name__ == "__main__":
    main(__doc__, serve, supervise)
