"""A Keithley 2400-style source-measure unit on a serial line: SCPI codec, client, simulator."""

from cellguard.drivers.smu._client import (
    DEFAULT_TIMEOUT_S,
    KNOWN_MODELS,
    UNKNOWN_MODEL,
    ModelLimits,
    SmuClient,
)
from cellguard.drivers.smu._scpi import (
    COMPLIANCE_BIT,
    NO_VALUE,
    READING_ELEMENTS,
    Command,
    ErrorEntry,
    Identity,
    LineSplitter,
    Reading,
    ScpiSyntaxError,
    parse_error,
    parse_identity,
    parse_output_state,
    parse_program_line,
    parse_reading,
)
from cellguard.drivers.smu._simulator import (
    DEFAULT_CELL,
    SMU_CELL_PRESETS,
    SimulatedCell,
    SmuSimulator,
    make_cell,
)
from cellguard.drivers.smu._transport import DEFAULT_BAUDRATE, SerialLink, SerialSettings

__all__ = [
    "COMPLIANCE_BIT",
    "DEFAULT_BAUDRATE",
    "DEFAULT_CELL",
    "DEFAULT_TIMEOUT_S",
    "KNOWN_MODELS",
    "NO_VALUE",
    "READING_ELEMENTS",
    "SMU_CELL_PRESETS",
    "UNKNOWN_MODEL",
    "Command",
    "ErrorEntry",
    "Identity",
    "LineSplitter",
    "ModelLimits",
    "Reading",
    "ScpiSyntaxError",
    "SerialLink",
    "SerialSettings",
    "SimulatedCell",
    "SmuClient",
    "SmuSimulator",
    "make_cell",
    "parse_error",
    "parse_identity",
    "parse_output_state",
    "parse_program_line",
    "parse_reading",
]
