"""`replay`, `analyze`, `plot` and `export` take BioLogic `.mpr` files like any other."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from shared import BIOLOGIC_FILES

from cellguard.daemon.cli import main
from cellguard.drivers.biologic import parse_mpr
from cellguard.drivers.files import read_recording

GCPL_OLD = BIOLOGIC_FILES / "jdb11-1_c3_gcpl_5cycles_2V-3p8V_C-24_data_C09.mpr"
GCPL_CCCV = BIOLOGIC_FILES / "250116_kigr_gen6_01_02_GCPL_CD8.mpr"
PEIS = BIOLOGIC_FILES / "PEIS.mpr"
OCV = BIOLOGIC_FILES / "test_C01.mpr"


def test_replay_reads_every_row_of_each_mpr(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", str(GCPL_OLD), str(PEIS), str(OCV), "--cell", "full", "--json"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [Path(d["file"]).name for d in lines] == [GCPL_OLD.name, PEIS.name, OCV.name]
    assert [d["samples"] for d in lines] == [46102, 244, 18001]
    assert {d["source"] for d in lines} == {"biologic-mpr"}


def test_replay_refuses_a_damaged_mpr_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.mpr"
    cut.write_bytes(PEIS.read_bytes()[:5000])
    code = main(["replay", str(cut), str(OCV), "--cell", "symmetric", "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1
    assert "cut.mpr: truncated" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["file"]).name for r in records] == ["cut.mpr", OCV.name]
    assert "truncated" in records[0]["error"]  # the damaged file still has its record
    assert "error" not in records[1]


def test_analyze_tabulates_the_cycles_of_an_mpr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(GCPL_OLD), "--cell", "symmetric", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["file"] == str(GCPL_OLD)
    # Five full GCPL cycles with 1 h rests between the half cycles of a 126.8 h test.
    assert len(body["cycles"]) >= 5
    assert body["cycles"][-1]["hours"] == pytest.approx(126.75, abs=0.01)


def test_plot_draws_an_mpr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gcpl.png"
    assert main(["plot", str(GCPL_OLD), "--cell", "symmetric", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    pixels = np.asarray(matplotlib.image.imread(out))[..., :3]
    assert pixels.shape[:2] == (700, 1000)
    assert pixels.std() > 0.05  # not blank


def test_export_of_an_mpr_integrates_to_ec_labs_own_charge(tmp_path: Path) -> None:
    """The exported net capacity (our current, integrated) is EC-Lab's own Q-Qo: the
    current derived from dq/dt loses no charge, also through the CV steps."""
    for source in (GCPL_OLD, GCPL_CCCV):
        out = tmp_path / f"{source.stem}.csv"
        assert main(["export", str(source), "--format", "bdf-csv", "-o", str(out)]) == 0
        frame = pd.read_csv(out)
        rec = read_recording(source)
        assert len(frame) == len(rec)
        assert rec.step is not None
        np.testing.assert_array_equal(frame["Step Index / 1"].to_numpy(), rec.step)
        q_ah = np.asarray(parse_mpr(source.read_bytes()).columns["(Q-Qo)/mA.h"]) / 1000
        assert np.abs(q_ah).max() > 1e-3
        net_ah = frame["Net Capacity / Ah"].to_numpy()
        assert np.abs(net_ah - q_ah).max() < 1e-7
