"""``cellguard replay``: recorded cycling files streamed through the detectors.

The same detectors that judge a live channel judge every sample of a recorded file,
in order, in chunks (so a progress bar can advance); the report says what they would
have done: every warning, and the halt with the time and the sample it came at.
Hours are the file's own test time (see :mod:`cellguard.daemon.filecli`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from cellguard.daemon.filecli import (
    detector_settings,
    hours,
    judging_problem,
    report_failed_file,
)
from cellguard.drivers.files import Recording, RecordingError, read_recording
from cellguard.protocols.detectors import (
    CellProfile,
    Detector,
    DetectorSettings,
    Verdict,
    make_detector,
)

# Samples fed to the detector per call: large enough that the per-call cost vanishes,
# small enough that a progress bar moves several times a second.
CHUNK_SAMPLES = 50_000
# Files shorter than this replay in well under a second: no progress bar.
PROGRESS_MIN_SAMPLES = 200_000
# Events listed in the human table per file (--json lists all of them).
TABLE_EVENTS = 50

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(samples_done, samples_total)`` after reading and every chunk."""
DetectorFactory = Callable[[DetectorSettings], Detector]


@dataclass(frozen=True)
class ReplayResult:
    """What the detectors made of one recorded file.

    ``samples`` counts the file's rows; ``judged`` the rows the detector saw (fewer
    after a halt: a halted channel records nothing more). ``seconds`` is the wall time
    of read + detect, split into ``read_s`` and ``detect_s``; ``duration_s`` is the
    recording's own span and ``end_s`` the test time of its last sample.
    """

    file: Path
    samples: int
    events: list[Verdict]
    seconds: float
    source: str = ""
    duration_s: float = 0.0
    judged: int = 0
    read_s: float = 0.0
    detect_s: float = 0.0
    end_s: float = 0.0

    @property
    def halt(self) -> Verdict | None:
        return next((v for v in self.events if v.is_halt), None)

    @property
    def warns(self) -> int:
        return sum(1 for v in self.events if v.severity == "warn")

    @property
    def samples_per_s(self) -> float:
        """Read + detect throughput, samples per wall second."""
        return self.samples / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: one object per file.

        ``hours`` is the test time of the file's last sample, ``halt_hours`` that of
        the halt (or null), and every event has the ``hours`` of its sample beside the
        file's own ``time_s``: the hours of ``analyze --json`` and the plots.
        """
        halt = self.halt
        return {
            "file": str(self.file),
            "source": self.source,
            "samples": self.samples,
            "judged": self.judged,
            "hours": hours(self.end_s),
            "halt_hours": None if halt is None else hours(halt.t_s),
            "halted": halt is not None,
            "halts": 1 if halt is not None else 0,
            "warns": self.warns,
            "seconds": round(self.seconds, 4),
            "events": [{**v.as_dict(), "hours": hours(v.t_s)} for v in self.events],
        }


def replay_file(
    path: str | Path,
    settings: DetectorSettings,
    *,
    progress: ProgressCallback | None = None,
    make: DetectorFactory | None = None,
) -> ReplayResult:
    """Read ``path`` and feed every sample, in order, to a fresh detector.

    ``make`` builds the detector (default: ``make_detector`` of
    :mod:`cellguard.protocols.detectors`). Feeding stops at a halt, as the channel
    would have. Raises :class:`RecordingError` when the file cannot be read.
    """
    start = time.perf_counter()
    recording = read_recording(path)
    read_done = time.perf_counter()
    total = len(recording)
    if progress is not None:
        progress(0, total)
    events = _detect(recording, (make or make_detector)(settings), progress)
    judged = events.judged
    end = time.perf_counter()
    return ReplayResult(
        file=Path(path),
        samples=total,
        events=events.verdicts,
        seconds=end - start,
        source=recording.source,
        duration_s=recording.duration_s,
        judged=judged,
        read_s=read_done - start,
        detect_s=end - read_done,
        end_s=float(recording.t_s[-1]),
    )


@dataclass
class _Detected:
    verdicts: list[Verdict]
    judged: int


def _detect(
    recording: Recording, detector: Detector, progress: ProgressCallback | None
) -> _Detected:
    total = len(recording)
    verdicts: list[Verdict] = []
    done = 0
    for lo in range(0, total, CHUNK_SAMPLES):
        hi = min(lo + CHUNK_SAMPLES, total)
        verdicts += detector.feed_batch(
            recording.t_s[lo:hi],
            recording.voltage_v[lo:hi],
            recording.current_a[lo:hi],
            None if recording.step is None else recording.step[lo:hi],
            None if recording.cycle is None else recording.cycle[lo:hi],
            None if recording.step_kind is None else recording.step_kind[lo:hi],
        )
        done = hi
        if detector.halt is not None:
            if progress is not None:
                progress(total, total)  # the rest is not judged: the bar is done
            break
        if progress is not None:
            progress(done, total)
    halt = detector.halt
    return _Detected(verdicts, done if halt is None else halt.index + 1)


def run_replay_cli(
    files: Sequence[Path],
    *,
    cell: CellProfile,
    area_cm2: float | None = None,
    as_json: bool = False,
    make: DetectorFactory | None = None,
    v_min_v: float | None = None,
    v_max_v: float | None = None,
) -> int:
    """``cellguard replay``: report every file; 2 if any could not be read or judged.

    A file that cannot be read costs one line on stderr and the others are still
    replayed. Human output is a table per file; ``as_json`` prints one JSON object per
    file per line instead, ``{"file": ..., "error": ...}`` for a file that failed.
    ``v_min_v``/``v_max_v``: a full cell's voltage window (ConfigError for Li|Li).
    """
    settings = detector_settings(cell, v_min_v=v_min_v, v_max_v=v_max_v)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a log file or a pipe: no terminal to fit
    failed = False
    bar = _progress_bar(console) if console.is_terminal and not as_json else None
    for path in files:
        try:
            if bar is None:
                result = replay_file(path, settings, make=make)
            else:
                with bar:
                    result = replay_file(path, settings, progress=_advance(bar, path), make=make)
        except RecordingError as err:
            failed = True
            report_failed_file(path, err.problem, as_json=as_json)
            continue
        except Exception as err:  # a detector's bug on one file must not lose the others
            failed = True
            report_failed_file(path, judging_problem(path, err), as_json=as_json)
            continue
        if as_json:
            line = {**result.as_dict(), "cell": cell, "area_cm2": area_cm2}
            print(json.dumps(line), flush=True)
        else:
            _print_result(console, result, cell=cell, area_cm2=area_cm2)
    return 2 if failed else 0


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} samples"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _advance(bar: Progress, path: Path) -> ProgressCallback:
    task: TaskID | None = None
    finished = False

    def advance(done: int, total: int) -> None:
        nonlocal task, finished
        if total < PROGRESS_MIN_SAMPLES or finished:
            return
        if task is None:
            task = bar.add_task(f"judging {path.name}", total=total)
        bar.update(task, completed=done)
        if done >= total:
            finished = True
            bar.remove_task(task)

    return advance


def _print_result(
    console: Console, result: ReplayResult, *, cell: str, area_cm2: float | None
) -> None:
    area = f", {area_cm2:g} cm²" if area_cm2 is not None else ""
    if result.events:
        table = Table(
            title=f"{result.file} ({cell} cell{area})",
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        table.add_column("kind")
        table.add_column("severity")
        table.add_column("time h", justify="right")
        table.add_column("index", justify="right")
        table.add_column("detail", overflow="fold")
        for v in result.events[:TABLE_EVENTS]:
            kind = f"{v.kind} ({v.subkind})" if v.subkind else v.kind
            style = "bold red" if v.is_halt else "yellow"
            table.add_row(
                kind,
                f"[{style}]{v.severity}[/]",
                f"{v.t_s / 3600.0:.3f}",
                str(v.index),
                v.detail,
            )
        console.print(table)
        more = len(result.events) - TABLE_EVENTS
        if more > 0:
            console.print(f"  ... and {more} more event(s); --json lists every one")
    else:
        console.print(f"{result.file} ({cell} cell{area}): no events", highlight=False)
    halt = result.halt
    verdict = (
        f"[bold red]halted[/] at {halt.t_s / 3600.0:.3f} h (sample {halt.index})"
        if halt is not None
        else "[green]no halt[/]"
    )
    console.print(
        f"  {result.samples:,} samples to {result.end_s / 3600.0:.1f} h, {verdict}, "
        f"{result.warns} warn(s); read+detect {result.samples_per_s:,.0f} samples/s"
        f" (read {result.read_s:.2f} s, detect {result.detect_s:.2f} s)",
        highlight=False,
    )
