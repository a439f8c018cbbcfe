"""What every detector speaks: settings in, verdicts out.

A detector is a small, pure, deterministic object fed one sample at a time (live) or
a batch of arrays (replayed files); both paths give the same verdicts. No I/O and no
clock reads: time is the sample's own ``t_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from cellguard.drivers.errors import ConfigError

Severity = Literal["ok", "warn", "halt"]
CellProfile = Literal["symmetric", "asymmetric", "full"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement on one sample.

    ``ok`` verdicts are the shared :data:`OK` object (no allocation per sample). A warn
    or halt names its ``kind`` (``depletion``, ``voltage_shift``, ``short``, ``limit``),
    the ``criterion`` that fired, the ``measured`` value against the ``baseline`` and
    the ``threshold`` (units in ``unit``), and a sentence a researcher can read.
    """

    severity: Severity
    kind: str = ""
    subkind: str = ""  # e.g. "hard", "soft", "micro" for shorts
    index: int = -1  # 0-based index of the sample in the stream fed so far
    t_s: float = math.nan
    criterion: str = ""
    measured: float = math.nan
    baseline: float = math.nan
    threshold: float = math.nan
    unit: str = ""
    detail: str = ""

    @property
    def is_halt(self) -> bool:
        return self.severity == "halt"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (NaN becomes None)."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "kind": self.kind,
            "subkind": self.subkind or None,
            "severity": self.severity,
            "time_s": clean(self.t_s),
            "index": self.index,
            "criterion": self.criterion,
            "measured": clean(self.measured),
            "baseline": clean(self.baseline),
            "threshold": clean(self.threshold),
            "unit": self.unit,
            "detail": self.detail,
        }


