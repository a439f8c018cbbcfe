"""Step kinds: what the instrument was doing, as the file says (not guessed from data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellguard.drivers.files import RecordingError, StepKind, neware_step_kind, read_recording
from tests.shared import NEWARE_FILES


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("CC_Chg", StepKind.CC),
        ("CC_DChg", StepKind.CC),
        ("cc", StepKind.CC),
        ("dc", StepKind.CC),
        ("CCCV_Chg", StepKind.CC),
        ("CV_Chg", StepKind.CV),
        ("dv", StepKind.CV),
        ("Rest", StepKind.REST),
        ("rest", StepKind.REST),
        ("Pause", StepKind.PAUSE),
        ("Pulse", StepKind.OTHER),
        ("CP_DChg", StepKind.OTHER),
        ("--", StepKind.UNKNOWN),
        ("", StepKind.UNKNOWN),
        ("something new", StepKind.UNKNOWN),
    ],
)
def test_neware_step_types_map_to_kinds(name: str, kind: StepKind) -> None:
    assert neware_step_kind(name) is kind


def test_ndax_rows_carry_the_step_kind_of_their_step() -> None:
    rec = read_recording(NEWARE_FILES / "BTS85-36-6-5-110-20240424.ndax")
    assert rec.step_kind is not None
    assert len(rec.step_kind) == len(rec)
    rest = rec.step_kind == StepKind.REST
    cc = rec.step_kind == StepKind.CC
    assert rest.sum() == 662
    assert cc.sum() == len(rec) - 662
    # Rest rows carry no current, constant-current rows do.
    assert np.all(np.abs(rec.current_a[rest]) < 1e-6)
    assert np.median(np.abs(rec.current_a[cc])) > 1e-5


def test_a_step_kind_that_is_no_code_is_refused_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "Test Time / s,Voltage / V,Current / A,Step Kind\n1,0.02,0.0004,1\n2,0.02,0.0004,9\n",
        encoding="utf-8",
    )
    with pytest.raises(RecordingError, match=r"Step Kind 9 at row 1 is not one of 0 unknown"):
        read_recording(path)
