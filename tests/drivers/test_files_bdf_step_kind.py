"""A BDF table's ``Step Kind`` column: read as StepKind codes, refused when not one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellguard.drivers.files import StepKind, read_recording
from tests.shared import SHARED_FIXTURES

HEADER = "Test Time / s,Voltage / V,Current / A,Step Index,Step Kind\n"


def test_step_kind_codes_are_read_per_row(tmp_path: Path) -> None:
    path = tmp_path / "kinds.csv"
    path.write_text(HEADER + "0,3.0,0,1,3\n10,3.1,0.001,2,1\n20,3.2,0.0002,2,2\n30,3.2,0,3,4\n")
    rec = read_recording(path)
    assert rec.step_kind is not None
    assert rec.step_kind.tolist() == [StepKind.REST, StepKind.CC, StepKind.CV, StepKind.IMPEDANCE]


def test_a_table_without_the_column_says_nothing_about_kinds(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("Test Time / s,Voltage / V,Current / A\n0,3.0,0\n10,3.1,0.001\n")
    assert read_recording(path).step_kind is None


def test_the_real_impedance_segments_of_a_biologic_file_are_marked() -> None:
    rec = read_recording(SHARED_FIXTURES / "real-cells" / "biol.mpr")
    assert rec.step_kind is not None
    impedance = rec.step_kind == StepKind.IMPEDANCE
    cc = rec.step_kind == StepKind.CC
    assert int(impedance.sum()) == 310
    # Impedance carries a sinusoid about zero: its mean current is tiny next to the
    # galvanostatic blocks around it.
    assert abs(float(np.mean(rec.current_a[impedance]))) < 0.05 * float(
        np.median(np.abs(rec.current_a[cc]))
    )
