"""``cellguard plot``: what a researcher looks at, as PNG.

Two figures:

- **one test or a few** (:func:`plot_files`): cell voltage (mV) against test time (h)
  with the halt marked and labelled and what the file holds after it faded (the
  channel would have stopped there; the recording shows what followed), over a panel
  of polarization per cycle (mV), or a note in it while no cycle is complete. A full
  cell (``cell="full"``): voltage in V on the range of its data, over its discharge
  capacity per cycle (mAh);
- **the comparison grid** (:func:`plot_grid`), like the paper's Fig. 2: rows are the
  interphases, columns the symmetric cell and the asymmetric cells with a 50 µm and a
  20 µm thin electrode. The cell in a file is read from its name, as
  ``cellguard demo --export-dir`` writes them (``MII-1_asymmetric-20um.csv``,
  ``SEI_symmetric.csv``; see :func:`cell_file_name`).

A healthy Li|Li cell sits at ~10–30 mV and a depletion spike reaches the 5 V range: on
one linear axis the trace would be a flat line. The voltage axis is therefore clipped
to the cycling range (the 99.5th percentile of |V| before the halt, with margin) and
an inset shows the whole range around the halt.

matplotlib is optional (the ``plot`` extra); it is imported only here, when a plot is
asked for, and its absence is one clear line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellguard.daemon.analyze import FileAnalysis, analyze_file
from cellguard.daemon.capacity import discharge_capacity
from cellguard.daemon.filecli import detector_settings, judging_problem
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.drivers.files import SUFFIXES, RecordingError
from cellguard.protocols.analytics import PAPER_AREA_CM2, AnalyticsSettings
from cellguard.protocols.detectors import CellProfile, DetectorSettings

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Pixel sizes of the two figures (inches × DPI), fixed so that the examples in docs/
# and every user's plots look alike.
DPI = 100
SINGLE_SIZE_IN = (10.0, 7.0)
GRID_SIZE_IN = (13.0, 10.0)
# Points drawn per trace: more is invisible at these sizes and slow to render.
MAX_POINTS = 20_000
# The voltage axis ends at this multiple of the 99.5th percentile of |V| before the halt.
CLIP_MARGIN = 1.6
# An inset is drawn when the full range exceeds the clipped one by this factor.
INSET_WHEN = 3.0
# The inset shows this many hours before the halt (or the spike).
INSET_SPAN_H = 3.0
# A grid panel with an inset ends its voltage axis at this multiple of the clipped range.
GRID_HEADROOM = 2.3
# What the file holds after the halt is drawn at this opacity: visible, but plainly not
# what the guarded channel would have done.
AFTER_HALT_ALPHA = 0.3
# A full cell's voltage axis: its data's range with this fraction of margin each side.
FULL_MARGIN = 0.05
NO_CYCLE_TEXT = "no complete cycle yet"
NO_DISCHARGE_TEXT = "no discharge yet"

INTERPHASE_ORDER = ("MII-1", "MII-2", "MII-3", "SEI")
GRID_COLUMNS: tuple[tuple[str, str], ...] = (
    ("symmetric", "symmetric 100|100 µm"),
    ("asymmetric-50", "asymmetric 100|50 µm"),
    ("asymmetric-20", "asymmetric 100|20 µm"),
)
_INTERPHASE_RE = re.compile(r"(MII-\d+|SEI)", re.IGNORECASE)
_CELL_RE = re.compile(r"(asymmetric)-(\d+(?:\.\d+)?)um|(symmetric)", re.IGNORECASE)


class PlotError(CellguardError):
    """A plot cannot be made (matplotlib missing, a file name the grid cannot place)."""


def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: PLC0415 - optional: only `cellguard plot` needs it
    except ImportError:
        msg = "plots need matplotlib: pip install 'cellguard[plot]'"
        raise PlotError(msg) from None
    return matplotlib


def _figure(size_in: tuple[float, float]) -> Figure:
    _matplotlib()
    from matplotlib.figure import Figure  # noqa: PLC0415

    # A bare Figure (no pyplot): no global state, no GUI backend, safe in a daemon.
    return Figure(figsize=size_in, dpi=DPI, layout="constrained")


def cell_file_name(interphase: str, cell_type: str, thin_li_um: float, suffix: str = ".csv") -> str:
    """The name the grid reads a cell from: ``MII-1_asymmetric-20um.csv``."""
    if cell_type == "asymmetric":
        return f"{interphase}_asymmetric-{thin_li_um:g}um{suffix}"
    return f"{interphase}_{cell_type}{suffix}"


@dataclass(frozen=True)
class CellLabel:
    """What the grid reads from a file name."""

    interphase: str
    cell: CellProfile
    thin_li_um: float | None

    @property
    def column(self) -> str:
        return "symmetric" if self.cell == "symmetric" else f"asymmetric-{self.thin_li_um:g}"


def parse_cell_label(path: Path) -> CellLabel:
    """Interphase and cell from a file name; PlotError naming the file if it has none."""
    interphase = _INTERPHASE_RE.search(path.stem)
    cell = _CELL_RE.search(path.stem)
    if interphase is None or cell is None:
        msg = (
            f"{path.name}: the grid needs the interphase and cell in the file name, "
            "e.g. MII-1_asymmetric-20um.csv or SEI_symmetric.csv"
        )
        raise PlotError(msg)
    name = interphase.group(1).upper()
    if cell.group(3):
        return CellLabel(name, "symmetric", None)
    return CellLabel(name, "asymmetric", float(cell.group(2)))


def _stride(n: int) -> int:
    return max(1, n // MAX_POINTS)


def _clip_mv(voltage_v: np.ndarray[Any, Any]) -> float:
    """The clipped voltage axis half-range, mV."""
    if voltage_v.size == 0:
        return 1.0
    p = float(np.percentile(np.abs(voltage_v), 99.5)) * 1e3
    return max(p * CLIP_MARGIN, 1.0)


def _end(result: FileAnalysis) -> int:
    failure = result.analysis.failure
    return len(result.recording) if failure is None or failure.index < 0 else failure.index + 1


@dataclass(frozen=True)
class VoltageRange:
    """The clipped voltage axis of a panel and the spike (if any) that needs a zoom."""

    limit_mv: float
    spike: FileAnalysis | None  # the test whose |V| goes far past the clipped range
    spike_h: float


def voltage_range(results: Sequence[FileAnalysis]) -> VoltageRange:
    limit_mv = 1.0
    full_mv = 0.0
    spike: FileAnalysis | None = None
    spike_h = 0.0
    for result in results:
        rec = result.recording
        end = _end(result)
        # The range is set by the cycling before the halt, not by the spike that ended it.
        before = (
            rec.voltage_v[: end - 2]
            if result.analysis.failure is not None and end > 10
            else rec.voltage_v[:end]
        )
        limit_mv = max(limit_mv, _clip_mv(before))
        abs_mv = np.abs(rec.voltage_v[:end]) * 1e3
        if len(abs_mv) and float(abs_mv.max()) > full_mv:
            full_mv = float(abs_mv.max())
            spike = result
            spike_h = float(rec.t_s[int(abs_mv.argmax())]) / 3600.0
    if full_mv <= INSET_WHEN * limit_mv:
        spike = None
    return VoltageRange(limit_mv, spike, spike_h)


def _voltage_panel(
    ax: Axes,
    results: Sequence[FileAnalysis],
    limits: VoltageRange,
    *,
    labels: bool,
    compact: bool = False,
) -> None:
    """Voltage (mV) against hours on the clipped axis, halts marked and labelled."""
    for result in results:
        _trace(ax, result, 1e3, labels=labels, compact=compact)
    ax.set_ylim(-limits.limit_mv, limits.limit_mv)
    ax.set_xlabel("test time / h")
    ax.set_ylabel("cell voltage / mV")
    ax.grid(visible=True, alpha=0.3)


def _trace(ax: Axes, result: FileAnalysis, scale: float, *, labels: bool, compact: bool) -> None:
    """One file's voltage × ``scale`` against hours: solid to the halt, faded after it,
    the halt marked and labelled."""
    rec = result.recording
    end = _end(result)
    t_h = rec.t_s / 3600.0
    v = rec.voltage_v * scale
    k = _stride(len(t_h))
    label = rec.path.stem if labels else None
    (line,) = ax.plot(t_h[:end:k], v[:end:k], linewidth=0.6, label=label)
    if end < len(rec):
        # From the halt's own sample on, so the faded part joins the solid one.
        after = slice(end - 1, None, k)
        ax.plot(t_h[after], v[after], linewidth=0.6, color=line.get_color(), alpha=AFTER_HALT_ALPHA)
    failure = result.analysis.failure
    if failure is not None:
        ax.axvline(failure.hours, color="tab:red", linestyle="--", linewidth=1.0)
        kind = failure.kind + (f" ({failure.subkind})" if failure.subkind else "")
        ax.annotate(
            f"halt: {kind}\n{failure.hours:.1f} h",
            xy=(failure.hours, 0.97),
            xycoords=("data", "axes fraction"),
            xytext=(-4, 0),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=7 if compact else 9,
            color="tab:red",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"},
        )


def _full_voltage_panel(ax: Axes, results: Sequence[FileAnalysis], *, labels: bool) -> None:
    """A full cell's voltage (V) on the range its data spans (e.g. 2.5-4.2 V)."""
    low, high = np.inf, -np.inf
    for result in results:
        _trace(ax, result, 1.0, labels=labels, compact=False)
        low = min(low, float(result.recording.voltage_v.min()))
        high = max(high, float(result.recording.voltage_v.max()))
    margin = max((high - low) * FULL_MARGIN, 0.05)
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("test time / h")
    ax.set_ylabel("cell voltage / V")
    ax.grid(visible=True, alpha=0.3)


