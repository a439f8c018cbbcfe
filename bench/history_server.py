"""A simulated CT-4008 rack holding a recorded history, served frozen from its own process.

For the download comparison of ``bench_aurora.py``: ``--units`` units of 8 symmetric
Li cells (the ``cellguard simulate neware`` layout) each run the standard cycling
protocol recording every ``--record-s`` seconds for ``--history-h`` hours of
simulated time, integrated before serving. The clock then stands still, so every
client reads the same history and the server spends nothing on integration while
they are measured: what is left of it is answering (a ``download`` joins cached
``<data>`` lines, as a real BTS server serves its database). The first stdout line
is one JSON object ``{"host", "port", "channels", "records"}``. Runs until
SIGTERM/SIGINT.

    .venv/bin/python bench/history_server.py --units 8 --history-h 1 --record-s 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
from pathlib import Path

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.neware import NewareSimulator, Start, StartItem
from cellguard.protocols import Cell, GalvanostaticCycling, disc_area_cm2, write_step_file

# Integrated in slices so no channel takes one huge step.
_SLICE_S = 600.0


def build(units: int, history_h: float, record_s: float, seed: int) -> NewareSimulator:
    """The rack with every channel started and ``history_h`` hours recorded."""
    clock = VirtualClock()
    simulator = NewareSimulator(clock, units=units, seed=seed)
    program = GalvanostaticCycling(
        Cell.symmetric(disc_area_cm2(10.0)), record_interval_s=record_s
    ).to_step_file()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(write_step_file(Path(tmp) / "p.xml", program))
        addresses = [ch.address for ch in simulator.channels.values()]
        simulator.handle(Start(tuple(StartItem(a, f"b{i}", path) for i, a in enumerate(addresses))))
    end_s = history_h * 3600.0
    while clock.now_s() < end_s:
        clock.set(min(end_s, clock.now_s() + _SLICE_S))
        simulator.advance()
    # Encode every record's <data> line now, as a real server has its history in its
    # database before anyone asks: the first client measured must not pay for it.
    for channel in simulator.channels.values():
        channel.download_items(1, channel.record_count)
    return simulator


async def serve(args: argparse.Namespace) -> None:
    simulator = build(args.units, args.history_h, args.record_s, args.seed)
    records = sum(ch.record_count for ch in simulator.channels.values())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with simulator.serve("127.0.0.1", 0) as (host, port):
        greeting = {"host": host, "port": port, "channels": len(simulator.channels)}
        print(json.dumps({**greeting, "records": records}), flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--history-h", type=float, default=1.0)
    parser.add_argument("--record-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
