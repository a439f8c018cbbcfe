"""Simulated Modbus instruments on real pymodbus servers (TCP, and RTU on a serial line).

Each :class:`SimulatedDevice` is a register image described by a
:class:`~._registers.RegisterMap` (the same maps the driver reads, :mod:`._maps`) plus
its physics, advanced on the simulator's :class:`~cellguard.drivers.clock.Clock`: on
every request (so a test on a :class:`VirtualClock` sees exactly the time it set) and
on :meth:`ModbusSimulator.advance` (so a quiet simulator served at a high speed-up does
not build up one huge step).

pymodbus serves the bytes: every device is a ``SimDevice`` whose ``action`` hook runs
on each access, brings the physics up to the present, applies (or refuses) what is
written, and copies this module's register image into pymodbus' before it answers. So
the image here is the one source of truth, and the same device can be served on TCP
and on a serial line at once.

- :class:`SimCycler`: a cycler / bidirectional supply with a
  :class:`~cellguard.drivers.sim.SimCell` behind it; constant current or constant
  voltage, limited by its compliance and its ranges; output off is rest.
- :class:`SimChamber`: a temperature chamber; the temperature follows the setpoint
  with a first-order lag (minutes), plus a little sensor noise.
- :class:`SimPressureCell`: a stack-pressure cell holding a set pressure, drifting
  slowly around it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pymodbus import ModbusDeviceIdentification
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.modbus._galvanostat import MODE_CURRENT, MODE_VOLTAGE
from cellguard.drivers.modbus._maps import CHAMBER_MAP, CYCLER_MAP, PRESSURE_MAP
from cellguard.drivers.modbus._registers import BIT_TABLES, TABLES, Register, RegisterMap, Table
from cellguard.drivers.sim import SimCell, SimCellSpec

__all__ = [
    "ModbusSimulator",
    "SimChamber",
    "SimCycler",
    "SimPressureCell",
    "SimulatedDevice",
    "lab_simulator",
]

log = logging.getLogger(__name__)

_FC_TABLE: dict[int, Table] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}
# pymodbus needs every table of a device non-empty. An unused register table gets an
# invalid placeholder; an unused bit table a placeholder group of 16 bits at the top
# of the address space (reads of it answer zeros, writes are refused below).
_BIT_PLACEHOLDER = 0xFFF0


class SimulatedDevice:
    """A register image and the physics behind it, served as one Modbus device id.

    Subclasses implement :meth:`_physics` (advance ``dt_s`` seconds and publish the
    measured registers) and may refuse written values in :meth:`_check_written`.
    """

    def __init__(
        self,
        registers: RegisterMap,
        clock: Clock,
        *,
        device_id: int,
        initial: Mapping[str, float] | None = None,
    ) -> None:
        if not 1 <= device_id <= 247:
            raise ConfigError(field="device_id", problem=f"must be 1..247, got {device_id!r}")
        self.registers = registers
        self.clock = clock
        self.device_id = device_id
        self._image: dict[Table, dict[int, int]] = {t: {} for t in TABLES}
        for reg in registers:
            self._put(reg, reg.encode(0.0))
        for name, value in (initial or {}).items():
            self.set_value(name, value)
        self._t_s = clock.now_s()

    # ------------------------------------------------------------ the image

    def value(self, name: str) -> float:
        """A register's present value, in the unit its name declares."""
        reg = self.registers[name]
        image = self._image[reg.table]
        return reg.decode([image[a] for a in range(reg.address, reg.end + 1)])

    def set_value(self, name: str, value: float) -> None:
        """Set a register from the device's side (a measurement, a front-panel change)."""
        reg = self.registers[name]
        self._put(reg, reg.encode(value))

    def _put(self, reg: Register, words: Sequence[int]) -> None:
        image = self._image[reg.table]
        for i, word in enumerate(words):
            image[reg.address + i] = word

    # ------------------------------------------------------------ time

    def advance(self) -> None:
        """Bring the physics up to the clock's present."""
        now_s = self.clock.now_s()
        dt_s = now_s - self._t_s
        if dt_s > 0:
            self._t_s = now_s
            self._physics(dt_s)

    def _physics(self, dt_s: float) -> None:
        """Advance ``dt_s`` seconds and publish the measured registers."""

    def _check_written(self, names: set[str]) -> bool:
        """Whether the values just written are acceptable (else: illegal data value)."""
        return True

    def _written(self, names: set[str]) -> None:
        """React at once to accepted writes (what must not wait for the next step)."""

    # ------------------------------------------------------------ pymodbus

    def sim_device(self) -> SimDevice:
        """This device as a pymodbus ``SimDevice`` (a fresh one per server)."""
        blocks: list[list[SimData]] = []
        for table in ("coil", "discrete", "holding", "input"):
            regs = self.registers.in_table(table)
            if table in BIT_TABLES:
                entries = [
                    SimData(r.address, values=[False], datatype=DataType.BITS) for r in regs
                ] or [SimData(_BIT_PLACEHOLDER, values=[False] * 16, datatype=DataType.BITS)]
            else:
                entries = [
                    SimData(
                        r.address,
                        values=[0] * r.words,
                        datatype=DataType.REGISTERS,
                        readonly=not r.writable,
                    )
                    for r in regs
                ] or [SimData(0, datatype=DataType.INVALID)]
            blocks.append(entries)
        return SimDevice(
            self.device_id,
            simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        table = _FC_TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        self.advance()
        if set_values is not None:
            refused = self._apply_write(table, address, [int(v) for v in set_values])
            if refused is not None:
                return refused
        self._sync(table, start_address, registers)
        return None

    def _apply_write(self, table: Table, address: int, words: list[int]) -> ExcCodes | None:
        image = self._image[table]
        touched = {
            r.name
            for r in self.registers
            if r.table == table and r.address <= address + len(words) - 1 and address <= r.end
        }
        addresses = range(address, address + len(words))
        defined = {
            a for n in touched for a in range(self.registers[n].address, self.registers[n].end + 1)
        }
        # pymodbus checks register tables itself; bits are checked 16 at a time there.
        if any(a not in defined for a in addresses) or any(
            not self.registers[n].writable for n in touched
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        before = {a: image[a] for a in addresses}
        for a, word in zip(addresses, words, strict=True):
            image[a] = word
        if not self._check_written(touched):
            image.update(before)
            return ExcCodes.ILLEGAL_VALUE
        self._written(touched)
        return None

    def _sync(self, table: Table, start_address: int, registers: list[int]) -> None:
        """Copy this table of the image into pymodbus' registers before it answers."""
        image = self._image[table]
        if table in BIT_TABLES:
            for a, bit in image.items():
                i = a // 16 - start_address
                if 0 <= i < len(registers):
                    mask = 1 << (a % 16)
                    registers[i] = registers[i] | mask if bit else registers[i] & ~mask
            return
        for a, word in image.items():
            i = a - start_address
            if 0 <= i < len(registers):
                registers[i] = word

    def summary(self) -> str:
        """One line per register, for the CLI."""
        lines = []
        for reg in self.registers:
            unit = f" {reg.unit}" if reg.unit else ""
            lines.append(
                f"  {reg.table:<8} {reg.address:>5}  {reg.name:<28} {reg.type:<7}"
                f" scale {reg.scale:g}{unit} ({reg.access})"
            )
        return "\n".join(lines)


class SimCycler(SimulatedDevice):
    """A bidirectional supply / cycler channel with a simulated Li cell behind it.

    Constant current: the set current flows unless the cell's voltage would pass the
    voltage limit (``compliance_v``, at most ``voltage_range_v``); then the voltage sits
    at the limit and the current falls in proportion. Constant voltage: the current
    the cell's present resistance asks for, limited by ``compliance_a`` (at most
    ``current_range_a``). Output off: no current (rest); the voltage is the cell's own.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        cell: SimCellSpec | None = None,
        seed: int = 0,
        current_range_a: float = 0.01,
        voltage_range_v: float = 5.0,
        device_id: int = 1,
        registers: RegisterMap = CYCLER_MAP,
    ) -> None:
        if not current_range_a > 0:
            raise ConfigError(field="current_range_a", problem="must be > 0 A")
        if not voltage_range_v > 0:
            raise ConfigError(field="voltage_range_v", problem="must be > 0 V")
        self.current_range_a = current_range_a
        self.voltage_range_v = voltage_range_v
        self.cell = SimCell(cell or SimCellSpec(), seed)
        super().__init__(
            registers,
            clock,
            device_id=device_id,
            initial={
                "mode": MODE_CURRENT,
                "compliance_v": voltage_range_v,
                "compliance_a": current_range_a,
            },
        )

    def _check_written(self, names: set[str]) -> bool:
        mode = self.value("mode")
        if mode not in (MODE_CURRENT, MODE_VOLTAGE):
            return False
        checks = (
            ("set_current_a", self.current_range_a, False),
            ("compliance_a", self.current_range_a, True),
            ("set_voltage_v", self.voltage_range_v, False),
            ("compliance_v", self.voltage_range_v, True),
        )
        for name, full_range, positive in checks:
            if name in names:
                value = self.value(name)
                if not (math.isfinite(value) and abs(value) <= full_range * (1 + 1e-6)):
                    return False
                if positive and not value > 0:
                    return False
        return True

    def _written(self, names: set[str]) -> None:
        if "output" in names and not self.value("output"):
            # The output relay opens now: no current flows from this instant on.
            self.set_value("current_a", 0.0)
            self.set_value("in_compliance", 0.0)

    def _physics(self, dt_s: float) -> None:
        limited = False
        if not self.value("output"):
            current_a = 0.0
            voltage_v = self.cell.advance(dt_s, 0.0)
        elif self.value("mode") == MODE_VOLTAGE:
            limit_a = min(self.value("compliance_a"), self.current_range_a)
            # The cell's resistance now (Ω): the current a constant voltage asks for.
            resistance_ohm = self.cell.asr_ohm_cm2 / self.cell.spec.area_cm2
            wanted_a = self.value("set_voltage_v") / resistance_ohm
            current_a = max(-limit_a, min(limit_a, wanted_a))
            limited = current_a != wanted_a
            voltage_v = self.cell.advance(dt_s, current_a)
        else:
            current_a = self.value("set_current_a")
            voltage_v = self.cell.advance(dt_s, current_a)
            limit_v = min(self.value("compliance_v"), self.voltage_range_v)
            if abs(voltage_v) > limit_v:
                # The supply cannot push the set current through: it sits at its
                # voltage limit and delivers what that voltage drives.
                current_a *= limit_v / abs(voltage_v)
                voltage_v = math.copysign(limit_v, voltage_v)
                limited = True
        # What a real front end reports: never beyond its own measuring range.
        voltage_v = max(-self.voltage_range_v, min(self.voltage_range_v, voltage_v))
        self.set_value("voltage_v", voltage_v)
        self.set_value("current_a", current_a)
        self.set_value("in_compliance", 1.0 if limited else 0.0)


class SimChamber(SimulatedDevice):
    """A temperature chamber: first-order lag towards the setpoint, plus sensor noise."""

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        start_c: float = 25.0,
        time_constant_s: float = 300.0,
        noise_c: float = 0.02,
        device_id: int = 2,
        registers: RegisterMap = CHAMBER_MAP,
    ) -> None:
        if not time_constant_s > 0:
            raise ConfigError(field="time_constant_s", problem="must be > 0 s")
        self.temperature_c = start_c
        self.time_constant_s = time_constant_s
        self.noise_c = noise_c
        self._gauss = random.Random(seed).gauss
        super().__init__(
            registers,
            clock,
            device_id=device_id,
            initial={"chamber_setpoint_c": start_c, "chamber_temperature_c": start_c},
        )

    def _check_written(self, names: set[str]) -> bool:
        return -70.0 <= self.value("chamber_setpoint_c") <= 180.0

    def _physics(self, dt_s: float) -> None:
        setpoint_c = self.value("chamber_setpoint_c")
        # Exact over the step, so the result does not depend on how time is cut.
        self.temperature_c = setpoint_c + (self.temperature_c - setpoint_c) * math.exp(
            -dt_s / self.time_constant_s
        )
        measured_c = self.temperature_c + self._gauss(0.0, self.noise_c)
        self.set_value("chamber_temperature_c", measured_c)


class SimPressureCell(SimulatedDevice):
    """A stack-pressure cell: the set pressure plus a slow random drift around it.

    The drift is an Ornstein-Uhlenbeck process (``drift_mpa`` standard deviation,
    ``time_constant_s`` memory), sampled exactly over each step.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        setpoint_mpa: float = 5.0,
        drift_mpa: float = 0.05,
        time_constant_s: float = 3600.0,
        noise_mpa: float = 0.002,
        device_id: int = 3,
        registers: RegisterMap = PRESSURE_MAP,
    ) -> None:
        if not time_constant_s > 0:
            raise ConfigError(field="time_constant_s", problem="must be > 0 s")
        self.deviation_mpa = 0.0
        self.drift_mpa = drift_mpa
        self.time_constant_s = time_constant_s
        self.noise_mpa = noise_mpa
        self._gauss = random.Random(seed).gauss
        super().__init__(
            registers,
            clock,
            device_id=device_id,
            initial={
                "stack_pressure_setpoint_mpa": setpoint_mpa,
                "stack_pressure_mpa": setpoint_mpa,
            },
        )

    def _check_written(self, names: set[str]) -> bool:
        return 0.0 <= self.value("stack_pressure_setpoint_mpa") <= 100.0

    def _physics(self, dt_s: float) -> None:
        keep = math.exp(-dt_s / self.time_constant_s)
        self.deviation_mpa = self.deviation_mpa * keep + self.drift_mpa * math.sqrt(
            1.0 - keep * keep
        ) * self._gauss(0.0, 1.0)
        measured = (
            self.value("stack_pressure_setpoint_mpa")
            + self.deviation_mpa
            + self._gauss(0.0, self.noise_mpa)
        )
        self.set_value("stack_pressure_mpa", max(0.0, measured))


@dataclass(frozen=True, slots=True)
class _Identity:
    vendor: str = "cellguard"
    product_code: str = "CG-MODBUS-SIM"
    revision: str = "0.1"
    product_name: str = "cellguard simulated Modbus lab"


class ModbusSimulator:
    """Simulated devices (distinct device ids) behind pymodbus servers.

    Answers Read Device Identification (FC 43) with cellguard's simulator identity.
    """

    def __init__(self, devices: Iterable[SimulatedDevice]) -> None:
        self.devices = tuple(devices)
        ids = [d.device_id for d in self.devices]
        if not ids:
            raise ConfigError(field="devices", problem="at least one device is needed")
        if len(set(ids)) != len(ids):
            raise ConfigError(field="devices", problem=f"device ids must differ, got {ids}")
        self.identity = _Identity()

    def device(self, device_id: int) -> SimulatedDevice:
        for dev in self.devices:
            if dev.device_id == device_id:
                return dev
        raise ConfigError(field="device_id", problem=f"no simulated device {device_id}")

    def advance(self) -> None:
        """Bring every device's physics up to the present."""
        for dev in self.devices:
            dev.advance()

    def _pymodbus_identity(self) -> ModbusDeviceIdentification:
        ident = self.identity
        return ModbusDeviceIdentification(  # type: ignore[no-untyped-call]
            info_name={
                "VendorName": ident.vendor,
                "ProductCode": ident.product_code,
                "MajorMinorRevision": ident.revision,
                "ProductName": ident.product_name,
            }
        )

    @contextlib.asynccontextmanager
    async def serve_tcp(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> AsyncIterator[tuple[str, int]]:
        """Serve Modbus TCP on ``host:port`` (0: any free port); yields the bound address."""
        server = ModbusTcpServer(
            [d.sim_device() for d in self.devices],
            address=(host, port),
            identity=self._pymodbus_identity(),
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:
            raise ConfigError(
                field="port", problem=f"cannot listen on {host}:{port} (in use, or not allowed)"
            ) from err
        try:
            sockets = getattr(server.transport, "sockets", None) or ()
            bound = sockets[0].getsockname() if sockets else (host, port)
            yield str(bound[0]), int(bound[1])
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    @contextlib.asynccontextmanager
    async def serve_serial(
        self,
        port: str,
        *,
        baudrate: int = 19200,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
    ) -> AsyncIterator[str]:
        """Serve Modbus RTU on a serial line (a device path or a pyserial URL)."""
        server = ModbusSerialServer(
            [d.sim_device() for d in self.devices],
            port=port,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            identity=self._pymodbus_identity(),
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:
            raise ConfigError(field="serial", problem=f"cannot open {port}") from err
        try:
            yield port
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]


def lab_simulator(
    clock: Clock,
    *,
    seed: int = 0,
    cell: SimCellSpec | None = None,
    current_range_a: float = 0.01,
    voltage_range_v: float = 5.0,
) -> ModbusSimulator:
    """The three built-in devices: cycler (id 1), chamber (id 2), pressure cell (id 3)."""
    return ModbusSimulator(
        [
            SimCycler(
                clock,
                cell=cell,
                seed=seed,
                current_range_a=current_range_a,
                voltage_range_v=voltage_range_v,
            ),
            SimChamber(clock, seed=seed + 1),
            SimPressureCell(clock, seed=seed + 2),
        ]
    )
