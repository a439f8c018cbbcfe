"""Recorded cycling files, read into one typed :class:`Recording`.

Three families are read:

- Battery Data Format (BDF) tables, ``.csv`` or ``.parquet``, with the preferred labels
  ``Test Time / s``, ``Voltage / V``, ``Current / A`` and optionally ``Step Index`` and
  ``Cycle Count`` (the ``/ 1`` spellings and fastnda's ``Step ID`` are accepted too).
  Time, voltage and current may carry another unit of :data:`BDF_UNITS` (``Test Time /
  h``, ``Current / mA``...): they are converted to s, V and A on reading. cellguard's
  own ``Step Kind`` column holds :class:`StepKind` codes written by a converter;
- Neware ``.nda`` / ``.ndax`` binary files, through the ``fastnda`` reader;
- BioLogic EC-Lab ``.mpr`` files, through our own parser (:mod:`cellguard.drivers.biologic`).

A file either loads completely and passes the sanity checks (time finite and never
going backwards, no missing voltage or current) or raises :class:`RecordingError`
with one line naming the file and what is wrong: never a partial load.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from cellguard.drivers.errors import CellguardError

log = logging.getLogger(__name__)

Source = Literal["bdf-csv", "bdf-parquet", "neware-ndax", "neware-nda", "biologic-mpr"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BDF_TIME = "Test Time / s"
BDF_VOLTAGE = "Voltage / V"
BDF_CURRENT = "Current / A"
# The units a BDF column of each quantity may carry, and the factor to s, V or A. Labs
# export in the unit their instrument shows (mA for coin cells, h for long tests); the
# BDF label carries the unit, so converting is safe where guessing would not be.
# Both micro signs are accepted: U+00B5 (keyboard, Windows) and U+03BC (Greek mu).
BDF_UNITS: dict[str, dict[str, float]] = {
    "Test Time": {"s": 1.0, "min": 60.0, "h": 3600.0},
    "Voltage": {"V": 1.0, "mV": 1e-3},
    "Current": {"A": 1.0, "mA": 1e-3, "\u00b5A": 1e-6, "\u03bcA": 1e-6, "uA": 1e-6},
}
# Optional columns, first match wins.
BDF_STEP = ("Step Index", "Step Index / 1", "Step ID")
BDF_CYCLE = ("Cycle Count", "Cycle Count / 1")
# cellguard's own optional column: StepKind codes (0 unknown, 1 CC, 2 CV, 3 rest, 4
# impedance, 5 pause, 6 other), for sources converted to BDF that said what each step was.
BDF_STEP_KIND = ("Step Kind", "Step Kind / 1")

SUFFIXES: dict[str, Source] = {
    ".csv": "bdf-csv",
    ".parquet": "bdf-parquet",
    ".ndax": "neware-ndax",
    ".nda": "neware-nda",
    ".mpr": "biologic-mpr",
}


class StepKind(IntEnum):
    """What the instrument was doing during a sample, where the source says so.

    Detectors judge Li|Li overpotentials only under constant current: an impedance
    measurement (sinusoidal current, near-zero mean), a potentiostatic hold or a pause
    is not a half cycle. ``UNKNOWN`` means the source does not say: the detector then
    recognises such segments from the data alone.
    """

    UNKNOWN = 0
    CC = 1  # constant current: galvanostatic cycling, plating, stripping
    CV = 2  # constant voltage hold (CC-CV's tail, potentiostatic steps)
    REST = 3  # open circuit, rest step, OCV technique
    IMPEDANCE = 4  # PEIS / GEIS: a sinusoid about (near) zero current
    PAUSE = 5  # paused by the operator or a pause step: the step goes on afterwards
    OTHER = 6  # a technique not judged as cycling (voltammetry sweeps, pulses, ...)


@functools.cache
def neware_step_kind(step_type: str) -> StepKind:
    """The kind of a Neware step type as fastnda (``CC_Chg``, ``Rest``...) or the BTS API
    (``cc``, ``dc``, ``cv``, ``rest``, ``pause``...) spells it."""
    name = step_type.strip().lower().replace("-", "_")
    if not name or name == "__":
        return StepKind.UNKNOWN
    if name.startswith("rest") or name == "ocv":
        return StepKind.REST
    if name.startswith("pause"):
        return StepKind.PAUSE
    if name.startswith(("cccv", "cc_cv", "cv", "dv")):
        return StepKind.CV if name.startswith(("cv", "dv")) else StepKind.CC
    if name.startswith(("cc", "dc")):
        return StepKind.CC
    if "pulse" in name or name.startswith(("cp", "cr", "dp", "dr", "sim")):
        return StepKind.OTHER
    return StepKind.UNKNOWN


class RecordingError(CellguardError):
    """A recorded file cannot be read, or what it holds cannot be trusted.

    The message is one line: the file's name and what is wrong with it.
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path.name}: {problem}")


