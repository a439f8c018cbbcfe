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
"""

from cellguard.protocols.script._model import (
    ALLOWED_UNITS,
    CellSpec,
    CellType,
    Charge,
    CurrentBelow,
    Discharge,
    HoldVoltage,
    InstrumentCapability,
    Limit,
    Plate,
    Protocol,
    Quantity,
    QuantityKind,
    Repeat,
    Rest,
    Step,
    Strip,
    VoltageBetween,
    amps,
    c_rate,
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
from cellguard.protocols.script._neware import describe, expected_length_s, to_step_file
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
    "Strip",
    "VoltageBetween",
    "amps",
    "c_rate",
    "describe",
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
    "volts",
]

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
