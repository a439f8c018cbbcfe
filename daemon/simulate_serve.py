"""What every ``cellguard simulate`` server shares: serve until SIGINT or SIGTERM,
bringing the simulation up to the present once a wall second, and the simulator
options every vendor's sub-command takes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

# How often the cells are brought up to the present even when nobody asks, so a long
# quiet spell at a high speed-up never costs one huge step later.
TICK_WALL_S = 1.0

B = TypeVar("B")  # what the simulator's serve() yields: the bound address(es)


def add_simulation_args(
    parser: argparse.ArgumentParser, *, positive_float: Callable[[str], float]
) -> None:
    """``--speed``, ``--seed`` and ``--current-range-ma``, as every simulator takes them."""
    parser.add_argument(
        "--speed", type=positive_float, default=1.0, help="simulated seconds per wall second"
    )
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument(
        "--current-range-ma",
        type=positive_float,
        default=10.0,
        help="largest current a channel can source or sink, mA",
    )


async def serve_until_signalled(
    serving: AbstractAsyncContextManager[B],
    announce: Callable[[B], str],
    advance: Callable[[], object],
) -> None:
    """Serve, print ``announce`` of the bound address, tick until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with serving as bound:
        print(announce(bound), flush=True)
        while not stop.is_set():
            advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_WALL_S)
    print("simulator stopped", file=sys.stderr, flush=True)
