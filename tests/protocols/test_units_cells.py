"""Units and cells: the numbers of the papers, and refusals that name the field."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.protocols import (
    LI_MAH_CM2_PER_UM,
    Cell,
    current_a,
    disc_area_cm2,
    half_cycle_s,
    li_capacity_mah_cm2,
)

_BAD_NUMBERS = [0.0, -1.0, float("nan"), float("inf"), float("-inf")]


def test_a_10_mm_disc_has_an_area_of_0_785_cm2() -> None:
    assert disc_area_cm2(10.0) == pytest.approx(0.7854, abs=5e-5)
    assert disc_area_cm2(10) == pytest.approx(math.pi * 0.25)


def test_current_is_density_times_area_in_amperes() -> None:
    assert current_a(0.5, disc_area_cm2(10.0)) == pytest.approx(0.3927e-3, rel=1e-4)
    assert current_a(1.0, 2.0) == pytest.approx(2e-3)


@pytest.mark.parametrize(
    ("thickness_um", "capacity_mah_cm2"), [(100.0, 20.5), (50.0, 10.25), (20.0, 4.1)]
)
def test_li_foil_holds_0_205_mah_cm2_per_um(thickness_um: float, capacity_mah_cm2: float) -> None:
    assert LI_MAH_CM2_PER_UM == 0.205
    assert li_capacity_mah_cm2(thickness_um) == pytest.approx(capacity_mah_cm2)


@pytest.mark.parametrize(
    ("capacity_mah_cm2", "density_ma_cm2", "seconds"),
    [(0.5, 0.5, 3600.0), (0.1, 0.1, 3600.0), (1.0, 1.0, 3600.0), (0.25, 20.0, 45.0)],
)
def test_a_half_cycle_lasts_capacity_over_density_hours(
    capacity_mah_cm2: float, density_ma_cm2: float, seconds: float
) -> None:
    assert half_cycle_s(capacity_mah_cm2, density_ma_cm2) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [*_BAD_NUMBERS, None, "10", True])
@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (disc_area_cm2, "diameter_mm"),
        (lambda v: current_a(v, 0.785), "current_density_ma_cm2"),
        (lambda v: current_a(0.5, v), "area_cm2"),
        (li_capacity_mah_cm2, "thickness_um"),
        (lambda v: half_cycle_s(v, 0.5), "areal_capacity_mah_cm2"),
        (lambda v: half_cycle_s(0.5, v), "current_density_ma_cm2"),
    ],
)
def test_unit_functions_refuse_non_finite_or_non_positive_values_naming_the_argument(
    call: Callable[[Any], float], argument: str, bad: object
) -> None:
    with pytest.raises(ConfigError) as info:
        call(bad)
    assert info.value.field == argument
    assert str(info.value).startswith(f"{argument}: must be a finite number > 0")


def test_config_errors_are_cellguard_errors_and_value_errors() -> None:
    with pytest.raises(CellguardError):
        disc_area_cm2(0.0)
    with pytest.raises(ValueError, match="diameter_mm"):
        disc_area_cm2(0.0)


def test_a_symmetric_cell_has_two_equal_100_um_electrodes_by_default() -> None:
    cell = Cell.symmetric(0.785)
    assert cell.cell_type == "symmetric"
    assert cell.li_working_um == cell.li_counter_um == 100.0
    assert cell.li_working_mah_cm2 == pytest.approx(20.5)
    assert cell.li_counter_mah_cm2 == pytest.approx(20.5)
    assert cell.thin_li_um == 100.0
    assert cell.interphase is None


def test_an_asymmetric_cell_works_on_its_thin_electrode_against_a_100_um_source() -> None:
    cell = Cell.asymmetric(0.785, interphase="LPSC:LGPS 4:1")
    assert cell.cell_type == "asymmetric"
    assert cell.thin_li_um == cell.li_working_um == 20.0
    assert cell.li_counter_um == 100.0
    assert cell.li_working_mah_cm2 == pytest.approx(4.1)
    assert cell.li_counter_mah_cm2 == pytest.approx(20.5)
    assert cell.interphase == "LPSC:LGPS 4:1"


def test_an_asymmetric_cell_with_a_50_um_thin_electrode_holds_10_25_mah_cm2() -> None:
    cell = Cell.asymmetric(0.785, li_thin_um=50.0)
    assert cell.li_working_mah_cm2 == pytest.approx(10.25)


def test_the_constructor_and_the_classmethods_build_equal_cells() -> None:
    assert Cell("asymmetric", 0.785, 100.0, 50.0) == Cell.asymmetric(0.785, li_thin_um=50.0)
    assert Cell("symmetric", 0.785) == Cell.symmetric(0.785)


def test_a_cell_is_frozen() -> None:
    cell = Cell.symmetric(0.785)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.area_cm2 = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("area", [*_BAD_NUMBERS, None, "0.785"])
def test_a_cell_needs_an_area_in_cm2_above_zero_and_says_so(area: object) -> None:
    with pytest.raises(ConfigError) as info:
        Cell.symmetric(area)  # type: ignore[arg-type]
    assert info.value.field == "cell.area_cm2"
    message = str(info.value)
    assert message.startswith("cell.area_cm2: required: electrode area in cm² > 0")
    assert "a 10 mm disc is 0.785" in message


def test_a_cell_type_must_be_symmetric_or_asymmetric() -> None:
    with pytest.raises(ConfigError, match=r"^cell\.cell_type: must be 'symmetric' or 'asym"):
        Cell("half", 0.785)  # type: ignore[arg-type]


def test_a_symmetric_cell_refuses_unequal_electrodes() -> None:
    with pytest.raises(ConfigError, match=r"^cell\.li_working_um: a symmetric cell has two equal"):
        Cell("symmetric", 0.785, li_counter_um=100.0, li_working_um=50.0)


@pytest.mark.parametrize("thin_um", [100.0, 150.0])
def test_an_asymmetric_cell_refuses_a_working_electrode_not_thinner_than_the_source(
    thin_um: float,
) -> None:
    with pytest.raises(ConfigError, match=r"^cell\.li_working_um: .* must be thinner") as info:
        Cell.asymmetric(0.785, li_thin_um=thin_um, li_source_um=100.0)
    assert info.value.field == "cell.li_working_um"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"li_thin_um": 0.0}, "cell.li_working_um"),
        ({"li_thin_um": float("nan")}, "cell.li_working_um"),
        ({"li_source_um": -100.0}, "cell.li_counter_um"),
        ({"li_source_um": float("inf")}, "cell.li_counter_um"),
    ],
)
def test_a_cell_refuses_li_thicknesses_that_are_not_positive_and_finite(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Cell.asymmetric(0.785, **kwargs)
    assert info.value.field == field
    assert "Li foil thickness in µm > 0" in str(info.value)
