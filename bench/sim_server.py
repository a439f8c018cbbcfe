"""A simulated CT-4008 rack with faults injected at random, served from its own process.

``cellguard simulate neware`` serves healthy cells only; the halt-latency benchmark
needs cells that fail at random moments. This serves ``--units`` units of 8
symmetric Li cells; a random ``--fault-fraction`` of them get a hard short at a
random cell time in ``--onset-h LO HI``. The first stdout line is one JSON object:
``{"host", "port", "faults": {"1-1-3": onset_h, ...}}``. Runs until SIGTERM/SIGINT.

    .venv/bin/python bench/sim_server.py --units 256 --speed 30 --fault-fraction 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal

from cellguard.drivers.clock import ScaledClock
from cellguard.drivers.neware import CellSlot, ChannelId, NewareSimulator
from cellguard.drivers.sim import ShortSpec, SimCellSpec

CHANNELS_PER_UNIT = 8
# Interphase with the lowest, steadiest polarization: nothing but the injected short
# should ever justify a halt.
INTERPHASE = "MII-3"
TICK_WALL_S = 1.0


def layout(
    units: int, devid: int, fault_fraction: float, onset_h: tuple[float, float], seed: int
) -> tuple[dict[ChannelId, CellSlot], dict[str, float]]:
    """Every channel's cell; a random subset gets a hard short at a random onset."""
    rng = random.Random(seed)
    channels = [
        ChannelId(devid, unit, chl)
        for unit in range(1, units + 1)
        for chl in range(1, CHANNELS_PER_UNIT + 1)
    ]
    n_faults = round(fault_fraction * len(channels))
    faulty = set(rng.sample(channels, n_faults))
    cells: dict[ChannelId, CellSlot] = {}
    faults: dict[str, float] = {}
    for cid in channels:
        if cid in faulty:
            onset = rng.uniform(*onset_h)
            faults[str(cid)] = onset
            spec = SimCellSpec(interphase=INTERPHASE, short=ShortSpec("hard", onset))
        else:
            spec = SimCellSpec(interphase=INTERPHASE, never_short=True)
        cells[cid] = CellSlot(spec, f"{INTERPHASE} symmetric")
    return cells, faults


async def serve(args: argparse.Namespace) -> None:
    cells, faults = layout(
        args.units, args.devid, args.fault_fraction, (args.onset_h[0], args.onset_h[1]), args.seed
    )
    simulator = NewareSimulator(
        ScaledClock(args.speed), units=args.units, devid=args.devid, cells=cells, seed=args.seed
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with simulator.serve("127.0.0.1", 0) as (host, port):
        print(json.dumps({"host": host, "port": port, "faults": faults}), flush=True)
        while not stop.is_set():
            simulator.advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_WALL_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--devid", type=int, default=1)
    parser.add_argument("--speed", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-fraction", type=float, default=0.1)
    parser.add_argument("--onset-h", type=float, nargs=2, default=(0.2, 0.5))
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
