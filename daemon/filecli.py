"""What ``replay``, ``analyze`` and ``plot`` share: options to settings, hours, failures.

**Hours**, everywhere in these commands' text and ``--json``, are the file's own test
time (its ``Test Time`` column, Neware's total time) in hours: the time since the
test started as the instrument counted it, not since the file's first row. So a halt
at 12.5 h is at the row whose test time is 45 000 s, in every command and in the
researcher's own plot of the file, also when the file is a cut-out of a longer test.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.detectors import CellProfile, DetectorSettings

log = logging.getLogger(__name__)

_S_PER_H = 3600.0
# Hours in --json: 6 decimals (3.6 ms) in every command, so that equal times compare equal.
HOURS_DECIMALS = 6


def hours(t_s: float) -> float:
    """Test time in s as the hours the commands print in ``--json``."""
    return round(t_s / _S_PER_H, HOURS_DECIMALS)


def detector_settings(
    cell: CellProfile, *, v_min_v: float | None = None, v_max_v: float | None = None
) -> DetectorSettings:
    """The detector settings of ``--cell`` and the full-cell window ``--v-min``/``--v-max``.

    The window is a full cell's (a Li|Li cell's voltage is an overpotential of mV, its
    limit the instrument's range): for ``symmetric``/``asymmetric`` it is refused.
    """
    if cell != "full":
        given = [name for name, v in (("--v-min", v_min_v), ("--v-max", v_max_v)) if v is not None]
        if given:
            raise ConfigError(
                field=given[0],
                problem=f"a full-cell voltage window: only with --cell full, not {cell}",
            )
        return DetectorSettings(cell=cell)
    defaults = DetectorSettings(cell="full")
    low = defaults.full_v_min_v if v_min_v is None else v_min_v
    high = defaults.full_v_max_v if v_max_v is None else v_max_v
    for name, value in (("--v-min", v_min_v), ("--v-max", v_max_v)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(field=name, problem=f"must be a voltage >= 0 V, got {value!r}")
    if not low < high:
        if v_min_v is not None:
            note = " (the default)" if v_max_v is None else ""
            problem = f"{low:g} V must be below --v-max {high:g} V{note}"
            raise ConfigError(field="--v-min", problem=problem)
        problem = f"{high:g} V must be above --v-min {low:g} V (the default)"
        raise ConfigError(field="--v-max", problem=problem)
    return DetectorSettings(cell="full", full_v_min_v=low, full_v_max_v=high)


def report_failed_file(path: Path, problem: str, *, as_json: bool) -> None:
    """A file that could not be read or judged: one line on stderr, and with ``--json``
    its own record on stdout, so a script reading the JSON lines misses no file."""
    print(f"cellguard: {path}: {problem}", file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps({"file": str(path), "error": problem}), flush=True)


def judging_problem(path: Path, err: Exception) -> str:
    """One line for an unexpected failure while judging a file that was read."""
    # The traceback is for the developers (with -v); the user gets the one line.
    log.debug("judging %s failed", path, exc_info=err)
    text = " ".join(str(err).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"could not be judged: {type(err).__name__}" + (f": {text}" if text else "")
