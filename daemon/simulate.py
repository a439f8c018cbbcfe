"""``cellguard simulate neware``: a simulated CT-4008 for any BTS API client."""

from __future__ import annotations

from cellguard.daemon.simulate_serve import serve_until_signalled
from cellguard.drivers.clock import ScaledClock
from cellguard.drivers.neware import DownloadUnits, NewareSimulator


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
    await serve_until_signalled(
        simulator.serve(host, port),
        lambda bound: (
            f"Simulated Neware CT-4008 (BTS 8 API) on {bound[0]}:{bound[1]}, "
            f"{units} unit(s), speed ×{speed:g}, seed {seed}, download in {download_units}, "
            f"cycles from {first_cycle_id}\nchannels: "
            + ", ".join(str(c) for c in simulator.channels)
        ),
        simulator.advance,
    )
