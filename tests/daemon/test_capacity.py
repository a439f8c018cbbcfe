"""Discharge capacity per cycle of a full cell (the `plot --cell full` panel)."""

from __future__ import annotations

import numpy as np
import pytest
from shared import NEWARE_FILES

from cellguard.daemon.capacity import cycle_numbers, discharge_capacity
from cellguard.drivers.files import read_recording


def test_a_new_cycle_starts_at_the_charge_after_a_discharge() -> None:
    # rest, charge, rest, discharge, rest, charge, discharge
    current_a = np.array([0.0, 1e-3, 1e-3, 0.0, -1e-3, -1e-3, 0.0, 1e-3, -1e-3])
    assert cycle_numbers(current_a).tolist() == [1, 1, 1, 1, 1, 1, 1, 2, 2]
    assert cycle_numbers(np.zeros(3)).tolist() == [1, 1, 1]


def test_capacity_counts_discharge_only_per_cycle_in_mah() -> None:
    t_s = np.array([0.0, 3600.0, 7200.0, 10800.0, 14400.0])
    current_a = np.array([0.0, 2e-3, -1e-3, 2e-3, -0.5e-3])
    result = discharge_capacity(t_s, current_a, None)
    assert result.cycle.tolist() == [1, 2]
    np.testing.assert_allclose(result.discharge_mah, [1.0, 0.5])


def test_the_real_full_cell_gives_the_same_cycles_with_or_without_its_cycle_column() -> None:
    rec = read_recording(NEWARE_FILES / "TESTCELL0001-B2-2025-M50T_NewareNDA_Investigation.ndax")
    from_file = discharge_capacity(rec.t_s, rec.current_a, rec.cycle)
    derived = discharge_capacity(rec.t_s, rec.current_a, None)
    assert from_file.cycle.tolist() == derived.cycle.tolist() == list(range(1, 9))
    np.testing.assert_allclose(from_file.discharge_mah, derived.discharge_mah)
    assert from_file.discharge_mah[1:] == pytest.approx(4720.0, rel=0.002)
