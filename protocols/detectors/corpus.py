"""A labelled corpus of simulated Li|Li traces: cells that fail, and cells that must not halt.

Every trace is a :class:`~cellguard.drivers.sim.SimCell` driven by a galvanostatic
square wave (first half cycle positive, i.e. stripping the working electrode, 1 h per
half cycle at 0.1, 0.5 or 1.0 mA cm⁻² on a 0.785 cm² disc), optionally with rest
periods between half cycles, sampled every ``interval_s`` (1, 10, 30 or 60 s) with
20, 50 or 200 µV of instrument noise. :func:`generate` is deterministic: the same
arguments give the same traces, bit for bit.

What the instrument records is then made realistic by post-processing, on every trace:

* **Reversal transient.** At every current step (reversal, start or end of a rest, and
  the start of cycling from open circuit, where ``V_before`` is 0 V) the
  double layer discharges: ``V_obs(t) = V(t) + (V_before − V_after)·exp(−(t − t_step)/τ)``
  with ``τ`` drawn in 2–10 s per trace (visible at 1 s sampling, invisible at 60 s).
  ``V_before`` / ``V_after`` are the simulator's voltages at the last sample before and
  the first sample after the step.
* **Range.** The voltage is clipped to the CT-4008's ±5 V.
* On the families that call for them: single-sample **glitches** (one sample to 0 V or
  to ±1–3 V; never two within 24 h of each other) and **reversed leads** (the sign of
  the voltage flipped for the whole trace, the current unchanged).

Families (``Case.family``). Faults: ``depletion`` (asymmetric MII-1/MII-2 cells with a
thin working electrode sized so Li runs out after at least two full cycles),
``short-hard``, ``short-soft``, ``short-micro`` (explicit
:class:`~cellguard.drivers.sim.ShortSpec`, every interphase, symmetric and asymmetric
cells). Fault traces start with the cycling, fail after at least two full cycles and end
about 3 h after the onset (or 1 h after the observable onset, whichever is later).
Non-faults, which must never halt: ``polarization-growth`` (MII-1 symmetric, ≥ 100 h
except at 1 s), ``activation`` (MII-2 symmetric, 0–150 h), ``healthy`` (SEI/MII-3,
symmetric and asymmetric), ``reversal`` (1 and 10 s sampling, the transient above at
its most visible), ``rest`` (5–30 min at zero current between half cycles),
``temperature`` (±10 % day/night drift over days), ``glitch`` and ``reversed-leads``.
Traces at 1 s stay below ~100 000 samples.

Labels — the definition the benchmark uses:

* ``physical_onset_index``: the first sample at or after the simulator's fault start.
  Depletion: the first sample at which ``SimCell.depleted`` is true (the working
  electrode is empty while Li is stripped from it). Short: the first sample whose time
  is at or after ``ShortSpec.onset_h``. A halt before it is a false halt.
* ``onset_index``: the first sample at which the fault is *observable* in the data,
  i.e. distinguishable from every non-fault family. It compares the trace with its
  healthy counterfactual, a twin cell with the same spec and seed but
  ``never_short=True`` (so the same noise draws), post-processed the same way. Only
  *judgeable* samples count: current flowing (not rest) and at least 3τ after the
  last current step (the reversal transient has decayed below 5 %).

  - depletion: the **second** judgeable sample at which the working electrode is
    empty while stripped (one shifted sample alone is indistinguishable from a
    glitch to volts: at 60 s sampling this is usually the physical onset + 1);
  - hard short: the first judgeable sample at or after the physical onset;
  - soft short: the **second** judgeable sample at or after the physical onset with
    ``|V| < 0.6·|V_twin|`` (one low sample alone is indistinguishable from a glitch);
  - micro short: the first judgeable sample at or after the physical onset with
    ``|V| < 0.8·|V_twin|``.

  For soft and micro shorts a sample counts only if the deficit ``|V_twin| − |V|`` is
  also more than 4× the instrument noise: a smaller deficit could be noise, and no
  detector can be asked to call it without false halts (this matters at 0.1 mA cm⁻²
  with 200 µV of noise, where the whole overpotential is 1.5–3 mV). The second low
  sample of a soft short counts when it follows the first at once, or, further away,
  when both deficits exceed 6× the noise: over a long trace a lone 4σ dip recurs by
  chance, so two separated ones do not yet tell a short from noise.

Healthy cases have both indices ``None``. ``held_out=True`` gives a disjoint set: odd
cell seeds instead of even ones and parameters drawn from a different stream. Nobody
tunes on it.

What real recordings add (one-direction protocols, logging on change, impedance sweeps,
fresh cells, pauses, full-cell formation, µA garnet cells, real soft shorts) is in
:mod:`cellguard.protocols.detectors.corpus_reality`:
``generate_reality(seed, held_out=, quick=)`` gives those cases, of this same
:class:`Case` type; this module's cases do not change.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cellguard.drivers.sim import LI_MAH_CM2_PER_UM, ShortKind, ShortSpec, SimCell, SimCellSpec
from cellguard.drivers.sim import interphase as interphase_model

__all__ = [
    "AREA_CM2",
    "FAULT_FAMILIES",
    "HALF_CYCLE_S",
    "NON_FAULT_FAMILIES",
    "VOLTAGE_RANGE_V",
    "Case",
    "generate",
]

CellKind = Literal["symmetric", "asymmetric", "full"]
Fault = Literal["depletion", "short"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

AREA_CM2 = 0.785
"""Electrode area of every simulated cell (cm²): a 10 mm disc."""
HALF_CYCLE_S = 3600.0
"""Every half cycle lasts 1 h: 0.1/0.1, 0.5/0.5 and 1.0/1.0 (mA cm⁻² / mAh cm⁻²)."""
VOLTAGE_RANGE_V = 5.0
"""The instrument's range (V): recorded voltages are clipped to ±this."""