OK = Verdict("ok")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(field=name, problem=f"must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class DetectorSettings:
    """Thresholds in physical units or ratios; defaults derived from the physics.

    Li|Li cells (``symmetric``/``asymmetric``): the detector learns the cell's own
    apparent resistance |V/I| along each half cycle, per current direction, and
    judges every sample by ``ratio`` = (V/I) / (the same at the same point of the last
    healthy half cycle in that direction). Healthy cells stay within ±10 % between
    half cycles (day/night drift, slow growth or "activation" are far slower).

    ``full`` cells: the voltage window and sudden collapses (no ratio learning).
    """

    cell: CellProfile = "asymmetric"
    voltage_range_v: float = 5.0
    # The range is the backstop: at |V| >= range_fraction x range the channel halts at
    # once (the instrument's own limit would trip a moment later anyway).
    range_fraction: float = 0.98
    # Depletion / voltage shift: ratio above shift_ratio and at least shift_floor_v
    # above the expected voltage, on two consecutive samples.
    shift_ratio: float = 2.0
    shift_floor_v: float = 0.015
    # Evidence halts only when it lasts: two samples (three for a short judged without
    # history) spanning at least confirm_s. An instrument that logs on each 10 mV change
    # sends a 3 ms spike as a burst of samples < 1 ms apart; no burst spans confirm_s.
    confirm_s: float = 1.0
    # Shorts: below drop_ratio is a drop (soft-short evidence), below near_zero_ratio
    # a collapse; two consecutive low samples, or two partial drops within
    # soft_window_s, halt. A single low sample is a glitch until confirmed: warn.
    drop_ratio: float = 0.62
    near_zero_ratio: float = 0.08
    soft_window_s: float = 12 * 3600.0
    # Micro short: the half cycle's scale against the profile (a least-squares fit over
    # as many samples as the noise needs, at most slide_window_s) below slide_ratio on
    # two samples. Every ratio criterion must also stand out of the cell's own noise
    # by significance_sigmas (the noise is learnt per direction from each half cycle).
    slide_ratio: float = 0.85
    slide_window_s: float = 300.0
    significance_sigmas: float = 6.0
    pair_significance_sigmas: float = 4.0
    # A short without any history: |V/I| below hard_short_ohm under a steady current of
    # at least hard_short_min_current_a. Healthy Li|Li cells of these areas sit at
    # several ohms or more (solid electrolytes: tens to thousands); a metallic short
    # at a fraction of an ohm. Below 50 µA a healthy cell's |V| is within 0.1 mV of a
    # short's, so the profile (which knows the cell) judges there.
    hard_short_ohm: float = 1.0
    hard_short_min_current_a: float = 5e-5
    # Samples with |I| below this fraction of the half cycle's current are rest or a
    # reversal in progress and are not judged as Li|Li overpotential.
    rest_fraction: float = 0.05
    rest_current_a: float = 1e-7
    # A half cycle is one direction at one current: a change of |I| by more than this
    # fraction is a new segment (a CCD step, a rate step; an impedance sweep's current
    # never holds still long enough to make one). Profiles are kept per current level.
    level_tolerance: float = 0.1
    # A segment's own level: the mean V/I over self_ref_s, ending self_lag_s before the
    # sample, counted from self_settle_s into the segment (past a nucleation spike and
    # the relaxation). Judges what has no profile: a test that never reverses.
    self_settle_s: float = 600.0
    self_lag_s: float = 120.0
    self_ref_s: float = 1800.0
    # Within settle_s of a reversal or a rest the double layer relaxes (the zero
    # crossing): only a flat collapse or a shift is judged there.
    settle_s: float = 30.0
    # ... when the profile's half cycle began the same way (both from a reversal, or
    # both from rest), its own transient matches and a shorter wait suffices.
    settle_like_s: float = 5.0
    # ... and after a pause in the middle of a half cycle: the overpotential builds up
    # again from its ohmic part over minutes (concentration polarization rebuilds).
    resume_settle_s: float = 600.0
    # True when the first sample fed is the start of a half cycle (a test cellguard
    # started, a file replayed from its beginning); False when watching starts in the
    # middle of one (monitor mode, a restart): then the first segment is not learnt.
    stream_starts_at_reversal: bool = True
    # True when the samples are live polls on the PC's clock (a Neware ``inquire``, a
    # Modbus or serial present value), blind to the instrument's steps: the first
    # sample after a reversal comes anywhere from 0 to one poll interval after it, and
    # the polls' phase drifts with the clock's error. False for recorded samples,
    # whose first after a step change is at it.
    polled_live: bool = False
    # A longer silence between two samples is a gap (link outage, paused stream).
    max_gap_s: float = 900.0
    # Ratios are meaningless below this expected |V| (noise and 0.1 mV resolution).
    min_expected_v: float = 0.5e-3
    # Full cells: the window the chemistry must stay in, and what a collapse is.
    full_v_min_v: float = 1.0
    full_v_max_v: float = 4.6
    full_collapse_v: float = 0.5
    full_drop_v: float = 0.3  # a fall this large between two samples at constant current
    # The window is left beyond this margin: the cut-off itself, and the few mV an
    # instrument overshoots it by, are how a step ends.
    full_window_margin_v: float = 0.05
    overrides: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.cell not in ("symmetric", "asymmetric", "full"):
            raise ConfigError(
                field="cell", problem=f"must be symmetric, asymmetric or full, got {self.cell!r}"
            )
        for name in (
            "voltage_range_v",
            "shift_ratio",
            "shift_floor_v",
            "drop_ratio",
            "near_zero_ratio",
            "soft_window_s",
            "confirm_s",
            "hard_short_ohm",
            "hard_short_min_current_a",
            "level_tolerance",
            "self_settle_s",
            "self_lag_s",
            "self_ref_s",
            "slide_ratio",
            "slide_window_s",
            "significance_sigmas",
            "pair_significance_sigmas",
            "rest_fraction",
            "rest_current_a",
            "settle_s",
            "settle_like_s",
            "resume_settle_s",
            "min_expected_v",
            "max_gap_s",
            "full_collapse_v",
            "full_drop_v",
            "full_window_margin_v",
        ):
            _positive(name, getattr(self, name))
        if not 0 < self.range_fraction <= 1:
            raise ConfigError(field="range_fraction", problem="must be in (0, 1]")
        if not self.near_zero_ratio < self.drop_ratio < self.slide_ratio < 1 < self.shift_ratio:
            raise ConfigError(
                field="drop_ratio",
                problem="need near_zero_ratio < drop_ratio < slide_ratio < 1 < shift_ratio",
            )
        if not self.full_v_min_v < self.full_v_max_v:
            raise ConfigError(field="full_v_min_v", problem="must be below full_v_max_v")


class Detector(Protocol):
    """A streaming judge of one channel."""

    settings: DetectorSettings

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
        """Judge one sample (in order); :data:`OK` when nothing is wrong.

        ``step`` is the instrument's step number and ``kind`` a
        :class:`~cellguard.drivers.files.StepKind` code, where the source tells them.
        ``step_time_s``, the time within the running step, is what a live poll adds:
        a poll that misses a short step between two runs of the same step number
        (a loop) still sees a new step where it goes back (:class:`StepRuns`).
        """
        ...

    def feed_batch(
        self,
        t_s: FloatArray,
        voltage_v: FloatArray,
        current_a: FloatArray,
        step: IntArray | None = None,
        cycle: IntArray | None = None,
        step_kind: IntArray | None = None,
    ) -> list[Verdict]:
        """Judge many samples in order; the warn/halt verdicts, as ``feed`` would give."""
        ...

    @property
    def samples(self) -> int:
        """Samples judged so far."""
        ...

    @property
    def halt(self) -> Verdict | None:
        """The halt verdict, once given (the detector then judges nothing more)."""
        ...
