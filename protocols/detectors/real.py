"""Real recordings with their labels: public cell files and what is known of each.

A corpus folder holds the files, their licences and ``corpus.toml``, one
``[[recording]]`` table per file (see ``tests/fixtures/real-cells/README.md``).
:func:`load_real_corpus` checks every field and loads every file whose type cellguard
reads, so detectors can be tested against reality and not only against our simulator.
A field that is wrong stops the load with one :class:`RealCorpusError` naming the
recording, the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from cellguard.drivers.errors import CellguardError
from cellguard.drivers.files import SUFFIXES, Recording, read_recording
from cellguard.protocols.detectors._api import CellProfile, DetectorSettings
from cellguard.protocols.detectors._step_runs import StepRuns

Expect = Literal["healthy", "fault"]
FaultKind = Literal["short", "depletion", "voltage_shift"]

CORPUS_FILE = "corpus.toml"
# Licences that let a file be redistributed inside an MIT project (SPDX identifiers).
ALLOWED_LICENCES = ("MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "CC0-1.0", "CC-BY-4.0")
_ORIGIN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+@[0-9a-f]{7,40}:\S.*$")
_KNOWN_KEYS = frozenset(
    {
        "file",
        "origin",
        "licence",
        "licence_file",
        "cell",
        "chemistry",
        "area_cm2",
        "voltage_range_v",
        "expect",
        "fault_kind",
        "onset_s",
        "v_min_v",
        "v_max_v",
        "notes",
    }
)


class RealCorpusError(CellguardError, ValueError):
    """``corpus.toml`` or a file it lists is not what the corpus promises.

    The message is one line: where (the index or the recording) and what is wrong.
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class RealCase:
    """One labelled real recording.

    ``recording`` is the file as cellguard reads it, or None for a file type cellguard
    does not read yet (a BioLogic ``.mpr`` original, kept beside its BDF conversion).
    ``onset_s`` is the test time (s, as cellguard reads the file) at which the fault is
    first observable; ``v_min_v``/``v_max_v`` the protocol's window of a full cell.
    """

    file: Path
    origin: str
    licence: str
    licence_file: Path
    cell: CellProfile
    chemistry: str
    expect: Expect
    notes: str
    recording: Recording | None
    area_cm2: float | None = None
    voltage_range_v: tuple[float, float] | None = None
    fault_kind: FaultKind | None = None
    onset_s: float | None = None
    v_min_v: float | None = None
    v_max_v: float | None = None

    @property
    def name(self) -> str:
        return self.file.name


def load_real_corpus(folder: str | Path) -> list[RealCase]:
    """Every recording listed in ``folder/corpus.toml``, checked and loaded."""
    folder = Path(folder)
    index = folder / CORPUS_FILE
    try:
        text = index.read_text(encoding="utf-8")
    except OSError as err:
        raise RealCorpusError(index, f"cannot be read ({err.strerror or err})") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RealCorpusError(index, f"not valid TOML ({err})") from err
    tables = data.get("recording")
    if not isinstance(tables, list) or not tables:
        raise RealCorpusError(index, "no [[recording]] tables")
    cases = [_case(folder, i, table) for i, table in enumerate(tables)]
    seen: set[Path] = set()
    for case in cases:
        if case.file in seen:
            raise RealCorpusError(index, f"{case.name} is listed twice")
        seen.add(case.file)
    return cases


def settings_for(case: RealCase) -> DetectorSettings:
    """What a researcher gives ``replay`` for this file: cell type, window, range."""
    changes: dict[str, Any] = {"cell": case.cell}
    if case.voltage_range_v is not None:
        changes["voltage_range_v"] = max(abs(v) for v in case.voltage_range_v)
    if case.cell == "full":
        defaults = DetectorSettings(cell="full")
        low = defaults.full_v_min_v if case.v_min_v is None else case.v_min_v
        high = defaults.full_v_max_v if case.v_max_v is None else case.v_max_v
        changes["full_v_min_v"] = max(low, 1e-3)  # a window from 0 V: anything above 0
        changes["full_v_max_v"] = high
    return DetectorSettings(**changes)


