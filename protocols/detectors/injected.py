"""Faults written into real recordings of healthy cells.

The real corpus holds one real fault, so recall measured on real files alone rests on
one case. A healthy real Li|Li recording is its own healthy twin: :func:`inject` writes
a fault into its voltage from an onset on, with the shapes the simulators give each
fault, and labels it by the simulated corpus's rules
(:mod:`~cellguard.protocols.detectors.corpus`) with the real trace as the twin.

- ``short-hard``: |V| collapses to ~0.1 mV under current at once (a Li filament).
- ``short-soft``: |V| drops by about half within 1-5 min, then switches like a
  telegraph between that level and a lower one and may partly recover (Menkin et al.,
  Faraday Discuss. 2023; the reality corpus's shape).
- ``short-micro``: a shunt that grows: |V| slides towards zero by e every 1.5-6 h.
- ``depletion``: the electrode stripped at the onset has no Li left; while it has none
  and is stripped, |V| rises by 3-6.5 V with a time constant of 1-10 min, up to the
  instrument's range. Li plated back onto it can be stripped again (98 % of it).

What stays real is the background: the cell's own half-cycle shape, noise, wander,
spikes, impedance interruptions and logging. What is not real is the fault's own shape
(the one real short shows that), and the samples are the real file's: an instrument
logging on change would have written more of them while the voltage moved.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from cellguard.drivers.files import Recording, StepKind
from cellguard.protocols.detectors import _reality_effects as fx
from cellguard.protocols.detectors.corpus import OBSERVABLE_NOISE_SIGMAS, _drop_onset

__all__ = [
    "CUT_AFTER_S",
    "INJECTED_KINDS",
    "Injected",
    "InjectedKind",
    "inject",
    "onset_times",
    "view_onset_index",
]

FloatArray = npt.NDArray[np.float64]
InjectedKind = Literal["short-hard", "short-soft", "short-micro", "depletion"]
INJECTED_KINDS: tuple[InjectedKind, ...] = get_args(InjectedKind)

_S_PER_H = 3600.0
CUT_AFTER_S = 4.0 * _S_PER_H
"""How long after the onset an injected recording goes on: every fault here is
observable well within it (a micro short of τ = 6 h is at 0.51× after 4 h)."""
HARD_SHORT_V = 1e-4  # |V| of a hard short under the recording's usual current
_MICRO_TAU_S = (1.5 * _S_PER_H, 6.0 * _S_PER_H)
_DEPLETION_PLATEAU_V = (3.0, 6.5)
_DEPLETION_TAU_S = (60.0, 600.0)
_DEPLETION_CE = 0.98  # the share of Li plated back onto the empty electrode it can strip
# Samples this soon after a current step are not judged by the labels (the double
# layer and, in a real cell, the overpotential's own rise): the detectors' settle_s.
_SETTLE_S = 30.0


@dataclass(frozen=True)
class Injected:
    """A real recording with a fault written into it, and its labels.

    ``recording`` ends ``CUT_AFTER_S`` after ``onset_s`` (test time, s from the first
    sample), when the fault begins; ``start_index`` is the first sample at or after it
    and ``onset_index`` the first at which the fault is observable, by the simulated
    corpus's rules with the real trace as the twin (None: not within the recording).
    ``noise_v`` is the real trace's noise those rules used.
    """

    recording: Recording
    kind: InjectedKind
    onset_s: float
    seed: int
    start_index: int
    onset_index: int | None
    noise_v: float


def inject(
    recording: Recording,
    kind: str,
    onset_s: float,
    *,
    seed: int,
    voltage_range_v: float = 5.0,
    cut_after_s: float = CUT_AFTER_S,
) -> Injected:
    """``recording`` (a healthy Li|Li one) with a ``kind`` fault from test time
    ``onset_s`` on; the fault's own parameters are drawn from ``seed``."""
    if kind not in INJECTED_KINDS:
        msg = f"kind must be one of {', '.join(INJECTED_KINDS)}, got {kind!r}"
        raise ValueError(msg)
    t = recording.t_s - recording.t_s[0]
    if not 0.0 < onset_s < float(t[-1]):
        msg = f"onset_s must lie inside the recording (0-{float(t[-1]):.0f} s), got {onset_s!r}"
        raise ValueError(msg)
    end = int(np.searchsorted(t, onset_s + cut_after_s, side="right"))
    cut = _head(recording, end)
    t = t[:end]
    v = cut.voltage_v
    i = cut.current_a
    start = int(np.searchsorted(t, onset_s))
    judgeable = _judgeable(cut, t)
    flowing_after = np.flatnonzero(judgeable[start:])
    if flowing_after.size == 0:
        msg = f"no sample under current within {cut_after_s:.0f} s after onset_s={onset_s!r}"
        raise ValueError(msg)
    noise_v = _noise_v(v, judgeable)
    rng = np.random.default_rng(seed)
    after = np.zeros(len(t), dtype=bool)
    after[start:] = True
    if kind == "short-hard":
        typical_a = float(np.median(np.abs(i[judgeable])))
        out = np.where(after, i / typical_a * HARD_SHORT_V, v)
    elif kind in ("short-soft", "short-micro"):
        if kind == "short-soft":
            keep = fx.soft_short_keep(t, onset_s, rng)
        else:
            tau_s = rng.uniform(*_MICRO_TAU_S)
            keep = np.exp(-np.clip(t - onset_s, 0.0, None) / tau_s)
        out = v * keep
    else:
        sign = math.copysign(1.0, float(i[start + int(flowing_after[0])]))
        shift_v = _depletion_shift_v(t, i, start, onset_s, sign, rng)
        out = np.clip(v + sign * shift_v, -voltage_range_v, voltage_range_v)
    onset_index = _onset(kind, after & judgeable, out, v, noise_v)
    return Injected(
        recording=dataclasses.replace(cut, voltage_v=np.asarray(out, dtype=np.float64)),
        kind=kind,  # narrowed to InjectedKind by the check above
        onset_s=onset_s,
        seed=seed,
        start_index=start,
        onset_index=onset_index,
        noise_v=noise_v,
    )


