"""``cellguard simulate neware``: a simulated CT-4008 for any BTS API client."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from cellguard.drivers.clock import ScaledClock
from cellguard.drivers.neware import DownloadUnits, NewareSimulator

# How often the simulation is brought up to the present even when nobody asks, so a
# long quiet spell at a high speed-up never costs one huge burst of work later.
_TICK_WALL_S = 1.0


async def serve_neware(
    *,
    host: str,
    port: int,
    units: int,
    devid: int,
    speed: float,
    seed: int,
    current_range_ma: float,
    download_units: DownloadUnits = "A",
    first_cycle_id: int = 1,
) -> None:
    """Serve until SIGINT or SIGTERM.

    ``download_units`` and ``first_cycle_id`` choose which server version to be: the
    recorded one (A/Ah/Wh, cycles from 1) or a 2025 one (mA/mAh/mWh, and some number
    ``download`` cycles from 0).
    """
    clock = ScaledClock(speed)
    simulator = NewareSimulator(
        clock,
        units=units,
        devid=devid,
        seed=seed,
        current_range_ma=current_range_ma,
        download_units=download_units,
        first_cycle_id=first_cycle_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with simulator.serve(host, port) as (bound_host, bound_port):
        channels = ", ".join(str(c) for c in simulator.channels)
        print(
            f"Simulated Neware CT-4008 (BTS 8 API) on {bound_host}:{bound_port}, "
            f"{units} unit(s), speed ×{speed:g}, seed {seed}, download in {download_units}, "
            f"cycles from {first_cycle_id}\nchannels: {channels}",
            flush=True,
        )
        while not stop.is_set():
            simulator.advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK_WALL_S)
    print("simulator stopped", file=sys.stderr, flush=True)
