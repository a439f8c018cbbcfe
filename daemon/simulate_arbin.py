"""``cellguard simulate arbin``: a simulated Arbin cycler behind a CTI server.

Any CTI client can connect (ours, pycti-arbin, Arbin's own samples): it logs in with
``--username``/``--password`` (by default pycti-arbin's, which its spoofer accepts),
reads channels, assigns one of the simulator's schedules, starts, stops and sets
meta-variables. Loopback only unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable

from cellguard.drivers.arbin import (
    BUILTIN_SCHEDULES,
    DEFAULT_PASSWORD,
    DEFAULT_PORT,
    DEFAULT_USERNAME,
    ArbinSimulator,
)
from cellguard.drivers.clock import ScaledClock

# How often the cells are brought up to the present even when nobody asks, so a long
# quiet spell at a high speed-up never costs one huge step later.
_TICK_WALL_S = 1.0


def add_parser(
    sim_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    port: Callable[[str], int],
    positive_int: Callable[[str], int],
    positive_float: Callable[[str], float],
) -> None:
    """The ``simulate arbin`` sub-command (the CLI's own argument types passed in)."""
    arbin = sim_sub.add_parser(
        "arbin",
        help="an Arbin cycler behind MITS Pro's CTI server (binary over TCP)",
        description=(
            "Channels are 0-based on the wire (1-based in MITS Pro and in cellguard's "
            f"config). Schedules it knows: {', '.join(BUILTIN_SCHEDULES)}."
        ),
    )
    arbin.add_argument("--host", default="127.0.0.1", help="address to listen on")
    arbin.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"TCP port (CTI: {DEFAULT_PORT})"
    )
    arbin.add_argument("--channels", type=positive_int, default=16, help="channels of the cycler")
    arbin.add_argument("--username", default=DEFAULT_USERNAME, help="the CTI login it accepts")
    arbin.add_argument("--password", default=DEFAULT_PASSWORD, help="the CTI password")
    arbin.add_argument(
        "--speed", type=positive_float, default=1.0, help="simulated seconds per wall second"
    )
    arbin.add_argument("--seed", type=int, default=0, help="simulator seed")
    arbin.add_argument(
        "--current-range-ma",
        type=positive_float,
        default=10.0,
        help="largest current a channel can source or sink, mA",
    )


async def serve_arbin(
    *,
    host: str,
    port: int,
    channels: int,
    username: str,
    password: str,
    speed: float,
    seed: int,
    current_range_ma: float,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    clock = ScaledClock(speed)
    simulator = ArbinSimulator(
        clock,
        channels=channels,
        login=(username, password),
        seed=seed,
        current_range_ma=current_range_ma,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with simulator.serve(host, port) as (bound_host, bound_port):
        print(
            f"Simulated Arbin cycler (CTI) on {bound_host}:{bound_port}, {channels} channels, "
            f"login {username!r}, speed ×{speed:g}, seed {seed}\n"
            f"schedules: {', '.join(simulator.schedules)}",
            flush=True,
        )
        while not stop.is_set():
            simulator.advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK_WALL_S)
    print("simulator stopped", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """``cellguard simulate arbin`` from parsed arguments."""
    asyncio.run(
        serve_arbin(
            host=args.host,
            port=args.port,
            channels=args.channels,
            username=args.username,
            password=args.password,
            speed=args.speed,
            seed=args.seed,
            current_range_ma=args.current_range_ma,
        )
    )
    return 0