def logged_every(
    recording: Recording, interval_s: float, change_v: float | None = None
) -> Recording:
    """The recording as an instrument logging every ``interval_s`` would have written it
    (and, with ``change_v``, on every change of the voltage by that much: EC-Lab's
    "record every dE or dt").

    A sample is kept once ``interval_s`` has passed since the last one kept (or the
    voltage moved by ``change_v`` from it), and every step's first and last samples
    are kept too: instruments record at each step change whatever their interval (a
    7 s impedance sweep between two plating blocks is in a file logged every minute).
    Labs log week-long tests at 30-120 s, or on 1-10 mV changes.
    """
    if not interval_s > 0.0:
        msg = f"interval_s must be > 0 s, got {interval_s!r}"
        raise ValueError(msg)
    if change_v is not None and not change_v > 0.0:
        msg = f"change_v must be > 0 V or None, got {change_v!r}"
        raise ValueError(msg)
    t = recording.t_s
    marks = recording.step_kind if recording.step_kind is not None else recording.step
    edge = np.zeros(len(t), dtype=bool)
    if marks is not None and len(t) > 1:
        change = np.flatnonzero(np.diff(marks) != 0)
        edge[change] = True
        edge[change + 1] = True
    v = recording.voltage_v
    step_v = math.inf if change_v is None else change_v
    keep = [0]
    last_s = float(t[0]) if len(t) else 0.0
    last_v = float(v[0]) if len(t) else 0.0
    for i in range(1, len(t)):
        if edge[i] or t[i] - last_s >= interval_s or abs(v[i] - last_v) >= step_v:
            keep.append(i)
            last_s = float(t[i])
            last_v = float(v[i])
    return _subset(recording, np.asarray(keep, dtype=np.int64))


def polled_every(
    recording: Recording, interval_s: float, phase_s: float = 0.0, clock_error: float = 0.0
) -> Recording:
    """The recording as a live poll sees it: the newest sample at each poll.

    Polls come every ``interval_s`` of the PC's clock, the first ``phase_s`` after the
    first sample, and know nothing of the instrument's steps: unlike a recorded file
    (:func:`logged_every`), the first sample after a reversal comes anywhere from 0 to
    one interval after it. ``clock_error`` is how far the PC's clock runs off the
    instrument's (1e-4 is 0.36 s an hour): the polls' phase against the reversals
    drifts, half cycle after half cycle.

    A poll reads the step number and the time within the running step, not the steps
    between two polls: the ``step`` column numbers the runs of steps the polls saw, as
    the service does (:class:`StepRuns`), so that a block of the same step number after
    a short step no poll caught (a 7 s impedance scan between one-direction blocks) is
    still a new step.
    """
    if not interval_s > 0.0:
        msg = f"interval_s must be > 0 s, got {interval_s!r}"
        raise ValueError(msg)
    if not 0.0 <= phase_s < interval_s:
        msg = f"phase_s must be in [0, interval_s), got {phase_s!r}"
        raise ValueError(msg)
    if not abs(clock_error) < 0.01:
        msg = f"clock_error must be within ±0.01, got {clock_error!r}"
        raise ValueError(msg)
    t = recording.t_s - recording.t_s[0]
    polls = np.arange(phase_s, float(t[-1]), interval_s * (1.0 + clock_error))
    newest = np.unique(np.searchsorted(t, polls, side="right") - 1).astype(np.int64)
    polled = _subset(recording, newest)
    step = recording.step
    if step is None or not len(t):
        return polled
    # Each recorded run of a step starts its step time at its first sample.
    starts = np.flatnonzero(np.r_[True, np.diff(step) != 0])
    run_start_s = t[starts[np.searchsorted(starts, newest, side="right") - 1]]
    runs = StepRuns()
    numbers = [
        runs.of(int(n), float(s))
        for n, s in zip(step[newest], t[newest] - run_start_s, strict=True)
    ]
    return dataclasses.replace(polled, step=np.asarray(numbers, dtype=step.dtype))


def watched_from(recording: Recording, start_s: float) -> Recording:
    """The samples from test time ``start_s`` (s from the first sample) on.

    What cellguard sees when it starts, or restarts, part-way through a test: no
    history, and a stream that joins in the middle of a half cycle.
    """
    t = recording.t_s
    first = int(np.searchsorted(t - t[0], start_s)) if len(t) else 0
    return _subset(recording, np.arange(first, len(t), dtype=np.int64))


def _subset(recording: Recording, index: npt.NDArray[np.int64]) -> Recording:
    def pick(column: npt.NDArray[Any] | None) -> npt.NDArray[Any] | None:
        return None if column is None else column[index]

    return dataclasses.replace(
        recording,
        t_s=recording.t_s[index],
        voltage_v=recording.voltage_v[index],
        current_a=recording.current_a[index],
        step=pick(recording.step),
        cycle=pick(recording.cycle),
        step_kind=pick(recording.step_kind),
    )