FAULT_FAMILIES = ("depletion", "short-hard", "short-soft", "short-micro")
NON_FAULT_FAMILIES = (
    "polarization-growth",
    "activation",
    "healthy",
    "reversal",
    "rest",
    "temperature",
    "glitch",
    "reversed-leads",
)

INTERVALS_S = (1.0, 10.0, 30.0, 60.0)
NOISES_V = (20e-6, 50e-6, 200e-6)
DENSITIES_MA_CM2 = (0.1, 0.5, 1.0)

SOFT_OBSERVABLE_RATIO = 0.6
OBSERVABLE_NOISE_SIGMAS = 4.0
SEPARATE_DROP_NOISE_SIGMAS = 6.0
MICRO_OBSERVABLE_RATIO = 0.8
SETTLE_TAUS = 3.0
"""Samples closer than this many τ after a current step are not judgeable."""

_S_PER_H = 3600.0
_MAX_SAMPLES = 100_000
_AFTER_ONSET_S = 3 * _S_PER_H
_AFTER_OBSERVABLE_S = 1 * _S_PER_H
_EXTEND_S = 1 * _S_PER_H
_GLITCH_SPACING_S = 24 * _S_PER_H
# A soft short turns hard 10 h after its onset, so it is observable by then.
_MAX_OBSERVABLE_WAIT_S = 11 * _S_PER_H


@dataclass(frozen=True, eq=False)
class Case:
    """One labelled trace. Arrays are float64 (``t_s``, ``voltage_v``, ``current_a``) or
    int64 (``step``, ``cycle``), all of the same length; see the module docstring for the
    label definitions. ``eq=False``: cases compare by identity (arrays have no truth value).
    """

    name: str
    family: str
    t_s: FloatArray
    voltage_v: FloatArray
    current_a: FloatArray
    step: IntArray
    cycle: IntArray
    cell: CellKind
    fault: Fault | None
    subkind: ShortKind | None
    physical_onset_index: int | None
    onset_index: int | None
    interval_s: float
    current_density_ma_cm2: float
    noise_v: float
    held_out: bool
    # Provenance, for reading a failure and for the tests.
    interphase: str = ""
    li_working_um: float = 100.0
    seed: int = 0
    reversal_tau_s: float = 0.0
    rest_s: float = 0.0
    temperature_swing: float = 0.0
    glitch_indices: tuple[int, ...] = ()
    reversed_leads: bool = False
    # Added by the reality families (corpus_reality); the classic cases keep the defaults.
    step_kind: IntArray | None = None
    """Per-sample :class:`~cellguard.drivers.files.StepKind` code where the source says
    what each step was (``UNKNOWN`` = 0 throughout where it does not), ``None`` where
    the source has no such column at all."""
    protocol: str = "square-wave"
    """What the channel ran: ``square-wave``, ``plating``, ``hold``, ``ccd-same``..."""
    v_min_v: float | None = None
    """The protocol's voltage window (full cells); ``None``: the instrument's range."""
    v_max_v: float | None = None
    log_dv_v: float = 0.0
    """Logging on change (EC-Lab dE, V): a point whenever V moved this much, or after
    ``interval_s``; 0 for a fixed interval."""

    @property
    def is_fault(self) -> bool:
        return self.fault is not None

    @property
    def area_cm2(self) -> float:
        return AREA_CM2