def _capacity_panel(ax: Axes, results: Sequence[FileAnalysis], *, labels: bool) -> None:
    """Discharge capacity per cycle (mAh); cycles from the halt's on faded."""
    drawn = False
    for result in results:
        rec = result.recording
        end = _end(result)
        before = discharge_capacity(rec.t_s[:end], rec.current_a[:end], _cut(rec.cycle, end))
        (line,) = ax.plot(
            before.cycle,
            before.discharge_mah,
            marker="o",
            markersize=3,
            linewidth=0.8,
            label=rec.path.stem if labels else None,
        )
        drawn = drawn or len(before.cycle) > 0
        if end < len(rec):
            whole = discharge_capacity(rec.t_s, rec.current_a, rec.cycle)
            first = int(before.cycle[-1]) if len(before.cycle) else 0
            later = whole.cycle >= first
            ax.plot(
                whole.cycle[later],
                whole.discharge_mah[later],
                marker="o",
                markersize=3,
                linewidth=0.8,
                color=line.get_color(),
                alpha=AFTER_HALT_ALPHA,
            )
            drawn = drawn or bool(later.any())
    if not drawn:
        _note(ax, NO_DISCHARGE_TEXT)
    ax.set_xlabel("cycle")
    ax.set_ylabel("discharge capacity / mAh")
    ax.set_ylim(bottom=0)
    ax.grid(visible=True, alpha=0.3)


