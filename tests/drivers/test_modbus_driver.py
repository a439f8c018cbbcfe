"""The Modbus driver against the simulators on a real pymodbus TCP server, in virtual time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)
from cellguard.drivers.galvanostat import Galvanostat
from cellguard.drivers.modbus import (
    CHAMBER_MAP,
    CYCLER_MAP,
    CYCLER_REGISTERS,
    PRESSURE_MAP,
    AuxDevice,
    ModbusDevice,
    ModbusGalvanostat,
    ModbusSimulator,
    RegisterMap,
    SimChamber,
    SimCycler,
    SimPressureCell,
    TcpLink,
    lab_simulator,
)
from cellguard.drivers.sim import SimCell, SimCellSpec

QUIET_CELL = SimCellSpec(noise_v=0.0)  # no noise: the voltage is a closed form of time
I_A = 0.0004  # 0.5 mA cm⁻² on a 10 mm disc, roughly


class GatedCycler(SimCycler):
    """A cycler that holds its answer to reads of the input registers until told to."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock, cell=QUIET_CELL)
        self.gate = asyncio.Event()
        self.held = asyncio.Event()

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> object:
        if function_code == 4:
            self.held.set()
            await self.gate.wait()
        return await super()._action(
            function_code, start_address, address, count, registers, set_values
        )


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def lab(clock: VirtualClock) -> AsyncIterator[tuple[ModbusSimulator, TcpLink]]:
    simulator = lab_simulator(clock, seed=3, cell=QUIET_CELL)
    async with simulator.serve_tcp("127.0.0.1", 0) as (host, port):
        yield simulator, TcpLink(host, port)


def galvanostat(link: TcpLink, clock: VirtualClock, **kwargs: float) -> ModbusGalvanostat:
    device = ModbusDevice(link, CYCLER_MAP, device_id=1, timeout_s=kwargs.pop("timeout_s", 2.0))
    return ModbusGalvanostat(device, current_range_a=0.01, voltage_range_v=5.0, clock=clock)


async def test_pymodbus_own_client_reads_the_documented_holding_registers_from_address_1(
    lab: tuple[ModbusSimulator, TcpLink],
) -> None:
    _, link = lab
    client = AsyncModbusTcpClient(link.host, port=link.port, reconnect_delay=0)
    assert await client.connect()
    try:
        cycler = await client.read_holding_registers(1, count=9, device_id=1)
        chamber = await client.read_holding_registers(1, count=1, device_id=2)
        pressure = await client.read_holding_registers(1, count=2, device_id=3)
    finally:
        client.close()
    words = cycler.registers
    assert words[0] == 1  # mode: constant current
    floats = struct.unpack(">4f", struct.pack(">8H", *words[1:9]))
    assert floats == (0.0, 0.0, 5.0, 10.0)  # set mA, set V, compliance V, compliance mA
    assert chamber.registers == [250]  # 25.0 °C in 0.1 °C
    assert struct.unpack(">f", struct.pack(">2H", *pressure.registers))[0] == 5.0  # MPa


