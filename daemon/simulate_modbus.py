"""``cellguard simulate modbus``: simulated Modbus instruments for any Modbus master.

One pymodbus server hosts three devices: a cycler / bidirectional supply with a
simulated Li cell (device id 1), a temperature chamber (2) and a stack-pressure cell
(3), on Modbus TCP, on a serial line (RTU), or both at once (the same devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from cellguard.drivers.clock import ScaledClock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.modbus import lab_simulator

# How often the physics is brought up to the present even when nobody asks, so a long
# quiet spell at a high speed-up never costs one huge step later.
_TICK_WALL_S = 1.0

_NAMES = {1: "cycler (SimCell behind it)", 2: "temperature chamber", 3: "stack-pressure cell"}


async def serve_modbus(
    *,
    host: str,
    port: int | None,
    serial: str | None,
    baudrate: int,
    speed: float,
    seed: int,
    current_range_ma: float,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    if port is None and serial is None:
        raise ConfigError(field="--port", problem="give --port, --serial or both")
    clock = ScaledClock(speed)
    simulator = lab_simulator(clock, seed=seed, current_range_a=current_range_ma / 1000.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        where = []
        if port is not None:
            bound_host, bound_port = await stack.enter_async_context(
                simulator.serve_tcp(host, port)
            )
            where.append(f"{bound_host}:{bound_port} (Modbus TCP)")
        if serial is not None:
            await stack.enter_async_context(simulator.serve_serial(serial, baudrate=baudrate))
            where.append(f"{serial} (Modbus RTU, {baudrate} 8N1)")
        print(
            f"Simulated Modbus instruments on {', '.join(where)}, speed ×{speed:g}, seed {seed}",
            flush=True,
        )
        for device in simulator.devices:
            name = _NAMES.get(device.device_id, type(device).__name__)
            print(f"device id {device.device_id}: {name}\n{device.summary()}", flush=True)
        while not stop.is_set():
            simulator.advance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK_WALL_S)
    print("simulator stopped", file=sys.stderr, flush=True)