@dataclass(frozen=True)
class _Plan:
    family: str
    cell: CellKind
    interphase: str
    li_working_um: float
    seed: int
    interval_s: float
    density_ma_cm2: float
    noise_v: float
    temperature_swing: float
    rest_s: float
    tau_s: float
    fault: Fault | None = None
    subkind: ShortKind | None = None
    onset_h: float = math.nan
    """Short: the onset. Depletion: the earliest time the thin electrode may run out."""
    duration_s: float = 0.0
    glitches: bool = False
    reversed_leads: bool = False

    @property
    def current_a(self) -> float:
        return self.density_ma_cm2 * 1e-3 * AREA_CM2

    @property
    def period_s(self) -> float:
        return 2 * (HALF_CYCLE_S + self.rest_s)

    def spec(self, *, twin: bool = False) -> SimCellSpec:
        short = None
        if self.fault == "short" and not twin:
            assert self.subkind is not None
            short = ShortSpec(self.subkind, self.onset_h)
        return SimCellSpec(
            interphase=self.interphase,
            area_cm2=AREA_CM2,
            li_working_um=self.li_working_um,
            short=short,
            never_short=short is None,
            noise_v=self.noise_v,
            temperature_swing=self.temperature_swing,
        )


class _Sampler:
    """Square wave with optional rests, sampled every ``interval_s``, for cells in lockstep.

    A step that straddles a current change is split there, so the charge is exact;
    each sample records the current that flowed at its moment (a sample exactly on a
    boundary belongs to the segment that ends there).
    """

    def __init__(self, cells: list[SimCell], plan: _Plan) -> None:
        self._cells = cells
        current_a = plan.current_a
        pattern: list[float] = [current_a]
        durations: list[float] = [HALF_CYCLE_S]
        if plan.rest_s > 0:
            pattern.append(0.0)
            durations.append(plan.rest_s)
        pattern.append(-current_a)
        durations.append(HALF_CYCLE_S)
        if plan.rest_s > 0:
            pattern.append(0.0)
            durations.append(plan.rest_s)
        self._currents = pattern
        self._ends = list(np.cumsum(durations).tolist())
        self._period_s = self._ends[-1]
        self._interval_s = plan.interval_s
        self._t_s = 0.0
        self.t: list[float] = []
        self.i: list[float] = []
        self.step: list[int] = []
        self.cycle: list[int] = []
        self.v: list[list[float]] = [[] for _ in cells]
        self.depleted: list[bool] = []

    def _segment(self, t_s: float) -> tuple[int, int, float]:
        cycle = int(t_s // self._period_s)
        offset_s = t_s - cycle * self._period_s
        for seg, end_s in enumerate(self._ends):
            if offset_s < end_s:
                return cycle, seg, cycle * self._period_s + end_s
        return cycle + 1, 0, (cycle + 1) * self._period_s + self._ends[0]

    def boundaries(self, until_s: float) -> FloatArray:
        """Times of every current step before ``until_s``, the start (0 s) included."""
        out: list[float] = [0.0]
        cycle = 0
        while True:
            base_s = cycle * self._period_s
            for end_s in self._ends:
                b = base_s + end_s
                if b >= until_s:
                    return np.asarray(out, dtype=np.float64)
                out.append(b)
            cycle += 1

    def run_until(self, end_s: float) -> None:
        cells = self._cells
        dt_s = self._interval_s
        currents = self._currents
        k = len(self.t)
        t_s = self._t_s
        while (k + 1) * dt_s <= end_s + 1e-9:
            k += 1
            te_s = k * dt_s
            while True:
                cycle, seg, seg_end_s = self._segment(t_s)
                cur = currents[seg]
                if te_s <= seg_end_s + 1e-9:
                    for cell, vs in zip(cells, self.v, strict=True):
                        vs.append(cell.advance(te_s - t_s, cur))
                    break
                for cell in cells:
                    cell.advance(seg_end_s - t_s, cur)
                t_s = seg_end_s
            t_s = te_s
            self.t.append(te_s)
            self.i.append(cur)
            self.step.append(seg + 1)
            self.cycle.append(cycle + 1)
            self.depleted.append(cells[0].depleted)
            if k > _MAX_SAMPLES * 1.05:
                msg = f"corpus trace grew past {_MAX_SAMPLES} samples: plan the onset earlier"
                raise RuntimeError(msg)
        self._t_s = t_s

    @property
    def t_s(self) -> float:
        return self._t_s


def _with_transients(t: FloatArray, v: FloatArray, bounds: FloatArray, tau_s: float) -> FloatArray:
    """The double-layer transient after every current step (see the module docstring).

    The first step, at t = 0, starts from open circuit: ``V_before`` is 0 V.
    """
    out = v.copy()
    last_before = np.searchsorted(t, bounds, side="right") - 1
    for b_s, k in zip(bounds.tolist(), last_before.tolist(), strict=True):
        if k + 1 >= len(t):
            continue
        v_before = float(v[k]) if k >= 0 else 0.0
        stop = int(np.searchsorted(t, b_s + 30.0 * tau_s, side="right"))
        seg = slice(k + 1, max(stop, k + 2))
        out[seg] += (v_before - v[k + 1]) * np.exp(-(t[seg] - b_s) / tau_s)
    return out


def _judgeable(
    t: FloatArray, i: FloatArray, bounds: FloatArray, tau_s: float
) -> npt.NDArray[np.bool_]:
    last = np.searchsorted(bounds, t, side="left") - 1
    since_s = np.where(last >= 0, t - bounds[np.maximum(last, 0)], np.inf)
    judgeable: npt.NDArray[np.bool_] = (i != 0.0) & (since_s >= SETTLE_TAUS * tau_s)
    return judgeable


def _labels(
    plan: _Plan,
    t: FloatArray,
    v_obs: FloatArray,
    twin_obs: FloatArray | None,
    judge: npt.NDArray[np.bool_],
    depleted: npt.NDArray[np.bool_],
) -> tuple[int | None, int | None]:
    if plan.fault == "depletion":
        hits = np.flatnonzero(depleted)
        if hits.size == 0:
            return None, None
        # One shifted sample alone is indistinguishable from a glitch to volts: the
        # depletion is observable at its second judgeable depleted sample.
        seen = np.flatnonzero(depleted & judge)
        return int(hits[0]), int(seen[1]) if seen.size >= 2 else None
    phys_hits = np.flatnonzero(t >= plan.onset_h * _S_PER_H - 1e-6)
    if phys_hits.size == 0:
        return None, None
    phys = int(phys_hits[0])
    after = np.zeros(len(t), dtype=bool)
    after[phys:] = True
    if plan.subkind == "hard":
        hits = np.flatnonzero(after & judge)
        return phys, int(hits[0]) if hits.size else None
    assert twin_obs is not None
    # Observable also means out of the noise: a deficit under NOISE_SIGMAS x the
    # instrument noise could be noise, and no detector can call it without false halts.
    return phys, _drop_onset(
        after & judge, v_obs, twin_obs, plan.noise_v, soft=plan.subkind == "soft"
    )


def _drop_onset(
    candidates: npt.NDArray[np.bool_],
    v_obs: FloatArray,
    twin_obs: FloatArray,
    noise_v: float,
    *,
    soft: bool,
) -> int | None:
    """The observable onset of a soft (or micro) short among the ``candidates`` samples
    (judgeable, at or after the physical onset); see the module docstring."""
    ratio = SOFT_OBSERVABLE_RATIO if soft else MICRO_OBSERVABLE_RATIO
    deficit_v = np.abs(twin_obs) - np.abs(v_obs)
    low = (
        candidates
        & (np.abs(v_obs) < ratio * np.abs(twin_obs))
        & (deficit_v > OBSERVABLE_NOISE_SIGMAS * noise_v)
    )
    hits = np.flatnonzero(low)
    if not soft:
        return int(hits[0]) if hits.size else None
    # A soft short is told from glitches and noise by a second drop: right after the
    # first (two consecutive low samples), or anywhere later if both stand far out of
    # the noise (a lone 4σ dip recurs by chance over a long trace; a 6σ one does not).
    pair = np.flatnonzero(low[1:] & low[:-1]) + 1
    clear = np.flatnonzero(low & (deficit_v > SEPARATE_DROP_NOISE_SIGMAS * noise_v))
    found = [int(pair[0])] if pair.size else []
    if clear.size >= 2:
        found.append(int(clear[1]))
    return min(found) if found else None


def _simulate(plan: _Plan, name: str, held_out: bool) -> Case:
    cells = [SimCell(plan.spec(), plan.seed)]
    if plan.fault == "short":
        cells.append(SimCell(plan.spec(twin=True), plan.seed))
    sampler = _Sampler(cells, plan)

    def observed() -> tuple[FloatArray, FloatArray, FloatArray, FloatArray | None, FloatArray]:
        t = np.asarray(sampler.t, dtype=np.float64)
        i = np.asarray(sampler.i, dtype=np.float64)
        bounds = sampler.boundaries(float(t[-1]))
        v = _with_transients(t, np.asarray(sampler.v[0], dtype=np.float64), bounds, plan.tau_s)
        twin = None
        if len(sampler.v) > 1:
            twin_raw = np.asarray(sampler.v[1], dtype=np.float64)
            twin = _with_transients(t, twin_raw, bounds, plan.tau_s)
        return t, i, v, twin, bounds

    phys: int | None = None
    onset: int | None = None
    if plan.fault is None:
        sampler.run_until(plan.duration_s)
        t, i, v, _, bounds = observed()
        if any(sampler.depleted) or cells[0].shorted:
            msg = f"{name}: a non-fault plan depleted or shorted"
            raise RuntimeError(msg)
    else:
        if plan.fault == "depletion":
            while not any(sampler.depleted):
                sampler.run_until(sampler.t_s + _EXTEND_S)
            start_s = sampler.t[sampler.depleted.index(True)]
        else:
            start_s = plan.onset_h * _S_PER_H
        sampler.run_until(start_s + _AFTER_ONSET_S)
        while True:
            t, i, v, twin, bounds = observed()
            judge = _judgeable(t, i, bounds, plan.tau_s)
            phys, onset = _labels(plan, t, v, twin, judge, np.asarray(sampler.depleted))
            if onset is not None:
                break
            if sampler.t_s > start_s + _MAX_OBSERVABLE_WAIT_S:
                msg = f"{name}: the fault never became observable"
                raise RuntimeError(msg)
            sampler.run_until(sampler.t_s + _EXTEND_S)
        if phys is None or onset < phys:
            msg = f"{name}: inconsistent labels {phys=} {onset=}"
            raise RuntimeError(msg)
        if float(t[onset]) + _AFTER_OBSERVABLE_S > sampler.t_s:
            sampler.run_until(float(t[onset]) + _AFTER_OBSERVABLE_S)
            t, i, v, twin, bounds = observed()
        if plan.fault == "short" and any(sampler.depleted):
            msg = f"{name}: a short plan depleted too; use a thicker working electrode"
            raise RuntimeError(msg)

    v = np.clip(v, -VOLTAGE_RANGE_V, VOLTAGE_RANGE_V)
    glitch_indices: tuple[int, ...] = ()
    if plan.glitches:
        glitch_indices = _add_glitches(v, t, i, random.Random(plan.seed ^ 0x5EED))
    if plan.reversed_leads:
        v = -v
    return Case(
        name=name,
        family=plan.family,
        t_s=t,
        voltage_v=v,
        current_a=i,
        step=np.asarray(sampler.step, dtype=np.int64),
        cycle=np.asarray(sampler.cycle, dtype=np.int64),
        cell=plan.cell,
        fault=plan.fault,
        subkind=plan.subkind,
        physical_onset_index=phys,
        onset_index=onset,
        interval_s=plan.interval_s,
        current_density_ma_cm2=plan.density_ma_cm2,
        noise_v=plan.noise_v,
        held_out=held_out,
        interphase=plan.interphase,
        li_working_um=plan.li_working_um,
        seed=plan.seed,
        reversal_tau_s=plan.tau_s,
        rest_s=plan.rest_s,
        temperature_swing=plan.temperature_swing,
        glitch_indices=glitch_indices,
        reversed_leads=plan.reversed_leads,
    )


def _add_glitches(
    v: FloatArray, t: FloatArray, i: FloatArray, rng: random.Random
) -> tuple[int, ...]:
    """One glitch per 24 h at most, each a single sample under current, in place."""
    out: list[int] = []
    earliest_s = 2 * _S_PER_H + rng.uniform(0.0, 6 * _S_PER_H)
    while earliest_s < t[-1]:
        k = int(np.searchsorted(t, earliest_s))
        while k < len(t) and i[k] == 0.0:
            k += 1
        if k >= len(t) - 1:
            break
        kind = rng.random()
        if kind < 1 / 3:
            v[k] = 0.0
        else:
            v[k] = rng.choice((-1.0, 1.0)) * rng.uniform(1.0, 3.0)
        out.append(k)
        earliest_s = float(t[k]) + _GLITCH_SPACING_S + rng.uniform(60.0, 4 * _S_PER_H)
    return tuple(out)


# -- the plans ------------------------------------------------------------------------


class _Draw:
    """Parameter draws of one corpus: a private stream per (seed, set)."""

    def __init__(self, seed: int, held_out: bool) -> None:
        self.held_out = held_out
        self.rng = random.Random(f"cellguard-corpus/{seed}/{'held-out' if held_out else 'tuning'}")

    def cell_seed(self) -> int:
        # Even seeds for tuning, odd ones held out: the two sets never share a cell.
        return self.rng.getrandbits(31) * 2 + (1 if self.held_out else 0)

    def uniform(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi)

    def choice(self, options: tuple[str, ...]) -> str:
        return self.rng.choice(options)

    def tau_s(self) -> float:
        return round(self.rng.uniform(2.0, 10.0), 2)

    def swing(self) -> float:
        return round(self.rng.uniform(0.0, 0.10), 3)

    def rest_s(self, probability: float) -> float:
        return 60.0 * self.rng.randint(5, 30) if self.rng.random() < probability else 0.0


def _grid(quick: bool, offset: int) -> Iterator[tuple[float, float, float]]:
    """(interval, density, noise) combinations covering every level."""
    combos = [(iv, j) for iv in INTERVALS_S for j in DENSITIES_MA_CM2]
    if quick:
        combos = [(30.0, 0.5), (60.0, 1.0)]
    for n, (iv, j) in enumerate(combos):
        yield iv, j, NOISES_V[(n + offset) % len(NOISES_V)]


def _max_onset_h(interval_s: float) -> float:
    # Onset + up to 11 h of soft short + 1 h must stay within the sample budget.
    budget_h = _MAX_SAMPLES * interval_s / _S_PER_H
    return min(60.0, budget_h - 13.0)


def _fault_plans(d: _Draw, quick: bool) -> list[_Plan]:
    plans: list[_Plan] = []
    offset = 1 if d.held_out else 0
    # Depletion: asymmetric MII-1/MII-2, working electrode sized to run out after the
    # onset drawn here (its Li loss by then plus one half cycle's stripping).
    for n, (iv, j, noise) in enumerate(_grid(quick, offset)):
        name = ("MII-1", "MII-2")[(n + offset) % 2]
        rest_s = d.rest_s(0.25)
        period_h = 2 * (HALF_CYCLE_S + rest_s) / _S_PER_H
        earliest_h = 2 * period_h + d.uniform(0.0, 1.0)
        target_h = d.uniform(earliest_h, max(earliest_h + 1.0, _max_onset_h(iv) - 4.0))
        model = interphase_model(name)
        li_mah_cm2 = model.li_loss_mah_cm2(target_h) + j * HALF_CYCLE_S / _S_PER_H
        plans.append(
            _Plan(
                family="depletion",
                cell="asymmetric",
                interphase=name,
                li_working_um=round(li_mah_cm2 / LI_MAH_CM2_PER_UM + 0.01, 2),
                seed=d.cell_seed(),
                interval_s=iv,
                density_ma_cm2=j,
                noise_v=noise,
                temperature_swing=d.swing(),
                rest_s=rest_s,
                tau_s=d.tau_s(),
                fault="depletion",
                onset_h=target_h,
            )
        )
    kinds: tuple[ShortKind, ...] = ("hard", "soft", "micro")
    for k_index, kind in enumerate(kinds):
        for n, (iv, j, noise) in enumerate(_grid(quick, offset + k_index)):
            name = ("SEI", "MII-3", "MII-2", "MII-1")[(n + k_index + offset) % 4]
            cell: CellKind = ("symmetric", "asymmetric")[(n + offset) % 2]
            working_um = 100.0
            if cell == "asymmetric":
                # Thick enough not to deplete before the short: MII-1/MII-2 lose Li fast.
                working_um = 50.0 if name in ("MII-1", "MII-2") else float(d.choice(("20", "50")))
            rest_s = d.rest_s(0.25)
            period_h = 2 * (HALF_CYCLE_S + rest_s) / _S_PER_H
            onset_h = round(d.uniform(2 * period_h + 0.05, _max_onset_h(iv)), 4)
            plans.append(
                _Plan(
                    family=f"short-{kind}",
                    cell=cell,
                    interphase=name,
                    li_working_um=working_um,
                    seed=d.cell_seed(),
                    interval_s=iv,
                    density_ma_cm2=j,
                    noise_v=noise,
                    temperature_swing=d.swing(),
                    rest_s=rest_s,
                    tau_s=d.tau_s(),
                    fault="short",
                    subkind=kind,
                    onset_h=onset_h,
                )
            )
    return plans


def _healthy(
    d: _Draw,
    family: str,
    interphase: str,
    interval_s: float,
    density: float,
    noise: float,
    hours: float,
    *,
    cell: CellKind = "symmetric",
    working_um: float = 100.0,
    rest_s: float = 0.0,
    swing: float | None = None,
    tau_s: float | None = None,
    glitches: bool = False,
    reversed_leads: bool = False,
) -> _Plan:
    budget_h = _MAX_SAMPLES * interval_s / _S_PER_H - 0.5
    return _Plan(
        family=family,
        cell=cell,
        interphase=interphase,
        li_working_um=working_um,
        seed=d.cell_seed(),
        interval_s=interval_s,
        density_ma_cm2=density,
        noise_v=noise,
        temperature_swing=d.swing() if swing is None else swing,
        rest_s=rest_s,
        tau_s=d.tau_s() if tau_s is None else tau_s,
        duration_s=min(hours, budget_h) * _S_PER_H,
        glitches=glitches,
        reversed_leads=reversed_leads,
    )


def _non_fault_plans(d: _Draw, quick: bool) -> list[_Plan]:
    plans: list[_Plan] = []
    o = 1 if d.held_out else 0

    def noise(n: int) -> float:
        return NOISES_V[(n + o) % len(NOISES_V)]

    def density(n: int) -> float:
        return DENSITIES_MA_CM2[(n + 2 * o) % len(DENSITIES_MA_CM2)]

    # Slow polarization growth: MII-1 symmetric, >= 100 h (the 1 s trace is capped).
    growth = ((60.0, 150.0), (30.0, 120.0), (10.0, 100.0), (1.0, 27.0), (60.0, 200.0))
    for n, (iv, hours) in enumerate(growth[:1] if quick else growth):
        plans.append(_healthy(d, "polarization-growth", "MII-1", iv, density(n), noise(n), hours))
    # "Activation": MII-2 symmetric, 0-150 h (needs >= 10 s sampling to fit).
    activation = ((60.0, 150.0), (30.0, 150.0), (10.0, 150.0), (60.0, 140.0))
    for n, (iv, hours) in enumerate(activation[:1] if quick else activation):
        plans.append(_healthy(d, "activation", "MII-2", iv, density(n + 1), noise(n), hours))
    # Healthy self-limiting interphases, symmetric and asymmetric.
    healthy = (
        ("SEI", "symmetric", 1.0, 24.0),
        ("MII-3", "asymmetric", 10.0, 48.0),
        ("SEI", "asymmetric", 30.0, 72.0),
        ("MII-3", "symmetric", 60.0, 96.0),
        ("MII-3", "asymmetric", 1.0, 20.0),
        ("SEI", "symmetric", 10.0, 48.0),
        ("SEI", "asymmetric", 60.0, 72.0),
        ("MII-3", "symmetric", 30.0, 48.0),
    )
    for n, (name, cell, iv, hours) in enumerate(healthy[2:4] if quick else healthy):
        working = 100.0 if cell == "symmetric" else (20.0, 50.0)[n % 2]
        plans.append(
            _healthy(
                d, "healthy", name, iv, density(n), noise(n + 1), hours,
                cell=cell,  # type: ignore[arg-type]
                working_um=working,
            )
        )  # fmt: skip
    # The zero crossing at each reversal, where the transient is visible.
    reversal = ((1.0, 12.0, 2.0), (1.0, 12.0, 10.0), (1.0, 16.0, 5.0), (10.0, 24.0, 8.0))
    quick_reversal = ((1.0, 5.0, 4.0),)
    for n, (iv, hours, tau) in enumerate(quick_reversal if quick else reversal):
        name = ("SEI", "MII-3", "MII-2", "MII-1")[(n + o) % 4]
        tau_s = round(tau + d.uniform(-0.5, 0.0), 2) if tau > 2.0 else 2.0
        plans.append(_healthy(d, "reversal", name, iv, density(n), noise(n), hours, tau_s=tau_s))
    # Rest periods between half cycles.
    rests = ((1.0, 24.0), (10.0, 48.0), (30.0, 48.0), (60.0, 72.0), (10.0, 30.0), (60.0, 48.0))
    for n, (iv, hours) in enumerate(rests[2:3] if quick else rests):
        name = ("SEI", "MII-3", "MII-1", "MII-2")[(n + o) % 4]
        rest_s = 60.0 * d.rng.randint(5, 30)
        plans.append(
            _healthy(d, "rest", name, iv, density(n + 1), noise(n + 2), hours, rest_s=rest_s)
        )
    # Day/night drift of ±10 %.
    temperature = ((10.0, 72.0), (30.0, 96.0), (60.0, 120.0), (1.0, 27.0))
    for n, (iv, hours) in enumerate(temperature[2:3] if quick else temperature):
        name = ("SEI", "MII-3", "MII-2")[(n + o) % 3]
        plans.append(_healthy(d, "temperature", name, iv, density(n), noise(n), hours, swing=0.10))
    # Single-sample glitches, never two within 24 h.
    glitch = (
        (1.0, 27.0),
        (10.0, 72.0),
        (30.0, 96.0),
        (60.0, 120.0),
        (1.0, 26.0),
        (10.0, 60.0),
        (30.0, 72.0),
        (60.0, 150.0),
    )
    for n, (iv, hours) in enumerate(glitch[2:4] if quick else glitch):
        name = ("SEI", "MII-3", "MII-1", "MII-2")[(n + o) % 4]
        plans.append(
            _healthy(d, "glitch", name, iv, density(n), noise(n + 1), hours, glitches=True)
        )
    # Reversed leads: the whole trace's voltage sign flipped.
    leads = ((1.0, 12.0), (10.0, 24.0), (30.0, 48.0), (60.0, 48.0))
    for n, (iv, hours) in enumerate(leads[3:] if quick else leads):
        name = ("SEI", "MII-3", "MII-1", "MII-2")[(n + o) % 4]
        plans.append(
            _healthy(
                d, "reversed-leads", name, iv, density(n), noise(n), hours, reversed_leads=True
            )
        )
    return plans


def _name(plan: _Plan, n: int) -> str:
    kind = f"{plan.cell[:3]}-{plan.interphase}"
    if plan.cell == "asymmetric":
        kind += f"-{plan.li_working_um:g}um"
    return (
        f"{plan.family}/{n:02d}/{kind}/{plan.interval_s:g}s/"
        f"{plan.density_ma_cm2:g}mAcm2/{plan.noise_v * 1e6:g}uV"
        + (f"/rest{plan.rest_s / 60:g}min" if plan.rest_s else "")
    )


def _plans(seed: int = 0, *, held_out: bool = False, quick: bool = False) -> list[_Plan]:
    """The parameters of every case, without simulating (cheap)."""
    d = _Draw(seed, held_out)
    return _fault_plans(d, quick) + _non_fault_plans(d, quick)


def generate(
    seed: int = 0,
    *,
    held_out: bool = False,
    quick: bool = False,
    progress: Callable[[Case], None] | None = None,
) -> list[Case]:
    """Simulate and label the corpus: deterministic for given arguments.

    ``held_out=True`` gives the held-out set (disjoint cell seeds, different parameter
    draws); ``quick=True`` a small subset (two cases per fault family, one or two per
    non-fault family, shorter at 1 s) for tests. ``progress`` is called after each case.
    """
    cases: list[Case] = []
    counts: dict[str, int] = {}
    for plan in _plans(seed, held_out=held_out, quick=quick):
        n = counts.get(plan.family, 0)
        counts[plan.family] = n + 1
        case = _simulate(plan, _name(plan, n), held_out)
        cases.append(case)
        if progress is not None:
            progress(case)
    return cases
