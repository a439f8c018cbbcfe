"""Unit conversions for Li metal cells: disc area, current, Li capacity, half cycles.

Every function takes and returns plain floats with the unit in its name, and refuses
values that cannot describe a real cell (non-finite, zero or negative) with a
:class:`~cellguard.drivers.errors.ConfigError` naming the argument.
"""

from __future__ import annotations

import math

from cellguard.drivers.errors import ConfigError

LI_MAH_CM2_PER_UM = 0.205
"""Areal capacity of Li foil per µm of thickness, in mAh cm⁻² µm⁻¹ (100 µm ≈ 20.5)."""

_MM_PER_CM = 10.0
_MA_PER_A = 1000.0
_S_PER_H = 3600.0


def _require_positive(
    name: str, value: object, allowed: str = "must be a finite number > 0"
) -> float:
    """``value`` as a float, or a ConfigError naming ``name`` and what is allowed.

    Takes ``object`` because values arrive from configuration files, where a missing
    number is ``None`` and a typo is a string; ``bool`` is refused although it is an int.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ConfigError(field=name, problem=f"{allowed}, got {value!r}")
    return float(value)


def disc_area_cm2(diameter_mm: float) -> float:
    """Area in cm² of a disc electrode ``diameter_mm`` across (10 mm → 0.785 cm²)."""
    diameter_cm = _require_positive("diameter_mm", diameter_mm) / _MM_PER_CM
    return math.pi * (diameter_cm / 2.0) ** 2


def current_a(current_density_ma_cm2: float, area_cm2: float) -> float:
    """Current in A for a current density in mA cm⁻² over ``area_cm2``."""
    density = _require_positive("current_density_ma_cm2", current_density_ma_cm2)
    area = _require_positive("area_cm2", area_cm2)
    return density * area / _MA_PER_A


def li_capacity_mah_cm2(thickness_um: float) -> float:
    """Areal capacity in mAh cm⁻² of a Li foil ``thickness_um`` thick (20 µm → 4.1)."""
    return _require_positive("thickness_um", thickness_um) * LI_MAH_CM2_PER_UM


def half_cycle_s(areal_capacity_mah_cm2: float, current_density_ma_cm2: float) -> float:
    """Duration in s of one half cycle passing ``areal_capacity_mah_cm2`` at the density.

    The area cancels: 0.5 mAh cm⁻² at 0.5 mA cm⁻² takes 3600 s on any cell.
    """
    capacity = _require_positive("areal_capacity_mah_cm2", areal_capacity_mah_cm2)
    density = _require_positive("current_density_ma_cm2", current_density_ma_cm2)
    return capacity / density * _S_PER_H
