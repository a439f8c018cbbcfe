"""The full-cell detector: the voltage window, collapses and drops while charging.

A full cell's voltage is its open-circuit voltage plus a small overpotential, so the
Li|Li ratio logic does not apply. What a full cell shows when it fails: the voltage
leaves its chemistry's window, collapses under current (hard short), or falls while
it is being charged at a constant current (soft short: charge leaks away). Rate steps,
CC→CV, rests and the end-of-discharge knee are not faults: a drop is judged only
while charging (current and voltage of the same sign) at an unchanged current.

The window is the protocol's (``full_v_min_v``/``full_v_max_v``, from the protocol,
the config or the step file's limits) and is judged under current only, in the
direction the current drives the voltage: above it while charging, below it while
discharging. A fresh cell rests at 0.2–0.4 V before formation and a graphite half cell
at 3 V: driving them into the window is not a fault. A collapse is judged only once
the cell has been inside the window (before that it has never been charged). Like the Li|Li
detector, evidence halts when it lasts two samples spanning ``confirm_s``.

Live samples go through :meth:`FullCellDetector.feed`; replayed files through
:meth:`FullCellDetector.feed_batch`, which screens whole arrays with numpy and runs the
per-sample logic only around suspicious samples, giving the same verdicts.
"""

from __future__ import annotations

import math

import numpy as np

from cellguard.drivers.files import StepKind
from cellguard.protocols.detectors._api import (
    OK,
    DetectorSettings,
    FloatArray,
    IntArray,
    Verdict,
)
from cellguard.protocols.detectors._base import DetectorBase

_SAME_CURRENT = 0.02  # relative change of |I| that still counts as the same current
_JUDGED_KINDS = (StepKind.UNKNOWN, StepKind.CC, StepKind.CV)


