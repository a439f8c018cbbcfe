"""The cell under test: symmetric Li|Li or asymmetric Li(source)|Li(thin working).

The *working* electrode is the one Li is stripped from in the first half cycle (see
:mod:`cellguard.protocols.galvanostatic` for the sign convention). In an asymmetric
cell it is the thin electrode, because its depletion is the failure criterion; the
thick counter electrode is the Li source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.units import _require_positive, li_capacity_mah_cm2

CellType = Literal["symmetric", "asymmetric"]

_AREA_ALLOWED = "required: electrode area in cm² > 0 (a 10 mm disc is 0.785)"
_LI_ALLOWED = "must be a Li foil thickness in µm > 0 (e.g. 100, 50 or 20)"


@dataclass(frozen=True)
class Cell:
    """A Li metal cell: type, electrode area (cm²) and Li foil thicknesses (µm).

    Prefer :meth:`symmetric` and :meth:`asymmetric`; the constructor checks the same
    rules so a cell read from a configuration file is held to them too.
    """

    cell_type: CellType
    area_cm2: float
    li_counter_um: float = 100.0
    li_working_um: float = 100.0
    interphase: str | None = None

    def __post_init__(self) -> None:
        if self.cell_type not in get_args(CellType):
            raise ConfigError(
                field="cell.cell_type",
                problem=f"must be 'symmetric' or 'asymmetric', got {self.cell_type!r}",
            )
        _require_positive("cell.area_cm2", self.area_cm2, _AREA_ALLOWED)
        counter_um = _require_positive("cell.li_counter_um", self.li_counter_um, _LI_ALLOWED)
        working_um = _require_positive("cell.li_working_um", self.li_working_um, _LI_ALLOWED)
        if self.cell_type == "symmetric" and working_um != counter_um:
            raise ConfigError(
                field="cell.li_working_um",
                problem=f"a symmetric cell has two equal Li electrodes, got {working_um:g} µm "
                f"working and {counter_um:g} µm counter; use an asymmetric cell for a thin "
                "electrode",
            )
        if self.cell_type == "asymmetric" and not working_um < counter_um:
            raise ConfigError(
                field="cell.li_working_um",
                problem=f"an asymmetric cell's working electrode must be thinner than its "
                f"{counter_um:g} µm Li source (counter), got {working_um:g} µm",
            )

    @classmethod
    def symmetric(
        cls, area_cm2: float, li_um: float = 100.0, interphase: str | None = None
    ) -> Cell:
        """Li(``li_um``) | electrolyte | Li(``li_um``) over ``area_cm2``."""
        return cls("symmetric", area_cm2, li_um, li_um, interphase)

    @classmethod
    def asymmetric(
        cls,
        area_cm2: float,
        li_thin_um: float = 20.0,
        li_source_um: float = 100.0,
        interphase: str | None = None,
    ) -> Cell:
        """Li(``li_source_um``, counter) | electrolyte | Li(``li_thin_um``, working)."""
        return cls(
            "asymmetric",
            area_cm2,
            li_counter_um=li_source_um,
            li_working_um=li_thin_um,
            interphase=interphase,
        )

    @property
    def li_working_mah_cm2(self) -> float:
        """Li initially in the working electrode, in mAh cm⁻²."""
        return li_capacity_mah_cm2(self.li_working_um)

    @property
    def li_counter_mah_cm2(self) -> float:
        """Li initially in the counter electrode, in mAh cm⁻²."""
        return li_capacity_mah_cm2(self.li_counter_um)

    @property
    def thin_li_um(self) -> float:
        """Thickness in µm of the working electrode (the thin one if asymmetric)."""
        return self.li_working_um