def _cut(values: np.ndarray[Any, Any] | None, end: int) -> np.ndarray[Any, Any] | None:
    return None if values is None else values[:end]


def _note(ax: Axes, text: str) -> None:
    """Say in the panel why it is empty (an empty frame looks like a bug)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def _full_range_panel(ax: Axes, limits: VoltageRange, *, compact: bool) -> None:
    """The last hours before the spike on the full voltage range (V), the clipped
    range dotted: where the 5 V of a depletion shows without flattening the mV trace."""
    result = limits.spike
    assert result is not None
    rec = result.recording
    end = _end(result)
    t_h = rec.t_s[:end] / 3600.0
    lo = int(np.searchsorted(t_h, limits.spike_h - INSET_SPAN_H))
    ax.plot(t_h[lo:], rec.voltage_v[lo:end], color="tab:red", linewidth=0.8)
    size = 6 if compact else 9
    ax.set_title("full range / V", fontsize=size)
    ax.tick_params(labelsize=size)
    for sign in (1.0, -1.0):
        ax.axhline(sign * limits.limit_mv / 1e3, color="grey", linewidth=0.6, linestyle=":")
    if not compact:
        ax.set_xlabel("test time / h")
        ax.set_ylabel("cell voltage / V")
        ax.grid(visible=True, alpha=0.3)


def _polarization_panel(ax: Axes, results: Sequence[FileAnalysis], *, labels: bool) -> None:
    if not any(c.complete for r in results for c in r.analysis.cycles):
        _note(ax, NO_CYCLE_TEXT)
    for result in results:
        cycles = [c for c in result.analysis.cycles if c.complete]
        ax.plot(
            [c.cycle for c in cycles],
            [c.polarization_v * 1e3 for c in cycles],
            marker="o",
            markersize=2.5,
            linewidth=0.8,
            label=result.recording.path.stem if labels else None,
        )
    ax.set_xlabel("cycle")
    ax.set_ylabel("polarization / mV")
    ax.set_ylim(bottom=0)
    ax.grid(visible=True, alpha=0.3)


def plot_files(
    files: Sequence[Path],
    output: Path,
    *,
    cell: CellProfile,
    area_cm2: float | None = None,
    thin_li_um: float | None = None,
    detector: DetectorSettings | None = None,
) -> list[FileAnalysis]:
    """Voltage and polarization per cycle of ``files`` into ``output`` (PNG).

    Raises :class:`RecordingError` for the first file that cannot be read;
    :func:`run_plot_cli` plots the readable ones instead.
    """
    settings = AnalyticsSettings(
        cell=cell, area_cm2=area_cm2 or PAPER_AREA_CM2, thin_li_um=thin_li_um
    )
    results = [analyze_file(path, settings, detector) for path in files]
    _save(single_figure(results, cell=cell), output)
    return results


def single_figure(results: Sequence[FileAnalysis], *, cell: CellProfile) -> Figure:
    """The figure of :func:`plot_files` for files already analysed."""
    fig = _figure(SINGLE_SIZE_IN)
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2), width_ratios=(4, 1))
    labels = len(results) > 1
    if cell == "full":
        top = fig.add_subplot(grid[0, :])
        _full_voltage_panel(top, results, labels=labels)
        _capacity_panel(fig.add_subplot(grid[1, :]), results, labels=labels)
    else:
        limits = voltage_range(results)
        if limits.spike is not None:
            top = fig.add_subplot(grid[0, 0])
            _full_range_panel(fig.add_subplot(grid[0, 1]), limits, compact=False)
        else:
            top = fig.add_subplot(grid[0, :])
        _voltage_panel(top, results, limits, labels=labels)
        _polarization_panel(fig.add_subplot(grid[1, :]), results, labels=labels)
    title = results[0].recording.path.name if len(results) == 1 else f"{len(results)} tests"
    top.set_title(f"{title} ({cell} cell)")
    if labels:
        top.legend(fontsize=8, loc="lower right")
    return fig


def grid_files(inputs: Sequence[Path]) -> list[Path]:
    """The recorded files named by ``inputs`` (folders are searched, one level)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in SUFFIXES)
        else:
            files.append(item)
    if not files:
        raise ConfigError(field="FILE", problem="no recorded files (.csv, .parquet, .nda, .ndax)")
    return files