class FullCellDetector(DetectorBase):
    """Streaming detector for one full-cell channel."""

    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(settings)
        # The range backstop sits above the protocol's window: a protocol that charges to
        # 4.9 V on a ±5 V instrument is not at the range when it reaches its cut-off.
        s = settings
        # A step ends when the cell reaches its cut-off, and the instrument overshoots it
        # by a few mV: the window is left only beyond full_window_margin_v.
        self._high_v = s.full_v_max_v + s.full_window_margin_v
        self._low_v = s.full_v_min_v - s.full_window_margin_v
        # A collapse is far below the window: 0.5 V for a Li-ion cell, less for a window
        # that reaches low (a graphite or silicon electrode against Li sits at 0.1 V).
        self._collapse_v = min(s.full_collapse_v, 0.5 * s.full_v_min_v)
        self._range_v = max(
            s.range_fraction * s.voltage_range_v, min(s.full_v_max_v + 0.05, s.voltage_range_v)
        )
        self._prev_v = math.nan
        self._prev_i = math.nan
        self._collapse_run = 0
        self._collapse_t0 = 0.0
        self._range_run = 0
        self._range_t0 = 0.0
        self._outside_run = 0
        self._outside_t0 = 0.0
        self._drop_ref_v = math.nan  # |V| before a drop, while the drop awaits confirmation
        self._drop_t0 = 0.0
        # Whether the cell has been inside its window: until then it has never been
        # charged (formation starts at 0.2-0.4 V) and a low voltage is no collapse.
        self._formed = False

    def feed(
        self,
        t_s: float,
        voltage_v: float,
        current_a: float,
        step: int | None = None,
        cycle: int | None = None,
        kind: int | None = None,
        *,
        step_time_s: float = math.nan,
    ) -> Verdict:
        index = self._n
        self._n = index + 1
        if self._halt is not None:
            return OK
        s = self.settings
        av = abs(voltage_v)
        prev_v, prev_i = self._prev_v, self._prev_i
        self._prev_v, self._prev_i = voltage_v, current_a
        under = abs(current_a) >= s.rest_current_a and (kind is None or kind in _JUDGED_KINDS)
        # At rest a full-scale reading is an open lead or a disconnected cell, not a cell
        # driven out of range: nothing is pushed through it.
        # At the range under current: confirmed like every other criterion (2 samples
        # spanning confirm_s). A single full-scale record where a step begins (a real
        # Neware file logs one at the instant a CC-CV charge starts, then the CV
        # voltage) is a spike; a cell driven out of range stays there.
        if av >= self._range_v and under:
            if self._range_run == 0:
                self._range_t0 = t_s
            self._range_run += 1
            if self._confirmed_range(t_s):
                return self._halt_with(
                    index,
                    t_s,
                    "limit",
                    "range",
                    av,
                    math.nan,
                    self._range_v,
                    f"|V| = {av:.3f} V reached the instrument's ±{s.voltage_range_v:g} V range",
                )
            return self._warn(
                index,
                t_s,
                "limit",
                "range",
                av,
                math.nan,
                self._range_v,
                f"|V| = {av:.3f} V at the instrument's ±{s.voltage_range_v:g} V range "
                "(not yet lasting: a spike, or the cell leaving the range)",
            )
        self._range_run = 0
        if not self._formed and av >= s.full_v_min_v:
            self._formed = True
        if under and av < self._collapse_v and self._formed:
            if self._collapse_run == 0:
                self._collapse_t0 = t_s
            self._collapse_run += 1
            self._outside_run = 0
            self._drop_ref_v = math.nan
            if self._collapse_run >= 2 and t_s - self._collapse_t0 >= s.confirm_s:
                return self._halt_with(
                    index,
                    t_s,
                    "short",
                    "collapse",
                    av,
                    math.nan,
                    self._collapse_v,
                    f"|V| collapsed to {av:.3f} V under {current_a * 1e3:+.3f} mA "
                    f"(threshold {self._collapse_v:g} V) on 2 consecutive samples",
                    subkind="hard",
                )
            return self._warn(
                index,
                t_s,
                "short",
                "collapse",
                av,
                math.nan,
                self._collapse_v,
                f"|V| fell to {av:.3f} V under current (one sample: a glitch or a short)",
            )
        self._collapse_run = 0
        discharging = current_a * voltage_v < 0
        # Out of the window in the direction the current drives it: above while
        # charging, below while discharging. A fresh cell starts outside its window and
        # is driven into it (a full cell from 0.3 V up, a graphite half cell from its
        # 3 V open circuit down): that is formation, not a fault.
        if under and (
            (av > self._high_v and not discharging) or (av < self._low_v and discharging)
        ):
            if self._outside_run == 0:
                self._outside_t0 = t_s
            self._outside_run += 1
            self._drop_ref_v = math.nan
            limit = self._high_v if av > self._high_v else self._low_v
            if self._outside_run >= 2 and t_s - self._outside_t0 >= s.confirm_s:
                return self._halt_with(
                    index,
                    t_s,
                    "limit",
                    "window",
                    av,
                    math.nan,
                    limit,
                    f"|V| = {av:.3f} V left the {s.full_v_min_v:g}–{s.full_v_max_v:g} V window "
                    f"(+ {s.full_window_margin_v * 1e3:g} mV margin) on 2 consecutive samples",
                )
            return self._warn(
                index,
                t_s,
                "limit",
                "window",
                av,
                math.nan,
                limit,
                f"|V| = {av:.3f} V is outside the {s.full_v_min_v:g}–{s.full_v_max_v:g} V window",
            )
        self._outside_run = 0
        charging_same_current = (
            under
            and current_a * voltage_v > 0
            and not math.isnan(prev_i)
            and prev_i * current_a > 0
            and abs(abs(current_a) - abs(prev_i)) <= _SAME_CURRENT * abs(current_a)
        )
        ref_v = self._drop_ref_v
        if not math.isnan(ref_v):  # a drop awaits confirmation
            if charging_same_current and av < ref_v - s.full_drop_v:
                if t_s - self._drop_t0 < s.confirm_s:
                    return OK  # a burst of one excursion: wait until it has lasted
                self._drop_ref_v = math.nan
                return self._halt_with(
                    index,
                    t_s,
                    "short",
                    "drop",
                    av,
                    ref_v,
                    ref_v - s.full_drop_v,
                    f"|V| fell from {ref_v:.3f} V to {av:.3f} V while charging at a constant "
                    f"{current_a * 1e3:+.3f} mA (threshold {s.full_drop_v:g} V) and stayed down",
                    subkind="soft",
                )
            self._drop_ref_v = math.nan
        if charging_same_current and av < abs(prev_v) - s.full_drop_v:
            self._drop_ref_v = abs(prev_v)
            self._drop_t0 = t_s
            return self._warn(
                index,
                t_s,
                "short",
                "drop",
                av,
                math.nan,
                abs(prev_v) - s.full_drop_v,
                f"|V| fell by {abs(prev_v) - av:.3f} V in one sample while charging",
            )
        return OK

    def _confirmed_range(self, t_s: float) -> bool:
        # 5 % below confirm_s still counts: instruments stamp their samples with jitter.
        return self._range_run >= 2 and t_s - self._range_t0 >= 0.95 * self.settings.confirm_s

    def feed_batch(
        self,
        t_s: FloatArray,
        voltage_v: FloatArray,
        current_a: FloatArray,
        step: IntArray | None = None,
        cycle: IntArray | None = None,
        step_kind: IntArray | None = None,
    ) -> list[Verdict]:
        n = len(t_s)
        if n == 0:
            return []
        if self._halt is not None:
            self._n += n
            return []
        s = self.settings
        v = np.asarray(voltage_v, dtype=np.float64)
        i = np.asarray(current_a, dtype=np.float64)
        av = np.abs(v)
        prev_v = np.empty(n)
        prev_v[0] = self._prev_v
        prev_v[1:] = v[:-1]
        prev_i = np.empty(n)
        prev_i[0] = self._prev_i
        prev_i[1:] = i[:-1]
        under = np.abs(i) >= s.rest_current_a
        with np.errstate(invalid="ignore"):
            suspicious = (
                (av >= self._range_v)
                | (under & (av < self._collapse_v))
                | (av > self._high_v)
                | (av < self._low_v)
                | (
                    under
                    & (i * v > 0)
                    & (prev_i * i > 0)
                    & (np.abs(np.abs(i) - np.abs(prev_i)) <= _SAME_CURRENT * np.abs(i))
                    & (av < np.abs(prev_v) - s.full_drop_v)
                )
            )
        pending = (
            self._collapse_run > 0
            or self._outside_run > 0
            or self._range_run > 0
            or not math.isnan(self._drop_ref_v)
        )
        hits = np.flatnonzero(suspicious)
        if hits.size == 0 and not pending:
            # Nothing to judge: move the state to the end of the chunk, as feed would.
            self._n += n
            self._prev_v = float(v[-1])
            self._prev_i = float(i[-1])
            self._formed = self._formed or bool((av >= s.full_v_min_v).any())
            return []
        start = 0 if pending else int(hits[0])
        # Up to ``start`` every sample is ordinary: the state is what feed leaves.
        if start > 0:
            self._formed = self._formed or bool((av[:start] >= s.full_v_min_v).any())
            self._n += start
            self._prev_v = float(v[start - 1])
            self._prev_i = float(i[start - 1])
            self._collapse_run = self._outside_run = self._range_run = 0
            self._drop_ref_v = math.nan
        return self._feed_each(
            np.asarray(t_s, dtype=np.float64)[start:].tolist(),
            v[start:].tolist(),
            i[start:].tolist(),
            None,
            None if step_kind is None else step_kind[start:].tolist(),
        )
