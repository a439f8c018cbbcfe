"""Built-in register maps: the simulated instruments' manuals, as data.

Each map exists twice: as TOML-equivalent tables (``*_REGISTERS``, what a config file
or the docs show) and as the :class:`RegisterMap` built from them (``*_MAP``), which
both the simulators and the driver use, so they agree by construction. Addresses are
the protocol's (0-based); every map starts at 1.

Cycler / bidirectional supply (device id 1 in ``cellguard simulate modbus``):

=========  =======  =================  =======  =====  ======================
table      address  name               type     unit   meaning
=========  =======  =================  =======  =====  ======================
coil       1        output             bool            1 = output on
discrete   1        in_compliance      bool            1 = limited by compliance
holding    1        mode               uint16          1 = current, 2 = voltage
holding    2-3      set_current_a      float32  mA     current setpoint
holding    4-5      set_voltage_v      float32  V      voltage setpoint
holding    6-7      compliance_v       float32  V      voltage limit in current mode
holding    8-9      compliance_a       float32  mA     current limit in voltage mode
input      1-2      voltage_v          int32    µV     measured (low word first)
input      3-4      current_a          float32  mA     measured
=========  =======  =================  =======  =====  ======================

Temperature chamber (device id 2): holding 1 ``chamber_setpoint_c`` and input 1
``chamber_temperature_c``, int16 in 0.1 °C. Stack-pressure cell (device id 3): holding
1-2 ``stack_pressure_setpoint_mpa`` (float32, MPa) and input 1-2 ``stack_pressure_mpa``
(float32, stored in kPa).
"""

from __future__ import annotations

from typing import Final

from cellguard.drivers.modbus._registers import RegisterMap

__all__ = [
    "CHAMBER_MAP",
    "CHAMBER_REGISTERS",
    "CYCLER_MAP",
    "CYCLER_REGISTERS",
    "PRESSURE_MAP",
    "PRESSURE_REGISTERS",
]

CYCLER_REGISTERS: Final[list[dict[str, object]]] = [
    {"name": "output", "address": 1, "table": "coil", "access": "rw"},
    {"name": "in_compliance", "address": 1, "table": "discrete"},
    {"name": "mode", "address": 1, "table": "holding", "type": "uint16", "access": "rw"},
    {
        "name": "set_current_a",
        "address": 2,
        "table": "holding",
        "type": "float32",
        "unit": "mA",
        "access": "rw",
    },
    {
        "name": "set_voltage_v",
        "address": 4,
        "table": "holding",
        "type": "float32",
        "unit": "V",
        "access": "rw",
    },
    {
        "name": "compliance_v",
        "address": 6,
        "table": "holding",
        "type": "float32",
        "unit": "V",
        "access": "rw",
    },
    {
        "name": "compliance_a",
        "address": 8,
        "table": "holding",
        "type": "float32",
        "unit": "mA",
        "access": "rw",
    },
    {
        "name": "voltage_v",
        "address": 1,
        "table": "input",
        "type": "int32",
        "scale": 1e-6,
        "unit": "V",
        "word_order": "little",
    },
    {"name": "current_a", "address": 3, "table": "input", "type": "float32", "unit": "mA"},
]

CHAMBER_REGISTERS: Final[list[dict[str, object]]] = [
    {
        "name": "chamber_setpoint_c",
        "address": 1,
        "table": "holding",
        "type": "int16",
        "scale": 0.1,
        "unit": "degC",
        "access": "rw",
    },
    {
        "name": "chamber_temperature_c",
        "address": 1,
        "table": "input",
        "type": "int16",
        "scale": 0.1,
        "unit": "degC",
    },
]

PRESSURE_REGISTERS: Final[list[dict[str, object]]] = [
    {
        "name": "stack_pressure_setpoint_mpa",
        "address": 1,
        "table": "holding",
        "type": "float32",
        "unit": "MPa",
        "access": "rw",
    },
    {
        "name": "stack_pressure_mpa",
        "address": 1,
        "table": "input",
        "type": "float32",
        "unit": "kPa",
    },
]

CYCLER_MAP: Final = RegisterMap.from_config(CYCLER_REGISTERS, "CYCLER_REGISTERS")
CHAMBER_MAP: Final = RegisterMap.from_config(CHAMBER_REGISTERS, "CHAMBER_REGISTERS")
PRESSURE_MAP: Final = RegisterMap.from_config(PRESSURE_REGISTERS, "PRESSURE_REGISTERS")
