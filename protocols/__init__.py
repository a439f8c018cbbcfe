"""What to run and how to judge it: units, cells, steps, step files, detectors."""

from cellguard.protocols.cells import Cell, CellType
from cellguard.protocols.galvanostatic import (
    CURRENT_PROTECTION_FACTOR,
    GalvanostaticCycling,
    InstrumentLimits,
    write_step_file,
)
from cellguard.protocols.units import (
    LI_MAH_CM2_PER_UM,
    current_a,
    disc_area_cm2,
    half_cycle_s,
    li_capacity_mah_cm2,
)

__all__ = [
    "CURRENT_PROTECTION_FACTOR",
    "LI_MAH_CM2_PER_UM",
    "Cell",
    "CellType",
    "GalvanostaticCycling",
    "InstrumentLimits",
    "current_a",
    "disc_area_cm2",
    "half_cycle_s",
    "li_capacity_mah_cm2",
    "write_step_file",
]
