"""The Li|Li detector: depletion voltage shifts and shorts in symmetric and asymmetric cells.

How it judges a sample
----------------------
A Li|Li cell's voltage is its overpotential, whose sign follows the current. The
detector learns the cell's own apparent resistance ``r = V/I`` along each half cycle,
per current direction, from the last healthy half cycle in that direction (the
*profile*), and judges every sample by ``ratio = r / r_profile`` at the same point of
the half cycle (time since the current reversed). Working with V/I makes it blind to
the current density, to reversed leads (both r and the profile flip sign) and to the
normal half-cycle shape (the profile has the same shape); comparing with the half cycle
two hours before makes it blind to what changes slowly: polarization growth, the
"activation" decrease, day/night temperature drift (together well under 10 % between
two half cycles).

=========================  =============================  ==============================
ratio                      evidence                       halts when
=========================  =============================  ==============================
> shift_ratio (+ floor V)  voltage shift (depletion)      2 consecutive samples
< near_zero_ratio          collapse (hard short)          2 consecutive low samples
< drop_ratio               drop (soft short)              2 consecutive low samples, or
                                                          2 drops within soft_window_s
smoothed < slide_ratio     slide to zero (micro short)    2 consecutive samples
|V| >= range               the instrument's range         at once (the backstop)
=========================  =============================  ==============================

A single anomalous sample is a warn (it may be a glitch); wrong-sign or still-rising
samples within ``settle_s`` of a reversal are the zero crossing and are not judged.
The first half cycle in each direction is learnt, not judged (only the range halts).
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections import deque

from cellguard.protocols.detectors._api import (
    OK,
    DetectorSettings,
    FloatArray,
    IntArray,
    Verdict,
)
from cellguard.protocols.detectors._base import DetectorBase

# A low sample that rises by more than this (in ratio) over the previous one, early
# in a half cycle, is the relaxation after a reversal, not a collapse.
_RISING_RATIO = 0.03
_MIN_PROFILE_SAMPLES = 3
_PROFILE_SMOOTHING = 5
_FLAT_SPREAD_SIGMAS = 5.0
# The profile's noise after smoothing, relative to one sample's: 1/5.
_PROFILE_NOISE_SHARE = 1.0 / _PROFILE_SMOOTHING
_ONE_SAMPLE_NOISE = math.sqrt(1.0 + _PROFILE_NOISE_SHARE)
# Where the profile is steep (the rise after a reversal) it keeps its raw samples, whose
# noise is as large as the sample's own: a ratio there is twice as noisy in variance.
_ONE_SAMPLE_NOISE_RAW = math.sqrt(2.0)
_SLIDE_MIN_SAMPLES = 3


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """Linear interpolation in a sorted profile, clamped at both ends."""
    k = bisect_left(xs, x)
    if k <= 0:
        return ys[0]
    if k >= len(xs):
        return ys[-1]
    x0 = xs[k - 1]
    x1 = xs[k]
    y0 = ys[k - 1]
    return y0 + (ys[k] - y0) * (x - x0) / (x1 - x0) if x1 > x0 else ys[k]


def _smooth_flat(values: list[float], width: int, spread: float) -> tuple[list[float], list[bool]]:
    """Centered moving mean where the profile is flat; raw values where it is not.

    Averaging over the steep rise at the start of a half cycle (or any real shape)
    would bias the profile there; averaging only where the window's spread is within
    ``spread`` (a few noise σ) removes noise and nothing else.
    """
    half = width // 2
    n = len(values)
    out = []
    raw = []
    for k in range(n):
        window = values[max(0, k - half) : k + half + 1]
        if len(window) == width and max(window) - min(window) <= spread:
            out.append(sum(window) / width)
            raw.append(False)
        else:
            out.append(values[k])
            raw.append(True)
    return out, raw


def _raw_at(xs: list[float], raw: list[bool], x: float) -> bool:
    """Whether the profile at ``x`` leans on a raw (unsmoothed) point."""
    k = bisect_left(xs, x)
    if k <= 0:
        return raw[0]
    if k >= len(xs):
        return raw[-1]
    return raw[k - 1] or raw[k]


class LithiumDetector(DetectorBase):
    """Streaming detector for one Li|Li channel (``symmetric`` or ``asymmetric``)."""

    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(settings)
        s = settings
        self._range_v = s.range_fraction * s.voltage_range_v
        self._shift_kind = "depletion" if s.cell == "asymmetric" else "voltage_shift"
        self._dir = 0
        self._t_prev = math.nan
        self._seg_t0 = 0.0
        self._seg_p: list[float] = []
        self._seg_r: list[float] = []
        # Per direction: positions (s), r (Ω) and which points are raw (not smoothed).
        self._ref: dict[int, tuple[list[float], list[float], list[bool]] | None] = {
            1: None,
            -1: None,
        }
        self._raw_here = False
        self._ref_from_rest: dict[int, bool] = {1: True, -1: True}
        self._seg_from_rest = True
        self._settle_now_s = settings.settle_s
        self._seg_first = True
        self._prev_ratio = math.nan
        # The slide window: (t_s, r·r_exp, r_exp², raw) per sample, and their sums.
        self._window: deque[tuple[float, float, float, bool]] = deque()
        self._window_xy = 0.0
        self._window_xx = 0.0
        self._window_raw = 0
        self._r_exp = 0.0
        # Noise of r = V/I (Ω) per direction, learnt from each healthy half cycle.
        self._sigma: dict[int, float] = {1: 0.0, -1: 0.0}
        self._relative_sigma = 0.0
        self._typical: dict[int, float] = {1: 0.0, -1: 0.0}  # median |r| of the profile
        self._unanchored = False
        # A stream may begin in the middle of a half cycle (a channel already cycling
        # when watching starts, a restart): where it began is unknown until the first
        # reversal, so the first segment is judged blind and never becomes a profile.
        self._blind = not settings.stream_starts_at_reversal
        self._shift_run = 0
        self._low_run = 0
        self._near_run = 0
        self._slide_run = 0
        self._drops: deque[float] = deque()

    # ------------------------------------------------------------ public

    def feed(
        self,
        t_s: float,
        voltage_v: float,
        current_a: float,
        step: int | None = None,
        cycle: int | None = None,
    ) -> Verdict:
        index = self._n
        self._n = index + 1
        if self._halt is not None:
            return OK
        if abs(voltage_v) >= self._range_v:
            return self._range(index, t_s, voltage_v, current_a)
        if t_s - self._t_prev > self.settings.max_gap_s:
            # A gap in the data (a link outage, a paused stream): where this half cycle
            # began is unknown until the next reversal is seen, so the position-matched
            # criteria rest until then (shifts and the range are still judged).
            if self._dir != 0:
                self._end_segment()
            self._dir = 0
            self._blind = True
        if abs(current_a) < self.settings.rest_current_a:
            if self._dir != 0:
                self._end_segment()
                self._dir = 0
            self._t_prev = t_s
            return OK
        direction = 1 if current_a > 0 else -1
        if direction != self._dir:
            # A half cycle that starts from rest (or the start) relaxes differently from
            # one that starts from the opposite current: profiles remember which.
            from_rest = self._dir == 0
            if self._dir != 0:
                self._end_segment()
                self._blind = False  # a reversal seen: positions are known again
            self._seg_from_rest = from_rest
            self._dir = direction
            # The reversal happened after the last sample of the previous segment (or
            # rest): that is the origin every half cycle is measured from.
            # The very first sample has no predecessor: until the second one tells the
            # sampling interval, the origin is provisional (see below).
            self._unanchored = math.isnan(self._t_prev)
            self._seg_t0 = t_s if self._unanchored else self._t_prev
            self._seg_first = True
            self._prev_ratio = math.nan
            self._window.clear()
            self._window_xy = self._window_xx = 0.0
            self._window_raw = 0
        elif self._unanchored:
            # Second sample of the stream: put the origin one interval before the first
            # sample, as for every later half cycle, so that their profiles line up.
            interval_s = t_s - self._seg_t0
            self._seg_t0 -= interval_s
            self._seg_p = [p + interval_s for p in self._seg_p]
            self._unanchored = False
        self._t_prev = t_s
        p_s = t_s - self._seg_t0
        r_ohm = voltage_v / current_a
        ref = self._ref[direction]
        if ref is None:  # learning this direction's first half cycle
            self._seg_p.append(p_s)
            self._seg_r.append(r_ohm)
            return OK
        r_exp = _interp(ref[0], ref[1], p_s)
        self._raw_here = _raw_at(ref[0], ref[2], p_s)
        expected_v = r_exp * current_a
        if abs(expected_v) < self.settings.min_expected_v:
            self._seg_p.append(p_s)
            self._seg_r.append(r_ohm)
            return OK
        settle_s = (
            self.settings.settle_like_s
            if self._ref_from_rest[direction] == self._seg_from_rest
            else self.settings.settle_s
        )
        self._settle_now_s = settle_s
        if p_s < settle_s:
            # Early in a half cycle the profile may sit near its own zero crossing: a
            # shift is judged against at least the profile's typical level.
            typical = self._typical[direction]
            if abs(r_exp) < typical:
                r_exp = typical if r_exp >= 0 else -typical
                expected_v = r_exp * current_a
        self._r_exp = r_exp
        return self._judge(index, t_s, voltage_v, current_a, p_s, r_ohm, r_ohm / r_exp, expected_v)

    def feed_batch(
        self,
        t_s: FloatArray,
        voltage_v: FloatArray,
        current_a: FloatArray,
        step: IntArray | None = None,
        cycle: IntArray | None = None,
    ) -> list[Verdict]:
        return self._feed_each(t_s.tolist(), voltage_v.tolist(), current_a.tolist())

    # ------------------------------------------------------------ internals

    def _end_segment(self) -> None:
        p, r = self._seg_p, self._seg_r
        if len(p) >= _MIN_PROFILE_SAMPLES and not self._blind:
            # Noise from successive differences (robust to the slow half-cycle shape):
            # median |Δr| / 0.954 is σ (in Ω) for Gaussian noise.
            diffs = sorted(abs(b - a) for a, b in itertools.pairwise(r))
            typical = sorted(abs(x) for x in r)[len(r) // 2]
            self._sigma[self._dir] = diffs[len(diffs) // 2] / 0.954
            self._typical[self._dir] = typical
            # The profile is smoothed over 5 samples so that its own noise barely adds to
            # the sample's when the two are compared.
            spread = _FLAT_SPREAD_SIGMAS * self._sigma[self._dir]
            smooth, raw = _smooth_flat(r, _PROFILE_SMOOTHING, spread)
            self._ref[self._dir] = (p, smooth, raw)
            self._ref_from_rest[self._dir] = self._seg_from_rest
        self._seg_p = []
        self._seg_r = []

    def _judge(
        self,
        index: int,
        t_s: float,
        voltage_v: float,
        current_a: float,
        p_s: float,
        r_ohm: float,
        ratio: float,
        expected_v: float,
    ) -> Verdict:
        s = self.settings
        # What one sample's ratio may stray from 1 by noise alone (sample + profile):
        # evidence that needs a second sample to halt may be weaker than evidence that
        # counts on its own.
        # Noise is learnt in ohms: relative to a small expected value it weighs more.
        relative_sigma = self._sigma[self._dir] / abs(r_ohm / ratio) if ratio else 0.0
        self._relative_sigma = relative_sigma
        sigma = relative_sigma * (_ONE_SAMPLE_NOISE_RAW if self._raw_here else _ONE_SAMPLE_NOISE)
        noise = s.significance_sigmas * sigma
        pair_noise = s.pair_significance_sigmas * sigma
        if (
            ratio > s.shift_ratio
            and ratio - 1.0 > pair_noise
            and abs(voltage_v) - abs(expected_v) > s.shift_floor_v
        ):
            self._shift_run += 1
            self._low_run = self._near_run = self._slide_run = 0
            self._prev_ratio = ratio
            self._seg_first = False
            threshold_v = s.shift_ratio * abs(expected_v)
            if self._shift_run >= 2:
                return self._halt_with(
                    index,
                    t_s,
                    self._shift_kind,
                    "shift_ratio",
                    voltage_v,
                    expected_v,
                    threshold_v,
                    f"|V| rose to {abs(voltage_v) * 1e3:.1f} mV, {ratio:.1f}× the "
                    f"{abs(expected_v) * 1e3:.2f} mV expected at this point of the half cycle "
                    f"(threshold {s.shift_ratio:g}×), on 2 consecutive samples",
                    subkind="",
                )
            return self._warn(
                index,
                t_s,
                self._shift_kind,
                "shift_ratio",
                voltage_v,
                expected_v,
                threshold_v,
                f"|V| jumped to {ratio:.1f}× the expected {abs(expected_v) * 1e3:.2f} mV "
                "(one sample: a glitch or the start of a shift)",
                subkind="",
            )
        self._shift_run = 0
        if p_s < self._settle_now_s or self._blind:
            # The zero crossing after a reversal (or a rest): the double layer is still
            # relaxing and how deep the first samples sit depends on what came before,
            # so only a shift is judged here; collapses, drops and slides wait.
            self._prev_ratio = ratio
            self._seg_first = False
            self._seg_p.append(p_s)
            self._seg_r.append(r_ohm)
            return OK
        self._prev_ratio = ratio
        self._seg_first = False
        if (ratio < s.near_zero_ratio and 1.0 - ratio > pair_noise) or ratio <= -s.near_zero_ratio:
            self._low_run += 1
            self._near_run += 1
            self._slide_run = 0
            threshold_v = s.near_zero_ratio * abs(expected_v)
            if self._low_run >= 2:
                subkind = "hard" if self._near_run >= 2 else "soft"
                return self._halt_with(
                    index,
                    t_s,
                    "short",
                    "collapse",
                    voltage_v,
                    expected_v,
                    threshold_v,
                    f"|V| collapsed to {abs(voltage_v) * 1e3:.2f} mV under "
                    f"{current_a * 1e3:+.3f} mA, {ratio:.2f}× the expected "
                    f"{abs(expected_v) * 1e3:.2f} mV (threshold {s.near_zero_ratio:g}×), on "
                    "2 consecutive samples",
                    subkind=subkind,
                )
            return self._warn(
                index,
                t_s,
                "short",
                "collapse",
                voltage_v,
                expected_v,
                threshold_v,
                f"|V| fell to {abs(voltage_v) * 1e3:.2f} mV under current (one sample: a "
                "glitch or the start of a short)",
                subkind="hard",
            )
        if ratio < s.drop_ratio and 1.0 - ratio > pair_noise:
            self._low_run += 1
            self._near_run = 0
            # A drop is also part of a slide: the slide window sees it, so a short that
            # starts deep (a micro short found at the start of a plating half cycle)
            # is confirmed by the next samples instead of starting the count afresh.
            slid = self._slide_add(t_s, r_ohm)
            self._slide_run = self._slide_run + 1 if slid is not None else 0
            drops = self._count_drop(t_s, 1.0 - ratio > noise)
            threshold_v = s.drop_ratio * abs(expected_v)
            if slid is not None and self._slide_run >= 2 and self._low_run < 2 and len(drops) < 2:
                return self._slide_halt(index, t_s, voltage_v, expected_v, slid)
            if self._low_run >= 2 or len(drops) >= 2:
                return self._drop_halt(index, t_s, voltage_v, expected_v, ratio, len(drops))
            return self._warn(
                index,
                t_s,
                "short",
                "drop",
                voltage_v,
                expected_v,
                threshold_v,
                f"the overpotential dropped to {ratio:.2f}× the expected "
                f"{abs(expected_v) * 1e3:.2f} mV (one drop: a glitch or a soft short)",
                subkind="soft",
            )
        self._low_run = self._near_run = 0
        smoothed = self._slide_add(t_s, r_ohm)
        if smoothed is not None:
            self._slide_run += 1
            threshold_v = s.slide_ratio * abs(expected_v)
            if self._slide_run >= 2:
                return self._slide_halt(index, t_s, voltage_v, expected_v, smoothed)
            return self._warn(
                index,
                t_s,
                "short",
                "slide",
                voltage_v,
                expected_v,
                threshold_v,
                f"the overpotential is {smoothed:.2f}× the last healthy half cycle's",
                subkind="micro",
            )
        self._slide_run = 0
        self._seg_p.append(p_s)
        self._seg_r.append(r_ohm)
        return OK

    def _count_drop(self, t_s: float, beyond_doubt: bool) -> deque[float]:
        """Remember a drop that stands out on its own; the drops within soft_window_s."""
        drops = self._drops
        if beyond_doubt:
            drops.append(t_s)
        while drops and drops[0] < t_s - self.settings.soft_window_s:
            drops.popleft()
        return drops

    def _drop_halt(
        self,
        index: int,
        t_s: float,
        voltage_v: float,
        expected_v: float,
        ratio: float,
        n_drops: int,
    ) -> Verdict:
        s = self.settings
        return self._halt_with(
            index,
            t_s,
            "short",
            "drop",
            voltage_v,
            expected_v,
            s.drop_ratio * abs(expected_v),
            f"the overpotential dropped to {ratio:.2f}× the expected "
            f"{abs(expected_v) * 1e3:.2f} mV (threshold {s.drop_ratio:g}×); "
            f"{n_drops} drop(s) within {s.soft_window_s / 3600:g} h"
            + (", 2 consecutive samples" if self._low_run >= 2 else ""),
            subkind="soft",
        )

    def _slide_halt(
        self, index: int, t_s: float, voltage_v: float, expected_v: float, smoothed: float
    ) -> Verdict:
        s = self.settings
        return self._halt_with(
            index,
            t_s,
            "short",
            "slide",
            voltage_v,
            expected_v,
            s.slide_ratio * abs(expected_v),
            f"the overpotential slid to {smoothed:.2f}× the "
            f"{abs(expected_v) * 1e3:.2f} mV of the last healthy half cycle "
            f"(threshold {s.slide_ratio:g}×), on 2 consecutive samples",
            subkind="micro",
        )

    def _slide_add(self, t_s: float, r_ohm: float) -> float | None:
        """Add a sample to the slide window; the window's scale if it says "slide"."""
        s = self.settings
        window = self._window
        raw_here = self._raw_here
        # The window's ratio is the least-squares scale between this half cycle and the
        # profile, sum(r·r_exp)/sum(r_exp²): each sample weighs by how far it stands out
        # of the noise (r_exp²), so samples near the zero crossing, whose ratio is
        # mostly noise, barely count.
        r_exp = self._r_exp
        xy = r_ohm * r_exp
        xx = r_exp * r_exp
        window.append((t_s, xy, xx, raw_here))
        self._window_xy += xy
        self._window_xx += xx
        self._window_raw += raw_here
        # Average only as many samples as the noise needs (a quiet cell answers within
        # a few samples; a noisy one within slide_window_s at most): the slide test
        # needs 6σ·√(about 2/n) to fit inside 1 - slide_ratio (see below).
        margin = (1.0 - s.slide_ratio) / (s.significance_sigmas * self._relative_sigma or 1e-12)
        wanted = max(_SLIDE_MIN_SAMPLES, math.ceil(2.0 / (margin * margin)))
        while len(window) > wanted or (
            len(window) > _SLIDE_MIN_SAMPLES and window[0][0] < t_s - s.slide_window_s
        ):
            _, old_xy, old_xx, old_raw = window.popleft()
            self._window_xy -= old_xy
            self._window_xx -= old_xx
            self._window_raw -= old_raw
        n = len(window)
        smoothed = self._window_xy / self._window_xx
        raw_share = self._window_raw / n
        smooth_share = 1.0 - raw_share
        # σ of the fitted scale: σ_r/√sum(r_exp²) for the samples, times the profile's
        # own share: raw points add independent errors (×(1 + raw share)); points
        # smoothed over 5 samples share them, so n of them average only n + 4 samples.
        sigma_r = self._sigma[self._dir]
        variance_share = (
            1.0 + raw_share + smooth_share * smooth_share * n / (n + _PROFILE_SMOOTHING - 1)
        )
        slide_noise = s.significance_sigmas * sigma_r * math.sqrt(variance_share / self._window_xx)
        if n >= _SLIDE_MIN_SAMPLES and smoothed < s.slide_ratio and 1.0 - smoothed > slide_noise:
            return smoothed
        return None

    def _range(self, index: int, t_s: float, voltage_v: float, current_a: float) -> Verdict:
        s = self.settings
        under_current = abs(current_a) >= s.rest_current_a
        kind = self._shift_kind if under_current else "limit"
        return self._halt_with(
            index,
            t_s,
            kind,
            "range",
            voltage_v,
            math.nan,
            self._range_v,
            f"|V| = {abs(voltage_v):.3f} V reached the instrument's ±{s.voltage_range_v:g} V "
            f"range (halt at {self._range_v:.3f} V)",
            subkind="range",
        )