def view_onset_index(fault: Injected, twin: Recording, view: Recording) -> int | None:
    """The fault's observable onset among the samples a lab ``view`` of it kept (an
    index into ``view``), by the same rules as ``fault.onset_index``; None when the
    view shows too little of it (a depletion whose run-out lasts the last 36 s of each
    half cycle, polled at the same point of every half cycle, is one sample in hours).

    ``view`` holds samples of ``fault.recording`` (a logging or polling subset, watched
    from any start); ``twin`` is the healthy recording the fault was written into.
    """
    whole = fault.recording
    at = np.searchsorted(whole.t_s, view.t_s)
    if at.size and (int(at[-1]) >= len(whole.t_s) or not np.array_equal(whole.t_s[at], view.t_s)):
        msg = "view must hold samples of the fault's recording"
        raise ValueError(msg)
    after = np.asarray(at >= fault.start_index)
    candidates = after & _judgeable(view, view.t_s)
    return _onset(fault.kind, candidates, view.voltage_v, twin.voltage_v[at], fault.noise_v)


def _onset(
    kind: str,
    candidates: npt.NDArray[np.bool_],
    out: FloatArray,
    twin_v: FloatArray,
    noise_v: float,
) -> int | None:
    """The observable onset among ``candidates`` (judgeable, at or after the fault's
    start): the simulated corpus's rules, with the real trace as the twin."""
    if kind == "short-hard":
        hits = np.flatnonzero(candidates)
        return int(hits[0]) if hits.size else None
    if kind in ("short-soft", "short-micro"):
        return _drop_onset(candidates, out, twin_v, noise_v, soft=kind == "short-soft")
    # (A depletion: the shift out of the noise, on a second sample.)
    seen = np.flatnonzero(candidates & (np.abs(out - twin_v) > OBSERVABLE_NOISE_SIGMAS * noise_v))
    return int(seen[1]) if seen.size >= 2 else None


