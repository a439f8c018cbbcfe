"""Per-half-cycle and per-cycle analytics of a Li|Li test (pure; live and on files).

What a researcher reads off a plating/stripping test, computed the same way live
(:class:`CycleAnalyzer`, fed one sample at a time) and on a recorded file
(:func:`analyze_arrays`, numpy over whole arrays); both give identical records,
because both cut the samples into the same half cycles and reduce each one with the
same function.

Definitions (units in every name):

- **half cycle**: a maximal run of consecutive samples under current (``|I| >
  rest_current_a``) with one current sign and one step number. A rest sample, a
  reversal or a new step ends it.
- **cycle** ``k``: half cycles ``2k-1`` and ``2k``, counted from the first half cycle of
  the test (the instrument's own cycle counter is not used: Neware counts cycles of
  its step program, which need not be plating/stripping pairs).
- **polarization**: the mean |V| over the middle third (in time) of a half cycle, as
  :mod:`cellguard.protocols.polarization` defines it: the start holds the zero crossing
  and the relaxation after a reversal, the end the rise of a stripping half cycle. A
  cycle's polarization is the mean of its half cycles'; its **max polarization** is
  the largest |V| under current anywhere in the cycle (a depletion spike shows here).
- **capacity**: the charge passed, ``Σ |I_k| (t_k − t_{k−1})`` per sample (the current
  of a sample holds since the previous one), per electrode area. The *cumulative
  plated capacity* sums every half cycle (each plates Li on one electrode), so 500 h
  at 0.5 mA cm⁻² is 250 mAh cm⁻².
- **failure**: where the channel halted (live: the daemon's halt event; on a file:
  where the detectors of :mod:`cellguard.protocols.detectors` would halt it) with the
  hours, completed cycles and cumulative capacity at that moment.
- **average Coulombic efficiency** of a depleted asymmetric cell, the quantity the
  asymmetric-cell method measures: ``CE = 1 − Q_thin / Q_stripped`` with ``Q_thin`` the
  thin electrode's Li (``thin_li_um × 0.205 mAh cm⁻² µm⁻¹``) and ``Q_stripped`` the
  capacity stripped from it until depletion (the charge passed in the current
  direction the cell depleted in). Every mAh cm⁻² cycled lost ``1 − CE`` of itself.
  The method's resolution is the last, partial stripping: ``Q_thin`` counts it as
  lost, so CE comes out low by at most ``(charge per half cycle) / Q_stripped``.
  CE is bounded to ``[0, 1]``: a cell that depleted before ``Q_thin`` was stripped from
  it did not hold the Li stated (a thinner foil, Li lost before the test, a test joined
  late), and its CE is undefined (``None``), not negative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.detectors import CellProfile, Detector, DetectorSettings, make_detector
from cellguard.protocols.units import LI_MAH_CM2_PER_UM, disc_area_cm2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PAPER_AREA_CM2 = disc_area_cm2(10.0)
"""The papers' 10 mm disc, 0.785 cm²: the area assumed when none is given."""
_S_PER_H = 3600.0
# A·s per mAh.
_AS_PER_MAH = 3.6


