"""Host-driven instruments: what one sample and one halt cost over the real transports.

A SCPI source-meter simulator on one end of a socat pty pair and the ``SmuClient`` on
the other; a pymodbus server with the lab's three simulated devices and
``ModbusGalvanostat`` + ``AuxDevice`` over Modbus TCP on loopback. For each: the time of
one ``measure()`` (what the host does every record interval), of one sample with the
aux readings (Modbus), and of a halt (``output_off()`` then a read-back that confirms
it), as median and worst over N repetitions. The baseline, in the same run, is the
transport's bare round trip (``*IDN?`` on the pty; one register read on Modbus), so the
ratios say what the driver adds on top of the wire.

    .venv/bin/python bench/bench_host.py [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cellguard.drivers import WallClock
from cellguard.drivers.modbus import (
    CHAMBER_MAP,
    CYCLER_MAP,
    PRESSURE_MAP,
    AuxDevice,
    ModbusDevice,
    ModbusGalvanostat,
    TcpLink,
    lab_simulator,
)
from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.drivers.smu import SmuClient, SmuSimulator


async def _time(n: int, op: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await op()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, max(times) * 1e3


def _pty_pair(folder: Path) -> tuple[subprocess.Popen[str], str, str]:
    socat = shutil.which("socat")
    if socat is None:
        msg = "socat is required (apt-get install -y socat)"
        raise SystemExit(msg)
    a, b = folder / "host", folder / "instrument"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "starting data transfer loop" in line:
            break
    return proc, str(a), str(b)


async def bench_smu(n: int) -> dict[str, float]:
    clock = WallClock()
    sim = SmuSimulator(clock, cell=SimCell(SimCellSpec("SEI", never_short=True), seed=1))
    with tempfile.TemporaryDirectory() as tmp:
        proc, host_end, instrument_end = _pty_pair(Path(tmp))
        try:
            async with sim.serve(instrument_end):
                client = SmuClient(host_end, timeout_s=2.0)
                await client.connect()
                try:
                    await client.source_current(0.0004, compliance_v=5.0)
                    # The wire's own cost: one *IDN? query and its line, as the client's
                    # connect() does it (an internal call, for the baseline only).
                    bare = await _time(
                        n,
                        lambda: client._query("*IDN?", lambda line: line.count(b",") == 3),
                    )
                    measure = await _time(n, client.measure)

                    async def halt() -> None:
                        await client.output_off()
                        reading = await client.measure()
                        assert not reading.output_on
                        await client.source_current(0.0004, compliance_v=5.0)

                    halted = await _time(max(1, n // 4), halt)
                finally:
                    await client.close()
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
    return {
        "smu_round_trip_ms": bare[0],
        "smu_measure_ms": measure[0],
        "smu_measure_worst_ms": measure[1],
        "smu_halt_ms": halted[0],
        "smu_halt_worst_ms": halted[1],
    }


async def bench_modbus(n: int) -> dict[str, float]:
    clock = WallClock()
    lab = lab_simulator(clock, seed=2, cell=SimCellSpec("SEI", never_short=True))
    async with lab.serve_tcp() as (host, port):
        link = TcpLink(host, port)
        gal = ModbusGalvanostat(
            ModbusDevice(link, CYCLER_MAP, device_id=1),
            current_range_a=0.01,
            voltage_range_v=5.0,
            clock=clock,
        )
        chamber = AuxDevice(ModbusDevice(link, CHAMBER_MAP, device_id=2), clock=clock)
        press = AuxDevice(ModbusDevice(link, PRESSURE_MAP, device_id=3), clock=clock)
        await gal.connect()
        await chamber.connect()
        await press.connect()
        try:
            await gal.source_current(0.0004, compliance_v=5.0)
            bare = await _time(n, lambda: chamber.device.read(["chamber_temperature_c"]))
            measure = await _time(n, gal.measure)

            async def sample() -> None:
                await gal.measure()
                await chamber.read()
                await press.read()

            sampled = await _time(n, sample)

            async def halt() -> None:
                await gal.output_off()
                reading = await gal.measure()
                assert not reading.output_on
                await gal.source_current(0.0004, compliance_v=5.0)

            halted = await _time(max(1, n // 4), halt)
        finally:
            await gal.close()
            await chamber.close()
            await press.close()
    return {
        "modbus_round_trip_ms": bare[0],
        "modbus_measure_ms": measure[0],
        "modbus_sample_with_aux_ms": sampled[0],
        "modbus_halt_ms": halted[0],
        "modbus_halt_worst_ms": halted[1],
    }


async def main(n: int) -> None:
    smu = await bench_smu(n)
    modbus = await bench_modbus(n)
    print(f"host-driven instruments, {n} repetitions (median; worst where named)")
    print(
        f"  SCPI source-meter over a socat pty: round trip {smu['smu_round_trip_ms']:.2f} ms; "
        f"measure {smu['smu_measure_ms']:.2f} ms "
        f"(×{smu['smu_measure_ms'] / smu['smu_round_trip_ms']:.1f} the round trip, worst "
        f"{smu['smu_measure_worst_ms']:.2f}); halt confirmed {smu['smu_halt_ms']:.2f} ms "
        f"(worst {smu['smu_halt_worst_ms']:.2f})"
    )
    print(
        f"  Modbus TCP (loopback): one read {modbus['modbus_round_trip_ms']:.2f} ms; measure "
        f"{modbus['modbus_measure_ms']:.2f} ms "
        f"(×{modbus['modbus_measure_ms'] / modbus['modbus_round_trip_ms']:.1f}); a sample "
        f"with chamber and pressure {modbus['modbus_sample_with_aux_ms']:.2f} ms; halt "
        f"confirmed {modbus['modbus_halt_ms']:.2f} ms (worst {modbus['modbus_halt_worst_ms']:.2f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="repetitions")
    asyncio.run(main(parser.parse_args().n))
