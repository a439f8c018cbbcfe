"""Modbus RTU on a serial line: the simulator on one end of a socat pty pair, the driver
on the other."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.modbus import (
    CHAMBER_MAP,
    CYCLER_MAP,
    AuxDevice,
    ModbusDevice,
    ModbusGalvanostat,
    SerialLink,
    lab_simulator,
)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals: bytes written to one are read on the other."""
    socat = shutil.which("socat")
    assert socat is not None, "socat is needed for the serial tests (apt install socat)"
    a, b = tmp_path / "A", tmp_path / "B"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10.0
        while not (a.exists() and b.exists()):  # waiting for socat to start, not timing
            assert proc.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat did not create the ptys"
            time.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_the_driver_runs_a_cycler_and_reads_a_chamber_over_rtu(
    pty_pair: tuple[str, str],
) -> None:
    server_end, client_end = pty_pair
    clock = VirtualClock()
    simulator = lab_simulator(clock, seed=5)
    async with simulator.serve_serial(server_end, baudrate=38400):
        link = SerialLink(client_end, baudrate=38400)
        gal = ModbusGalvanostat(
            ModbusDevice(link, CYCLER_MAP, device_id=1, timeout_s=2.0),
            current_range_a=0.01,
            voltage_range_v=5.0,
            identify=False,
            clock=clock,
        )
        info = await gal.connect()
        try:
            assert info.serial.startswith(client_end)
            await gal.source_current(0.0004, compliance_v=5.0)
            await clock.advance(120.0)
            sample = await gal.measure()
            assert sample.output_on
            assert sample.current_a == pytest.approx(0.0004, rel=1e-6)
            assert sample.voltage_v > 0
            await gal.output_off()
            assert not (await gal.measure()).output_on
            assert simulator.device(1).value("output") == 0.0
        finally:
            await gal.close()

        # A second device id on the same line.
        chamber = AuxDevice(ModbusDevice(link, CHAMBER_MAP, device_id=2, timeout_s=2.0))
        async with chamber:
            await chamber.set("chamber_setpoint_c", 30.0)
            await clock.advance(600.0)
            reading = await chamber.read()
            assert reading.values["chamber_setpoint_c"] == 30.0
            assert 28.0 < reading.values["chamber_temperature_c"] < 30.0


async def test_pymodbus_own_serial_client_reads_holding_registers_from_address_1(
    pty_pair: tuple[str, str],
) -> None:
    server_end, client_end = pty_pair
    simulator = lab_simulator(VirtualClock())
    async with simulator.serve_serial(server_end):
        client = AsyncModbusSerialClient(
            client_end, framer=FramerType.RTU, baudrate=19200, reconnect_delay=0
        )
        assert await client.connect()
        try:
            reply = await client.read_holding_registers(1, count=1, device_id=2)
        finally:
            client.close()
    assert reply.registers == [250]  # 25.0 °C in 0.1 °C
