"""``cellguard simulate arbin``: a simulated Arbin cycler behind a CTI server.

Any CTI client can connect (ours, pycti-arbin, Arbin's own samples): it logs in with
``--username``/``--password`` (by default pycti-arbin's, which its spoofer accepts),
reads channels, assigns one of the simulator's schedules, starts, stops and sets
meta-variables. Loopback only unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from cellguard.daemon.simulate_serve import add_simulation_args, serve_until_signalled
from cellguard.drivers.arbin import (
    BUILTIN_SCHEDULES,
    DEFAULT_PASSWORD,
    DEFAULT_PORT,
    DEFAULT_USERNAME,
    ArbinSimulator,
)
from cellguard.drivers.clock import ScaledClock


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
    add_simulation_args(arbin, positive_float=positive_float)


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
    await serve_until_signalled(
        simulator.serve(host, port),
        lambda bound: (
            f"Simulated Arbin cycler (CTI) on {bound[0]}:{bound[1]}, {channels} channels, "
            f"login {username!r}, speed ×{speed:g}, seed {seed}\n"
            f"schedules: {', '.join(simulator.schedules)}"
        ),
        simulator.advance,
    )


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