@dataclass(frozen=True)
class Recording:
    """One channel's recorded samples, in SI units and in time order.

    ``t_s`` is the test time in s (from the start of the test), ``voltage_v`` in V,
    ``current_a`` in A (sign as the instrument recorded it). ``step`` and ``cycle`` are
    the instrument's step and cycle numbers, or None when the file has none;
    ``step_kind`` holds :class:`StepKind` codes where the file says what each step was.
    """

    path: Path
    t_s: FloatArray
    voltage_v: FloatArray
    current_a: FloatArray
    step: IntArray | None
    cycle: IntArray | None
    source: Source
    step_kind: IntArray | None = None

    def __len__(self) -> int:
        return len(self.t_s)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last sample, s (0 for a single sample)."""
        return float(self.t_s[-1] - self.t_s[0])


def read_recording(path: str | Path) -> Recording:
    """Read a BDF ``.csv``/``.parquet``, a Neware ``.nda``/``.ndax`` or an EC-Lab ``.mpr`` file.

    Raises :class:`RecordingError` for an unknown suffix, a missing or unreadable
    file, a missing column, or samples that cannot be trusted.
    """
    path = Path(path)
    source = SUFFIXES.get(path.suffix.lower())
    if source is None:
        known = ", ".join(sorted(SUFFIXES))
        raise RecordingError(path, f"unknown file type {path.suffix!r}; cellguard reads {known}")
    if not path.is_file():
        raise RecordingError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise RecordingError(path, "the file is empty")
    if source in ("bdf-csv", "bdf-parquet"):
        recording = _read_bdf(path, source)
    elif source == "biologic-mpr":
        recording = _read_biologic(path)
    else:
        recording = _read_neware(path, source)
    _check(recording)
    return recording


def _read_bdf(path: Path, source: Source) -> Recording:
    try:
        lazy = pl.scan_csv(path) if source == "bdf-csv" else pl.scan_parquet(path)
        columns = lazy.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise RecordingError(path, f"not a readable BDF table: {_one_line(err)}") from err
    found = _bdf_quantity_columns(path, columns)
    missing = [
        default
        for default, quantity in (
            (BDF_TIME, "Test Time"),
            (BDF_VOLTAGE, "Voltage"),
            (BDF_CURRENT, "Current"),
        )
        if quantity not in found
    ]
    if missing:
        listed = ", ".join(repr(c) for c in columns) or "none"
        names = ", ".join(repr(c) for c in missing)
        raise RecordingError(path, f"missing column {names}; columns found: {listed}")
    step_col = _first_present(BDF_STEP, columns)
    cycle_col = _first_present(BDF_CYCLE, columns)
    kind_col = _first_present(BDF_STEP_KIND, columns)
    wanted = [
        _si_column(*found["Test Time"]).alias("t_s"),
        _si_column(*found["Voltage"]).alias("voltage_v"),
        _si_column(*found["Current"]).alias("current_a"),
    ]
    if step_col is not None:
        wanted.append(pl.col(step_col).cast(pl.Int64).alias("step"))
    if cycle_col is not None:
        wanted.append(pl.col(cycle_col).cast(pl.Int64).alias("cycle"))
    if kind_col is not None:
        wanted.append(pl.col(kind_col).cast(pl.Int64).alias("step_kind"))
    try:
        frame = lazy.select(wanted).collect()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise RecordingError(path, f"not a readable BDF table: {_one_line(err)}") from err
    return _from_frame(path, source, frame)


def _bdf_quantity_columns(path: Path, columns: Sequence[str]) -> dict[str, tuple[str, float]]:
    """The column holding each quantity of :data:`BDF_UNITS`, with its factor to SI.

    A label is ``Quantity / unit``; spaces around the slash do not matter. Two columns
    of one quantity (``Current / A`` and ``Current / mA``) are refused: which one the
    instrument meant cannot be known. So is a unit not in the table (``Current / kA``).
    """
    found: dict[str, tuple[str, float]] = {}
    for column in columns:
        name, slash, unit = column.partition("/")
        quantity = name.strip()
        units = BDF_UNITS.get(quantity)
        if units is None:
            continue
        accepted = ", ".join(u for u in units if u != "\u03bcA")
        if not slash:
            problem = (
                f"column {column!r} has no unit; label it '{quantity} / <unit>' "
                f"with one of {accepted}"
            )
            raise RecordingError(path, problem)
        factor = units.get(unit.strip())
        if factor is None:
            problem = (
                f"column {column!r}: unknown unit {unit.strip()!r} for {quantity.lower()}; "
                f"accepted: {accepted}"
            )
            raise RecordingError(path, problem)
        if quantity in found:
            first = found[quantity][0]
            problem = (
                f"two {quantity.lower()} columns, {first!r} and {column!r}: "
                "keep one (cellguard cannot tell which the instrument meant)"
            )
            raise RecordingError(path, problem)
        found[quantity] = (column, factor)
    return found


def _si_column(column: str, factor: float) -> pl.Expr:
    value = pl.col(column).cast(pl.Float64)
    return value if factor == 1.0 else value * factor


def _read_neware(path: Path, source: Source) -> Recording:
    # fastnda is imported here: it pulls in its native parser, which plain BDF users
    # do not need.
    import fastnda  # noqa: PLC0415

    with _quiet("fastnda") as notes:
        try:
            raw = fastnda.read(path)
        except Exception as err:  # a binary parser of foreign files can raise anything
            raise RecordingError(path, f"not a readable Neware file: {_one_line(err)}") from err
    for level, note in notes:
        log.log(min(level, logging.INFO), "%s: fastnda: %s", path.name, note)
    # fastnda logs an error and carries on without the damaged part (an auxiliary
    # channel, say): loading the rest would be a silent partial load.
    damage = [note for level, note in notes if level >= logging.ERROR]
    if damage:
        raise RecordingError(
            path, f"damaged Neware file, fastnda could not read all of it: {damage[0]}"
        )
    if not isinstance(raw, pl.DataFrame):
        raise RecordingError(path, f"fastnda returned {type(raw).__name__}, not a table")
    columns = raw.columns
    step_col = _first_present(("step_index", "step_count"), columns)
    missing = [c for c in ("total_time_s", "voltage_V", "current_mA") if c not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns) or "none"
        names = ", ".join(repr(c) for c in missing)
        raise RecordingError(path, f"missing column {names}; columns found: {found}")
    wanted = [
        pl.col("total_time_s").cast(pl.Float64).alias("t_s"),
        pl.col("voltage_V").cast(pl.Float64).alias("voltage_v"),
        (pl.col("current_mA").cast(pl.Float64) / 1000.0).alias("current_a"),
    ]
    if step_col is not None:
        wanted.append(pl.col(step_col).cast(pl.Int64).alias("step"))
    if "cycle_count" in columns:
        wanted.append(pl.col("cycle_count").cast(pl.Int64).alias("cycle"))
    if "step_type" in columns:
        kinds = {str(name): int(neware_step_kind(str(name))) for name in raw["step_type"].unique()}
        wanted.append(
            pl.col("step_type")
            .cast(pl.String)
            .replace_strict(kinds, return_dtype=pl.Int64, default=0)
            .alias("step_kind")
        )
    try:
        frame = raw.select(wanted)
    except pl.exceptions.PolarsError as err:
        raise RecordingError(path, f"unexpected column types: {_one_line(err)}") from err
    return _from_frame(path, source, frame)


def _read_biologic(path: Path) -> Recording:
    # Imported here: the BioLogic module builds on this one (Recording, StepKind).
    from cellguard.drivers.biologic import recording_from_mpr  # noqa: PLC0415

    try:
        data = path.read_bytes()
    except OSError as err:
        raise RecordingError(path, f"cannot read the file: {_one_line(err)}") from err
    return recording_from_mpr(path, data)


def _from_frame(path: Path, source: Source, frame: pl.DataFrame) -> Recording:
    if frame.height == 0:
        raise RecordingError(path, "no samples (the table has a header but no rows)")
    for name in frame.columns:
        nulls = frame[name].null_count()
        if nulls:
            first = int(frame[name].is_null().arg_true()[0])
            problem = f"{nulls} missing value(s) in {_label(name)}, first at row {first}"
            raise RecordingError(path, problem)

    def floats(name: str) -> FloatArray:
        return np.ascontiguousarray(frame[name].to_numpy(), dtype=np.float64)

    def ints(name: str) -> IntArray | None:
        if name not in frame.columns:
            return None
        return np.ascontiguousarray(frame[name].to_numpy(), dtype=np.int64)

    return Recording(
        path=path,
        t_s=floats("t_s"),
        voltage_v=floats("voltage_v"),
        current_a=floats("current_a"),
        step=ints("step"),
        cycle=ints("cycle"),
        source=source,
        step_kind=ints("step_kind"),
    )


def _check(rec: Recording) -> None:
    """Reject samples a detector must not be fed: NaN/inf, time running backwards,
    step kinds that are not StepKind codes."""
    if rec.step_kind is not None:
        bad = (rec.step_kind < min(StepKind)) | (rec.step_kind > max(StepKind))
        if bad.any():
            row = int(np.argmax(bad))
            allowed = ", ".join(f"{int(k)} {k.name.lower()}" for k in StepKind)
            problem = f"Step Kind {int(rec.step_kind[row])} at row {row} is not one of {allowed}"
            raise RecordingError(rec.path, problem)
    for name, values in (
        ("t_s", rec.t_s),
        ("voltage_v", rec.voltage_v),
        ("current_a", rec.current_a),
    ):
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            count = int(bad.sum())
            problem = (
                f"{count} non-finite value(s) in {_label(name)}, "
                f"first at row {first} ({values[first]})"
            )
            raise RecordingError(rec.path, problem)
    if len(rec.t_s) > 1:
        with np.errstate(over="ignore"):  # huge finite times: inf still has the right sign
            back = np.diff(rec.t_s) < 0
        if back.any():
            row = int(np.argmax(back)) + 1
            problem = (
                f"time goes backwards at row {row} "
                f"({rec.t_s[row - 1]:g} s, then {rec.t_s[row]:g} s)"
            )
            raise RecordingError(rec.path, problem)


_LABELS = {"t_s": "time", "voltage_v": "voltage", "current_a": "current"}


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _first_present(names: Sequence[str], columns: Sequence[str]) -> str | None:
    return next((n for n in names if n in columns), None)


def _one_line(err: BaseException) -> str:
    return _squash(str(err)) or type(err).__name__


def _squash(text: str) -> str:
    """One line of at most 200 characters."""
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


class _Collect(logging.Handler):
    def __init__(self, sink: list[tuple[int, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text} ({record.exc_info[1]})"
        self.sink.append((record.levelno, _squash(text)))


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[list[tuple[int, str]]]:
    """Collect what a foreign reader prints, warns and logs, instead of showing it.

    Yields a list that fills with ``(logging level, one-line message)``; stdout text
    and warnings count as INFO and WARNING.
    """
    notes: list[tuple[int, str]] = []
    foreign = logging.getLogger(logger_name)
    handler = _Collect(notes)
    propagate, level = foreign.propagate, foreign.level
    foreign.addHandler(handler)
    foreign.propagate = False
    foreign.setLevel(logging.DEBUG)
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            yield notes
    finally:
        foreign.removeHandler(handler)
        foreign.propagate = propagate
        foreign.setLevel(level)
        notes.extend((logging.WARNING, _squash(str(w.message))) for w in caught)
        lines = printed.getvalue().splitlines()
        notes.extend((logging.INFO, _squash(line)) for line in lines if line.strip())
