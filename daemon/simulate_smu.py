"""``cellguard simulate smu``: a simulated Keithley 2400 with a cell, on a serial line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from cellguard.drivers.clock import ScaledClock
from cellguard.drivers.smu import DEFAULT_CELL, SMU_CELL_PRESETS, SerialSettings, SmuSimulator

CELL_PRESETS = tuple(SMU_CELL_PRESETS)
"""The ``--cell`` choices."""

# How often the cell is brought up to the present even when nobody asks, so a long
# quiet spell at a high speed-up never costs one huge burst of work later.
_TICK_WALL_S = 1.0


async def serve_smu(
    *,
    port: str,
    speed: float,
    seed: int,
    cell: str = DEFAULT_CELL,
    baudrate: int = 9600,
) -> None:
    """Serve on ``port`` until SIGINT or SIGTERM.

    ``port`` is a device path (opened again whenever it goes away), ``pty:PATH`` (a pty
    of the simulator's own, linked at ``PATH``, that hosts may close and reopen) or
    ``socket://HOST:PORT``.

    Raises :class:`~cellguard.drivers.errors.ConfigError` for a bad cell or URL and
    :class:`~cellguard.drivers.errors.InstrumentConnectionError` for a port that cannot
    be opened (the CLI turns both into one line and exit code 2).
    """
    clock = ScaledClock(speed)
    settings = SerialSettings(baudrate=baudrate)
    simulator = SmuSimulator(clock, cell=cell, seed=seed, settings=settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with simulator.serve(port) as where:
        identity = simulator.identity
        print(
            f"Simulated {identity.vendor} MODEL {identity.model} (SCPI) on {where}, "
            f"{settings}, cell {simulator.cell_name}, speed ×{speed:g}, seed {seed}",
            flush=True,
        )
        while not stop.is_set():
            simulator.advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK_WALL_S)
    print("simulator stopped", file=sys.stderr, flush=True)