def _case(folder: Path, position: int, table: object) -> RealCase:
    where = f"recording #{position + 1}"
    if not isinstance(table, dict):
        raise RealCorpusError(where, "not a table")
    fields = cast(Mapping[str, object], table)
    file_name = _text(fields, "file", where)
    where = f"recording {file_name!r}"
    unknown = sorted(set(fields) - _KNOWN_KEYS)
    if unknown:
        known = ", ".join(sorted(_KNOWN_KEYS))
        raise RealCorpusError(where, f"unknown field {unknown[0]!r}; allowed: {known}")

    path = _existing(folder, file_name, where, "file")
    licence_file = _existing(folder, _text(fields, "licence_file", where), where, "licence_file")
    origin = _text(fields, "origin", where)
    if not _ORIGIN.match(origin):
        raise RealCorpusError(where, f"origin {origin!r} is not owner/repo@commit:path")
    licence = _choice(fields, "licence", where, ALLOWED_LICENCES)
    cell = cast(CellProfile, _choice(fields, "cell", where, get_args(CellProfile)))
    expect = cast(Expect, _choice(fields, "expect", where, get_args(Expect)))

    fault_kind: FaultKind | None = None
    onset_s: float | None = None
    if expect == "fault":
        fault_kind = cast(FaultKind, _choice(fields, "fault_kind", where, get_args(FaultKind)))
        onset_s = _number(fields, "onset_s", where, minimum=0.0)
    else:
        for name in ("fault_kind", "onset_s"):
            if name in fields:
                raise RealCorpusError(where, f"{name} is only allowed when expect = 'fault'")

    v_min_v = _optional_number(fields, "v_min_v", where)
    v_max_v = _optional_number(fields, "v_max_v", where)
    if (v_min_v is not None or v_max_v is not None) and cell != "full":
        raise RealCorpusError(where, "v_min_v/v_max_v are only allowed for cell = 'full'")
    if v_min_v is not None and v_max_v is not None and not v_min_v < v_max_v:
        raise RealCorpusError(where, f"v_min_v ({v_min_v}) must be below v_max_v ({v_max_v})")

    recording = _load(path, where) if path.suffix.lower() in SUFFIXES else None
    if recording is not None and onset_s is not None:
        start, end = float(recording.t_s[0]), float(recording.t_s[-1])
        if not start <= onset_s <= end:
            problem = f"onset_s {onset_s:g} s lies outside the file's {start:g}-{end:g} s"
            raise RealCorpusError(where, problem)

    return RealCase(
        file=path,
        origin=origin,
        licence=licence,
        licence_file=licence_file,
        cell=cell,
        chemistry=_text(fields, "chemistry", where),
        expect=expect,
        notes=_text(fields, "notes", where),
        recording=recording,
        area_cm2=_optional_number(fields, "area_cm2", where, minimum=0.0, strict=True),
        voltage_range_v=_range(fields, "voltage_range_v", where),
        fault_kind=fault_kind,
        onset_s=onset_s,
        v_min_v=v_min_v,
        v_max_v=v_max_v,
    )


def _load(path: Path, where: str) -> Recording:
    try:
        return read_recording(path)
    except CellguardError as err:
        raise RealCorpusError(where, str(err)) from err


def _existing(folder: Path, name: str, where: str, field: str) -> Path:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise RealCorpusError(where, f"{field} {name!r} points outside the corpus folder")
    if not path.is_file():
        raise RealCorpusError(where, f"{field} {name!r} does not exist in {folder}")
    return path


def _text(fields: Mapping[str, object], name: str, where: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RealCorpusError(where, f"{name} must be a non-empty string")
    return value


def _choice(fields: Mapping[str, object], name: str, where: str, allowed: tuple[str, ...]) -> str:
    value = fields.get(name)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise RealCorpusError(where, f"{name} is {value!r}; allowed: {choices}")
    return value


def _number(
    fields: Mapping[str, object],
    name: str,
    where: str,
    minimum: float | None = None,
    strict: bool = False,
) -> float:
    value = fields.get(name)
    # bool is an int in Python, but `true` is never a quantity.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RealCorpusError(where, f"{name} must be a finite number, got {value!r}")
    number = float(value)
    if minimum is not None and (number <= minimum if strict else number < minimum):
        bound = f"above {minimum:g}" if strict else f"at least {minimum:g}"
        raise RealCorpusError(where, f"{name} must be {bound}, got {number:g}")
    return number


def _optional_number(
    fields: Mapping[str, object],
    name: str,
    where: str,
    minimum: float | None = None,
    strict: bool = False,
) -> float | None:
    if name not in fields:
        return None
    return _number(fields, name, where, minimum, strict)


def _range(fields: Mapping[str, object], name: str, where: str) -> tuple[float, float] | None:
    if name not in fields:
        return None
    value = fields[name]
    if not isinstance(value, list) or len(value) != 2:
        raise RealCorpusError(where, f"{name} must be [low, high] in volts, got {value!r}")
    low = _number({name: value[0]}, name, where)
    high = _number({name: value[1]}, name, where)
    if not low < high:
        raise RealCorpusError(where, f"{name} low ({low:g}) must be below high ({high:g})")
    return (low, high)
