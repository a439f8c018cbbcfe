"""`cellguard plot`: PNGs checked as images (made, right size, not blank, readable)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from shared import NEWARE_FILES
from test_analyze_cli import simulated_file
from test_file_commands import full_cell

from cellguard.daemon import plots as plots_mod
from cellguard.daemon.analyze import analyze_file
from cellguard.daemon.cli import main
from cellguard.daemon.demo import run_demo
from cellguard.daemon.filecli import detector_settings
from cellguard.daemon.plots import (
    AFTER_HALT_ALPHA,
    NO_CYCLE_TEXT,
    NO_DISCHARGE_TEXT,
    cell_file_name,
    single_figure,
    voltage_range,
)
from cellguard.protocols.analytics import AnalyticsSettings
from cellguard.protocols.detectors import DetectorSettings

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


# ---------------------------------------------------------------- issue 14


def _axes_by_ylabel(fig: Figure) -> dict[str, Axes]:
    return {ax.get_ylabel(): ax for ax in fig.axes if ax.get_ylabel()}


def test_an_unreadable_file_is_named_and_the_others_are_plotted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = simulated_file(tmp_path / "SEI_symmetric.csv", "SEI", 100.0, 6.0)
    bad = tmp_path / "broken.csv"
    bad.write_text("Test Time / s,Voltage / V,Current / A\n0,0.01,1e-4\n5,0.01\n")
    out = tmp_path / "p.png"
    assert main(["plot", str(good), str(bad), "--cell", "symmetric", "-o", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert err.splitlines() == [f"cellguard: {bad}: " + err.split(": ", 2)[2].strip()]
    assert "broken.csv" in err
    assert f"wrote {out} (1 file(s) left out)" in stdout
    assert _image(out).shape[:2] == SINGLE_PX


def test_no_readable_file_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.png"
    assert main(["plot", str(tmp_path / "gone.csv"), "--cell", "symmetric", "-o", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"cellguard: {tmp_path / 'gone.csv'}: no such file",
        "cellguard: no readable file: nothing plotted",
    ]
    assert not out.exists()


def test_the_trace_goes_on_after_the_halt_faded(tmp_path: Path) -> None:
    """The MII-1 20 µm cell depletes near 50 h; the file runs to 60 h: drawn to 60 h,
    the part after the halt faded, the halt still marked."""
    source = simulated_file(tmp_path / "MII-1_asymmetric-20um.csv", "MII-1", 20.0, 60.0)
    result = analyze_file(source, AnalyticsSettings(cell="asymmetric", thin_li_um=20.0))
    failure = result.analysis.failure
    assert failure is not None
    fig = single_figure([result], cell="asymmetric")
    ax = _axes_by_ylabel(fig)["cell voltage / mV"]
    traces = [line for line in ax.get_lines() if len(np.asarray(line.get_xdata())) > 2]
    solid = [line for line in traces if line.get_alpha() is None]
    faded = [line for line in traces if line.get_alpha() == AFTER_HALT_ALPHA]
    assert len(solid) == len(faded) == 1
    solid_h = np.asarray(solid[0].get_xdata())
    faded_h = np.asarray(faded[0].get_xdata())
    assert solid_h.max() == pytest.approx(failure.hours, abs=0.02)
    assert faded_h.min() == pytest.approx(failure.hours, abs=0.02)
    assert faded_h.max() == pytest.approx(60.0, abs=0.02)
    assert faded[0].get_color() == solid[0].get_color()
    halt_marks = [line for line in ax.get_lines() if np.asarray(line.get_xdata()).size == 2]
    assert any(np.asarray(m.get_xdata())[0] == pytest.approx(failure.hours) for m in halt_marks)
    assert any(t.get_text().startswith("halt: depletion") for t in ax.texts)


def test_an_empty_polarization_panel_says_why(tmp_path: Path) -> None:
    """0.9 h at 1 h per half cycle: not even the first half cycle is over."""
    source = simulated_file(tmp_path / "SEI_symmetric.csv", "SEI", 100.0, 0.9)
    result = analyze_file(source, AnalyticsSettings(cell="symmetric"))
    assert not any(c.complete for c in result.analysis.cycles)
    fig = single_figure([result], cell="symmetric")
    panel = _axes_by_ylabel(fig)["polarization / mV"]
    assert [t.get_text() for t in panel.texts] == [NO_CYCLE_TEXT]
    longer = simulated_file(tmp_path / "SEI_symmetric-2.csv", "SEI", 100.0, 4.0)
    fig = single_figure(
        [analyze_file(longer, AnalyticsSettings(cell="symmetric"))], cell="symmetric"
    )
    assert list(_axes_by_ylabel(fig)["polarization / mV"].texts) == []


def test_a_full_cell_plots_volts_and_discharge_capacity_per_cycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real 21.6 h Neware full cell (2.5-4.2 V, 8 cycles of ~4.7 Ah)."""
    source = NEWARE_FILES / "TESTCELL0001-B2-2025-M50T_NewareNDA_Investigation.ndax"
    out = tmp_path / "full.png"
    assert main(["plot", str(source), "--cell", "full", "--v-min", "2.0", "-o", str(out)]) == 0
    assert _image(out).shape[:2] == SINGLE_PX
    result = analyze_file(source, AnalyticsSettings(cell="full"))
    fig = single_figure([result], cell="full")
    axes = _axes_by_ylabel(fig)
    assert set(axes) == {"cell voltage / V", "discharge capacity / mAh"}
    low, high = axes["cell voltage / V"].get_ylim()
    v = result.recording.voltage_v
    assert low < float(v.min()) < float(v.max()) < high
    assert high - low < 1.2 * float(v.max() - v.min())  # the data's range, not 0-5 V
    (line,) = axes["discharge capacity / mAh"].get_lines()
    assert list(line.get_xdata()) == list(range(1, 9))
    capacity = np.asarray(line.get_ydata())
    assert 4600 < capacity[1:].min() <= capacity[1:].max() < 4800  # cycle 1 is partial


