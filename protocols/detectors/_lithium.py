"""The Li|Li detector: depletion voltage shifts and shorts in symmetric and asymmetric cells.

How it judges a sample
----------------------
A Li|Li cell's voltage is its overpotential, whose sign follows the current. The
detector learns the cell's own apparent resistance ``r = V/I`` along each half cycle,
per current direction *and current level*, from the last healthy half cycle at that
current (the *profile*), and judges every sample by ``ratio = r / r_profile`` at the
same point of the half cycle (time under current since it began). Working with V/I
makes it blind to reversed leads and to the normal half-cycle shape; comparing with
the half cycle two hours before makes it blind to what changes slowly: polarization
growth, day/night temperature drift.

=========================  =============================  ==============================
evidence                   what it is                     halts when
=========================  =============================  ==============================
ratio > shift_ratio        voltage shift (depletion)      2 samples spanning confirm_s
half cycles ending on a    depletion, logged sparsely     twice within 3 half cycles in
shift                      (the last tens of seconds of   one direction (the second may
                           each stripping half cycle)     end 1/drop_ratio, 6 σ up),
                                                          or once when the sample before
                                                          climbed into it (6 σ above the
                                                          profile and the one before)
ratio < near_zero_ratio    collapse (hard short)          2 samples spanning confirm_s
ratio < drop_ratio         drop (soft short)              2 samples spanning confirm_s, or
                                                          2 separate drops in soft_window_s
smoothed < slide_ratio     slide to zero (micro short)    2 samples spanning confirm_s
fall since the anchor      micro short, half cycle after  the half cycle's level past
                           half cycle                     self_settle_s (3 samples over
                                                          20 s) times the falls since the
                                                          last established profile below
                                                          drop_ratio
run below drop_ratio       collapse or drop in a noisy    the run's mean 6 σ below 1, 2
                           cell (µA garnet)               samples spanning confirm_s
|V/I| < hard_short_ohm     a short, without any history   3 samples spanning confirm_s
own level, recent drop     soft short, no profile needed  2 judgements spanning confirm_s
own mean / lowest so far   collapse, no profile needed    2 samples spanning confirm_s, or
                                                          a run's mean below near_zero_ratio,
                                                          6 σ below 1 (noisy, 200 µV on 3 mV)
|V| >= range               the instrument's range         at once (the backstop)
=========================  =============================  ==============================

What real cells and instruments do, and how it is met
------------------------------------------------------
- **Persistence is time, not samples.** An instrument that logs on change sends one
  3 ms spike as a burst of samples < 1 ms apart: confirmation needs the evidence to
  last ``confirm_s`` as well as two samples, and a burst counts as one drop. Drops
  enter the slide window only once the low excursion has lasted ``confirm_s``: a
  slide window holding one instant of a spike is no slide, however long it is held.
- **No history needed for a hard short.** |V/I| below ``hard_short_ohm`` under a steady
  current of at least ``hard_short_min_current_a`` is a short whatever came before (a
  healthy Li|Li cell is never below a few ohms), so a short in the first minutes of a
  test, or in a test that never reverses, is halted.
- **A half cycle's own recent level.** Within a steady segment the detector also keeps
  the segment's own level over the last ``self_ref_s`` (from ``self_settle_s`` on, so
  a nucleation spike is not the reference): a soft short halves the overpotential
  within minutes, which no healthy cell does. Plating to failure, long holds and CCD
  steps, which never give a profile, are judged this way.
- **Not every segment with current is a half cycle.** Where the source says what a
  step was (``kind``: a :class:`~cellguard.drivers.files.StepKind` code), only
  constant-current steps are judged; an impedance measurement, a CV hold or a pulse is
  treated like a rest. Without that, a segment is a run of one direction *and one
  current level* (within ``level_tolerance``): an impedance sweep's changing current
  never makes one, and a profile learnt at one current is never used at another.
- **The first half cycle is a poor profile** (the nucleation spike, a fresh cell's
  falling polarization) and "activation" keeps lowering the polarization for hours.
  A profile learnt from the first half cycle at a current, or from a half cycle that
  itself looked low or fell by more than 10 %, is *provisional*: a drop or slide
  against it is only a warn, unless the half cycle's own level confirms a fall within
  it, or the half cycle sits below drop_ratio of the last one past self_settle_s
  (activation never takes that much). Collapses and shifts halt against any profile.
  A half cycle that looked low does not displace an established profile at once: the
  next one is judged against the established one again (a micro short that began
  late in a half cycle must not become the reference). A shallow slide (0.80-0.85x)
  halts when the half cycle falls within itself, or sits far below where this cell's
  half cycles have been landing (8 σ of their spread).
  Each provisional half cycle is judged against the last one only, so a micro short
  that takes 12-35 % per half cycle never drops below drop_ratio of it; the falls
  since the last established profile (the *anchor*) are multiplied, and where the
  anchor came after the cell's first _ANCHOR_MIN_HALF_CYCLES half cycles (no fresh
  cell: activation comes first, and decelerates), a half cycle whose level times
  that product is below drop_ratio halts. A stream that joins a test part-way has no
  judged half cycle: the test time of its first sample says how many half cycles the
  cell ran before (counted as if the current alternated, so a one-direction test errs
  towards a fresh cell); with those seen since past _ANCHOR_MIN_HALF_CYCLES, its first
  half cycle is the anchor.
- **A cell's wander is learnt before a slide is trusted.** A liquid cell's flicker
  takes the slide window to 0.73-0.85x of the last half cycle for tens of seconds; a
  slide must stand 5 σ out of that wander. The first profile of a test (or of a stream
  joined part-way) is learnt with no wander known, so its first judged half cycle
  uses its own wander so far.
- **A channel that turns noisy is no short.** A loose contact or a noisy instrument
  channel multiplies the noise at an unchanged level: two low samples in a row then
  follow by chance, where the noise learnt from the last half cycle says "drop". The
  detector keeps the scatter of the last 15 judged samples (from successive
  differences, so a drop or a slow fall is no scatter) and judges collapses, drops,
  runs and slides against it where it exceeds the learnt noise by more than one σ
  (shifts stay judged against the learnt noise: a depletion's rise is itself scatter),
  and warns ("scatter") from 2.5×. A short's drops still halt once they stand out of
  that scatter; only the first samples after an abrupt rise, before any estimate can
  follow, remain indistinguishable from the start of a drop.
- **Pause and resume.** A rest (or a pause step) in the middle of a half cycle, after
  which the same current resumes in the same step, continues the half cycle from where
  it stopped: positions skip the pause, the relaxation is settled again, and the
  interrupted half cycle is never learnt as a profile. A gap in the data (a paused
  stream) makes the position unknown until the next reversal; the segment's own
  level is still judged.

A single anomalous sample is a warn (it may be a glitch); wrong-sign or still-rising
samples within ``settle_s`` of a reversal are the zero crossing and are not judged.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

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
from cellguard.protocols.detectors._scatter import RecentScatter
from cellguard.protocols.detectors._step_runs import StepRuns

_MIN_PROFILE_SAMPLES = 3
_PROFILE_SMOOTHING = 5
# A profile's spikes are taken out by a moving median this wide: it removes excursions
# of up to 4 samples. A liquid cell's spikes last one or two samples, but two of them
# can follow each other; kept in a profile, such a bump reads as a slide in the next
# half cycle, which has none at that moment.
_DESPIKE_WIDTH = 9
_FLAT_SPREAD_SIGMAS = 5.0
# The profile's noise after smoothing, relative to one sample's: 1/5.
_PROFILE_NOISE_SHARE = 1.0 / _PROFILE_SMOOTHING
_ONE_SAMPLE_NOISE = math.sqrt(1.0 + _PROFILE_NOISE_SHARE)
# Where the profile is steep (the rise after a reversal) it keeps its raw samples, whose
# noise is as large as the sample's own: a ratio there is twice as noisy in variance.
_ONE_SAMPLE_NOISE_RAW = math.sqrt(2.0)
_SLIDE_MIN_SAMPLES = 3
_SLIDE_MIN_SPAN_S = 20.0
# A slide this shallow (within 5 % of slide_ratio) halts only when its half cycle is
# falling as it goes, by _WITHIN_FALL of its level before the slide window.
_SHALLOW_SLIDE = 0.05
_WITHIN_FALL = 0.03
# How much whole half cycles differ from the one before at the same current is the
# cell's own between-half-cycle spread (a noisy liquid cell: 10-15 %; a quiet solid
# cell: 1 %; see _Profile.step_spread). A slide must stand out of it by this many σ, over the
# last _SPREAD_HALF_CYCLES half cycles in that direction.
_SPREAD_SIGMAS = 4.0
_SPREAD_HALF_CYCLES = 8
# ... and out of how far the slide window's own scale wanders within a healthy half
# cycle of this cell (see _Profile.wander), by this many σ.
_WANDER_SIGMAS = 5.0
_WANDER_MIN_WINDOWS = 10
# ... and a shallow slide is decided when the half cycle breaks the cell's own trend:
# it sits below the mean of the last half cycles' scales by this many σ of their spread
# (and by at least twice _SHALLOW_SLIDE), with at least _TREND_MIN_HALF_CYCLES known.
# Activation never does: its half cycles fall by a similar share each time.
_TREND_SIGMAS = 8.0
_TREND_MIN_HALF_CYCLES = 4
# The growth per half cycle projected into a slide's depth (see _slide_decided): only
# from this much on in each of the last two half cycles (a noisy cell's half cycles
# differ by 1-2 % either way), and at most this much.
_MIN_GROWTH = 1.02
_MAX_GROWTH = 1.05
_HARD_MIN_SAMPLES = 3
# A run below drop_ratio of at least this many samples whose mean is consistent with
# zero halts once it stands this many σ below 1 (significance_sigmas otherwise).
_ZERO_RUN_SAMPLES = 3
_ZERO_RUN_SIGMAS = 5.0
# A collapse against a segment's lowest level so far needs two samples of it. At 30-60 s
# sampling a short minutes into a test may come with only two samples after settle_s; a
# fall below near_zero_ratio of the lower of them, on two samples more, is no healthy
# cell's (a nucleation spike falls to a third of its peak, not a twelfth).
_OWN_MIN_SAMPLES = 2
_HARD_BAND = 5.0
# A run of samples all below drop_ratio halts on its mean when that stands
# significance_sigmas below the profile: in a cell whose noise is of the order of its
# overpotential (a µA garnet cell) a collapse to 0 V leaves single samples anywhere in
# ±0.3× of zero, none of them beyond doubt alone, but their mean is. The variance of a
# mean of n samples, in units of one sample's: 1/n for the samples, and the profile's
# share: 1/n more for raw profile points, 1/(n + 4) for points smoothed over 5 samples
# (n of them average only n + 4 samples: see _slide_eval).
# A half cycle that ends before this share of its profile's length was cut short (a
# pause, a stop): a same-current resume continues it.
_CUT_SHORT = 0.9
_SELF_MIN_REF_SAMPLES = 5
# A half cycle within this of its profile's scale confirms it: the profile it leaves is
# established. A fresh cell's polarization falls 15-25 % per half cycle for hours
# ("activation"); until it steadies, drops and slides against it are only warns.
_CONSISTENT = 0.1
# A half cycle held out of the profile (it looked low) still gives the profile its
# noise when that is over twice the profile's: more than the recent-scatter allowance
# (_SCATTER_ALLOWANCE) covers, and more than a soft short's flicker (~1.5x) adds.
_NOISE_RISE = 2.0
# Half cycles within _CONSISTENT of the one before that make a cell "steady".
_STEADY_HALF_CYCLES = 3
# A profile established once this many half cycles had ended in its direction is no
# fresh cell's: a fall that begins after it, half cycle after half cycle, is no
# activation (see _Profile.anchor_fall).
_ANCHOR_MIN_HALF_CYCLES = 4
# A thin electrode that ran out runs out again at the end of each half cycle that strips
# it (the Li plated back, less what the interphase takes): a shift on the last sample of
# a half cycle, twice within this many half cycles in one direction, is a depletion
# even when no half cycle holds two shifted samples (logged once a minute, the shift
# lasts the last few tens of seconds). A spike falls anywhere in a half cycle.
_END_SHIFT_HALF_CYCLES = 3
# Polls are instants: two in a row a second apart each caught one of a pair of
# sub-second spikes (jr862 at 0.93 h: 0.65 s and 0.5 s above 2x, 0.6 s apart), two 2-5 s
# apart each a dip of a 4-min burst of flicker (at 5.97 h), and both were confirmed as
# lasting. A recorded stream shows what lay between two samples, a poll does not:
# polled live, evidence lasts over three polls, or over two this far apart (a
# transient covers no two of them; a depletion, which reaches the range within
# minutes, is still halted on two polls a minute apart).
_LIVE_APART_S = 30.0
# A drop (soft short) must last this long on two samples, else three (recorded streams).
# A soft short's overpotential drops by about half and stays down for minutes; two
# samples 10 s apart at a noise rise (a loose contact) on a 2 mV overpotential are as
# often noise (the reality corpus's noise-rise/02, seeds 0 and 16).
_DROP_APART_S = 20.0
# Profiles kept per direction (one per current level: CCD steps, rate tests).
_MAX_LEVELS = 12
_JUDGED_KINDS = (StepKind.UNKNOWN, StepKind.CC)
# Statistics (a profile, a segment's own level, the slide window) take at most one
# sample per this interval: an instrument logging on change sends a spike as a burst of
# hundreds of samples within a second, which must not outweigh the minutes around it.
# Every sample is still judged.
_STAT_SPACING_S = 0.5
# The usual interval between samples: a running mean over about 1/_INTERVAL_SMOOTHING
# intervals (bursts logged on change pull it down only a little).
_INTERVAL_SMOOTHING = 0.05
# Within settle_s of a reversal, a sample whose ratio rose by more than this over the
# previous one is still the relaxation towards the plateau, not a collapse or a drop.
_RISING_RATIO = 0.03
# A channel that turned noisy at an unchanged level (a loose contact) is no short: where
# the recent samples scatter more than the noise learnt, every fall is judged against
# that scatter (less this allowance, in multiples of the learnt noise: a soft short's
# filament adds a little noise, and the estimate from 15 samples is itself uncertain).
_SCATTER_ALLOWANCE = 1.0
# Noise does not calm from one sample to the next: the multiplier is the estimate or, when
# that dips (a few quiet samples in a row of a noisy channel), its running mean (this
# weight per judged sample, ~20 samples), whichever is larger. (Holding the peaks instead
# kept a soft short's own scatter, whose estimate swings by ~30 %, too high: 18 samples
# late at 0.1 mA cm⁻² and 200 µV.)
_GAIN_SMOOTHING = 0.05
# From this multiple of the learnt noise a person is told (a loose contact, a noisy
# channel, or the fluctuation before a short).
_SCATTER_WARN = 2.5


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


def _despike(values: list[float], width: int, spread: float) -> list[float]:
    """Centered moving median: a spike (a liquid cell's, or a glitch) of fewer than
    width/2 samples leaves no trace in a profile, while steps and the steep rise after a
    reversal (monotone) keep their shape."""
    half = width // 2
    n = len(values)
    if n < width:
        # Too short a half cycle for a median (a first block of 10 min logged every
        # 2 min: 5 or 6 points). Its last point is still the profile for every later
        # position (a longer half cycle is judged against it to its end, for an hour),
        # so it is the median of the last three points: one point, a glitch or a
        # noisy one (a fresh liquid cell's first block scatters by 10 %), must not
        # decide how the rest of the next half cycle reads. No limit in noise σ can
        # tell it: the σ learnt from five points is no estimate (a glitch 1.3x up
        # stayed within 5 σ of the points before and, past the block's end, made
        # the next hour read 0.7x: a false soft short in jr862 logged every 150 s).
        out = list(values)
        if n >= 3:
            out[-1] = sorted(values[-3:])[1]
        return out
    # Once per half cycle, over thousands of samples: numpy's partition, not a sort per
    # sample (the middle of an odd window is one of its values, exactly).
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(values), width)
    middle: list[float] = np.partition(windows, half, axis=1)[:, half].tolist()
    # Near the ends the window narrows (still centered) rather than stopping, so that
    # the steep rise after a reversal keeps its shape. At the end a narrow window cannot
    # tell a spike on the last samples: there a point more than ``spread`` away from the
    # median of the last ``width`` samples is a spike and takes that median.
    head = [sorted(values[: 2 * k + 1])[k] for k in range(half)]
    last = sorted(values[n - width :])[half]
    tail = []
    for k in range(n - half, n):
        value = sorted(values[2 * k - n + 1 :])[n - 1 - k]
        tail.append(last if abs(value - last) > spread else value)
    return [*head, *middle, *tail]


def _smooth_flat(values: list[float], width: int, spread: float) -> tuple[list[float], list[bool]]:
    """Centered moving mean where the profile is flat; raw values where it is not.

    Averaging over the steep rise at the start of a half cycle (or any real shape)
    would bias the profile there; averaging only where the window's spread is within
    ``spread`` (a few noise σ) removes noise and nothing else. Spikes are taken out
    first (:func:`_despike`, over ``_DESPIKE_WIDTH``): a spike kept as a raw point
    would make the next half cycle read as a drop (or a shift) at that very position.
    """
    values = _despike(values, _DESPIKE_WIDTH, spread)
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


@dataclass(slots=True)
class _Profile:
    """The last healthy half cycle at one direction and current level."""

    level_a: float
    p: list[float]  # positions in the half cycle (s under current)
    r: list[float]  # V/I (Ω), smoothed where flat
    raw: list[bool]  # which points are raw (not smoothed)
    from_rest: bool
    sigma: float  # noise of r (Ω), from successive differences
    typical: float  # median |r| (Ω)
    established: bool  # learnt from a half cycle judged healthy against an earlier one
    sign: float = 1.0  # the sign of its median r (-1 with reversed leads)
    # Scales of the last half cycles against their profiles (the between-half-cycle spread).
    scales: tuple[float, ...] = ()
    # How far the slide window's scale wandered (SD about its mean) within each of the
    # last half cycles: a liquid cell's overpotential flickers by 5-10 % over tens of
    # seconds, far more than its sample-to-sample noise says, and a half cycle tells it
    # on its own (the step spread needs three).
    wanders: tuple[float, ...] = ()
    # Where its first sample sat (s after its origin: the gap before it).
    lead_s: float = 0.0
    # Whether a half cycle that looked low was already judged against this established
    # profile without replacing it (see _end_segment): it is kept for one such only.
    held: bool = False
    # How many half cycles in its direction had ended when it was learnt: it is the
    # last one's profile while no other has ended since (see _far_below).
    learnt_at: int = 0
    # How far the half cycles fell since the last established profile in this
    # direction (the *anchor*): the product of the scales of the provisional profiles
    # learnt since, 1.0 for an established profile; and whether the anchor was learnt
    # in a cell past its fresh half cycles (_ANCHOR_MIN_HALF_CYCLES).
    # Each provisional half cycle is judged only against the last one, so a micro short
    # that takes 20-30 % per half cycle never reads as a drop or a slide; against the
    # anchor it does, and a cell that was steady does not start activating.
    anchor_fall: float = 1.0
    anchor_mature: bool = False
    # The anchor is the first half cycle of a stream that joined the test part-way (no
    # earlier one judged it): the test time then says whether the cell is past its
    # fresh half cycles. And the anchor's learnt_at (the half cycles since it count the
    # ones not learnt too).
    anchor_first: bool = False
    anchor_at: int = 0

    # Standard deviation of the last half cycles' scales: how far this cell's half
    # cycles land from where they have been landing (a steady growth or fall is no
    # spread); 0 until three are known. Computed once (see __post_init__): it is read
    # for every sample.
    spread: float = field(init=False, default=0.0)
    # ... and how much one half cycle differs from the last, the profile a slide is
    # judged against: the RMS of the steps between successive scales over √2 (the
    # same as the standard deviation for scales that differ at random). A growth that
    # slows down and picks up again (the scales drift) moves their mean, not this.
    step_spread: float = field(init=False, default=0.0)
    # Learnt from a half cycle that fell below a cell steady until then: provisional,
    # but no activation (which comes in a fresh cell, not after steady half cycles).
    fell_from_steady: bool = field(init=False, default=False)
    # The RMS of ``wanders``.
    wander: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if self.wanders:
            self.wander = math.sqrt(sum(w * w for w in self.wanders) / len(self.wanders))
        n = len(self.scales)
        if n >= 3:
            mean = sum(self.scales) / n
            self.spread = math.sqrt(sum((x - mean) ** 2 for x in self.scales) / (n - 1))
            steps = [b - a for a, b in itertools.pairwise(self.scales)]
            self.step_spread = math.sqrt(sum(d * d for d in steps) / (2 * len(steps)))
        before = self.scales[-1 - _STEADY_HALF_CYCLES : -1]
        self.fell_from_steady = (
            len(before) == _STEADY_HALF_CYCLES
            and self.scales[-1] < 1.0 - _CONSISTENT
            and all(abs(x - 1.0) <= _CONSISTENT for x in before)
        )


class _OwnLevel:
    """A segment's own level of r over the last ``ref_s`` (ending ``lag_s`` ago).

    The reference for samples that have no profile (the first half cycle, a test that
    never reverses, a stream that began mid half cycle) and the witness that tells a
    fall *within* a half cycle from a half cycle that is low throughout (activation).
    Level and noise are medians (of r, and of |Δr| between successive samples): a
    fresh liquid cell's spikes move neither.
    """

    __slots__ = ("_last", "lag_s", "recent", "ref", "ref_diffs", "ref_s", "ref_sorted")

    def __init__(self, lag_s: float, ref_s: float) -> None:
        self.lag_s = lag_s
        self.ref_s = ref_s
        self.recent: deque[tuple[float, float, float]] = deque()  # (t, r, |Δr|)
        self.ref: deque[tuple[float, float, float]] = deque()
        self.ref_sorted: list[float] = []
        self.ref_diffs: list[float] = []
        self._last = math.nan

    def clear(self) -> None:
        self.recent.clear()
        self.ref.clear()
        self.ref_sorted.clear()
        self.ref_diffs.clear()
        self._last = math.nan

    def add(self, t_s: float, r_ohm: float) -> None:
        recent = self.recent
        if recent and t_s - recent[-1][0] < _STAT_SPACING_S:
            return
        diff = abs(r_ohm - self._last) if not math.isnan(self._last) else math.nan
        self._last = r_ohm
        recent.append((t_s, r_ohm, diff))
        ref = self.ref
        while recent and recent[0][0] <= t_s - self.lag_s:
            item = recent.popleft()
            ref.append(item)
            insort(self.ref_sorted, item[1])
            if not math.isnan(item[2]):
                insort(self.ref_diffs, item[2])
        while ref and ref[0][0] < t_s - self.lag_s - self.ref_s:
            _, old_r, old_diff = ref.popleft()
            del self.ref_sorted[bisect_left(self.ref_sorted, old_r)]
            if not math.isnan(old_diff):
                del self.ref_diffs[bisect_left(self.ref_diffs, old_diff)]

    @property
    def sigma(self) -> float:
        """Noise of one sample's r (Ω): median |Δr| / 0.954, as for a profile."""
        diffs = self.ref_diffs
        return diffs[len(diffs) // 2] / 0.954 if diffs else 0.0

    def level(self) -> float:
        """Median r of the reference window, or NaN while it holds too few samples."""
        values = self.ref_sorted
        n = len(values)
        return values[n // 2] if n >= _SELF_MIN_REF_SAMPLES else math.nan


class LithiumDetector(DetectorBase):
    """Streaming detector for one Li|Li channel (``symmetric`` or ``asymmetric``)."""

    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(settings)
        s = settings
        self._range_v = s.range_fraction * s.voltage_range_v
        self._shift_kind = "depletion" if s.cell == "asymmetric" else "voltage_shift"
        # Per direction: (half cycles ended in it before, |V|, expected |V|) of the
        # last half cycle that ended on a shift (see _END_SHIFT_HALF_CYCLES).
        self._end_shift: dict[int, tuple[int, float, float]] = {}
        self._end_up: tuple[float, float] | None = None  # an end up repeating a shift
        self._shift_v = self._shift_expected_v = 0.0
        self._dir = 0  # the direction current flows in now (0: none)
        self._seg_dir = 0  # the direction of the half cycle being collected
        self._level_a = 0.0
        self._t_prev = math.nan
        self._seg_t0 = 0.0
        self._seg_p: list[float] = []
        self._seg_r: list[float] = []
        self._seg_step: int | None = None
        self._seg_from_rest = True
        # A segment is learnt as a profile only when it is a whole, uninterrupted half
        # cycle whose start was seen, and provisional when it looked low.
        self._seg_whole = True
        self._seg_low = False
        # The half cycle's least-squares scale against its profile (judged samples).
        self._seg_xy = 0.0
        self._seg_xx = 0.0
        # The same sums from _fall_from_t on: what "falling as it goes" compares with
        # (a segment begun from rest or after an impedance sweep first relaxes).
        self._fall_xy = 0.0
        # The same sums from self_settle_s into the half cycle on (past a nucleation
        # spike in its profile), and how many samples: see _far_below.
        self._late_xy = self._late_xx = 0.0
        self._late_n = 0
        # The same level over time (one sample per half the usual interval: a burst
        # logged on change is one sample), and when its first sample came: see
        # _fell_from_anchor.
        self._anchor_xy = self._anchor_xx = 0.0
        self._anchor_n = 0
        self._anchor_t0 = self._anchor_last_t = -math.inf
        self._fall_xx = 0.0
        self._fall_from_t = -math.inf
        self._settle_from_p = 0.0  # settle counts from here (a resume moves it)
        # A half cycle interrupted by a rest or a pause: (direction, level, step, last
        # position) until the current comes back; and whether a pause step was seen.
        self._suspended: tuple[int, float, int | None, float] | None = None
        self._pause_seen = False
        self._other_seen = False
        self._profiles: dict[int, list[_Profile]] = {1: [], -1: []}
        self._ended = {1: 0, -1: 0}  # half cycles ended, per direction
        self._ref: _Profile | None = None
        self._raw_here = False
        self._settle_now_s = settings.settle_s
        # The slide window: (t_s, r·r_exp, r_exp², raw) per sample, and their sums.
        self._window: deque[tuple[float, float, float, bool]] = deque()
        self._window_xy = 0.0
        self._window_xx = 0.0
        self._window_raw = 0
        # Drops not yet lasting confirm_s: (t_s, r, r_exp, raw), held out of the window.
        self._pending: list[tuple[float, float, float, bool]] = []
        self._r_exp = 0.0
        self._interval_ema_s = 0.0  # the usual interval between samples (s)
        # Where the segment's first sample sits (s after the origin): the gap before it.
        self._seg_lead_s = 0.0
        self._lag_s = 0.0  # how far it may be misaligned against its profile (s)
        self._crossing = False  # the profile crossing zero in the other alignment
        # The slide window's scale through this segment (Welford): its wander.
        self._wd_n = 0
        self._wd_mean = self._wd_m2 = 0.0
        self._prev_ratio = math.inf  # the previous judged sample's ratio in this segment
        self._relative_sigma = 0.0
        # The recent samples' scatter (Ω, from successive differences), kept across half
        # cycles (a loose contact stays loose after a reversal), and what it multiplies
        # the learnt noise by for this sample (1: the samples scatter as learnt).
        self._scatter = RecentScatter()
        self._gain = 1.0
        self._gain_mean = 1.0
        self._own = _OwnLevel(s.self_lag_s, s.self_ref_s)
        self._unanchored = False
        # A stream may begin in the middle of a half cycle (a channel already cycling
        # when watching starts, a restart): where it began is unknown until the first
        # reversal, so the first segment is judged blind and never becomes a profile.
        self._blind = not settings.stream_starts_at_reversal
        # A stream that joins a test part-way (monitor mode, a restart) sees no half
        # cycle of the cell's past, but its first t_s (the instrument's test time) says
        # how long the test has run: see _half_cycles_before.
        self._joined = not settings.stream_starts_at_reversal
        self._t_first = math.nan
        self._before_hc: int | None = None
        self._runs = StepRuns()
        self._rest_seen = False  # a rest seen since the stream went blind
        # Runs of evidence: count and the time of the run's first sample.
        self._shift_run = 0
        self._shift_t0 = 0.0
        # The last sample that climbed beyond doubt, above its profile and above the
        # sample before it, without a shift: (index, t_s, ratio); the climb right before
        # the shift run began, if one did (see _ended_on_shift); the last ratio judged.
        self._rise: tuple[int, float, float] = (-2, 0.0, 0.0)
        self._shift_climb: tuple[float, float] | None = None
        self._prev_up = math.inf
        # The last sample beyond doubt above its profile (see _ups): (index, |V|, the
        # |V| expected).
        self._up_at: tuple[int, float, float] = (-2, 0.0, 0.0)
        self._low_run = 0
        self._low_t0 = 0.0
        # A dip: the low samples of one excursion below drop_ratio, counted through
        # samples between drop_ratio and halfway to slide_ratio (noise lifts one sample
        # of a soft short's drop just above drop_ratio; it is not back up).
        self._dip_low = 0
        self._dip_t0 = 0.0
        self._t_before = math.nan  # the previous sample's time
        # A drop episode: beyond-doubt low samples no more than confirm_s apart, with
        # every sample between them: [start, last low, interval before, Σratio, n].
        self._episode: list[float] | None = None
        self._episode_counted = False
        self._episode_low = False
        self._near_run = 0
        self._slide_run = 0
        self._slide_level = 1.0  # the window's scale at the last slide sample
        self._slide_threshold = settings.slide_ratio  # the last one judged against
        self._slide_t0 = 0.0
        self._hard_run = 0
        self._hard_t0 = 0.0
        # A run of samples below drop_ratio: count (thinned), Σratio, first and last time.
        self._run_n = 0
        self._run_sum = 0.0
        self._run_t0 = self._run_t = 0.0
        self._hard_sum = 0.0
        self._hard_diff2 = 0.0
        self._hard_last = 0.0
        # The segment's own mean V/I so far (from settle_s on), for _own_collapse.
        self._col_n = 0
        self._col_sum = self._col_d2 = self._col_last = self._col_t = 0.0
        # ... and its lowest |V/I| so far (the first sample of a stream included).
        self._low_n = 0
        self._low_r = self._low_t = 0.0
        self._col_run = 0
        self._col_t0 = 0.0
        # A run of samples below drop_ratio of that mean: count (thinned), Σratio, times,
        # and the mean, σ (relative) and count it is judged against: the segment's as
        # the run began.
        self._crun_n = 0
        self._crun_sum = 0.0
        self._crun_first = 0.0
        self._crun_t1 = 0.0
        self._crun_ref = (0.0, 0.0, 0)
        self._crun_t0 = self._crun_t = 0.0
        self._first_r = 0.0  # the stream's first sample's V/I, until its position is known
        self._own_run = 0
        self._own_t0 = 0.0
        self._drops: deque[float] = deque()
        # Upward excursions as large as a drop, within soft_window_s: a cell that spikes
        # both ways (a liquid cell's noise) tells nothing by its downward spikes alone.
        self._ups: deque[float] = deque()

    # ------------------------------------------------------------ public

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
        if index == 0:
            self._t_first = t_s
        # The run of the step, not its number: polled live, two runs of one step with a
        # short step no poll caught between them are still two (see StepRuns).
        step = self._runs.of(step, step_time_s)
        s = self.settings
        if abs(voltage_v) >= self._range_v:
            return self._range(index, t_s, voltage_v, current_a)
        interval_s = t_s - self._t_prev
        if 0.0 < interval_s <= s.max_gap_s:
            # (NaN before the first sample: no interval.)
            self._interval_ema_s += _INTERVAL_SMOOTHING * (interval_s - self._interval_ema_s)
        if interval_s > s.max_gap_s:
            # A gap in the data (a link outage, a paused stream): where this half cycle
            # began is unknown until the next reversal is seen, so the position-matched
            # criteria rest until then (shifts, the range and the segment's own level
            # are still judged). What came before the gap is not a whole half cycle.
            self._seg_whole = False
            self._end_segment()
            self._suspended = None
            self._dir = 0
            self._blind = True
            self._rest_seen = False
        magnitude_a = abs(current_a)
        not_cycling = kind is not None and kind not in _JUDGED_KINDS
        if (
            not_cycling
            or magnitude_a < s.rest_current_a
            or (self._dir != 0 and magnitude_a < s.rest_fraction * self._level_a)
        ):
            ended = self._ended_on_shift()
            self._rest(t_s, kind)
            return OK if ended is None else self._end_shift_halt(index, t_s, voltage_v, *ended)
        direction = 1 if current_a > 0 else -1
        if (
            direction != self._dir
            or abs(magnitude_a - self._level_a) > s.level_tolerance * self._level_a
            or (step is not None and self._seg_step is not None and step != self._seg_step)
        ):
            ended = self._ended_on_shift()
            self._begin(t_s, direction, magnitude_a, step)
            if ended is not None:
                return self._end_shift_halt(index, t_s, voltage_v, *ended)
        elif self._unanchored:
            # Second sample of the stream: put the origin one interval before the first
            # sample, as for every later half cycle, so that their profiles line up.
            interval_s = t_s - self._t_prev
            self._seg_t0 = self._t_prev - interval_s
            self._set_lead(interval_s)
            self._seg_p = [p + interval_s for p in self._seg_p]
            self._unanchored = False
            if interval_s >= s.settle_s and self._low_n == 0:
                # Now that its position is known, the first sample counts towards the
                # segment's lowest level: at 30-60 s sampling a short minutes into a
                # test may otherwise find too few samples before it.
                self._low_add(self._t_prev, self._first_r)
        self._t_before = self._t_prev
        self._t_prev = t_s
        p_s = t_s - self._seg_t0
        r_ohm = voltage_v / current_a
        if self._unanchored:
            self._first_r = r_ohm
        hard = self._hard_short(index, t_s, voltage_v, current_a, r_ohm, p_s)
        if hard is None:
            hard = self._own_collapse(index, t_s, voltage_v, current_a, r_ohm, p_s)
        if hard is not None:
            return hard
        own = self._own_level(index, t_s, voltage_v, current_a, r_ohm, p_s)
        if own is not None:
            return own
        ref = self._ref
        if ref is None or self._blind:  # no profile at this current: learning it
            self._learn(p_s, r_ohm)
            return OK
        r_exp = _interp(ref.p, ref.r, p_s)
        self._raw_here = _raw_at(ref.p, ref.raw, p_s)
        expected_v = r_exp * current_a
        if abs(expected_v) < s.min_expected_v:
            self._learn(p_s, r_ohm)
            return OK
        if self._settle_from_p:
            # Resumed after a pause: the overpotential builds up again from its ohmic
            # part over minutes, which the profile (uninterrupted there) never did.
            settle_s = s.resume_settle_s
        elif ref.from_rest == self._seg_from_rest:
            settle_s = s.settle_like_s
        else:
            settle_s = s.settle_s
        # Where the reversal fell within the gap before a half cycle's first sample is
        # unknown: the origin is put right after the sample before it. Logged on
        # change, the reversal's own jump is the first sample, and the gap is however
        # long the instrument last logged nothing (1-60 s, different every time), so
        # the two may be misaligned by the difference of their gaps: this half cycle's
        # zero crossing and settling, or its profile's, may last that much longer.
        lag_s = self._seg_lead_s - ref.lead_s
        self._crossing = False
        self._settle_now_s = settle_s + self._settle_from_p + self._lag_s
        # A shift is judged against at least the profile's typical level: early in a half
        # cycle the profile may sit near its own zero crossing, and where the profile
        # caught a relaxed point (the first sample after an impedance sweep, recorded a
        # few seconds later in one half cycle than in the next) it dips far below it.
        r_shift = r_exp if abs(r_exp) >= ref.typical else math.copysign(ref.typical, r_exp)
        if self._lag_s:
            # Where the overpotential still rises steeply a misalignment reads as a fall:
            # a fall is judged against the lower of the two alignments, a shift against
            # the higher.
            other = _interp(ref.p, ref.r, p_s - lag_s)
            self._crossing = other * r_exp <= 0.0  # the profile there still crossing zero
            if not self._crossing:
                if abs(other) > abs(r_shift):
                    r_shift = other
                if abs(other) < abs(r_exp):
                    r_exp = other
                    expected_v = r_exp * current_a
        if s.polled_live and p_s - self._seg_lead_s < ref.p[0] - _STAT_SPACING_S:
            # Polled live, the polls' phase against the reversals drifts: a sample may
            # sit seconds after its reversal (in the zero crossing itself) where the
            # profile's first point sat a whole interval after its own, still rising
            # steeply (a polymer cell: 35 mV at 3 s, 110 mV at 60 s). Where this
            # sample may be earlier in its half cycle than the profile's first point,
            # the profile knows nothing that early: only a shift is judged, as at the
            # zero crossing. The price: a short from a reversal on, polled, is halted
            # a poll later. (Recorded samples keep one phase, their first after a step
            # change at it: there the first sample of a half cycle is judged.)
            self._crossing = True
        if p_s < self._settle_now_s:
            r_exp = r_shift
            expected_v = r_exp * current_a
        self._r_exp = r_exp
        return self._judge(
            index, t_s, voltage_v, current_a, p_s, r_ohm, r_ohm / r_exp, expected_v, r_shift
        )

    def feed_batch(
        self,
        t_s: FloatArray,
        voltage_v: FloatArray,
        current_a: FloatArray,
        step: IntArray | None = None,
        cycle: IntArray | None = None,
        step_kind: IntArray | None = None,
    ) -> list[Verdict]:
        return self._feed_each(
            t_s.tolist(),
            voltage_v.tolist(),
            current_a.tolist(),
            None if step is None else step.tolist(),
            None if step_kind is None else step_kind.tolist(),
        )

    # ------------------------------------------------------------ segments

    def _rest(self, t_s: float, kind: int | None) -> None:
        """No half cycle here: a rest, a pause, or a step that is not cycling."""
        if kind == StepKind.PAUSE:
            self._pause_seen = True
        elif kind is not None and kind != StepKind.REST:
            self._other_seen = True  # an impedance sweep, a CV hold...: not a pause
        self._rest_seen = True
        if self._dir != 0:
            last_p = self._seg_p[-1] if self._seg_p else 0.0
            self._suspended = (self._dir, self._level_a, self._seg_step, last_p)
            self._dir = 0
        self._t_prev = t_s
        self._reset_runs()

    def _ended_on_shift(self) -> tuple[int, int] | None:
        """The half cycle under way ends here: if its last sample was a shift, note it;
        (direction, half cycles between) when one in the same direction ended so too
        within _END_SHIFT_HALF_CYCLES, or (direction, 0) when the sample before the
        shift climbed into it."""
        direction = self._dir
        if direction == 0:
            return None
        count = self._ended[direction]
        before = self._end_shift.get(direction)
        if self._shift_run == 0:
            # Once the electrode has run out, what the interphase took since is less
            # than a shift's worth at the next ends: 1.4-1.9x where the first read
            # 4-7x (logged once a minute, the last sample catches the first tens of
            # seconds of it). After a shift at an end, an end beyond doubt up
            # (1/drop_ratio, 1.6x, as for the ups counted against drops) repeats it.
            up_index, up_v, up_expected_v = self._up_at
            if (
                before is None
                or up_index != self._n - 2
                or not 0 < count - before[0] <= _END_SHIFT_HALF_CYCLES
            ):
                return None
            self._end_up = (up_v, up_expected_v)
            return direction, count - before[0]
        self._end_up = None
        self._end_shift[direction] = (count, self._shift_v, self._shift_expected_v)
        climb = self._shift_climb
        if (
            climb is not None
            and self._shift_run == 1
            and self._shift_t0 - climb[0] >= 0.95 * self.settings.confirm_s
        ):
            # A depletion climbs into its shift (the last of the electrode's area carries
            # the current), where a glitch comes from nowhere; and no later sample under
            # current can show the shift lasting. Mid half cycle such a pair waits for
            # the next sample: two spikes of a liquid cell can follow each other.
            return direction, 0
        if before is None or not 0 < count - before[0] <= _END_SHIFT_HALF_CYCLES:
            return None
        return direction, count - before[0]

    def _end_shift_halt(
        self, index: int, t_s: float, voltage_v: float, direction: int, apart: int
    ) -> Verdict:
        _, shift_v, expected_v = self._end_shift[direction]
        threshold_v = self.settings.shift_ratio * expected_v
        ended = f"the half cycle ended on a voltage shift, |V| {shift_v * 1e3:.1f} mV"
        if self._end_up is not None:
            shift_v, expected_v = self._end_up
            threshold_v = expected_v / self.settings.drop_ratio
            ended = (
                f"the half cycle ended {shift_v / expected_v:.2f}× up, |V| {shift_v * 1e3:.1f} mV"
            )
        if apart == 0:
            assert self._shift_climb is not None
            climb_s, climb_up = self._shift_climb
            how = (
                f"the sample {self._shift_t0 - climb_s:.3g} s before it had climbed to "
                f"{climb_up:.2f}× from the one before: the electrode it strips ran out"
            )
        else:
            how = (
                f"{'as did' if self._end_up is None else 'after'} the one {apart} half "
                "cycle(s) before it in this direction (on a shift): the electrode it "
                "strips runs out at its end"
            )
        return self._halt_with(
            index,
            t_s,
            self._shift_kind,
            "shift_ratio",
            shift_v,
            expected_v,
            threshold_v,
            f"{ended} against {expected_v * 1e3:.2f} mV expected, {how}",
        )

    def _begin(self, t_s: float, direction: int, level_a: float, step: int | None) -> None:
        """Current flows in a new way: a new half cycle, or a suspended one resumes."""
        susp = self._suspended
        self._suspended = None
        if (
            susp is not None
            and self._dir == 0
            and susp[0] == direction
            and abs(level_a - susp[1]) <= self.settings.level_tolerance * susp[1]
            and self._is_pause(susp, step)
        ):
            # The same half cycle goes on: positions continue where they stopped (the
            # pause does not count), the relaxation settles again, and this half cycle
            # is no longer a clean profile.
            self._seg_t0 = t_s - (susp[3] + self._interval_s(t_s))
            self._settle_from_p = susp[3]
            self._seg_whole = False
            self._dir = direction
            self._pause_seen = self._other_seen = False
            self._own.clear()
            self._col_n = self._low_n = 0
            self._col_sum = self._col_d2 = 0.0
            self._clear_window()
            self._reset_runs()
            return
        from_rest = self._dir == 0
        if self._dir != 0 or self._rest_seen:
            # A reversal, a new step or a start from rest seen: positions known again.
            self._blind = False
        if self._seg_dir != 0:
            self._end_segment()
        self._pause_seen = self._other_seen = False
        self._seg_from_rest = from_rest
        self._dir = self._seg_dir = direction
        self._level_a = level_a
        self._seg_step = step
        self._seg_whole = not self._blind
        self._seg_low = False
        self._seg_xy = self._seg_xx = 0.0
        self._wd_n = 0
        self._wd_mean = self._wd_m2 = 0.0
        self._fall_xy = self._fall_xx = 0.0
        self._late_xy = self._late_xx = 0.0
        self._late_n = 0
        self._anchor_xy = self._anchor_xx = 0.0
        self._anchor_n = 0
        self._anchor_t0 = self._anchor_last_t = -math.inf
        # After a reversal the half cycle's shape is the profile's from its first
        # seconds; after a rest or an impedance sweep the overpotential first rebuilds
        # and relaxes for minutes (the own-level rule waits self_settle_s for the same
        # reason): a dip then recovery there is not a half cycle falling as it goes.
        self._fall_from_t = t_s + self.settings.self_settle_s if from_rest else -math.inf
        self._settle_from_p = 0.0
        self._ref = self._find_profile(direction, level_a)
        # The reversal happened after the last sample of the previous segment (or
        # rest): that is the origin every half cycle is measured from. The very first
        # sample has no predecessor: the second one tells the interval (see feed).
        self._seg_t0 = t_s - self._interval_s(t_s)
        self._set_lead(t_s - self._seg_t0)
        self._own.clear()
        self._col_n = self._low_n = 0
        self._col_sum = self._col_d2 = 0.0
        self._clear_window()
        self._reset_runs()

    def _set_lead(self, lead_s: float) -> None:
        """Where this segment's first sample sits, and so how far it may be misaligned
        against its profile (see feed)."""
        self._seg_lead_s = lead_s
        ref = self._ref
        lag_s = 0.0 if ref is None else abs(lead_s - ref.lead_s)
        self._lag_s = lag_s if lag_s > _STAT_SPACING_S else 0.0

    def _interval_s(self, t_s: float) -> float:
        """The time since the previous sample (0 for the stream's first: see feed)."""
        if math.isnan(self._t_prev):
            self._unanchored = True
            return 0.0
        return t_s - self._t_prev

    def _is_pause(self, susp: tuple[int, float, int | None, float], step: int | None) -> bool:
        """Whether a resume after a rest continues the interrupted half cycle."""
        if self._pause_seen:
            return True
        if self._other_seen:
            return False
        if step is not None and susp[2] is not None:
            return step == susp[2]
        # Without step information: a half cycle that stopped well before the length
        # of its profile was interrupted, not finished.
        ref = self._ref
        return ref is not None and susp[3] < _CUT_SHORT * ref.p[-1]

    def _find_profile(self, direction: int, level_a: float) -> _Profile | None:
        tolerance = self.settings.level_tolerance
        for prof in self._profiles[direction]:
            if abs(prof.level_a - level_a) <= tolerance * prof.level_a:
                return prof
        return None

    def _learn(self, p_s: float, r_ohm: float) -> None:
        seg_p = self._seg_p
        if seg_p and p_s - seg_p[-1] < _STAT_SPACING_S:
            return
        seg_p.append(p_s)
        self._seg_r.append(r_ohm)

    def _end_segment(self) -> None:
        p, r = self._seg_p, self._seg_r
        self._seg_p = []
        self._seg_r = []
        if self._seg_dir:
            self._ended[self._seg_dir] += 1
        if len(p) < _MIN_PROFILE_SAMPLES or not self._seg_whole or self._blind:
            return
        ref = self._ref
        if ref is not None and p[-1] < _CUT_SHORT * ref.p[-1]:
            return  # cut short (a stop, a halt elsewhere): not a whole half cycle
        # Noise from successive differences (robust to the slow half-cycle shape):
        # median |Δr| / 0.954 is σ (in Ω) for Gaussian noise.
        diffs = sorted(abs(b - a) for a, b in itertools.pairwise(r))
        sigma = diffs[len(diffs) // 2] / 0.954
        if ref is not None and ref.established and self._seg_low and not ref.held:
            # A half cycle that looked low against an established profile (a slide
            # that began late in it, a drop) would, as the profile, make the next half
            # cycle's further fall look normal, and is itself only provisional: the
            # next half cycle is judged against the established profile once more. A
            # second low half cycle in a row replaces it (as provisional): the cell
            # changed, and an old reference must not judge it for ever.
            ref.held = True
            # Its level is not taken, but its noise is when it rose beyond a soft
            # short's flicker: a channel whose noise rose (a loose contact) is
            # otherwise judged against the quiet noise of before, and its own scatter
            # reads as drops. The median of successive differences barely moves with
            # a drop or a slide.
            if sigma > _NOISE_RISE * ref.sigma:
                ref.sigma = sigma
            return
        typical = sorted(abs(x) for x in r)[len(r) // 2]
        # The profile is smoothed over 5 samples so that its own noise barely adds to
        # the sample's when the two are compared.
        smooth, raw = _smooth_flat(r, _PROFILE_SMOOTHING, _FLAT_SPREAD_SIGMAS * sigma)
        scales = () if ref is None else ref.scales
        if ref is not None and self._seg_xx > 0:
            scales = (*scales, self._seg_xy / self._seg_xx)[-_SPREAD_HALF_CYCLES:]
        wanders = () if ref is None else ref.wanders
        if self._wd_n >= _WANDER_MIN_WINDOWS:
            wander = math.sqrt(self._wd_m2 / (self._wd_n - 1))
            wanders = (*wanders, wander)[-_SPREAD_HALF_CYCLES:]
        # Established: judged healthy against an earlier half cycle at this current
        # and not below it by more than _CONSISTENT. The first half cycle
        # (nucleation, a fresh cell settling), one that looked low (activation, or
        # a short) and one still falling fast are provisional. One that grew (slow
        # polarization growth, fast at low current) is not: judged against it, the
        # next half cycle reads high, never low, so no drop or slide is made up.
        established = (
            ref is not None
            and not self._seg_low
            and self._seg_xx > 0
            and self._seg_xy / self._seg_xx >= 1.0 - _CONSISTENT
        )
        learnt_at = self._ended[self._seg_dir]
        # (Counting the half cycles the cell ran before a stream that joined part-way.)
        before = self._half_cycles_before(p[-1])
        anchor_fall, anchor_mature = 1.0, False
        anchor_first = False
        anchor_at = learnt_at
        if established:
            anchor_mature = learnt_at + before > _ANCHOR_MIN_HALF_CYCLES
        elif ref is None:
            # The first half cycle at this current. In a stream that joined a test
            # past the cell's fresh half cycles, it is the anchor: the falls from it on
            # are no activation. (From a test's start it is the nucleation half cycle.)
            anchor_mature = anchor_first = (
                before > 0 and learnt_at + before > _ANCHOR_MIN_HALF_CYCLES
            )
        elif self._seg_xx > 0:
            if ref.established:
                anchor_mature = ref.learnt_at + before > _ANCHOR_MIN_HALF_CYCLES
                anchor_at = ref.learnt_at
            else:
                anchor_fall = ref.anchor_fall
                anchor_mature, anchor_first = ref.anchor_mature, ref.anchor_first
                anchor_at = ref.anchor_at
            anchor_fall *= self._seg_xy / self._seg_xx
        profile = _Profile(
            learnt_at=learnt_at,
            level_a=self._level_a,
            p=p,
            r=smooth,
            raw=raw,
            from_rest=self._seg_from_rest,
            sigma=sigma,
            typical=typical,
            established=established,
            anchor_fall=anchor_fall,
            anchor_mature=anchor_mature,
            anchor_first=anchor_first,
            anchor_at=anchor_at,
            scales=scales,
            wanders=wanders,
            lead_s=self._seg_lead_s,
            sign=math.copysign(1.0, sorted(r)[len(r) // 2]),
        )
        profiles = self._profiles[self._seg_dir]
        if ref is not None and ref in profiles:
            profiles.remove(ref)
        profiles.insert(0, profile)
        del profiles[_MAX_LEVELS:]
        self._ref = profile

    def _half_cycles_before(self, duration_s: float) -> int:
        """How many half cycles per direction the cell had run before a stream that
        joined its test part-way began, from the test time of the stream's first
        sample and the length of the first whole half cycle learnt (``duration_s``);
        0 for a stream from the test's start.

        Counted as if the current alternated (two half cycles per period): a test in
        one direction has run twice as many, so the count errs towards a fresh cell.
        """
        if self._before_hc is None:
            before = 0
            if self._joined and duration_s > 0.0 and self._t_first > 0.0:
                before = int(self._t_first / (2.0 * duration_s))
            self._before_hc = before
        return self._before_hc

    def _clear_window(self) -> None:
        self._prev_ratio = math.inf
        self._pending.clear()
        self._window.clear()
        self._window_xy = self._window_xx = 0.0
        self._window_raw = 0

    def _reset_runs(self) -> None:
        self._shift_run = self._low_run = self._near_run = self._slide_run = 0
        self._dip_low = 0
        self._rise = (-2, 0.0, 0.0)
        self._prev_up = math.inf
        self._hard_run = self._own_run = self._col_run = self._run_n = self._crun_n = 0

    # ------------------------------------------------------------ judging

    def _confirmed(self, run: int, t0: float, t_s: float, samples: int | None = None) -> bool:
        """Evidence that lasted: ``samples`` samples spanning at least confirm_s (2;
        polled live, 3 unless two span _LIVE_APART_S)."""
        if samples is None:
            samples = 3 if self.settings.polled_live and t_s - t0 < _LIVE_APART_S else 2
        # 5 % below confirm_s still counts: an instrument sampling every confirm_s
        # stamps its samples with jitter.
        return run >= samples and t_s - t0 >= 0.95 * self.settings.confirm_s

    def _drop_confirmed(self, low_run: int, dip_low: int, t_s: float) -> bool:
        """A drop that lasted. Two samples in a row do when they span _DROP_APART_S;
        closer together, three low samples of one dip (a sample back above halfway from
        drop_ratio to slide_ratio ends it). Polled live, as _confirmed says."""
        if self.settings.polled_live:
            return self._confirmed(low_run, self._low_t0, t_s)
        if t_s - self._low_t0 >= _DROP_APART_S and self._confirmed(low_run, self._low_t0, t_s):
            return True
        return dip_low >= 3 and self._confirmed(dip_low, self._dip_t0, t_s, 3)

    def _hard_short(
        self, index: int, t_s: float, voltage_v: float, current_a: float, r_ohm: float, p_s: float
    ) -> Verdict | None:
        """|V/I| far below any healthy Li|Li cell's, under a steady current: a short.

        Judged from settle_s into a segment (a zero crossing after a reversal passes
        through 0 V in seconds), over a run of samples within a loose band (5× the
        limit): the run's mean |V/I| must lie below hard_short_ohm by two standard
        errors of its own scatter, so instrument noise on a ~0.1 mV short neither hides
        it nor fakes one on a cell at a few ohms.
        """
        s = self.settings
        if (
            abs(current_a) < s.hard_short_min_current_a
            or abs(r_ohm) >= _HARD_BAND * s.hard_short_ohm
            or p_s < s.settle_s + self._settle_from_p
        ):
            self._hard_run = 0
            return None
        if self._hard_run == 0:
            self._hard_t0 = t_s
            self._hard_sum = self._hard_diff2 = 0.0
        else:
            d = r_ohm - self._hard_last
            self._hard_diff2 += d * d
        self._hard_last = r_ohm
        self._hard_run += 1
        self._hard_sum += r_ohm
        n = self._hard_run
        if not self._confirmed(n, self._hard_t0, t_s, _HARD_MIN_SAMPLES):
            return None
        mean_ohm = abs(self._hard_sum / n)
        sigma_ohm = math.sqrt(self._hard_diff2 / (2 * (n - 1)))
        if mean_ohm + 2.0 * sigma_ohm / math.sqrt(n) >= s.hard_short_ohm:
            return None
        return self._halt_with(
            index,
            t_s,
            "short",
            "collapse",
            voltage_v,
            math.nan,
            s.hard_short_ohm * abs(current_a),
            f"|V| = {abs(voltage_v) * 1e3:.2f} mV under {current_a * 1e3:+.3f} mA: |V/I| = "
            f"{mean_ohm:.3g} Ω over {n} samples and {t_s - self._hard_t0:.3g} s, below the "
            f"{s.hard_short_ohm:g} Ω no healthy Li|Li cell reaches",
            subkind="hard",
        )

    def _own_collapse(
        self, index: int, t_s: float, voltage_v: float, current_a: float, r_ohm: float, p_s: float
    ) -> Verdict | None:
        """A collapse against the segment's own level so far (from settle_s on).

        A hard short minutes into a test that never reversed, at a current too small for
        the no-history rule to tell (|V/I| of a short hidden in 0.2 mV of noise), is
        still a fall to near zero from what this very segment showed a moment before.
        Two references: the segment's mean so far, the fall standing out of its scatter
        (from _HARD_MIN_SAMPLES samples on), and, before there are that many, its lowest
        |V/I| so far (a nucleation spike or an upward glitch cannot raise a minimum; a
        downward one lowers it, and then this reference judges nothing).
        """
        s = self.settings
        settle_s = s.settle_s + self._settle_from_p
        if self._lag_s:
            settle_s += max(self._lag_s, self._seg_lead_s)  # (misaligned: see feed)
        if p_s < settle_s:
            return None
        n = self._col_n
        reference = math.nan
        if n >= _HARD_MIN_SAMPLES:
            mean = self._col_sum / n
            sigma_ohm = math.sqrt(self._col_d2 / (2 * (n - 1)))
            ratio = r_ohm / mean if mean else 1.0
            if self._ref is None or self._blind:
                # No profile judges this step: the recent scatter is measured against its
                # own mean (the step's scatter since it began says little of a noise
                # that rose an hour ago).
                self._scatter.add(t_s, (r_ohm - mean) * math.copysign(1.0, mean))
                sigma_ohm *= self._scatter_gain(sigma_ohm)
            else:
                # The segment's first few samples are a poor estimate of its noise: the
                # profile's, widened by the recent scatter, bounds it from below (a
                # channel that turned noisy hours ago is no collapse on four quiet
                # samples and two low ones).
                sigma_ohm = max(sigma_ohm, self._ref.sigma * _ONE_SAMPLE_NOISE * self._gain)
            sigma = sigma_ohm / abs(mean) if mean else 0.0
            if abs(mean * current_a) < s.min_expected_v:
                self._crun_n = 0
            elif (
                # (Of the other sign and larger: the mean so far is still the zero
                # crossing's, as below.)
                -1.0 < ratio < s.near_zero_ratio
                and 1.0 - ratio > s.pair_significance_sigmas * sigma
            ):
                reference = mean
            if abs(mean * current_a) >= s.min_expected_v:
                run_mean = self._own_mean_run(t_s, r_ohm, mean, sigma, n)
                if run_mean is not None:
                    return self._collapse_halt(
                        index,
                        t_s,
                        voltage_v,
                        current_a,
                        self._crun_ref[0] * current_a,
                        run_mean,
                        "this step's own {} so far on average",
                        (self._crun_n, self._crun_t0),
                        "hard",
                    )
        elif (
            self._low_n >= _OWN_MIN_SAMPLES
            and abs(self._low_r * current_a) >= s.min_expected_v
            # (Of the other sign and larger: the reference is a sample of the zero
            # crossing, caught in the noise; this one is no collapse from it.)
            and -1.0 < r_ohm / self._low_r < s.near_zero_ratio
        ):
            reference = self._low_r
        if not math.isnan(reference):
            if self._col_run == 0:
                self._col_t0 = t_s
            self._col_run += 1
            if not self._confirmed(self._col_run, self._col_t0, t_s):
                return None
            return self._collapse_halt(
                index,
                t_s,
                voltage_v,
                current_a,
                reference * current_a,
                r_ohm / reference,
                "this step's own {} so far",
                (self._col_run, self._col_t0),
                "hard",
            )
        self._col_run = 0
        ref = self._ref
        if ref is None or r_ohm * ref.sign > 0.0:
            # (Of the wrong sign for this cell: still the zero crossing, which a half
            # cycle logged on change may show well past settle_s; not the step's level.)
            self._col_add(t_s, r_ohm)
            self._low_add(t_s, r_ohm)
        return None

    def _own_mean_run(
        self, t_s: float, r_ohm: float, mean_ohm: float, sigma: float, n_ref: int
    ) -> float | None:
        """The mean ratio of a run of samples below drop_ratio of the segment's own mean,
        once it says "collapsed" (else None).

        Where the noise is a few tenths of the overpotential (200 µV on 3 mV), samples
        of a collapsed cell scatter around 0.08x: two consecutive ones below it may take
        several samples. The run's mean judges them together: it must lie below
        near_zero_ratio and significance_sigmas of its σ (σ of one sample over the run's
        n samples, and of the reference mean over its own) below 1, the run lasting
        confirm_s and two samples (one per _STAT_SPACING_S: a burst is one sample). A
        nucleation spike falls to a third of its peak, never to a twelfth of the
        segment's mean.

        The run is judged against the segment as it stood when the run began. Its own
        samples still go into the segment's mean and scatter (a noise that rose is
        learnt), but judged against those, a collapse would hide itself: its step down
        alone multiplies the scatter of a quiet hold by seven. Its first sample may have
        caught the fall part way (0.1-0.2x: an instrument averages over its sampling
        interval): the run without it is judged too.
        """
        s = self.settings
        if self._crun_n:
            mean_ohm, sigma, n_ref = self._crun_ref
        ratio = r_ohm / mean_ohm if mean_ohm else 1.0
        if not -1.0 < ratio < s.drop_ratio:  # (of the other sign and larger: see above)
            self._crun_n = 0
            return None
        if self._crun_n == 0:
            self._crun_n = 1
            self._crun_sum = self._crun_first = ratio
            self._crun_t0 = self._crun_t = t_s
            self._crun_ref = (mean_ohm, sigma, n_ref)
            return None
        if t_s - self._crun_t < _STAT_SPACING_S:
            return None
        if self._crun_n == 1:
            self._crun_t1 = t_s
        self._crun_n += 1
        self._crun_sum += ratio
        self._crun_t = t_s
        k = self._crun_n
        for mean, count, t0 in (
            (self._crun_sum / k, k, self._crun_t0),
            ((self._crun_sum - self._crun_first) / (k - 1), k - 1, self._crun_t1),
        ):
            if not self._confirmed(count, t0, t_s) or mean >= s.near_zero_ratio:
                continue
            sigma_mean = sigma * math.sqrt(1.0 / count + 1.0 / n_ref)
            if 1.0 - mean > s.significance_sigmas * sigma_mean:
                return mean
        return None

    def _col_add(self, t_s: float, r_ohm: float) -> None:
        """One more sample of the segment's own mean (at most one per _STAT_SPACING_S)."""
        n = self._col_n
        if n and t_s - self._col_t < _STAT_SPACING_S:
            return
        if n:
            d = r_ohm - self._col_last
            self._col_d2 += d * d
        self._col_last = r_ohm
        self._col_t = t_s
        self._col_sum += r_ohm
        self._col_n = n + 1

    def _low_add(self, t_s: float, r_ohm: float) -> None:
        """One more sample of the segment's lowest |V/I| (one per _STAT_SPACING_S)."""
        n = self._low_n
        if n and t_s - self._low_t < _STAT_SPACING_S:
            return
        if not n or abs(r_ohm) < abs(self._low_r):
            self._low_r = r_ohm
        self._low_t = t_s
        self._low_n = n + 1

    def _own_level(
        self, index: int, t_s: float, voltage_v: float, current_a: float, r_ohm: float, p_s: float
    ) -> Verdict | None:
        """Judge a sample against its own half cycle's recent level.

        This is the only judge where there is no profile at this current; elsewhere it
        only witnesses (see ``_own_falls``).
        """
        s = self.settings
        own = self._own
        if p_s < s.self_settle_s + self._settle_from_p:
            return None
        level = own.level()
        own.add(t_s, r_ohm)
        if math.isnan(level) or abs(level * current_a) < s.min_expected_v:
            self._own_run = 0
            return None
        ratio = r_ohm / level
        sigma = own.sigma / abs(level) * math.sqrt(1.0 + 1.0 / len(own.ref))
        expected_v = level * current_a
        # Only a fall is judged here: a rise at the end of a one-direction step is how a
        # step with a voltage cut-off ends (stripping to 1 V in a Coulombic-efficiency
        # test); a real depletion reaches the range, which halts.
        if not (ratio < s.drop_ratio and 1.0 - ratio > s.significance_sigmas * sigma):
            self._own_run = 0
            return None
        if self._own_run == 0:
            self._own_t0 = t_s
        self._own_run += 1
        if self._ref is not None and not self._blind:
            return None  # a profile judges this half cycle; this is the witness
        if not self._confirmed(self._own_run, self._own_t0, t_s):
            return None
        return self._halt_with(
            index,
            t_s,
            "short",
            "own_drop",
            voltage_v,
            expected_v,
            s.drop_ratio * abs(expected_v),
            f"the overpotential dropped to {ratio:.2f}× this step's own level of "
            f"{abs(expected_v) * 1e3:.2f} mV over the last {s.self_ref_s / 60:g} min "
            f"(threshold {s.drop_ratio:g}×), for {t_s - self._own_t0:.0f} s",
            subkind="soft",
        )

    def _far_below(self) -> bool:
        """Whether this half cycle, past self_settle_s, sits below drop_ratio of even a
        provisional profile (on _MIN_PROFILE_SAMPLES samples or more).

        Activation takes a quarter of the overpotential from one half cycle to the next
        at the most, and a nucleation spike in the profile is over by self_settle_s; a
        half cycle at less than drop_ratio of the last one is a short (the micro short
        that slid the last one down, then halves this one), whatever that profile was.
        Only against the last half cycle in this direction: a half cycle that looked
        low is not learnt, and against an older profile activation adds up.
        """
        ref = self._ref
        return (
            ref is not None
            and ref.learnt_at == self._ended[self._seg_dir]
            and self._late_n >= _MIN_PROFILE_SAMPLES
            and self._late_xy < self.settings.drop_ratio * self._late_xx
        )

    def _fell_from_anchor(self, t_s: float) -> float | None:
        """This half cycle's level (past self_settle_s) against the anchor, when the
        half cycles since it fell below drop_ratio of it (see _Profile.anchor_fall).

        Also where the last half cycle was not learnt (it read low throughout, or was
        interrupted): the profile is then an older one, and this half cycle's level
        against it holds the falls since, so the product is still the fall from the
        anchor; past a mature anchor no activation adds up."""
        ref = self._ref
        if (
            ref is None
            or ref.established
            or not ref.anchor_mature
            or self._anchor_n < _SLIDE_MIN_SAMPLES
            or t_s - self._anchor_t0 < max(_SLIDE_MIN_SPAN_S, self.settings.confirm_s)
        ):
            return None
        level = self._anchor_xy / self._anchor_xx * ref.anchor_fall
        return level if level < self.settings.drop_ratio else None

    def _anchor_halt(
        self, index: int, t_s: float, voltage_v: float, expected_v: float, level: float
    ) -> Verdict:
        ref = self._ref
        assert ref is not None
        threshold = self.settings.drop_ratio
        if ref.anchor_first:
            anchor = "first half cycle seen since watching began"
            why = (
                f"{self._t_first / 3600.0:.1f} h into its test when watching began, the "
                "cell is past the half cycles in which a fresh cell activates"
            )
        else:
            anchor = "last half cycle judged healthy"
            why = "a cell steady until then does not start activating"
        return self._halt_with(
            index,
            t_s,
            "short",
            "slide",
            voltage_v,
            expected_v,
            threshold / ref.anchor_fall * abs(expected_v),
            f"the overpotential fell half cycle after half cycle to {level:.2f}× the "
            f"{anchor}, {self._ended[self._seg_dir] + 1 - ref.anchor_at} half cycles ago "
            f"(threshold {threshold:.2f}×): {why}",
            subkind="micro",
        )

    def _own_falls(self) -> bool:
        """Whether the half cycle's own level says its overpotential just fell."""
        return self._own_run > 0

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
        r_shift: float,
    ) -> Verdict:
        s = self.settings
        ref = self._ref
        assert ref is not None
        # What one sample's ratio may stray from 1 by noise alone (sample + profile):
        # evidence that needs a second sample to halt may be weaker than evidence that
        # counts on its own.
        # Noise is learnt in ohms: relative to a small expected value it weighs more.
        relative_sigma = ref.sigma / abs(r_ohm / ratio) if ratio else 0.0
        self._relative_sigma = relative_sigma
        one_sample = _ONE_SAMPLE_NOISE_RAW if self._raw_here else _ONE_SAMPLE_NOISE
        sigma = relative_sigma * one_sample
        noise = s.significance_sigmas * sigma
        pair_noise = s.pair_significance_sigmas * sigma
        up = r_ohm / r_shift
        up_expected_v = r_shift * current_a
        beyond_up = up > 1.0 / s.drop_ratio and up - 1.0 > noise
        self._count(self._ups, t_s, beyond_up)
        if beyond_up:
            self._up_at = (index, abs(voltage_v), abs(up_expected_v))
        above_v = abs(voltage_v) - abs(up_expected_v)
        prev_up, self._prev_up = self._prev_up, up
        if up > s.shift_ratio and up - 1.0 > pair_noise and above_v > s.shift_floor_v:
            if self._shift_run == 0:
                self._shift_t0 = t_s
                rise_index, rise_t, rise_up = self._rise
                self._shift_climb = (rise_t, rise_up) if rise_index == index - 1 else None
            self._shift_run += 1
            self._shift_v = abs(voltage_v)
            self._shift_expected_v = abs(up_expected_v)
            self._low_run = self._near_run = self._slide_run = self._dip_low = 0
            threshold_v = s.shift_ratio * abs(up_expected_v)
            if self._confirmed(self._shift_run, self._shift_t0, t_s):
                return self._halt_with(
                    index,
                    t_s,
                    self._shift_kind,
                    "shift_ratio",
                    voltage_v,
                    up_expected_v,
                    threshold_v,
                    f"|V| rose to {abs(voltage_v) * 1e3:.1f} mV, {up:.1f}× the "
                    f"{abs(up_expected_v) * 1e3:.2f} mV expected at this point of the half cycle "
                    f"(threshold {s.shift_ratio:g}×), on {self._shift_run} samples over "
                    f"{t_s - self._shift_t0:.3g} s",
                )
            return self._warn(
                index,
                t_s,
                self._shift_kind,
                "shift_ratio",
                voltage_v,
                up_expected_v,
                threshold_v,
                f"|V| jumped to {up:.1f}× the expected {abs(up_expected_v) * 1e3:.2f} mV "
                "(not yet lasting: a glitch or the start of a shift)",
            )
        self._shift_run = 0
        if up - 1.0 > noise and up - prev_up > noise:
            # Above the profile alone is no climb: a cell whose polarization grew since
            # its last half cycle (a liquid cell's first hours) sits there for hours.
            self._rise = (index, t_s, up)
        if p_s < self._settle_now_s:
            # The zero crossing after a reversal (or a rest): the double layer is still
            # relaxing and how deep the first samples sit depends on what came before,
            # so only a shift is judged here; collapses, drops and slides wait.
            self._prev_ratio = ratio
            self._learn(p_s, r_ohm)
            return OK
        prev_ratio = self._prev_ratio
        self._prev_ratio = ratio
        since_s = p_s - self._settle_from_p
        if self._lag_s:
            # Misaligned against its profile (see feed): the reversal may have come as
            # late as this half cycle's first sample, or lag_s later than its profile's.
            since_s -= max(self._lag_s, self._seg_lead_s)
        rising = ratio > prev_ratio + max(_RISING_RATIO, 3.0 * sigma)
        if (
            self._r_exp * ref.sign <= 0.0
            or self._crossing
            or (since_s < s.settle_s and (rising or (since_s < 0.5 * s.settle_s and ratio <= 0.0)))
        ):
            # Still the zero crossing: where the profile itself was still crossing (in
            # either alignment: there is nothing to judge against), a sample still
            # rising towards the plateau, or early on one of the wrong sign. An
            # instrument logging on change (or a slow double layer) catches the
            # crossing at other moments in different half cycles. A short sits at zero
            # without rising, and is judged once the half of settle_s in which a
            # crossing may still be under way has passed.
            if rising:
                self._low_run = self._near_run = self._dip_low = 0  # (the crossing)
            self._learn(p_s, r_ohm)
            return OK
        # Falls are judged against the recent scatter where it is larger than the noise
        # learnt (shifts, above, are not: a depletion's rise is itself scatter).
        self._scatter.add(t_s, (r_ohm - self._r_exp) * ref.sign)
        gain = self._gain = self._scatter_gain(ref.sigma * one_sample)
        if gain > 1.0:
            relative_sigma *= gain
            self._relative_sigma = relative_sigma
            sigma *= gain
            noise *= gain
            pair_noise *= gain
        run = self._low_mean_run(t_s, ratio, relative_sigma)
        if run is not None and (ref.established or self._own_falls()):
            # Where samples stand out one by one, the per-sample rules below judge (and
            # name) the fall; the run's mean is for samples that do not.
            # (Below zero is a collapse only out of the noise: a noisy channel on a small
            # overpotential crosses zero, early in a half cycle above all.)
            below_zero = ratio <= -s.near_zero_ratio and 1.0 - ratio > pair_noise
            alone = (ratio < s.drop_ratio and 1.0 - ratio > pair_noise) or below_zero
            if not (alone and self._confirmed(self._low_run + 1, self._low_t0, t_s)):
                return self._run_halt(index, t_s, voltage_v, expected_v, *run)
        if ratio < s.drop_ratio and 1.0 - ratio > pair_noise:
            if self._dip_low == 0:
                self._dip_t0 = t_s
            self._dip_low += 1
        elif ratio >= 0.5 * (s.drop_ratio + s.slide_ratio):
            self._dip_low = 0
        below_zero = ratio <= -s.near_zero_ratio and 1.0 - ratio > pair_noise
        if (ratio < s.near_zero_ratio and 1.0 - ratio > pair_noise) or below_zero:
            if self._low_run == 0:
                self._low_t0 = t_s
            self._low_run += 1
            self._near_run += 1
            self._slide_run = 0
            threshold_v = s.near_zero_ratio * abs(expected_v)
            if self._confirmed(self._low_run, self._low_t0, t_s):
                return self._collapse_halt(
                    index,
                    t_s,
                    voltage_v,
                    current_a,
                    expected_v,
                    ratio,
                    "the expected {}",
                    (self._low_run, self._low_t0),
                    "hard" if self._near_run >= 2 else "soft",
                )
            return self._warn(
                index,
                t_s,
                "short",
                "collapse",
                voltage_v,
                expected_v,
                threshold_v,
                f"|V| fell to {abs(voltage_v) * 1e3:.2f} mV under current (not yet lasting: "
                "a glitch or the start of a short)",
                subkind="hard",
            )
        r_exp = self._r_exp
        self._seg_xy += r_ohm * r_exp
        self._seg_xx += r_exp * r_exp
        if p_s >= s.self_settle_s + self._settle_from_p:
            self._late_xy += r_ohm * r_exp
            self._late_xx += r_exp * r_exp
            self._late_n += 1
            if (
                ref.anchor_mature
                and not ref.established
                and t_s - self._anchor_last_t >= max(_STAT_SPACING_S, 0.5 * self._interval_ema_s)
            ):
                # (Only against a provisional profile with a mature anchor: the profile
                # is the segment's own, so nothing else ever reads these sums.)
                if self._anchor_n == 0:
                    self._anchor_t0 = t_s
                self._anchor_last_t = t_s
                self._anchor_xy += r_ohm * r_exp
                self._anchor_xx += r_exp * r_exp
                self._anchor_n += 1
                fell = self._fell_from_anchor(t_s)
                if fell is not None:
                    return self._anchor_halt(index, t_s, voltage_v, expected_v, fell)
        if t_s >= self._fall_from_t:
            self._fall_xy += r_ohm * r_exp
            self._fall_xx += r_exp * r_exp
        self._episode_low = ref.established and ratio < s.drop_ratio and 1.0 - ratio > noise
        self._episode_note(t_s, ratio)
        # Against a provisional profile a drop or a slide may be activation (or the
        # first half cycle's nucleation): it halts only when the half cycle's own level
        # fell too; otherwise a person is told.
        # A provisional profile learnt from a half cycle that fell out of a steady
        # history is the first half cycle of a short (a micro short's slide) more
        # than activation: a further drop against it is judged as against an
        # established one.
        trusted = ref.established or ref.fell_from_steady or self._own_falls() or self._far_below()
        if ratio < s.drop_ratio and 1.0 - ratio > pair_noise:
            if self._low_run == 0:
                self._low_t0 = t_s
            self._low_run += 1
            self._near_run = 0
            self._seg_low = True
            # A drop is also part of a slide: the slide window sees it, so a short that
            # starts deep (a micro short found at the start of a plating half cycle)
            # is confirmed by the next samples instead of starting the count afresh.
            # Until the drop has lasted confirm_s it waits outside the window: a burst
            # of samples from one spike must not drag the window's mean down.
            self._pending.append((t_s, r_ohm, self._r_exp, self._raw_here))
            slid = None
            lasted = self._confirmed(self._low_run, self._low_t0, t_s)
            if lasted:
                slid = self._slide_flush()
            if slid is not None:
                if self._slide_run == 0:
                    self._slide_t0 = t_s
                self._slide_run += 1
                self._slide_level = slid
            elif lasted:
                self._slide_run = 0
            elif self._slide_run:
                # A drop not yet lasting waits outside the window, so a spike never
                # drags the window's mean; but below a slide under way it is the slide
                # going on, deeper: it confirms that slide, at the window's own level.
                slid = self._slide_level
                self._slide_run += 1
            # else: it neither confirms a slide nor breaks one (a micro short's slide
            # with one noisy sample deeper than drop_ratio in it is still one slide).
            # Separate drops count only against an established profile (against a
            # provisional one a fresh cell reads low for hours: activation).
            drops = self._count(self._drops, t_s, self._episode_drop(t_s, ratio))
            # Separate drops tell a soft short only when they are one-sided: a cell that
            # spikes up as often (noise) drops by chance as well.
            separate = len(drops) >= 2 and len(drops) > 2 * len(self._ups)
            threshold_v = s.drop_ratio * abs(expected_v)
            confirmed = self._drop_confirmed(self._low_run, self._dip_low, t_s)
            if trusted:
                if (
                    slid is not None
                    and self._confirmed(self._slide_run, self._slide_t0, t_s)
                    and self._slide_decided(slid)
                    and not confirmed
                    and not separate
                ):
                    return self._slide_halt(index, t_s, voltage_v, expected_v, slid)
                if confirmed or separate:
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
                f"{abs(expected_v) * 1e3:.2f} mV ("
                + (
                    "not yet lasting: a glitch or a soft short)"
                    if trusted
                    else "the last half cycle at this current is no firm reference yet: "
                    "activation, or a soft short)"
                ),
                subkind="soft",
            )
        self._low_run = self._near_run = 0
        waiting = False
        if self._pending:
            # Drops just before this sample: part of a slide if this one is low too, and
            # once the low excursion has lasted confirm_s. A spike logged on change is a
            # burst of samples within a millisecond, down and back up through the slide
            # zone: until it has lasted, this sample waits with the drops, and a sample
            # back above slide_ratio discards them all (one spike never slides a window).
            if ratio >= s.slide_ratio:
                self._pending.clear()
            elif t_s - self._pending[0][0] >= 0.95 * s.confirm_s:
                self._slide_flush()
            else:
                self._pending.append((t_s, r_ohm, self._r_exp, self._raw_here))
                waiting = True
        if not waiting:
            self._slide_push(t_s, r_ohm, self._r_exp, self._raw_here)
        smoothed = self._slide_eval(t_s)
        if smoothed is not None:
            if self._slide_run == 0:
                self._slide_t0 = t_s
            self._slide_run += 1
            self._slide_level = smoothed
            self._seg_low = True
            threshold_v = self._slide_threshold * abs(expected_v)
            decided = self._slide_decided(smoothed)
            if trusted and decided and self._confirmed(self._slide_run, self._slide_t0, t_s):
                return self._slide_halt(index, t_s, voltage_v, expected_v, smoothed)
            return self._warn(
                index,
                t_s,
                "short",
                "slide",
                voltage_v,
                expected_v,
                threshold_v,
                f"the overpotential is {smoothed:.2f}× the last healthy half cycle's"
                + ("" if trusted and decided else " (activation, or a micro short)"),
                subkind="micro",
            )
        self._slide_run = 0
        self._learn(p_s, r_ohm)
        if gain >= _SCATTER_WARN - _SCATTER_ALLOWANCE:
            return self._scatter_warn(index, t_s, voltage_v, expected_v, gain)
        return OK

    def _scatter_gain(self, sigma_ohm: float) -> float:
        """What the recent scatter multiplies the learnt noise by (σ of one sample, Ω)."""
        recent_ohm = self._scatter.sigma()
        gain = 1.0
        if recent_ohm > 0.0 and sigma_ohm > 0.0:
            gain = max(1.0, recent_ohm / sigma_ohm - _SCATTER_ALLOWANCE)
        self._gain_mean += _GAIN_SMOOTHING * (gain - self._gain_mean)
        return max(gain, self._gain_mean)

    def _scatter_warn(
        self, index: int, t_s: float, voltage_v: float, expected_v: float, gain: float
    ) -> Verdict:
        return self._warn(
            index,
            t_s,
            "short",
            "scatter",
            voltage_v,
            expected_v,
            self.settings.drop_ratio * abs(expected_v),
            f"the samples scatter {gain + _SCATTER_ALLOWANCE:.1f}× the noise learnt from the "
            "last half cycle, at an unchanged level (a loose contact, a noisy channel, or "
            "the fluctuation before a short): falls are judged against that scatter",
            subkind="soft",
        )

    def _low_mean_run(
        self, t_s: float, ratio: float, relative_sigma: float
    ) -> tuple[float, float] | None:
        """Follow the run of samples below drop_ratio; (mean ratio, its σ) once it halts.

        Every sample of the run must be below drop_ratio (a glitch next to a healthy
        sample makes no run), the run must last (confirm_s and two samples), and its
        mean must stand significance_sigmas of its own σ below the profile. Samples
        count towards n at most one per _STAT_SPACING_S: a burst logged on change is
        one sample, not many.
        """
        s = self.settings
        if ratio >= s.drop_ratio:
            self._run_n = 0
            return None
        if self._run_n == 0:
            self._run_n = 1
            self._run_sum = ratio
            self._run_t0 = self._run_t = t_s
            return None
        if t_s - self._run_t < _STAT_SPACING_S:
            return None
        self._run_n += 1
        self._run_sum += ratio
        self._run_t = t_s
        n = self._run_n
        mean = self._run_sum / n
        if not self._confirmed(n, self._run_t0, t_s):
            return None
        profile_share = 1.0 / n if self._raw_here else 1.0 / (n + _PROFILE_SMOOTHING - 1)
        sigma_mean = relative_sigma * math.sqrt(1.0 / n + profile_share)
        sigmas = s.significance_sigmas
        ref = self._ref
        if (
            n >= _ZERO_RUN_SAMPLES
            and mean < s.near_zero_ratio + 2.0 * sigma_mean
            and ref is not None
            and abs(self._r_exp) >= 0.5 * ref.typical
        ):
            # A run of three or more whose mean is zero within its noise: a collapse,
            # the one shape noise at an unchanged level never takes that far from 1.
            # (Not on the rise after a reversal, where what is expected is itself
            # small and samples near zero are where the crossing left them.)
            sigmas = _ZERO_RUN_SIGMAS
        if 1.0 - mean <= sigmas * sigma_mean:
            return None
        return mean, sigma_mean

    def _run_halt(
        self,
        index: int,
        t_s: float,
        voltage_v: float,
        expected_v: float,
        mean: float,
        sigma_mean: float,
    ) -> Verdict:
        s = self.settings
        n = self._run_n
        # Consistent with zero (within 2 σ of the run's mean): the voltage collapsed.
        hard = mean < s.near_zero_ratio + 2.0 * sigma_mean
        # (A noise-free record, a figure's data or a coarse ADC on a flat plateau, learns
        # a noise of 0.)
        out = (
            f"{(1.0 - mean) / sigma_mean:.1f} σ of its noise (σ = {sigma_mean:.2f}×) below it"
            if sigma_mean > 0.0
            else "below it, with no noise learnt"
        )
        return self._halt_with(
            index,
            t_s,
            "short",
            "low_run",
            voltage_v,
            expected_v,
            s.drop_ratio * abs(expected_v),
            f"the overpotential stayed below {s.drop_ratio:g}× the expected "
            f"{abs(expected_v) * 1e3:.2f} mV for {n} samples over {t_s - self._run_t0:.3g} s, "
            f"{mean:.2f}× on average, {out}",
            subkind="hard" if hard else "soft",
        )

    def _episode_note(self, t_s: float, ratio: float) -> None:
        """Follow the drop episode this sample belongs to (see _episode_drop)."""
        ep = self._episode
        # (Polled live, consecutive low polls are one episode however far apart.)
        gap_s = self.settings.confirm_s
        if self.settings.polled_live:
            gap_s = max(gap_s, 1.5 * self._interval_ema_s)
        if ep is not None and t_s - ep[1] > gap_s:
            ep = self._episode = None
        if self._episode_low:
            if ep is None:
                ep = self._episode = [t_s, t_s, t_s - self._t_before, 0.0, 0.0]
                self._episode_counted = False
            ep[1] = t_s
        if ep is not None:
            ep[3] += ratio
            ep[4] += 1.0

    def _episode_drop(self, t_s: float, ratio: float) -> bool:
        """Whether this sample makes its episode count as one separate drop.

        A drop lasts: an episode (low samples no more than confirm_s apart) counts once
        it has lasted confirm_s, a lone sample lasting its sampling interval (polled
        live: two low polls in a row at least), with the mean of all its samples below
        drop_ratio. A spike logged as a burst within a second never does, whatever the
        logging rule.
        """
        ep = self._episode
        if ep is None or self._episode_counted or not self._episode_low:
            return False
        # A recorded sample stands for the interval before it; a poll is an instant:
        # polled live, a drop lasts between low polls of its own.
        lasted_s = ep[1] - ep[0] + (0.0 if self.settings.polled_live else ep[2])
        if lasted_s < self.settings.confirm_s or ep[3] / ep[4] >= self.settings.drop_ratio:
            return False
        self._episode_counted = True
        return True

    def _slide_decided(self, smoothed: float) -> bool:
        """Whether a slide says "micro short" rather than "a lower half cycle".

        A half cycle 15 % below the last one can be activation, or a cell whose half
        cycles differ that much (a noisy liquid cell after an impedance sweep): a slide
        halts when it is deep (below slide_ratio - _SHALLOW_SLIDE) or when the half
        cycle is falling as it goes, as a micro short converging towards zero does.
        "Deep" is against where this half cycle was expected: a cell whose last two half
        cycles (or only one, in a young cell) each grew by 2 % or more over the one
        before (polarization growth, up to 3-5 % per half cycle at low current) is
        expected as far above its profile as the last one grew.
        """
        assert self._ref is not None
        scales = self._ref.scales
        deep = self.settings.slide_ratio - _SHALLOW_SLIDE
        # The growth to expect is the last half cycle's. One half cycle known (a young
        # cell) tells it only on the plateau: the first minutes of a young liquid
        # cell's half cycle still change shape from one to the next.
        known = len(scales) >= 2 or (len(scales) == 1 and self._late_n > 0)
        if known and min(scales[-2:]) > _MIN_GROWTH:
            deep *= min(scales[-1], _MAX_GROWTH)
        if smoothed < deep:
            return True
        if len(scales) >= _TREND_MIN_HALF_CYCLES:
            # A micro short that began in the half cycle before (in the other
            # direction) shows from this half cycle's first minutes: it starts well
            # below where this cell's half cycles have been landing, and no trend
            # within it is there yet to see.
            trend = sum(scales) / len(scales)
            if trend - smoothed > max(_TREND_SIGMAS * self._ref.spread, 2 * _SHALLOW_SLIDE):
                return True
        # "Falling" is a trend within the half cycle: the part before the window must
        # span slide_window_s of it, past the relaxation after a rest (a dip minutes
        # after an impedance sweep that recovers is no micro short).
        since_t = max(self._fall_from_t, self._seg_t0)
        if not self._window or self._window[0][0] - since_t < self.settings.slide_window_s:
            return False
        xx = self._fall_xx - self._window_xx
        if xx < self._window_xx:
            return False  # too little of the half cycle before the window to compare
        before = (self._fall_xy - self._window_xy) / xx
        assert self._ref is not None
        sigma_r = self._ref.sigma * self._gain
        noise = self.settings.pair_significance_sigmas * sigma_r / math.sqrt(self._window_xx)
        return before - smoothed > max(_WITHIN_FALL * before, noise)

    def _count(self, times: deque[float], t_s: float, beyond_doubt: bool) -> deque[float]:
        """Remember an excursion that stands out on its own; those within soft_window_s.

        A burst of samples from one short excursion (an instrument logging on change)
        is one: an excursion counts only confirm_s after the last one counted.
        """
        if beyond_doubt and (not times or t_s - times[-1] >= self.settings.confirm_s):
            times.append(t_s)
        while times and times[0] < t_s - self.settings.soft_window_s:
            times.popleft()
        return times

    def _collapse_halt(
        self,
        index: int,
        t_s: float,
        voltage_v: float,
        current_a: float,
        expected_v: float,
        ratio: float,
        against: str,
        run: tuple[int, float],
        subkind: str,
    ) -> Verdict:
        s = self.settings
        reference = against.format(f"{abs(expected_v) * 1e3:.2f} mV")
        return self._halt_with(
            index,
            t_s,
            "short",
            "collapse",
            voltage_v,
            expected_v,
            s.near_zero_ratio * abs(expected_v),
            f"|V| collapsed to {abs(voltage_v) * 1e3:.2f} mV under "
            f"{current_a * 1e3:+.3f} mA, {ratio:.2f}× {reference} "
            f"(threshold {s.near_zero_ratio:g}×), on {run[0]} samples over "
            f"{t_s - run[1]:.3g} s",
            subkind=subkind,
        )

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
            f"{n_drops} drop(s) within {s.soft_window_s / 3600:g} h" + self._lasted_note(t_s),
            subkind="soft",
        )

    def _lasted_note(self, t_s: float) -> str:
        """How long the drop lasted: its low samples in a row, or those of its dip."""
        run, t0 = self._low_run, self._low_t0
        if self._dip_low > run:
            run, t0 = self._dip_low, self._dip_t0
        return f", {run} low samples over {t_s - t0:.3g} s" if run >= 2 else ""

    def _slide_halt(
        self, index: int, t_s: float, voltage_v: float, expected_v: float, smoothed: float
    ) -> Verdict:
        return self._halt_with(
            index,
            t_s,
            "short",
            "slide",
            voltage_v,
            expected_v,
            self._slide_threshold * abs(expected_v),
            f"the overpotential slid to {smoothed:.2f}× the "
            f"{abs(expected_v) * 1e3:.2f} mV of the last healthy half cycle "
            f"(threshold {self._slide_threshold:.2f}×), on {self._slide_run} samples over "
            f"{t_s - self._slide_t0:.3g} s",
            subkind="micro",
        )

    def _slide_flush(self) -> float | None:
        """Move the drops that lasted into the slide window; its verdict."""
        for t_s, r_ohm, r_exp, raw in self._pending:
            self._slide_push(t_s, r_ohm, r_exp, raw)
        self._pending.clear()
        return self._slide_eval(self._window[-1][0])

    def _slide_push(self, t_s: float, r_ohm: float, r_exp: float, raw: bool) -> None:
        # One sample per half the usual interval: an instrument logging on change
        # samples an excursion (a liquid cell's flicker) densely and the flat stretches
        # around it once a minute, and the window is a level over time, not over samples.
        spacing_s = max(_STAT_SPACING_S, 0.5 * self._interval_ema_s)
        if self._window and t_s - self._window[-1][0] < spacing_s:
            return
        # The window's ratio is the least-squares scale between this half cycle and the
        # profile, sum(r·r_exp)/sum(r_exp²): each sample weighs by how far it stands out
        # of the noise (r_exp²), so samples near the zero crossing, whose ratio is
        # mostly noise, barely count.
        xy = r_ohm * r_exp
        xx = r_exp * r_exp
        self._window.append((t_s, xy, xx, raw))
        self._window_xy += xy
        self._window_xx += xx
        self._window_raw += raw

    def _slide_eval(self, t_s: float) -> float | None:
        """The slide window's scale if it says "slide" (trimmed to what the noise needs)."""
        s = self.settings
        window = self._window
        # Average only as many samples as the noise needs (a quiet cell answers within
        # a few samples; a noisy one within slide_window_s at most): the slide test
        # needs 6σ·√(about 2/n) to fit inside 1 - slide_ratio (see below).
        assert self._ref is not None
        margin = (1.0 - s.slide_ratio) / (s.significance_sigmas * self._relative_sigma or 1e-12)
        wanted = max(_SLIDE_MIN_SAMPLES, math.ceil(2.0 / (margin * margin)))
        # ... and over at least _SLIDE_MIN_SPAN_S: a slide is a trend, and a few samples
        # of a burst (an instrument logging on change) within a second are no trend.
        while (len(window) > wanted and window[1][0] <= t_s - _SLIDE_MIN_SPAN_S) or (
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
        sigma_r = self._ref.sigma * self._gain
        variance_share = (
            1.0 + raw_share + smooth_share * smooth_share * n / (n + _PROFILE_SMOOTHING - 1)
        )
        slide_noise = s.significance_sigmas * sigma_r * math.sqrt(variance_share / self._window_xx)
        # Half cycles of this cell differ from the last by its step spread: a slide must
        # stand out of that.
        if n >= _SLIDE_MIN_SAMPLES and abs(self._r_exp) >= 0.5 * self._ref.typical:
            # (Not near a zero crossing, where the fit's scale means little.)
            self._wd_n += 1
            delta = smoothed - self._wd_mean
            self._wd_mean += delta / self._wd_n
            self._wd_m2 += delta * (smoothed - self._wd_mean)
        wander = self._ref.wander
        if not self._ref.wanders and self._wd_n >= _WANDER_MIN_WINDOWS:
            # The profile knows no wander yet (the first half cycle of a test, or of a
            # stream joined part-way, is learnt without one): this half cycle's own so
            # far. A liquid cell's flicker otherwise reads as a slide to 0.85x in the
            # first half cycle judged, where nothing says the cell is noisy.
            wander = math.sqrt(self._wd_m2 / (self._wd_n - 1))
        threshold = self._slide_threshold = min(
            s.slide_ratio,
            1.0 - _SPREAD_SIGMAS * self._ref.step_spread,
            1.0 - _WANDER_SIGMAS * wander,
        )
        if n >= _SLIDE_MIN_SAMPLES and smoothed < threshold and 1.0 - smoothed > slide_noise:
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
