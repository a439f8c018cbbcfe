"""An EC-Lab ``.mpr`` file as a :class:`~cellguard.drivers.files.Recording`.

Which columns feed the recording, and why:

- voltage: ``Ewe-Ece/V`` when the file has it, else ``Ewe/V``, else ``<Ewe>/V``. In a
  2-electrode cell (Li|Li) the reference lead sits on the counter electrode, so Ewe is
  the cell voltage; ``Ewe-Ece`` exists only when Ece was recorded (3 electrodes) and is
  then the voltage between the two current-carrying electrodes, the one a short
  collapses and the one a Neware channel records. The instantaneous Ewe wins over the
  averaged ``<Ewe>``, which would smooth a short's spike away.
- current: ``I/mA``, else ``<I>/mA``, else the charge passed since the previous row
  (``dq/mA.h``) over the time since it: that is EC-Lab's own ``<I>`` (checked on real
  files: it matches the galvanostatic set point to 4e-5), and GCPL files of older
  EC-Lab versions store no current column at all. Then ``control/mA``, then
  ``control/V/mA`` when no row is potentiostatic (there it holds volts), then zero when
  every row is at open circuit. All in mA, divided by 1000.
- step: ``Ns`` (the sequence index); cycle: ``cycle number``.
- step kind: the mode flag (1 CC, 2 CV, 3 rest), overridden by the technique where it
  says more: OCV rows rest, voltammetry (CV, CVA, LSV) is OTHER, rows with a frequency
  (PEIS/GEIS, also inside a Modulo Bat sequence) are IMPEDANCE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from cellguard.drivers.biologic._columns import MODE_CV, MODE_REST
from cellguard.drivers.biologic._mpr import MprData, MprFormatError, parse_mpr
from cellguard.drivers.files import (
    FloatArray,
    IntArray,
    Recording,
    RecordingError,
    StepKind,
)

VOLTAGE_COLUMNS = ("Ewe-Ece/V", "Ewe/V", "<Ewe>/V")
_MEASURED_CURRENT = ("I/mA", "<I>/mA")
_CHARGE_STEP = ("dq/mA.h", "dQ/mA.h")
_SECONDS_PER_HOUR = 3600.0
_VOLTAMMETRY = frozenset({"CV", "CVA", "LSV"})
_IMPEDANCE = frozenset({"PEIS", "GEIS"})
# mode flag value -> step kind
_MODE_KINDS = np.array([StepKind.UNKNOWN, StepKind.CC, StepKind.CV, StepKind.REST], dtype=np.int64)


def recording_from_mpr(path: Path, data: bytes) -> Recording:
    """Decode ``data``, the bytes of the ``.mpr`` file at ``path``, into a Recording.

    Raises :class:`RecordingError` naming the file and the problem. The caller checks
    the samples (finite, time never going backwards).
    """
    try:
        mpr = parse_mpr(data)
    except MprFormatError as err:
        raise RecordingError(path, str(err)) from err
    if mpr.n_rows == 0:
        raise RecordingError(path, "no samples (the data module holds 0 rows)")
    columns = mpr.columns
    if "time/s" not in columns:
        raise RecordingError(path, f"no 'time/s' column; columns found: {_found(mpr)}")
    voltage_name = next((c for c in VOLTAGE_COLUMNS if c in columns), None)
    if voltage_name is None:
        wanted = ", ".join(repr(c) for c in VOLTAGE_COLUMNS)
        raise RecordingError(path, f"no voltage column ({wanted}); columns found: {_found(mpr)}")
    t_s = _floats(columns["time/s"])
    return Recording(
        path=path,
        t_s=t_s,
        voltage_v=_floats(columns[voltage_name]),
        current_a=_current_ma(path, mpr, t_s) / 1000.0,
        step=_ints(columns["Ns"]) if "Ns" in columns else None,
        cycle=_cycle(path, columns["cycle number"]) if "cycle number" in columns else None,
        source="biologic-mpr",
        step_kind=step_kinds(mpr),
    )


def step_kinds(mpr: MprData) -> IntArray:
    """The :class:`StepKind` of every row, from the mode flag, the technique and freq."""
    columns = mpr.columns
    if "mode" in columns:
        kinds = _MODE_KINDS[np.asarray(columns["mode"], dtype=np.intp)]
    else:
        kinds = np.full(mpr.n_rows, StepKind.UNKNOWN, dtype=np.int64)
    if mpr.technique == "OCV":
        kinds[:] = StepKind.REST
    elif mpr.technique in _VOLTAMMETRY:
        kinds[:] = StepKind.OTHER
    if "freq/Hz" in columns:
        kinds[np.asarray(columns["freq/Hz"]) > 0] = StepKind.IMPEDANCE
    elif mpr.technique in _IMPEDANCE:
        kinds[:] = StepKind.IMPEDANCE
    return np.ascontiguousarray(kinds, dtype=np.int64)


def _current_ma(path: Path, mpr: MprData, t_s: FloatArray) -> FloatArray:
    columns = mpr.columns
    for name in _MEASURED_CURRENT:
        if name in columns:
            return _floats(columns[name])
    mode = np.asarray(columns["mode"]) if "mode" in columns else None
    at_rest = mpr.technique == "OCV" or (mode is not None and bool(np.all(mode == MODE_REST)))
    for name in _CHARGE_STEP:
        if name in columns:
            return _current_from_charge(path, _floats(columns[name]), t_s, mode)
    if "control/mA" in columns:
        return _floats(columns["control/mA"])
    if "control/V/mA" in columns and mode is not None and not np.any(mode == MODE_CV):
        return _floats(columns["control/V/mA"])
    if at_rest:
        return np.zeros(mpr.n_rows, dtype=np.float64)
    raise RecordingError(
        path,
        "no current column ('I/mA', '<I>/mA', 'dq/mA.h', 'control/mA') and the cell "
        f"is not at rest throughout; columns found: {_found(mpr)}",
    )


def _current_from_charge(
    path: Path, dq_mah: FloatArray, t_s: FloatArray, mode: npt.NDArray[np.generic] | None
) -> FloatArray:
    """EC-Lab's average current since the previous row, mA: dq over the time step."""
    n = len(t_s)
    current_ma = np.zeros(n, dtype=np.float64)
    # Damaged times (inf, NaN) are the caller's check to report, not a warning here.
    with np.errstate(all="ignore"):
        dt_s = np.diff(t_s)
        good = np.concatenate(([False], dt_s > 0))
        current_ma[1:] = np.where(dt_s > 0, dq_mah[1:] * _SECONDS_PER_HOUR / dt_s, 0.0)
    # Rows logged at the same instant (a burst) carry the previous row's current on.
    last_good = np.maximum.accumulate(np.where(good, np.arange(n), 0))
    current_ma = current_ma[last_good]
    # dq/dt averages over the interval before a row; a row taken at open circuit
    # carries no current, even when the interval began under current.
    at_rest = np.zeros(n, dtype=bool) if mode is None else np.asarray(mode) == MODE_REST
    current_ma[at_rest] = 0.0
    if not at_rest[0]:
        if n == 1:
            raise RecordingError(path, "a single row with no current column: dq cannot give one")
        # The first row has no previous one; the first interval's average is the best
        # estimate of its current.
        current_ma[0] = current_ma[1]
    return current_ma


def _cycle(path: Path, values: npt.NDArray[np.generic]) -> IntArray:
    cycle = np.asarray(values, dtype=np.float64)
    # An int64 cannot hold what is not a number or far beyond any real cycle count.
    bad = ~(np.abs(cycle) < 2**31)
    if bad.any():
        row = int(np.argmax(bad))
        raise RecordingError(path, f"cycle number {cycle[row]} at row {row} is not a cycle count")
    return np.ascontiguousarray(np.rint(cycle), dtype=np.int64)


def _floats(values: npt.NDArray[np.generic]) -> FloatArray:
    # A damaged file may hold a signalling NaN, whose widening numpy warns about; the
    # common checks then refuse the NaN in one line (RecordingError), as for any file.
    with np.errstate(invalid="ignore"):
        return np.ascontiguousarray(values, dtype=np.float64)


def _ints(values: npt.NDArray[np.generic]) -> IntArray:
    return np.ascontiguousarray(values, dtype=np.int64)


def _found(mpr: MprData) -> str:
    return ", ".join(repr(name) for name in mpr.columns) or "none"
