"""The machinery behind the reality families of the corpus: protocols as segments and
the instrument's way of recording them.

A protocol is a list of :class:`Segment` (constant current, rest, pause, an impedance
sweep; for full cells also CC to a cut-off and CV). :func:`run_lili` drives a Li|Li cell
through it and records a sample every ``interval_s`` from each step's start plus one at
its end (how Neware and EC-Lab restart their record interval per step), or on a fine
grid that :func:`log_on_change` later thins as EC-Lab does. :func:`run_full` does the
same for a full cell with cut-offs. The cells are built noise-free: the instrument
noise is added by the caller from its own stream, so a faulty trace and its healthy
twin share every noise draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from cellguard.drivers.files import StepKind
from cellguard.drivers.sim import SimFullCell

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# EIS: the sweep EC-Lab runs between cycling blocks.
EIS_F_HIGH_HZ = 1e6
EIS_F_LOW_HZ = 0.1
# Each frequency is measured over this many periods, and never faster than the
# instrument switches frequency.
_EIS_PERIODS = 3.0
_EIS_MIN_PER_FREQ_S = 0.2
# Where the double layer shorts the interphase's charge-transfer resistance (s).
_EIS_CT_TAU_S = 1e-3
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
# The simulator's half-cycle shape: the ohmic part at once, the rest over ~1.5 min.
_OHMIC_FRACTION = 0.35
_RISE_TAU_S = 90.0

# Logging on change: the fine grid the "instrument" checks V on. Dense right after a
# current step (the ohmic jump and the double layer), then once a second.
_FINE_OFFSETS_S = (1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)

# Full cells: how often the instrument checks a cut-off between records (s).
_CHECK_S = 1.0

# A hard short is a Li filament of a fraction of an Ω cm² (as the simulator's).
HARD_SHORT_OHM_CM2 = 0.2


class LiLiCell(Protocol):
    """What :func:`run_lili` needs of a cell: SimCell and :class:`GarnetCell` both fit."""

    def advance(self, dt_s: float, current_a: float) -> float: ...

    @property
    def asr_ohm_cm2(self) -> float: ...


@dataclass(frozen=True)
class Segment:
    """One step of a protocol. ``current_a`` for CC (and the ceiling of CV); ``until_v``
    ends a full cell's CC step at a cut-off, ``hold_v`` / ``end_current_a`` make a CV
    step; ``duration_s`` is the step's length (the longest it may last with a cut-off).
    An impedance step carries its amplitude and frequencies per decade."""

    kind: StepKind
    duration_s: float
    current_a: float = 0.0
    step: int = 1
    cycle: int = 1
    until_v: float | None = None
    hold_v: float | None = None
    end_current_a: float = 0.0
    eis_amplitude_a: float = 0.0
    eis_per_decade: int = 0


@dataclass
class Trace:
    """Samples of one run: noise-free voltage, current, step, cycle and step kind, and
    the times at which the DC current changed (for the double-layer transient)."""

    t_s: list[float] = field(default_factory=list)
    current_a: list[float] = field(default_factory=list)
    voltage_v: list[float] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    cycle: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    bounds_s: list[float] = field(default_factory=list)

    def add(self, t_s: float, current_a: float, voltage_v: float, seg: Segment) -> None:
        self.t_s.append(t_s)
        self.current_a.append(current_a)
        self.voltage_v.append(voltage_v)
        self.step.append(seg.step)
        self.cycle.append(seg.cycle)
        self.kind.append(int(seg.kind))

    def arrays(self) -> tuple[FloatArray, FloatArray, FloatArray, IntArray, IntArray, IntArray]:
        return (
            np.asarray(self.t_s, dtype=np.float64),
            np.asarray(self.current_a, dtype=np.float64),
            np.asarray(self.voltage_v, dtype=np.float64),
            np.asarray(self.step, dtype=np.int64),
            np.asarray(self.cycle, dtype=np.int64),
            np.asarray(self.kind, dtype=np.int64),
        )


def eis_schedule(per_decade: int) -> tuple[list[float], list[float], float]:
    """(offsets in s from the sweep's start, frequency in Hz) of the recorded points,
    high to low frequency, and the sweep's duration (s): two points per frequency,
    half a period apart, so the recorded currents of a frequency cancel (the
    sinusoid's mean is zero)."""
    decades = math.log10(EIS_F_HIGH_HZ / EIS_F_LOW_HZ)
    n = round(decades * per_decade) + 1
    offsets: list[float] = []
    freqs: list[float] = []
    start_s = 0.0
    for k in range(n):
        f_hz = EIS_F_HIGH_HZ * 10.0 ** (-k / per_decade)
        span_s = max(_EIS_PERIODS / f_hz, _EIS_MIN_PER_FREQ_S)
        first_s = start_s + span_s - 1.0 / f_hz  # the last period of the measurement
        offsets += [first_s + 0.25 / f_hz, first_s + 0.75 / f_hz]
        freqs += [f_hz, f_hz]
        start_s += span_s
    return offsets, freqs, start_s


def _offsets(duration_s: float, interval_s: float, fine: bool) -> list[float]:
    """Sample times inside a step, from its start: every interval (or the fine grid),
    and always its end."""
    out: list[float] = []
    if fine:
        out = [x for x in _FINE_OFFSETS_S if x < duration_s - 1e-9]
        m = 1
        while m < duration_s - 1e-9:
            out.append(float(m))
            m += 1
    else:
        m = 1
        while m * interval_s < duration_s - 1e-9:
            out.append(m * interval_s)
            m += 1
    out.append(duration_s)
    return out


def run_lili(
    cell: LiLiCell,
    segments: Sequence[Segment],
    *,
    area_cm2: float,
    interval_s: float,
    fine: bool = False,
) -> Trace:
    """Drive a Li|Li cell through ``segments``; see the module docstring.

    A pause stops the cell's clock with the channel: the half cycle's state (charge
    passed since the reversal, voids) is where it was, and on resuming only the
    concentration part of the overpotential builds up again (over ~1.5 min, as after
    any rest); the ohmic part and the voids are back at once. During the pause a Li|Li
    cell sits at 0 V (the double-layer transient relaxes it there). The clock stopped
    for a few hours shifts the cell's slow Li loss by as much: negligible.
    """
    trace = Trace()
    t0_s = 0.0
    dc_a = 0.0  # open circuit before the test
    resumed = False
    for seg in segments:
        if seg.kind == StepKind.IMPEDANCE:
            _impedance(cell, seg, t0_s, area_cm2, trace)
            t0_s += seg.duration_s
            continue
        current_a = 0.0 if seg.kind == StepKind.PAUSE else seg.current_a
        if current_a != dc_a:
            trace.bounds_s.append(t0_s)
            dc_a = current_a
        last_s = 0.0
        for off_s in _offsets(seg.duration_s, interval_s, fine):
            if seg.kind == StepKind.PAUSE:
                v = 0.0
            else:
                v = cell.advance(off_s - last_s, current_a)
                if resumed:
                    v *= 1.0 - (1.0 - _OHMIC_FRACTION) * math.exp(-off_s / _RISE_TAU_S)
            trace.add(t0_s + off_s, current_a, v, seg)
            last_s = off_s
        resumed = seg.kind == StepKind.PAUSE
        t0_s += seg.duration_s
    return trace


def _impedance(cell: LiLiCell, seg: Segment, t0_s: float, area_cm2: float, trace: Trace) -> None:
    """A GEIS sweep about zero current: the recorded points of the sinusoid, with the
    voltage of the cell's impedance at each frequency (ohmic part at high frequency,
    the whole ASR at low frequency). No net charge moves."""
    asr_ohm = cell.asr_ohm_cm2 / area_cm2
    offsets, freqs, _ = eis_schedule(seg.eis_per_decade)
    for k, (off_s, f_hz) in enumerate(zip(offsets, freqs, strict=True)):
        # Each frequency's pair catches the sinusoid at another phase (a golden-angle
        # walk), its two points half a period apart.
        phase = 0.5 * math.pi + (k // 2) * _GOLDEN_ANGLE + (k % 2) * math.pi
        i_a = seg.eis_amplitude_a * math.sin(phase)
        ct = (1.0 - _OHMIC_FRACTION) / (1.0 + (2.0 * math.pi * f_hz * _EIS_CT_TAU_S) ** 2)
        trace.add(t0_s + off_s, i_a, i_a * asr_ohm * (_OHMIC_FRACTION + ct), seg)
    cell.advance(seg.duration_s, 0.0)


class GarnetCell:
    """Li|LLZO|Li at µA: an ASR fixed by the overpotential asked for, with the same
    half-cycle shape as the simulator (ohmic part at once, the rest over ~1.5 min)."""

    def __init__(self, asr_ohm_cm2: float, area_cm2: float) -> None:
        self._asr_ohm_cm2 = asr_ohm_cm2
        self._area_cm2 = area_cm2
        self._sign = 0
        self._since_s = 0.0

    @property
    def asr_ohm_cm2(self) -> float:
        return self._asr_ohm_cm2

    def advance(self, dt_s: float, current_a: float) -> float:
        sign = (current_a > 0) - (current_a < 0)
        if sign != self._sign:
            self._sign = sign
            self._since_s = 0.0
        self._since_s += dt_s
        rise = 1.0 - math.exp(-self._since_s / _RISE_TAU_S)
        shape = _OHMIC_FRACTION + (1.0 - _OHMIC_FRACTION) * rise
        return current_a / self._area_cm2 * self._asr_ohm_cm2 * shape


def run_full(
    cell: SimFullCell,
    segments: Sequence[Segment],
    *,
    interval_s: float,
    rest_v: float,
    fresh_fraction: float,
) -> Trace:
    """Drive a fresh full cell through CC (to ``until_v``), CV and rest steps, a sample
    every ``interval_s`` and at each step's end.

    A fresh cell (no Li in its anode yet) rests at ``rest_v`` far below the OCV curve;
    its first charge lifts it there within ``fresh_fraction`` of the capacity:
    ``V = V_sim − (OCV(0) − rest_v)·(1 − q/q_fresh)²`` while ``q < q_fresh``.
    """
    spec = cell.spec
    gap_v = cell.ocv(0.0) - rest_v
    fresh_as = fresh_fraction * spec.capacity_mah * 3.6
    charged_as = 0.0
    trace = Trace()
    t0_s = 0.0
    for seg in segments:
        elapsed_s = 0.0
        ended = False
        while not ended and elapsed_s < seg.duration_s - 1e-9:
            record_s = min(elapsed_s + interval_s, seg.duration_s)
            # The instrument checks its cut-offs far more often than it records.
            while elapsed_s < record_s - 1e-9:
                dt_s = min(_CHECK_S, record_s - elapsed_s)
                if seg.kind == StepKind.CV:
                    assert seg.hold_v is not None
                    i_a = cell.current_for_voltage(seg.hold_v, dt_s, abs(seg.current_a))
                else:
                    i_a = seg.current_a
                v = cell.advance(dt_s, i_a)
                charged_as = max(0.0, charged_as + i_a * dt_s)
                if charged_as < fresh_as:
                    v -= gap_v * (1.0 - charged_as / fresh_as) ** 2
                elapsed_s += dt_s
                cut_off = seg.until_v is not None and (v - seg.until_v) * seg.current_a >= 0
                tapered = seg.kind == StepKind.CV and abs(i_a) < seg.end_current_a
                if cut_off or tapered:
                    ended = True
                    break
            trace.add(t0_s + elapsed_s, i_a, v, seg)
        t0_s += elapsed_s
    return trace


def log_on_change(
    t_s: FloatArray, v: FloatArray, step: IntArray, *, dv_v: float, dt_s: float
) -> npt.NDArray[np.intp]:
    """Indices EC-Lab would keep: a point whenever V moved by ``dv_v`` since the last
    point kept, or ``dt_s`` passed, and the first and last point of every step."""
    keep: list[int] = [0]
    last_v = float(v[0])
    last_t = float(t_s[0])
    vs = v.tolist()
    ts = t_s.tolist()
    steps = step.tolist()
    n = len(vs)
    for k in range(1, n):
        edge = steps[k] != steps[k - 1] or (k + 1 < n and steps[k + 1] != steps[k]) or k == n - 1
        if edge or abs(vs[k] - last_v) >= dv_v or ts[k] - last_t >= dt_s - 1e-9:
            keep.append(k)
            last_v = vs[k]
            last_t = ts[k]
    return np.asarray(keep, dtype=np.intp)


# A 3 ms spike as EC-Lab records it: every dE of the way up and down, < 1 ms apart.
BURST_OFFSETS_S = (0.0, 0.4e-3, 0.9e-3, 1.5e-3, 2.2e-3, 3.0e-3)
BURST_SHAPE = (0.35, 1.0, 0.8, 0.5, 0.2, 0.0)
