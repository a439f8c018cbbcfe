"""Simulated cells: Li-metal physics (and a simple full cell) in virtual time."""

from cellguard.drivers.sim._cell import (
    LI_MAH_CM2_PER_UM,
    ShortKind,
    ShortSpec,
    SimCell,
    SimCellSpec,
    simulate_square_wave,
)
from cellguard.drivers.sim._fullcell import SimFullCell, SimFullCellSpec
from cellguard.drivers.sim._interphase import INTERPHASES, InterphaseModel, interphase

__all__ = [
    "INTERPHASES",
    "LI_MAH_CM2_PER_UM",
    "InterphaseModel",
    "ShortKind",
    "ShortSpec",
    "SimCell",
    "SimCellSpec",
    "SimFullCell",
    "SimFullCellSpec",
    "interphase",
    "simulate_square_wave",
]
