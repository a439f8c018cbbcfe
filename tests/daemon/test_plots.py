"""`cellguard plot`: PNGs checked as images (made, right size, not blank, readable)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from test_analyze_cli import simulated_file

from cellguard.daemon.analyze import analyze_file
from cellguard.daemon.cli import main
from cellguard.daemon.demo import run_demo
from cellguard.daemon.plots import cell_file_name, voltage_range
from cellguard.protocols.analytics import AnalyticsSettings

SINGLE_PX = (700, 1000)  # rows, columns: 10 × 7 in at 100 dpi
GRID_PX = (1000, 1300)


def _image(path: Path) -> np.ndarray:
    pixels = np.asarray(matplotlib.image.imread(path))
    assert pixels.ndim == 3
    return pixels[..., :3]


def _blue_rows(pixels: np.ndarray) -> np.ndarray:
    """Rows holding the first trace colour (matplotlib's tab:blue, 31 119 180)."""
    blue = np.array([31, 119, 180]) / 255.0
    near = (np.abs(pixels - blue) < 0.12).all(axis=2)
    return np.flatnonzero(near.any(axis=1))


def test_a_depletion_spike_keeps_the_mv_trace_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = simulated_file(tmp_path / "MII-1_asymmetric-20um.csv", "MII-1", 20.0, 60.0)
    out = tmp_path / "plot.png"
    argv = ["plot", str(source), "--cell", "asymmetric", "--thin-li-um", "20", "-o", str(out)]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    pixels = _image(out)
    assert pixels.shape[:2] == SINGLE_PX
    assert pixels.std() > 0.05  # not blank
    # The spike (~5 V) does not set the axis: the clipped axis ends near the cycling
    # range (~50-85 mV) and the full range goes to its own panel.
    result = analyze_file(source, AnalyticsSettings(cell="asymmetric", thin_li_um=20.0))
    limits = voltage_range([result])
    assert limits.spike is result
    assert 60.0 < limits.limit_mv < 200.0
    assert float(np.abs(result.recording.voltage_v).max()) > 4.0
    # In the image: the mV trace (blue) spans most of the voltage panel's height
    # (about 340 px), where a 5 V axis would squeeze it into a couple of pixels.
    rows = _blue_rows(pixels[: int(0.55 * SINGLE_PX[0]), : int(0.75 * SINGLE_PX[1])])
    assert rows.max() - rows.min() > 150


def test_several_healthy_files_share_one_figure_without_a_zoom(tmp_path: Path) -> None:
    files = [
        simulated_file(tmp_path / f"SEI_symmetric-{k}.csv", "SEI", 100.0, 10.0 + k)
        for k in range(2)
    ]
    out = tmp_path / "two.png"
    assert main(["plot", *map(str, files), "--cell", "symmetric", "-o", str(out)]) == 0
    pixels = _image(out)
    assert pixels.shape[:2] == SINGLE_PX
    assert pixels.std() > 0.05
    results = [analyze_file(f, AnalyticsSettings(cell="symmetric")) for f in files]
    assert voltage_range(results).spike is None


def test_the_fig2_grid_from_a_demo_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_dir = tmp_path / "demo"
    asyncio.run(run_demo(hours=60.0, seed=1, poll_s=300.0, export_dir=export_dir))
    names = sorted(p.name for p in export_dir.iterdir())
    assert len(names) == 8
    assert cell_file_name("MII-1", "asymmetric", 20.0) in names
    assert cell_file_name("SEI", "symmetric", 100.0) in names
    out = tmp_path / "grid.png"
    assert main(["plot", "--grid", str(export_dir), "-o", str(out)]) == 0
    pixels = _image(out)
    assert pixels.shape[:2] == GRID_PX
    assert pixels.std() > 0.05
    # Every row and both columns the demo fills hold a readable trace: blue spread over
    # 40+ pixel rows of each panel (a trace flattened by a 5 V axis would span 2 or 3).
    for top in range(4):
        band = pixels[int(GRID_PX[0] * (0.05 + 0.23 * top)) : int(GRID_PX[0] * (0.25 + 0.23 * top))]
        for half in (band[:, : GRID_PX[1] // 2], band[:, GRID_PX[1] // 2 :]):
            rows = _blue_rows(half)
            assert rows.max() - rows.min() > 40


def test_a_file_name_the_grid_cannot_place_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = simulated_file(tmp_path / "cell7.csv", "SEI", 100.0, 4.0)
    assert main(["plot", "--grid", str(source), "-o", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cell7.csv" in err[0]
    assert "MII-1_asymmetric-20um.csv" in err[0]


def test_without_matplotlib_plot_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = simulated_file(tmp_path / "SEI_symmetric.csv", "SEI", 100.0, 4.0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "p.png"
    assert main(["plot", str(source), "--cell", "symmetric", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "pip install 'cellguard[plot]'" in err[0]
    assert not out.exists()
