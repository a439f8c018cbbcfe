"""Protocol scripting: steps in areal units, a TOML text form and a Python API.

Write a protocol as text (:func:`load_protocol_file`, :func:`parse_protocol_text`) or
in Python; both give the same :class:`Protocol`::

    Protocol(
        "asymmetric 0.5/0.5",
        cell=CellSpec("asymmetric", diameter_mm=10, thick_li_um=100, thin_li_um=20),
        steps=[
            Rest(minutes(10)),
            Strip(ma_cm2(0.5), capacity=mah_cm2(0.5)),
            Plate(ma_cm2(0.5), capacity=mah_cm2(0.5)),
            Repeat(2, 3, times=500),
        ],
        limits=[VoltageBetween(volts(-5), volts(5))],
        record_every=seconds(10),
    )

:meth:`Protocol.validate` refuses what the cell or instrument cannot run;
:func:`to_step_file` compiles to a Neware BTS 8 step file; :func:`describe` lists the
compiled steps with absolute currents and the expected test length.

Steps may carry their own safety window (``limits=``) and a conditional jump
(``goto=Goto(5, Condition("voltage above", volts(1)))``), and :class:`SetTemperature`
sets an auxiliary chamber. :class:`HostRun` runs any protocol host-driven (a pure
state machine: readings in, actions out); for a Neware, :func:`step_limits` and
:func:`prestart_setpoints` hand the daemon what a step file cannot hold, and a goto
or a mid-protocol setpoint is refused.
"""

from cellguard.protocols.script._examples import example_names, example_path
from cellguard.protocols.script._guard import StepLimitGuard
from cellguard.protocols.script._host import (
    DEFAULT_TEMPERATURE_AUX,
    Action,
    DryRun,
    Finished,
    HostRun,
    Outcome,
    OutputOff,
    Position,
    SetAux,
    SourceCurrent,
    SourceVoltage,
    StepStarted,
    dry_run,
)
from cellguard.protocols.script._model import (
    ALLOWED_UNITS,
    DEFAULT_SOAK_TIMEOUT_S,
    CellSpec,
    CellType,
    Charge,
    Condition,
    ConditionKind,
    CurrentBelow,
    Discharge,
    Goto,
    HoldVoltage,
    InstrumentCapability,
    Limit,
    Plate,
    Protocol,
    Quantity,
    QuantityKind,
    Repeat,
    Rest,
    SetTemperature,
    Step,
    Strip,
    VoltageBetween,
    amps,
    c_rate,
    celsius,
    hours,
    ma,
    ma_cm2,
    mah,
    mah_cm2,
    millivolts,
    minutes,
    seconds,
    volts,
)
from cellguard.protocols.script._neware import (
    bts_step_ids,
    describe,
    expected_length_s,
    prestart_setpoints,
    step_limits,
    to_step_file,
    unexpressed,
)
from cellguard.protocols.script._text import (
    load_protocol_file,
    parse_limit,
    parse_protocol_text,
    parse_quantity,
    parse_step,
)

__all__ = [
    "ALLOWED_UNITS",
    "CellSpec",
    "CellType",
    "Charge",
    "CurrentBelow",
    "Discharge",
    "HoldVoltage",
    "InstrumentCapability",
    "Limit",
    "Plate",
    "Protocol",
    "Quantity",
    "QuantityKind",
    "Repeat",
    "Rest",
    "Step",
    "StepLimitGuard",
    "Strip",
    "VoltageBetween",
    "amps",
    "c_rate",
    "describe",
    "dry_run",
    "example_names",
    "example_path",
    "expected_length_s",
    "hours",
    "load_protocol_file",
    "ma",
    "ma_cm2",
    "mah",
    "mah_cm2",
    "millivolts",
    "minutes",
    "parse_limit",
    "parse_protocol_text",
    "parse_quantity",
    "parse_step",
    "seconds",
    "to_step_file",
    "unexpressed",
    "volts",
]

from cellguard.protocols.script._preflight import (
    DEFAULT_CE,
    Preflight,
    format_hours,
    preflight,
)
from cellguard.protocols.script.library import (
    CCD_LEVELS_MA_CM2,
    LibraryProtocol,
    asymmetric_cycling,
    ccd_levels,
    coulombic_efficiency,
    critical_current_density,
    full_cell_cccv,
    plating_to_failure,
    symmetric_cycling,
)

__all__ += [
    "DEFAULT_SOAK_TIMEOUT_S",
    "DEFAULT_TEMPERATURE_AUX",
    "Action",
    "Condition",
    "ConditionKind",
    "DryRun",
    "Finished",
    "Goto",
    "HostRun",
    "Outcome",
    "OutputOff",
    "Position",
    "SetAux",
    "SetTemperature",
    "SourceCurrent",
    "SourceVoltage",
    "StepStarted",
    "bts_step_ids",
    "celsius",
    "prestart_setpoints",
    "step_limits",
]
__all__ += ["DEFAULT_CE", "Preflight", "format_hours", "preflight"]
__all__ += [
    "CCD_LEVELS_MA_CM2",
    "LibraryProtocol",
    "asymmetric_cycling",
    "ccd_levels",
    "coulombic_efficiency",
    "critical_current_density",
    "full_cell_cccv",
    "plating_to_failure",
    "symmetric_cycling",
]
