"""Modbus instruments: register maps, a client, a galvanostat, aux sensors, simulators.

A :class:`RegisterMap` (from a TOML-like config, checked there) says what lives where;
:class:`ModbusDevice` reads and writes it by name over pymodbus (TCP or RTU);
:class:`ModbusGalvanostat` drives a cycler or bidirectional supply through it as a
:class:`~cellguard.drivers.galvanostat.Galvanostat`; :class:`AuxDevice` reads sensors
(a temperature chamber, a stack-pressure cell). :class:`ModbusSimulator` serves
simulated instruments on real pymodbus servers, with the built-in maps of
:mod:`._maps`.
"""

from cellguard.drivers.modbus._aux import AuxDevice, AuxReading
from cellguard.drivers.modbus._client import DEFAULT_TIMEOUT_S, ModbusDevice, SerialLink, TcpLink
from cellguard.drivers.modbus._galvanostat import (
    GALVANOSTAT_OPTIONAL_ROLES,
    GALVANOSTAT_ROLES,
    MODE_CURRENT,
    MODE_VOLTAGE,
    ModbusGalvanostat,
)
from cellguard.drivers.modbus._maps import (
    CHAMBER_MAP,
    CHAMBER_REGISTERS,
    CYCLER_MAP,
    CYCLER_REGISTERS,
    PRESSURE_MAP,
    PRESSURE_REGISTERS,
)
from cellguard.drivers.modbus._registers import (
    MAX_READ_BITS,
    MAX_READ_WORDS,
    Access,
    DataType,
    ReadBlock,
    Register,
    RegisterMap,
    Table,
    WordOrder,
    decode_block,
    name_unit,
    plan_reads,
    plan_writes,
)
from cellguard.drivers.modbus._simulator import (
    ModbusSimulator,
    SimChamber,
    SimCycler,
    SimPressureCell,
    SimulatedDevice,
    lab_simulator,
)

__all__ = [
    "CHAMBER_MAP",
    "CHAMBER_REGISTERS",
    "CYCLER_MAP",
    "CYCLER_REGISTERS",
    "DEFAULT_TIMEOUT_S",
    "GALVANOSTAT_OPTIONAL_ROLES",
    "GALVANOSTAT_ROLES",
    "MAX_READ_BITS",
    "MAX_READ_WORDS",
    "MODE_CURRENT",
    "MODE_VOLTAGE",
    "PRESSURE_MAP",
    "PRESSURE_REGISTERS",
    "Access",
    "AuxDevice",
    "AuxReading",
    "DataType",
    "ModbusDevice",
    "ModbusGalvanostat",
    "ModbusSimulator",
    "ReadBlock",
    "Register",
    "RegisterMap",
    "SerialLink",
    "SimChamber",
    "SimCycler",
    "SimPressureCell",
    "SimulatedDevice",
    "Table",
    "TcpLink",
    "WordOrder",
    "decode_block",
    "lab_simulator",
    "name_unit",
    "plan_reads",
    "plan_writes",
]
