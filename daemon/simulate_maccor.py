"""``cellguard simulate maccor``: a simulated Maccor tester behind MacNet's two ports.

Any MacNet client can connect (ours, pymacnet, Maccor's demos): JSON-RPC on
``--port`` (MacNet_JSON_Port, 57570) and native binary MacNet on ``--bin-port``
(MacNet_TCP_Port, 57560). It reads channels, starts one of the simulator's test
procedures or direct mode, sets direct outputs, safety limits and variables,
suspends, resumes and resets. Loopback only unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from cellguard.daemon.simulate_serve import add_simulation_args, serve_until_signalled
from cellguard.drivers.clock import ScaledClock
from cellguard.drivers.maccor import (
    BUILTIN_PROCEDURES,
    DEFAULT_BIN_PORT,
    DEFAULT_JSON_PORT,
    MaccorSimulator,
)


def add_parser(
    sim_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    port: Callable[[str], int],
    positive_int: Callable[[str], int],
    positive_float: Callable[[str], float],
) -> None:
    """The ``simulate maccor`` sub-command (the CLI's own argument types passed in)."""
    maccor = sim_sub.add_parser(
        "maccor",
        help="a Maccor tester behind MacNet (JSON and binary over TCP)",
        description=(
            "Channels are 0-based on the wire (1-based in MacTest32 and in cellguard's "
            f"config). Test procedures it knows: {', '.join(BUILTIN_PROCEDURES)}."
        ),
    )
    maccor.add_argument("--host", default="127.0.0.1", help="address to listen on")
    maccor.add_argument(
        "--port",
        type=port,
        default=DEFAULT_JSON_PORT,
        help=f"TCP port of the JSON protocol (MacNet_JSON_Port: {DEFAULT_JSON_PORT})",
    )
    maccor.add_argument(
        "--bin-port",
        type=port,
        default=DEFAULT_BIN_PORT,
        help=f"TCP port of binary MacNet (MacNet_TCP_Port: {DEFAULT_BIN_PORT})",
    )
    maccor.add_argument("--channels", type=positive_int, default=16, help="channels of the tester")
    add_simulation_args(maccor, positive_float=positive_float)


async def serve_maccor(
    *,
    host: str,
    port: int,
    bin_port: int,
    channels: int,
    speed: float,
    seed: int,
    current_range_ma: float,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    clock = ScaledClock(speed)
    simulator = MaccorSimulator(
        clock, channels=channels, seed=seed, current_range_ma=current_range_ma
    )
    await serve_until_signalled(
        simulator.serve(host, port, bin_port),
        lambda bound: (
            f"Simulated Maccor tester (MacNet) on {bound[0]}: JSON {bound[1]}, binary "
            f"{bound[2]}, {channels} channels, speed ×{speed:g}, seed {seed}\n"
            f"procedures: {', '.join(simulator.procedures)}"
        ),
        simulator.advance,
    )


def run(args: argparse.Namespace) -> int:
    """``cellguard simulate maccor`` from parsed arguments."""
    asyncio.run(
        serve_maccor(
            host=args.host,
            port=args.port,
            bin_port=args.bin_port,
            channels=args.channels,
            speed=args.speed,
            seed=args.seed,
            current_range_ma=args.current_range_ma,
        )
    )
    return 0