def test_a_full_cell_without_discharge_says_so(tmp_path: Path) -> None:
    source = full_cell(tmp_path / "fresh.csv")
    result = analyze_file(
        source, AnalyticsSettings(cell="full"), detector_settings("full", v_min_v=0)
    )
    fig = single_figure([result], cell="full")
    panel = _axes_by_ylabel(fig)["discharge capacity / mAh"]
    assert [t.get_text() for t in panel.texts] == [NO_DISCHARGE_TEXT]


def test_plot_passes_the_window_to_the_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[DetectorSettings | None] = []
    real = plots_mod.analyze_file

    def spy(path: Path, settings: AnalyticsSettings, detector: DetectorSettings | None = None):  # type: ignore[no-untyped-def]
        seen.append(detector)
        return real(path, settings, detector)

    monkeypatch.setattr(plots_mod, "analyze_file", spy)
    source = full_cell(tmp_path / "fresh.csv")
    argv = ["plot", str(source), "--cell", "full", "--v-min", "0", "--v-max", "4.9"]
    assert main([*argv, "-o", str(tmp_path / "f.png")]) == 0
    (detector,) = seen
    assert detector is not None
    assert (detector.full_v_min_v, detector.full_v_max_v) == (0.0, 4.9)


def test_the_grid_leaves_out_an_unreadable_file_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulated_file(tmp_path / "SEI_symmetric.csv", "SEI", 100.0, 6.0)
    (tmp_path / "MII-1_symmetric.csv").write_text("Test Time / s,Voltage / V\n0,0.01\n")
    out = tmp_path / "g.png"
    assert main(["plot", "--grid", str(tmp_path), "-o", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert err.splitlines() == [
        f"cellguard: {tmp_path / 'MII-1_symmetric.csv'}: missing column 'Current / A'; "
        "columns found: 'Test Time / s', 'Voltage / V'"
    ]
    assert f"wrote {out} (1 file(s) left out)" in stdout
    assert _image(out).shape[:2] == GRID_PX
