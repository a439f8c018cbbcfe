"""BioLogic EC-Lab ``.mpr`` files, read natively: a sans-IO parser and its Recording."""

from cellguard.drivers.biologic._mpr import Module, MprData, MprFormatError, parse_mpr
from cellguard.drivers.biologic._recording import recording_from_mpr, step_kinds

__all__ = [
    "Module",
    "MprData",
    "MprFormatError",
    "parse_mpr",
    "recording_from_mpr",
    "step_kinds",
]
