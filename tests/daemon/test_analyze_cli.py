"""`cellguard analyze` on real Neware files and on simulated BDF recordings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from shared import NEWARE_FILES

from cellguard.daemon.cli import main
from cellguard.daemon.export import bdf_frame, write_bdf
from cellguard.drivers.sim import SimCell, SimCellSpec, simulate_square_wave
from cellguard.protocols.analytics import PAPER_AREA_CM2

CURRENT_A = 0.5e-3 * PAPER_AREA_CM2  # 0.5 mA cm⁻² on the area analyze assumes
CYCLE_KEYS = {"cycle", "polarization_mv", "max_polarization_mv", "capacity_mah_cm2", "hours"}


def simulated_file(path: Path, interphase: str, working_um: float, hours: float) -> Path:
    """A BDF CSV of a SimCell cycled at 0.5 mA cm⁻² / 0.5 mAh cm⁻² (1 h half cycles)."""
    cell = SimCell(SimCellSpec(interphase, li_working_um=working_um), seed=5)
    rows = list(simulate_square_wave(cell, CURRENT_A, 3600.0, hours * 3600.0, 60.0))
    t_s, i_a, v = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    write_bdf(bdf_frame(t_s, v, i_a), path, "bdf-csv")
    return path


def test_the_real_neware_files_are_tabulated_and_the_corrupt_one_costs_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = sorted(str(p) for p in NEWARE_FILES.glob("*.ndax"))
    assert len(files) == 3
    assert main(["analyze", *files, "--cell", "symmetric"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1
    assert "Unit27_Example_Corrupt.ndax" in errors[0]
    for name in ("BTS85-36-6-5-110-20240424.ndax", "TESTCELL0001-B2-2025-M50T"):
        assert name in out
    assert "polarization mV" in out
    assert "(part)" in out  # each readable file halts inside a cycle


def test_json_has_the_issues_schema_and_the_ce_of_a_depleted_asymmetric_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = simulated_file(tmp_path / "MII-1_asymmetric-20um.csv", "MII-1", 20.0, 60.0)
    assert main(["analyze", str(path), "--cell", "asymmetric", "--thin-li-um", "20", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    body = json.loads(lines[0])
    assert set(body) == {"file", "cycles", "failure", "average_coulombic_efficiency"}
    assert body["file"] == str(path)
    assert all(set(c) == CYCLE_KEYS for c in body["cycles"])
    assert [c["cycle"] for c in body["cycles"]] == list(range(1, len(body["cycles"]) + 1))
    # The file's first sample (t = 60 s) has no earlier one to count charge from.
    assert body["cycles"][0]["capacity_mah_cm2"] == pytest.approx(1.0 - 0.5 / 60, rel=1e-4)
    assert body["cycles"][0]["hours"] == pytest.approx(2.0)
    # MII-1 starts at ~45 mV (80 Ω cm² at 0.5 mA cm⁻² and the half cycle's shape).
    assert 30.0 < body["cycles"][0]["polarization_mv"] < 60.0
    failure = body["failure"]
    assert failure["kind"] == "depletion"
    assert 45.0 < failure["hours"] < 60.0
    assert failure["cycles"] == len(body["cycles"]) - 1
    # 4.1 mAh cm⁻² of thin Li over ~13 mAh cm⁻² stripped: CE ~0.7 (MII-1 eats Li fast).
    assert 0.6 < body["average_coulombic_efficiency"] < 0.8


def test_a_symmetric_run_without_failure_reports_no_failure_and_shortens_a_long_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = simulated_file(tmp_path / "MII-3_symmetric.csv", "MII-3", 100.0, 80.0)
    assert main(["analyze", str(path), "--cell", "symmetric", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["failure"] is None
    assert body["average_coulombic_efficiency"] is None
    assert len(body["cycles"]) == 40
    assert main(["analyze", str(path), "--cell", "symmetric"]) == 0
    out = capsys.readouterr().out
    assert "no failure up to 80.0 h" in out
    assert "…" in out
    assert "40 cycles; --json lists every one" in out
    assert "\n     40 " in out or " 40 " in out


def test_an_unknown_cell_type_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "x.csv", "--cell", "triangle"])
    assert exc.value.code == 2
    assert "--cell" in capsys.readouterr().err


def test_the_text_report_names_total_and_stripped_capacity_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 17: the summary called the total of both directions "plated" and the CE
    # line's smaller figure "stripped", with nothing saying how the two relate.
    path = simulated_file(tmp_path / "MII-1_asymmetric-20um.csv", "MII-1", 20.0, 60.0)
    assert main(["analyze", str(path), "--cell", "asymmetric", "--thin-li-um", "20"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "cumulative mAh/cm²" in out
    summary = out[out.index("depletion after") :]
    match = re.search(r"([\d.]+) mAh/cm² passed in all \(([\d.]+) in", summary)
    assert match is not None
    total, failing = float(match[1]), float(match[2])
    assert failing == pytest.approx(total / 2, abs=0.5)  # one direction of two
    assert f"1 − Q_thin / Q_stripped = 1 − 4.100 / {failing:.3f} mAh/cm²" in out
    assert "plated" not in summary


def test_a_depletion_before_the_stated_thin_li_was_stripped_gives_no_negative_ce(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 20 µm cell analysed as if its thin electrode were 100 µm (20.5 mAh cm⁻²): it
    depleted after ~13 mAh cm⁻² stripped, so 1 − 20.5/13 would be a CE of −57 %."""
    path = simulated_file(tmp_path / "MII-1_asymmetric_20um.csv", "MII-1", 20.0, 70.0)
    argv = ["analyze", str(path), "--cell", "asymmetric", "--thin-li-um", "100"]
    assert main([*argv, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["failure"]["kind"] == "depletion"
    assert body["average_coulombic_efficiency"] is None
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no Coulombic efficiency: it depleted after" in out
    assert "less than the 20.500 mAh/cm² of --thin-li-um" in out