async def test_source_current_and_the_voltage_follows_the_cell_as_time_advances(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    _, link = lab
    gal = galvanostat(link, clock)
    assert isinstance(gal, Galvanostat)
    info = await gal.connect()
    try:
        assert info.vendor == "cellguard"  # from Read Device Identification
        assert info.current_range_a == 0.01
        before = await gal.measure()
        assert not before.output_on
        assert before.current_a == 0.0

        await gal.source_current(I_A, compliance_v=5.0)
        # The simulator's current is what its float32 mA register holds.
        set_a = (await gal.device.read(["set_current_a"]))["set_current_a"]
        assert set_a == pytest.approx(I_A, rel=1e-6)
        twin = SimCell(QUIET_CELL, seed=3)
        for dt_s in (10.0, 600.0, 3000.0):
            await clock.advance(dt_s)
            sample = await gal.measure()
            assert sample.output_on
            assert sample.t_s == clock.now_s()
            assert sample.current_a == pytest.approx(set_a)
            # µV resolution of the int32 register, the cell's own closed form.
            assert sample.voltage_v == pytest.approx(twin.advance(dt_s, set_a), abs=1e-6)
            assert sample.voltage_v > 0

        await gal.source_current(-I_A, compliance_v=5.0)
        await clock.advance(60.0)
        assert (await gal.measure()).voltage_v < 0
    finally:
        await gal.close()


async def test_current_is_limited_at_the_compliance_voltage(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    _, link = lab
    gal = galvanostat(link, clock)
    await gal.connect()
    try:
        await gal.source_current(0.01, compliance_v=0.005)
        await clock.advance(60.0)
        sample = await gal.measure()
        assert sample.voltage_v == pytest.approx(0.005, abs=1e-6)
        assert 0 < sample.current_a < 0.01
        assert (await gal.device.read(["in_compliance"]))["in_compliance"] == 1.0
    finally:
        await gal.close()


async def test_source_voltage_drives_the_current_the_cell_asks_for(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    _, link = lab
    gal = galvanostat(link, clock)
    await gal.connect()
    try:
        await gal.source_voltage(0.01, compliance_a=0.005)
        await clock.advance(30.0)
        sample = await gal.measure()
        assert sample.output_on
        assert 0 < sample.current_a <= 0.005
        assert sample.voltage_v > 0
        assert (await gal.device.read(["mode"]))["mode"] == 2
    finally:
        await gal.close()


async def test_output_off_is_confirmed_idempotent_and_stops_the_current(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    simulator, link = lab
    gal = galvanostat(link, clock)
    await gal.connect()
    try:
        await gal.source_current(I_A, compliance_v=5.0)
        await clock.advance(60.0)
        assert (await gal.measure()).output_on
        await gal.output_off()
        await gal.output_off()
        after = await gal.measure()
        assert not after.output_on
        assert after.current_a == 0.0
        assert simulator.device(1).value("output") == 0.0
        await clock.advance(600.0)  # rest: the voltage relaxes towards 0
        assert abs((await gal.measure()).voltage_v) < 0.002
    finally:
        await gal.close()


async def test_a_halt_from_a_cancelled_task_still_switches_the_output_off(
    clock: VirtualClock,
) -> None:
    cycler = GatedCycler(clock)
    async with ModbusSimulator([cycler]).serve_tcp() as (host, port):
        gal = galvanostat(TcpLink(host, port), clock)
        await gal.connect()
        try:
            await gal.source_current(I_A, compliance_v=5.0)
            assert cycler.value("output") == 1.0

            async def channel() -> None:
                try:
                    await gal.measure()  # its answer is held by the device: in flight
                finally:
                    await gal.output_off()  # the halt, from the cancelled task

            task = asyncio.create_task(channel())
            await cycler.held.wait()
            while not task.done():  # an impatient supervisor: cancels again and again
                task.cancel()
                await asyncio.sleep(0)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert cycler.value("output") == 0.0
            cycler.gate.set()  # the late answer to the abandoned read is ignored
            assert (await gal.device.read(["output"]))["output"] == 0.0
        finally:
            cycler.gate.set()
            await gal.close()


async def test_a_halt_queues_behind_a_request_in_flight_and_goes_out(
    clock: VirtualClock,
) -> None:
    cycler = GatedCycler(clock)
    async with ModbusSimulator([cycler]).serve_tcp() as (host, port):
        gal = galvanostat(TcpLink(host, port), clock)
        await gal.connect()
        try:
            await gal.source_current(I_A, compliance_v=5.0)
            reading = asyncio.create_task(gal.measure())
            await cycler.held.wait()
            halt = asyncio.create_task(gal.output_off())
            await asyncio.sleep(0)
            assert not halt.done()
            cycler.gate.set()
            await reading  # the request in flight completes, unharmed
            await halt
            assert cycler.value("output") == 0.0
            assert not (await gal.measure()).output_on
        finally:
            cycler.gate.set()
            await gal.close()


async def test_a_halt_whose_caller_is_cancelled_meanwhile_still_completes(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    simulator, link = lab
    gal = galvanostat(link, clock)
    await gal.connect()
    try:
        await gal.source_current(I_A, compliance_v=5.0)
        halt = asyncio.create_task(gal.output_off())
        await asyncio.sleep(0)
        halt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await halt
        assert simulator.device(1).value("output") == 0.0
    finally:
        await gal.close()


async def test_a_modbus_io_error_in_a_cancelled_task_is_given_back_as_cancellation(
    lab: tuple[ModbusSimulator, TcpLink],
) -> None:
    """pymodbus turns a cancellation into ModbusIOException in places: never swallow it."""
    _, link = lab
    device = ModbusDevice(link, CYCLER_MAP)

    async def cancelled_by_pymodbus() -> object:
        raise ModbusIOException("Request cancelled outside pymodbus.")

    async def request() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await device._execute("read", [CYCLER_MAP["voltage_v"]], 4, cancelled_by_pymodbus)  # type: ignore[arg-type]

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(request())


async def test_chamber_setpoint_is_written_and_the_readback_approaches_it(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    _, link = lab
    async with AuxDevice(ModbusDevice(link, CHAMBER_MAP, device_id=2), clock=clock) as chamber:
        start = await chamber.read()
        assert start.values["chamber_temperature_c"] == pytest.approx(25.0, abs=0.2)
        await chamber.set("chamber_setpoint_c", 40.0)
        await clock.advance(120.0)
        early = await chamber.read()
        assert early.t_s == 120.0
        assert early.values["chamber_setpoint_c"] == 40.0
        assert 26.0 < early.values["chamber_temperature_c"] < 36.0  # minutes, not seconds
        await clock.advance(3600.0)
        late = await chamber.read()
        assert late.values["chamber_temperature_c"] == pytest.approx(40.0, abs=0.2)


async def test_stack_pressure_is_read_in_mpa_around_its_setpoint(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    _, link = lab
    async with AuxDevice(ModbusDevice(link, PRESSURE_MAP, device_id=3), clock=clock) as cell:
        pressures = []
        for _ in range(10):
            await clock.advance(600.0)
            pressures.append((await cell.read()).values["stack_pressure_mpa"])
        assert all(4.5 < p < 5.5 for p in pressures)
        assert len(set(pressures)) > 1  # it drifts
        await cell.set("stack_pressure_setpoint_mpa", 3.0)
        await clock.advance(60.0)
        assert (await cell.read()).values["stack_pressure_mpa"] == pytest.approx(3.0, abs=0.3)


async def test_an_unreachable_server_is_a_connection_error_naming_host_and_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    device = ModbusDevice(TcpLink("127.0.0.1", port), CYCLER_MAP)
    with pytest.raises(InstrumentConnectionError, match=f"127.0.0.1:{port}"):
        await device.connect()
    with pytest.raises(InstrumentConnectionError, match="connect"):
        await device.read(["voltage_v"])


async def test_a_server_that_never_answers_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes requests, answers none
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    device = ModbusDevice(TcpLink("127.0.0.1", port), CYCLER_MAP, timeout_s=0.2)
    try:
        await device.connect()
        with pytest.raises(InstrumentTimeout, match=r"no answer within 0\.2 s"):
            await device.read(["voltage_v"])
    finally:
        await device.close()
        server.close()
        await server.wait_closed()


async def test_an_answer_to_another_request_is_a_protocol_violation() -> None:
    async def wrong_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while header := await reader.readexactly(7):
            tid, _, length, unit = struct.unpack(">HHHB", header)
            await reader.readexactly(length - 1)
            pdu = bytes([3, 4, 0, 1, 0, 2])  # a holding-register answer, whatever was asked
            writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
            await writer.drain()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await wrong_answers(reader, writer)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    device = ModbusDevice(TcpLink("127.0.0.1", port), CYCLER_MAP)
    try:
        await device.connect()
        with pytest.raises(ProtocolViolation, match="function code 3"):
            await device.read(["voltage_v"])  # input registers: function code 4
    finally:
        await device.close()
        server.close()
        await server.wait_closed()


async def test_an_illegal_address_is_refused_naming_the_register(
    lab: tuple[ModbusSimulator, TcpLink],
) -> None:
    _, link = lab
    extra = {"name": "ghost_v", "address": 500, "table": "holding", "type": "uint16", "unit": "V"}
    regs = RegisterMap.from_config([*CYCLER_REGISTERS, extra])
    async with ModbusDevice(link, regs) as device:
        with pytest.raises(CommandRefused, match="ghost_v") as err:
            await device.read(["ghost_v"])
        assert "illegal address" in str(err.value)
        assert (await device.read(["mode"]))["mode"] == 1  # the link is still good


async def test_a_value_the_device_refuses_is_a_refusal_and_changes_nothing(
    lab: tuple[ModbusSimulator, TcpLink],
) -> None:
    simulator, link = lab
    async with ModbusDevice(link, CYCLER_MAP) as device:
        with pytest.raises(CommandRefused, match="mode") as err:
            await device.write("mode", 7)
        assert "illegal value" in str(err.value)
        assert simulator.device(1).value("mode") == 1


async def test_read_only_registers_and_out_of_range_values_are_refused_before_sending(
    lab: tuple[ModbusSimulator, TcpLink], clock: VirtualClock
) -> None:
    simulator, link = lab
    async with AuxDevice(ModbusDevice(link, CHAMBER_MAP, device_id=2), clock=clock) as chamber:
        with pytest.raises(ConfigError, match="read-only"):
            await chamber.set("chamber_temperature_c", 30.0)
        with pytest.raises(ConfigError, match=r"-3276\.8 to 3276\.7"):
            await chamber.set("chamber_setpoint_c", 5000.0)
    gal = galvanostat(link, clock)
    with pytest.raises(ConfigError, match="current_a"):
        await gal.source_current(0.02, compliance_v=5.0)  # beyond the 10 mA range
    assert simulator.device(1).value("output") == 0.0


def test_a_galvanostat_map_needs_its_roles_and_writable_setpoints() -> None:
    link = TcpLink("127.0.0.1", 1)
    no_current = RegisterMap(r for r in CYCLER_MAP if r.name != "current_a")
    with pytest.raises(ConfigError, match="current_a") as err:
        ModbusGalvanostat(ModbusDevice(link, no_current), current_range_a=0.01, voltage_range_v=5.0)
    assert err.value.field == "registers"
    entries = [dict(e) for e in CYCLER_REGISTERS]
    entries[3]["access"] = "r"  # set_current_a read-only
    with pytest.raises(ConfigError, match="must be a coil or holding register") as err:
        ModbusGalvanostat(
            ModbusDevice(link, RegisterMap.from_config(entries)),
            current_range_a=0.01,
            voltage_range_v=5.0,
        )
    assert err.value.field == "registers.set_current_a"


async def test_simulated_devices_can_be_served_standalone(clock: VirtualClock) -> None:
    simulator = ModbusSimulator(
        [SimChamber(clock, device_id=7), SimPressureCell(clock, device_id=9)]
    )
    async with (
        simulator.serve_tcp() as (host, port),
        ModbusDevice(TcpLink(host, port), PRESSURE_MAP, device_id=9) as device,
    ):
        assert (await device.read_all())["stack_pressure_setpoint_mpa"] == 5.0