def onset_times(first_s: float, last_s: float, count: int, seed: int) -> list[float]:
    """``count`` onsets between ``first_s`` and ``last_s``: one drawn at random in each
    of ``count`` equal spans, so they cover the test and fall anywhere in a half cycle."""
    if not (0.0 <= first_s < last_s and count > 0):
        msg = f"need 0 <= first_s < last_s and count > 0, got {first_s!r}, {last_s!r}, {count!r}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    span_s = (last_s - first_s) / count
    return [first_s + (k + float(rng.random())) * span_s for k in range(count)]


def _head(recording: Recording, end: int) -> Recording:
    def cut(column: npt.NDArray[np.generic] | None) -> npt.NDArray[np.generic] | None:
        return None if column is None else column[:end]

    return dataclasses.replace(
        recording,
        t_s=recording.t_s[:end],
        voltage_v=recording.voltage_v[:end],
        current_a=recording.current_a[:end],
        step=cut(recording.step),  # type: ignore[arg-type]
        cycle=cut(recording.cycle),  # type: ignore[arg-type]
        step_kind=cut(recording.step_kind),  # type: ignore[arg-type]
    )


def _judgeable(recording: Recording, t: FloatArray) -> npt.NDArray[np.bool_]:
    """Samples under constant current, ``_SETTLE_S`` or more after the current's last
    step (a reversal, a rest, an impedance scan, a new step)."""
    i = recording.current_a
    flowing = i != 0.0
    kinds = recording.step_kind
    if kinds is not None:
        flowing &= (kinds == StepKind.CC) | (kinds == StepKind.UNKNOWN)
    marks = np.sign(i) * flowing
    new = np.ones(len(t), dtype=bool)
    new[1:] = marks[1:] != marks[:-1]
    if recording.step is not None:
        new[1:] |= recording.step[1:] != recording.step[:-1]
    seg_start_s = np.maximum.accumulate(np.where(new, t, -np.inf))
    judgeable: npt.NDArray[np.bool_] = flowing & (t - seg_start_s >= _SETTLE_S)
    return judgeable


def _noise_v(v: FloatArray, judgeable: npt.NDArray[np.bool_]) -> float:
    """σ of one sample from successive differences of judgeable samples (robust: the
    median absolute deviation, so spikes and the half cycles' slow shape do not count)."""
    pair = judgeable[1:] & judgeable[:-1]
    d = np.diff(v)[pair]
    if d.size == 0:
        return 0.0
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(2.0)


def _depletion_shift_v(
    t: FloatArray, i: FloatArray, start: int, onset_s: float, sign: float,
    rng: np.random.Generator,
) -> FloatArray:  # fmt: skip
    """The rise of |V| while the electrode stripped under current of ``sign`` is empty.

    It runs out at ``onset_s``. Li plated back onto it is stripped first (98 % of it);
    the rise starts again from zero whenever the current stops or reverses (it is an
    overpotential), and whenever the electrode runs out again.
    """
    plateau_v = rng.uniform(*_DEPLETION_PLATEAU_V)
    tau_s = rng.uniform(*_DEPLETION_TAU_S)
    shift = np.zeros(len(t))
    li_c = 0.0
    empty_since_s: float | None = onset_s
    for k in range(start, len(t)):
        dt_s = float(t[k]) - (float(t[k - 1]) if k > start else onset_s)
        along_a = float(i[k]) * sign
        if along_a > 0.0:  # stripping the thin electrode
            if empty_since_s is None:
                if li_c > along_a * dt_s:
                    li_c -= along_a * dt_s
                    continue
                empty_since_s = float(t[k]) - dt_s + li_c / along_a
                li_c = 0.0
            shift[k] = plateau_v * -math.expm1(-(float(t[k]) - empty_since_s) / tau_s)
            continue
        if along_a < 0.0:  # plating back onto it
            li_c -= _DEPLETION_CE * along_a * dt_s
        empty_since_s = None
    return shift