def plot_grid(
    inputs: Sequence[Path],
    output: Path,
    *,
    area_cm2: float | None = None,
    unreadable: list[RecordingError] | None = None,
) -> list[FileAnalysis]:
    """The Fig. 2 comparison: interphases × (symmetric, asymmetric 50 µm, 20 µm).

    ``unreadable``: files that cannot be read are collected there and their panels say
    "no cell" (without it the first one raises :class:`RecordingError`).
    """
    placed: dict[tuple[str, str], FileAnalysis] = {}
    for path in grid_files(inputs):
        label = parse_cell_label(path)
        settings = AnalyticsSettings(
            cell=label.cell, area_cm2=area_cm2 or PAPER_AREA_CM2, thin_li_um=label.thin_li_um
        )
        try:
            placed[(label.interphase, label.column)] = analyze_file(path, settings)
        except RecordingError as err:
            if unreadable is None:
                raise
            unreadable.append(err)
    if not placed and unreadable:  # grid_files refuses no files at all
        raise unreadable[0]
    rows = [i for i in INTERPHASE_ORDER if any(k[0] == i for k in placed)]
    rows += sorted({k[0] for k in placed} - set(rows))
    # The paper's columns that hold a cell (the demo runs no 50 µm cell), then any other.
    used = {k[1] for k in placed}
    columns = [(c, title) for c, title in GRID_COLUMNS if c in used]
    columns += [(c, c) for c in sorted(used - {c for c, _ in GRID_COLUMNS})]
    fig = _figure(GRID_SIZE_IN)
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, interphase in enumerate(rows):
        for c, (column, title) in enumerate(columns):
            ax = axes[r][c]
            result = placed.get((interphase, column))
            if r == 0:
                ax.set_title(title, fontsize=10)
            if result is None:
                ax.text(0.5, 0.5, "no cell", ha="center", va="center", color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                limits = voltage_range([result])
                _voltage_panel(ax, [result], limits, labels=False, compact=True)
                if limits.spike is not None:
                    # Headroom above the trace for the full-range inset, so it hides nothing.
                    ax.set_ylim(-limits.limit_mv, GRID_HEADROOM * limits.limit_mv)
                    inset = ax.inset_axes((0.05, 0.6, 0.38, 0.3))
                    _full_range_panel(inset, limits, compact=True)
                ax.xaxis.label.set_size(8)
                ax.yaxis.label.set_size(8)
                ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(f"{interphase}\ncell voltage / mV", fontsize=8)
    fig.suptitle("Li|Li cells at 0.5 mA cm⁻² / 0.5 mAh cm⁻²: voltage against time, halts marked")
    _save(fig, output)
    return list(placed.values())


def _save(fig: Figure, output: Path) -> None:
    if not output.parent.is_dir():
        raise ConfigError(field="-o", problem=f"folder {output.parent} does not exist")
    try:
        fig.savefig(output, format="png", dpi=DPI)
    except OSError as err:
        raise ConfigError(field="-o", problem=f"cannot write {output}: {err}") from err


def run_plot_cli(
    files: Sequence[Path],
    output: Path,
    *,
    grid: bool,
    cell: CellProfile | None,
    area_cm2: float | None,
    thin_li_um: float | None,
    v_min_v: float | None = None,
    v_max_v: float | None = None,
) -> int:
    """``cellguard plot``: a file that cannot be read is named on stderr and the others
    are plotted (exit 2); with none readable nothing is written."""
    if grid:
        if v_min_v is not None or v_max_v is not None:
            raise ConfigError(field="--v-min", problem="the grid plots Li|Li cells: no window")
        unreadable: list[RecordingError] = []
        try:
            plot_grid(files, output, area_cm2=area_cm2, unreadable=unreadable)
        except RecordingError:
            for err in unreadable:
                print(f"cellguard: {err.path}: {err.problem}", flush=True, file=sys.stderr)
            print("cellguard: no readable file: nothing plotted", flush=True, file=sys.stderr)
            return 2
        for err in unreadable:
            print(f"cellguard: {err.path}: {err.problem}", flush=True, file=sys.stderr)
        left_out = f" ({len(unreadable)} file(s) left out)" if unreadable else ""
        print(f"wrote {output}{left_out}")
        return 2 if unreadable else 0
    if cell is None:
        raise ConfigError(
            field="--cell", problem="required (symmetric, asymmetric or full) without --grid"
        )
    detector = detector_settings(cell, v_min_v=v_min_v, v_max_v=v_max_v)
    settings = AnalyticsSettings(
        cell=cell, area_cm2=area_cm2 or PAPER_AREA_CM2, thin_li_um=thin_li_um
    )
    results: list[FileAnalysis] = []
    failed = 0
    for path in files:
        try:
            results.append(analyze_file(path, settings, detector))
        except RecordingError as err:
            failed += 1
            print(f"cellguard: {path}: {err.problem}", flush=True, file=sys.stderr)
        except Exception as err:  # one file's bug must not cost the others' plot
            failed += 1
            problem = judging_problem(path, err)
            print(f"cellguard: {path}: {problem}", flush=True, file=sys.stderr)
    if not results:
        print("cellguard: no readable file: nothing plotted", flush=True, file=sys.stderr)
        return 2
    _save(single_figure(results, cell=cell), output)
    print(f"wrote {output}" + (f" ({failed} file(s) left out)" if failed else ""))
    return 2 if failed else 0
