"""``cellguard analyze``: per-cycle polarization, capacity and failure of recorded files.

A file is read as ``cellguard replay`` reads it (BDF CSV/Parquet, Neware .nda/.ndax),
the detectors find where the channel would have halted, and
:mod:`cellguard.protocols.analytics` reduces the samples up to there into cycles. A
file that cannot be read costs one line on stderr (exit 2); the others are reported.
Hours are the file's own test time (see :mod:`cellguard.daemon.filecli`), as in
``replay``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from cellguard.daemon.filecli import detector_settings, judging_problem, report_failed_file
from cellguard.drivers.files import Recording, RecordingError, read_recording
from cellguard.protocols.analytics import (
    PAPER_AREA_CM2,
    Analysis,
    AnalyticsSettings,
    CycleRecord,
    analyze_arrays,
)
from cellguard.protocols.detectors import CellProfile, DetectorSettings

# A long test has hundreds of cycles: the table shows the first and last ones.
TABLE_HEAD_ROWS = 15
TABLE_TAIL_ROWS = 10


@dataclass(frozen=True)
class FileAnalysis:
    """One file's recording and what the analysis made of it."""

    path: Path
    recording: Recording
    analysis: Analysis

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object: file, cycles, failure, average_coulombic_efficiency."""
        return {"file": str(self.path), **self.analysis.as_dict()}


def analyze_file(
    path: str | Path, settings: AnalyticsSettings, detector: DetectorSettings | None = None
) -> FileAnalysis:
    """Read ``path`` and analyse it up to where the detectors would halt the channel.

    ``detector``: the detector settings (default: those of the settings' cell).
    Raises :class:`~cellguard.drivers.files.RecordingError` when it cannot be read.
    """
    recording = read_recording(path)
    return FileAnalysis(Path(path), recording, analyze_recording(recording, settings, detector))


def analyze_recording(
    recording: Recording, settings: AnalyticsSettings, detector: DetectorSettings | None = None
) -> Analysis:
    """The analysis of a recording that was read (see :func:`analyze_file`)."""
    return analyze_arrays(
        settings,
        recording.t_s,
        recording.voltage_v,
        recording.current_a,
        recording.step,
        detector=DetectorSettings(cell=settings.cell) if detector is None else detector,
        step_kind=recording.step_kind,
    )


def run_analyze_cli(
    files: Sequence[Path],
    *,
    cell: CellProfile,
    thin_li_um: float | None = None,
    area_cm2: float | None = None,
    as_json: bool = False,
    v_min_v: float | None = None,
    v_max_v: float | None = None,
) -> int:
    """Report every file (a table, or one JSON object per line); 2 if one failed.

    A file that cannot be read or judged costs one line on stderr and, with
    ``as_json``, the record ``{"file": ..., "error": ...}``; the others are reported.
    """
    detector = detector_settings(cell, v_min_v=v_min_v, v_max_v=v_max_v)
    settings = AnalyticsSettings(
        cell=cell,
        area_cm2=PAPER_AREA_CM2 if area_cm2 is None else area_cm2,
        thin_li_um=thin_li_um,
    )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a pipe or a log file: no terminal to fit
    failed = False
    for path in files:
        try:
            recording = read_recording(path)
        except RecordingError as err:
            failed = True
            report_failed_file(path, err.problem, as_json=as_json)
            continue
        try:
            result = FileAnalysis(path, recording, analyze_recording(recording, settings, detector))
        except Exception as err:  # a bug on one file must not lose the others' reports
            failed = True
            report_failed_file(path, judging_problem(path, err), as_json=as_json)
            continue
        if as_json:
            print(json.dumps(result.as_dict()), flush=True)
        else:
            _print(console, result, area_given=area_cm2 is not None)
    return 2 if failed else 0


# Column heads: a Li|Li cell's |V| is its polarization (mV); a full cell's is its
# voltage (V), and its cumulative capacity is charge passed, not Li plated.
_LI_HEADS = ("cycle", "polarization mV", "max mV", "cumulative mAh/cm²", "hours")
_FULL_HEADS = ("cycle", "mean |V| V", "max |V| V", "charge passed mAh/cm²", "hours")


def _cycle_cells(c: CycleRecord, *, full: bool) -> tuple[str, ...]:
    scale, digits = (1.0, 3) if full else (1e3, 2)
    return (
        f"{c.cycle}" + ("" if c.complete else " (part)"),
        f"{c.polarization_v * scale:.{digits}f}",
        f"{c.max_polarization_v * scale:.{digits}f}",
        f"{c.capacity_mah_cm2:.3f}",
        f"{c.hours:.2f}",
    )


def _print(console: Console, result: FileAnalysis, *, area_given: bool) -> None:
    s = result.analysis.settings
    area = f"{s.area_cm2:.4g} cm²" + ("" if area_given else " (a 10 mm disc; --area-cm2 to set)")
    thin = f", thin Li {s.thin_li_um:g} µm" if s.thin_li_um is not None else ""
    # The file name on a line of its own: as a table title it would wrap to the table.
    console.print(f"[bold]{result.path}[/]", highlight=False, soft_wrap=True)
    console.print(f"  {s.cell} cell, {area}{thin}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD)
    full = s.cell == "full"
    for name in _FULL_HEADS if full else _LI_HEADS:
        table.add_column(name, justify="right")
    cycles = result.analysis.cycles
    head, tail = cycles, list[CycleRecord]()
    if len(cycles) > TABLE_HEAD_ROWS + TABLE_TAIL_ROWS:
        head, tail = cycles[:TABLE_HEAD_ROWS], cycles[-TABLE_TAIL_ROWS:]
    for c in head:
        table.add_row(*_cycle_cells(c, full=full))
    if tail:
        table.add_row("…", "", "", "", "")
        for c in tail:
            table.add_row(*_cycle_cells(c, full=full))
    console.print(table)
    if tail:
        console.print(f"  {len(cycles)} cycles; --json lists every one", highlight=False)
    failure = result.analysis.failure
    if failure is None:
        console.print(
            f"  [green]no failure[/] up to {float(result.recording.t_s[-1]) / 3600.0:.1f} h",
            highlight=False,
        )
    else:
        kind = f"{failure.kind} ({failure.subkind})" if failure.subkind else failure.kind
        console.print(
            f"  [bold red]{kind}[/] after {failure.hours:.2f} h, {failure.cycles} complete "
            f"cycle{'' if failure.cycles == 1 else 's'}, "
            f"{failure.capacity_mah_cm2:.3f} mAh/cm² passed in all"
            + ("" if full else f" ({failure.stripped_mah_cm2:.3f} in the failing direction)"),
            highlight=False,
        )
    ce = result.analysis.average_coulombic_efficiency
    if ce is not None and failure is not None:
        console.print(
            f"  average Li Coulombic efficiency {ce * 100:.2f} % "
            f"(1 − Q_thin / Q_stripped = 1 − {s.thin_li_mah_cm2:.3f} / "
            f"{failure.stripped_mah_cm2:.3f} mAh/cm²: the thin electrode's Li over what was "
            "stripped from it until it ran out)",
            highlight=False,
        )
    elif s.cell == "asymmetric" and failure is not None and failure.kind == "depletion":
        if s.thin_li_mah_cm2 is None:
            console.print("  --thin-li-um gives the average Coulombic efficiency", highlight=False)
        else:
            # CE = 1 − Q_thin/Q_stripped would be negative: the electrode held less Li.
            console.print(
                f"  no Coulombic efficiency: it depleted after {failure.stripped_mah_cm2:.3f} "
                f"mAh/cm² stripped, less than the {s.thin_li_mah_cm2:.3f} mAh/cm² of "
                "--thin-li-um (a thinner electrode, or Li lost before the test?)",
                highlight=False,
            )