@dataclass(frozen=True)
class AnalyticsSettings:
    """What the analysis must know about the cell.

    ``area_cm2``: electrode area (cm²) for the areal capacity. ``thin_li_um``: the thin
    electrode of an asymmetric cell (µm), needed for its Coulombic efficiency.
    ``rest_current_a``: |I| at or below this is rest, not part of a half cycle (A).
    """

    cell: CellProfile = "asymmetric"
    area_cm2: float = PAPER_AREA_CM2
    thin_li_um: float | None = None
    rest_current_a: float = 1e-7

    def __post_init__(self) -> None:
        if self.cell not in ("symmetric", "asymmetric", "full"):
            raise ConfigError(
                field="cell", problem=f"must be symmetric, asymmetric or full, got {self.cell!r}"
            )
        for name in ("area_cm2", "rest_current_a"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(field=name, problem=f"must be a finite number > 0, got {value!r}")
        thin = self.thin_li_um
        if thin is not None and not (math.isfinite(thin) and thin > 0):
            raise ConfigError(
                field="thin_li_um", problem=f"must be a Li thickness in µm > 0, got {thin!r}"
            )

    @property
    def thin_li_mah_cm2(self) -> float | None:
        """The thin electrode's Li, mAh cm⁻² (None when ``thin_li_um`` is unknown)."""
        return None if self.thin_li_um is None else self.thin_li_um * LI_MAH_CM2_PER_UM


@dataclass(frozen=True, slots=True)
class HalfCycleRecord:
    """One half cycle: times in s of test time, voltages in V, charges in mAh cm⁻²."""

    index: int  # 1-based, counted from the first half cycle of the test
    direction: int  # +1 or -1: the sign of the current
    start_s: float
    end_s: float
    samples: int
    polarization_v: float
    max_abs_v: float
    charge_mah_cm2: float
    capacity_mah_cm2: float  # cumulative plated capacity at the end of this half cycle

    @property
    def cycle(self) -> int:
        """The cycle this half cycle belongs to (half cycles 2k−1 and 2k make cycle k)."""
        return (self.index + 1) // 2


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """One cycle (two half cycles, or one if the test ended or failed inside it)."""

    cycle: int
    start_s: float
    end_s: float
    polarization_v: float
    max_polarization_v: float
    capacity_mah_cm2: float  # cumulative plated capacity at the end of the cycle
    complete: bool

    @property
    def hours(self) -> float:
        """Test time at the end of the cycle, h."""
        return self.end_s / _S_PER_H

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, in mV, mAh cm⁻² and h: the keys of ``analyze --json``.

        A cycle that the test's end or a failure cut short is the last one listed;
        ``complete`` is not a key of the issue's schema, so it stays out of the JSON.
        """
        return {
            "cycle": self.cycle,
            "polarization_mv": round(self.polarization_v * 1e3, 4),
            "max_polarization_mv": round(self.max_polarization_v * 1e3, 4),
            "capacity_mah_cm2": round(self.capacity_mah_cm2, 6),
            "hours": round(self.hours, 6),
        }


@dataclass(frozen=True, slots=True)
class FailureSummary:
    """Where the channel failed: hours, completed cycles and capacity to failure."""

    kind: str  # "depletion" | "short" | "voltage_shift" | "limit" | ...
    subkind: str
    t_s: float
    cycles: int  # complete cycles before the failure
    capacity_mah_cm2: float  # cumulative plated capacity at the failure
    stripped_mah_cm2: float  # capacity passed in the failing direction until the failure
    detail: str = ""
    index: int = -1  # the sample's index on a file, -1 live

    @property
    def hours(self) -> float:
        """Test time at the failure, h."""
        return self.t_s / _S_PER_H

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "subkind": self.subkind or None,
            "hours": round(self.hours, 6),
            "cycles": self.cycles,
            "capacity_mah_cm2": round(self.capacity_mah_cm2, 6),
            "index": self.index,
            "detail": self.detail,
        }


@dataclass
class Analysis:
    """Everything the analysis found in one test."""

    settings: AnalyticsSettings
    half_cycles: list[HalfCycleRecord] = field(default_factory=list)
    cycles: list[CycleRecord] = field(default_factory=list)
    failure: FailureSummary | None = None

    @property
    def average_coulombic_efficiency(self) -> float | None:
        """``1 − Q_thin / Q_stripped`` for an asymmetric cell that depleted, else None."""
        return coulombic_efficiency(self.settings, self.failure)

    def as_dict(self) -> dict[str, Any]:
        """The ``cellguard analyze --json`` body (without ``file``)."""
        ce = self.average_coulombic_efficiency
        return {
            "cycles": [c.as_dict() for c in self.cycles],
            "failure": None if self.failure is None else self.failure.as_dict(),
            "average_coulombic_efficiency": None if ce is None else round(ce, 6),
        }


def coulombic_efficiency(
    settings: AnalyticsSettings, failure: FailureSummary | None
) -> float | None:
    """Average Li Coulombic efficiency implied by a depletion (see the module doc), in
    ``[0, 1]``; None when undefined (not asymmetric, no depletion, no thin electrode, or
    less than the thin electrode's Li stripped before it depleted)."""
    q_thin = settings.thin_li_mah_cm2
    if (
        settings.cell != "asymmetric"
        or failure is None
        or failure.kind != "depletion"
        or q_thin is None
        or failure.stripped_mah_cm2 < q_thin
    ):
        return None
    return 1.0 - q_thin / failure.stripped_mah_cm2


def _reduce_half(
    t_s: FloatArray, voltage_v: FloatArray, current_a: FloatArray, prev_t_s: float
) -> tuple[float, float, float]:
    """(polarization V, max |V| V, charge A·s) of one half cycle's samples.

    The one reduction both paths use, so live and file results are identical.
    """
    dt_s = np.diff(t_s, prepend=prev_t_s)
    charge_as = float(np.dot(np.abs(current_a), dt_s))
    start_s, end_s = float(t_s[0]), float(t_s[-1])
    third_s = (end_s - start_s) / 3.0
    abs_v = np.abs(voltage_v)
    middle = abs_v[(t_s >= start_s + third_s) & (t_s <= end_s - third_s)]
    if middle.size == 0:
        middle = abs_v
    return float(middle.mean()), float(abs_v.max()), charge_as


class _Books:
    """Turns finished half cycles into records and cycles (shared by both paths)."""

    def __init__(self, settings: AnalyticsSettings) -> None:
        self.analysis = Analysis(settings)
        self._inv_area = 1.0 / (settings.area_cm2 * _AS_PER_MAH)
        self._capacity_mah_cm2 = 0.0
        self._by_direction_mah_cm2 = {1: 0.0, -1: 0.0}
        # Half cycles and complete cycles booked before a restart (see CycleAnalyzer.resume).
        self.halves_before = 0
        self.complete_before = 0

    def resume(self, cycles: int, capacity_mah_cm2: float) -> None:
        """Go on after ``cycles`` complete cycles and ``capacity_mah_cm2`` cycled.

        Stored cycles keep no split by direction: it is taken as even, which is exact
        for equal half cycles (the standard protocol) and what a CE after a restart
        rests on.
        """
        self.halves_before = 2 * cycles
        self.complete_before = cycles
        self._capacity_mah_cm2 = capacity_mah_cm2
        self._by_direction_mah_cm2 = {1: capacity_mah_cm2 / 2, -1: capacity_mah_cm2 / 2}

    def half(
        self,
        t_s: FloatArray,
        voltage_v: FloatArray,
        current_a: FloatArray,
        prev_t_s: float,
        direction: int,
        *,
        cut: bool = False,
    ) -> CycleRecord | None:
        """Book one half cycle; the cycle it closed, if any. ``cut``: a failure ended it
        early, so its cycle is not complete."""
        polarization_v, max_abs_v, charge_as = _reduce_half(t_s, voltage_v, current_a, prev_t_s)
        charge_mah_cm2 = charge_as * self._inv_area
        self._capacity_mah_cm2 += charge_mah_cm2
        self._by_direction_mah_cm2[direction] += charge_mah_cm2
        halves = self.analysis.half_cycles
        record = HalfCycleRecord(
            index=self.halves_before + len(halves) + 1,
            direction=direction,
            start_s=float(t_s[0]),
            end_s=float(t_s[-1]),
            samples=len(t_s),
            polarization_v=polarization_v,
            max_abs_v=max_abs_v,
            charge_mah_cm2=charge_mah_cm2,
            capacity_mah_cm2=self._capacity_mah_cm2,
        )
        halves.append(record)
        return self._cycle(complete=not cut) if record.index % 2 == 0 else None

    def close_open_cycle(self) -> CycleRecord | None:
        """The cycle of a lone first half cycle, when the test ends or fails inside it."""
        halves = self.analysis.half_cycles
        if not halves or halves[-1].index % 2 == 0:
            return None
        return self._cycle(complete=False)

    def _cycle(self, *, complete: bool) -> CycleRecord:
        halves = self.analysis.half_cycles
        last = halves[-1]
        parts = [h for h in halves[-2:] if h.cycle == last.cycle]
        record = CycleRecord(
            cycle=last.cycle,
            start_s=parts[0].start_s,
            end_s=last.end_s,
            polarization_v=sum(h.polarization_v for h in parts) / len(parts),
            max_polarization_v=max(h.max_abs_v for h in parts),
            capacity_mah_cm2=last.capacity_mah_cm2,
            complete=complete,
        )
        self.analysis.cycles.append(record)
        return record

    def fail(
        self, kind: str, subkind: str, t_s: float, direction: int, detail: str, index: int
    ) -> FailureSummary:
        complete = self.complete_before + sum(1 for c in self.analysis.cycles if c.complete)
        failure = FailureSummary(
            kind=kind,
            subkind=subkind,
            t_s=t_s,
            cycles=complete,
            capacity_mah_cm2=self._capacity_mah_cm2,
            stripped_mah_cm2=self._by_direction_mah_cm2.get(direction, 0.0),
            detail=detail,
            index=index,
        )
        self.analysis.failure = failure
        return failure


class CycleAnalyzer:
    """The streaming path: fed one sample at a time, live (the daemon's analytics tap).

    :meth:`feed` returns the cycle a sample closed (if any); :meth:`fail` records a
    failure reported from outside (the daemon's halt event) and closes the half cycle
    in progress; :meth:`finish` closes it at the end of a test. With a ``detector``
    the analyzer judges every sample itself and fails where the detector halts (what
    :func:`analyze_arrays` does on a file). After a failure, samples are ignored.
    """

    def __init__(self, settings: AnalyticsSettings, *, detector: Detector | None = None) -> None:
        self.settings = settings
        self._books = _Books(settings)
        self._detector = detector
        self._rest_a = settings.rest_current_a
        self._t: list[float] = []
        self._v: list[float] = []
        self._i: list[float] = []
        self._prev_t_s = math.nan
        self._seg_prev_t_s = math.nan
        self._key: tuple[int, int | None] | None = None
        self._last_direction = 0
        self._index = -1

    @property
    def analysis(self) -> Analysis:
        """What was found so far (closed half cycles and cycles, the failure)."""
        return self._books.analysis

    @property
    def failed(self) -> bool:
        return self._books.analysis.failure is not None

    def feed(
        self, t_s: float, voltage_v: float, current_a: float, step: int | None = None
    ) -> list[CycleRecord]:
        """One sample, in order; the cycles it closed (at most one, two at a failure)."""
        if self.failed:
            return []
        self._index += 1
        closed: list[CycleRecord] = []
        if abs(current_a) > self._rest_a:
            direction = 1 if current_a > 0 else -1
            key = (direction, step)
            if key != self._key:
                closed += self._close()
                self._key = key
                self._seg_prev_t_s = t_s if math.isnan(self._prev_t_s) else self._prev_t_s
            self._t.append(t_s)
            self._v.append(voltage_v)
            self._i.append(current_a)
            self._last_direction = direction
        else:
            closed += self._close()
        self._prev_t_s = t_s
        if self._detector is not None:
            verdict = self._detector.feed(t_s, voltage_v, current_a, step)
            if verdict.is_halt:
                closed += self._fail(
                    verdict.kind, verdict.subkind, verdict.t_s, verdict.detail, self._index
                )
        return closed

    def resume(self, cycles: int, capacity_mah_cm2: float, end_s: float) -> None:
        """Continue a test analysed before a restart: ``cycles`` complete cycles were
        booked, ``capacity_mah_cm2`` cycled, the last of them ending at test time
        ``end_s``. Call before the first :meth:`feed`; the next half cycle found is
        the first of cycle ``cycles + 1``, and its charge is counted from ``end_s``
        (the current of a sample holds since the previous one)."""
        if self._index >= 0:
            msg = "resume() must come before the first sample"
            raise ConfigError(field="resume", problem=msg)
        self._books.resume(cycles, capacity_mah_cm2)
        self._prev_t_s = end_s

    def fail(
        self, kind: str, t_s: float, *, subkind: str = "", detail: str = ""
    ) -> list[CycleRecord]:
        """A failure reported from outside (a halt event); returns the cycle it closed."""
        if self.failed:
            return []
        return self._fail(kind, subkind, t_s, detail, -1)

    def finish(self) -> list[CycleRecord]:
        """The end of the test: close the half cycle and cycle in progress."""
        if self.failed:
            return []
        closed = self._close()
        tail = self._books.close_open_cycle()
        return closed + ([tail] if tail is not None else [])

    def _fail(
        self, kind: str, subkind: str, t_s: float, detail: str, index: int
    ) -> list[CycleRecord]:
        # A half cycle still running is cut short by the failure: its cycle is partial.
        closed = self._close(cut=True)
        tail = self._books.close_open_cycle()
        if tail is not None:
            closed.append(tail)
        self._books.fail(kind, subkind, t_s, self._last_direction, detail, index)
        return closed

    def _close(self, *, cut: bool = False) -> list[CycleRecord]:
        if self._key is None:
            return []
        direction = self._key[0]
        self._key = None
        record = self._books.half(
            np.array(self._t, dtype=np.float64),
            np.array(self._v, dtype=np.float64),
            np.array(self._i, dtype=np.float64),
            self._seg_prev_t_s,
            direction,
            cut=cut,
        )
        self._t.clear()
        self._v.clear()
        self._i.clear()
        return [record] if record is not None else []


def half_cycle_bounds(
    current_a: FloatArray, step: IntArray | None, rest_current_a: float
) -> list[tuple[int, int]]:
    """``[start, stop)`` sample ranges of the half cycles (the definition above)."""
    n = len(current_a)
    if n == 0:
        return []
    active = np.abs(current_a) > rest_current_a
    sign = np.where(current_a > 0, 1, -1)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    new[1:] = (~active[:-1]) | (sign[1:] != sign[:-1])
    if step is not None:
        new[1:] |= step[1:] != step[:-1]
    starts = np.flatnonzero(active & new)
    # A half cycle stops at its first rest sample or at the next half cycle's start.
    rests = np.flatnonzero(~active)
    bounds: list[tuple[int, int]] = []
    for k, start in enumerate(starts.tolist()):
        stop = int(starts[k + 1]) if k + 1 < len(starts) else n
        r = int(np.searchsorted(rests, start))
        if r < len(rests) and rests[r] < stop:
            stop = int(rests[r])
        bounds.append((start, stop))
    return bounds


def analyze_arrays(
    settings: AnalyticsSettings,
    t_s: FloatArray,
    voltage_v: FloatArray,
    current_a: FloatArray,
    step: IntArray | None = None,
    *,
    detector: DetectorSettings | Detector | None = None,
    step_kind: IntArray | None = None,
) -> Analysis:
    """The vectorised path: a whole recorded test at once (same results as the stream).

    ``detector``: settings (or a fresh detector) to find where the channel would have
    been halted; the analysis stops at that sample, as the channel would have. Without
    it the test is analysed to its end and has no failure. ``step_kind`` (StepKind codes,
    where the file has them) tells the detector which steps are not cycling.
    """
    t_s = np.asarray(t_s, dtype=np.float64)
    voltage_v = np.asarray(voltage_v, dtype=np.float64)
    current_a = np.asarray(current_a, dtype=np.float64)
    books = _Books(settings)
    halt = None
    if detector is not None:
        judge = make_detector(detector) if isinstance(detector, DetectorSettings) else detector
        verdicts = judge.feed_batch(t_s, voltage_v, current_a, step, None, step_kind)
        halt = next((v for v in verdicts if v.is_halt), None)
    end = len(t_s) if halt is None else halt.index + 1
    t_s, voltage_v, current_a = t_s[:end], voltage_v[:end], current_a[:end]
    step = None if step is None else np.asarray(step, dtype=np.int64)[:end]
    last_direction = 0
    for start, stop in half_cycle_bounds(current_a, step, settings.rest_current_a):
        direction = 1 if current_a[start] > 0 else -1
        prev_t_s = float(t_s[start - 1]) if start > 0 else float(t_s[start])
        # The halt's sample inside a half cycle cuts it short (as the stream's fail() does).
        cut = halt is not None and stop == end
        books.half(
            t_s[start:stop],
            voltage_v[start:stop],
            current_a[start:stop],
            prev_t_s,
            direction,
            cut=cut,
        )
        last_direction = direction
    books.close_open_cycle()
    if halt is not None:
        books.fail(halt.kind, halt.subkind, halt.t_s, last_direction, halt.detail, halt.index)
    return books.analysis


def analyze_stream(
    settings: AnalyticsSettings,
    samples: Sequence[tuple[float, float, float, int | None]],
    *,
    detector: DetectorSettings | None = None,
) -> Analysis:
    """The streaming path over ``(t_s, voltage_v, current_a, step)`` tuples (for tests
    and small series): what the live tap computes."""
    analyzer = CycleAnalyzer(
        settings, detector=None if detector is None else make_detector(detector)
    )
    for t, v, i, s in samples:
        analyzer.feed(t, v, i, s)
    analyzer.finish()
    return analyzer.analysis
