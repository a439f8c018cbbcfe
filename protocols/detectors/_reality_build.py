"""From a :class:`Recipe` to a labelled Li|Li :class:`~cellguard.protocols.detectors.corpus.Case`.

The order matters and is the classic corpus' where they overlap: the noise-free cell
voltage, then what a healthy fresh or liquid cell adds (the twin has it too), then the
fault (the twin has not), then the double-layer transient and the instrument noise
(the same draws on both), then what the instrument records (logging on change, the
±5 V range, spikes), and last the labels, compared against the twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.protocols.detectors import _reality_effects as fx
from cellguard.protocols.detectors._reality_sim import (
    HARD_SHORT_OHM_CM2,
    GarnetCell,
    Segment,
    log_on_change,
    run_lili,
)
from cellguard.protocols.detectors.corpus import (
    AREA_CM2,
    OBSERVABLE_NOISE_SIGMAS,
    VOLTAGE_RANGE_V,
    Case,
    CellKind,
    _drop_onset,
    _judgeable,
    _with_transients,
)

Kinds = Literal["source", "unknown", "none"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_S_PER_H = 3600.0
_AFTER_HARD_S = 3 * _S_PER_H
_AFTER_OBSERVABLE_S = 1 * _S_PER_H


@dataclass
class Recipe:
    """Everything one Li|Li case is made of."""

    family: str
    protocol: str
    segments: list[Segment]
    seed: int
    interval_s: float
    density_ma_cm2: float
    noise_v: float
    tau_s: float
    cell: CellKind = "symmetric"
    interphase: str = "SEI"
    li_working_um: float = 100.0
    li_counter_um: float = 100.0
    swing: float = 0.0
    kinds: Kinds = "none"
    """``source``: the file says what each step was; ``unknown``: a column of UNKNOWN;
    ``none``: no such column."""
    short: Literal["hard", "soft"] | None = None
    onset_s: float = math.nan
    after_onset_s: float = _AFTER_HARD_S
    """How long the trace goes on after the fault's onset."""
    garnet_asr_ohm_cm2: float = 0.0
    """> 0: a Li|LLZO|Li cell of this ASR instead of the simulator's interphases."""
    log: tuple[float, float] | None = None  # (dE in V, dt in s)
    bursts: int = 0
    nucleation: tuple[float, float] | None = None  # (height, peak_s)
    activation: tuple[float, float] | None = None  # (end factor, over_h)
    liquid: tuple[float, float, float] | None = None  # (gain, tau_h, spikes per h)
    noise_rise: tuple[float, float] | None = None  # (gain, from_s): a loose contact


@dataclass(frozen=True)
class _Columns:
    """The per-sample arrays of a trace, cut and thinned together."""

    t_s: FloatArray
    current_a: FloatArray
    voltage_v: FloatArray
    twin_v: FloatArray
    step: IntArray
    cycle: IntArray
    kind: IntArray

    def take(self, index: npt.NDArray[np.intp] | slice) -> _Columns:
        return _Columns(
            self.t_s[index],
            self.current_a[index],
            self.voltage_v[index],
            self.twin_v[index],
            self.step[index],
            self.cycle[index],
            self.kind[index],
        )


def _cell(r: Recipe) -> SimCell | GarnetCell:
    if r.garnet_asr_ohm_cm2 > 0:
        return GarnetCell(r.garnet_asr_ohm_cm2, AREA_CM2)
    spec = SimCellSpec(
        interphase=r.interphase,
        area_cm2=AREA_CM2,
        li_counter_um=r.li_counter_um,
        li_working_um=r.li_working_um,
        never_short=True,
        noise_v=0.0,  # the instrument noise comes later, shared with the twin
        temperature_swing=r.swing,
    )
    return SimCell(spec, r.seed)


def _healthy_extras(
    r: Recipe, c: _Columns, rng: np.random.Generator
) -> tuple[FloatArray, float | FloatArray]:
    """The voltage with what healthy fresh / liquid cells do, and the noise sigma."""
    v = c.voltage_v
    if r.nucleation is not None:
        height, peak_s = r.nucleation
        first = (c.step == c.step[0]) & (c.current_a != 0.0)
        v = fx.nucleation(c.t_s, v, first, start_s=0.0, height=height, peak_s=peak_s)
    if r.activation is not None:
        v = v * fx.activation(c.t_s, end_factor=r.activation[0], over_h=r.activation[1])
    sigma: float | FloatArray = r.noise_v
    if r.liquid is not None:
        gain, tau_h, rate = r.liquid
        v = v * fx.liquid_spikes(c.t_s, c.current_a, rng, rate_per_h=rate, tau_h=tau_h)
        sigma = fx.liquid_noise(c.t_s, r.noise_v, gain=gain, tau_h=tau_h)
    if r.noise_rise is not None:
        # A contact loosening or a channel turning noisy: the same cell, the same level,
        # the instrument noise ``gain``× louder from ``from_s`` on, to the end.
        gain, from_s = r.noise_rise
        sigma = np.where(c.t_s >= from_s, gain * r.noise_v, r.noise_v)
    return v, sigma


def _with_fault(r: Recipe, c: _Columns, v: FloatArray) -> FloatArray:
    if r.short == "hard":
        # A filament of a fraction of an Ω cm² carries the current: |V| ~ 0.1 mV.
        shorted = c.t_s >= r.onset_s - 1e-6
        return np.where(shorted, c.current_a / AREA_CM2 * HARD_SHORT_OHM_CM2, v)
    if r.short == "soft":
        return v * fx.soft_short_keep(c.t_s, r.onset_s, np.random.default_rng(r.seed + 1))
    return v


def _spikes(r: Recipe, c: _Columns, rng: np.random.Generator) -> tuple[_Columns, tuple[int, ...]]:
    starts = fx.burst_times(c.t_s, c.current_a, rng, r.bursts)
    heights = [float(rng.choice((-1.0, 1.0)) * rng.uniform(0.02, 1.0)) for _ in starts]
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "t_s": c.t_s,
        "voltage_v": c.voltage_v,
        "current_a": c.current_a,
        "step": c.step,
        "cycle": c.cycle,
        "kind": c.kind,
        "twin_v": c.twin_v,
    }
    arrays, inserted = fx.insert_bursts(arrays, starts, heights)
    out = _Columns(
        arrays["t_s"].astype(np.float64),
        arrays["current_a"].astype(np.float64),
        arrays["voltage_v"].astype(np.float64),
        arrays["twin_v"].astype(np.float64),
        arrays["step"].astype(np.int64),
        arrays["cycle"].astype(np.int64),
        arrays["kind"].astype(np.int64),
    )
    return out, inserted


def _labels(r: Recipe, c: _Columns, bounds: FloatArray, name: str) -> tuple[int | None, int | None]:
    """The classic corpus' labels: hard, the first judgeable sample at or after the
    onset; soft, its second low sample against the twin. A hard short's sample counts
    only if its deficit against the twin is out of the noise too (the classic soft and
    micro clause): classic hard shorts always are, but in a µA garnet cell the noise is
    of the order of the overpotential and one sample near 0 V can still be noise."""
    if r.short is None:
        return None, None
    phys = int(np.flatnonzero(c.t_s >= r.onset_s - 1e-6)[0])
    after = np.zeros(len(c.t_s), dtype=bool)
    after[phys:] = True
    judge = _judgeable(c.t_s, c.current_a, bounds, r.tau_s) & after
    onset: int | None
    if r.short == "hard":
        deficit_v = np.abs(c.twin_v) - np.abs(c.voltage_v)
        hits = np.flatnonzero(judge & (deficit_v > OBSERVABLE_NOISE_SIGMAS * r.noise_v))
        onset = int(hits[0]) if hits.size else None
    else:
        onset = _drop_onset(judge, c.voltage_v, c.twin_v, r.noise_v, soft=True)
    if onset is None or float(c.t_s[onset]) + _AFTER_OBSERVABLE_S > float(c.t_s[-1]):
        msg = f"{name}: the short is not observable an hour before the trace ends"
        raise RuntimeError(msg)
    return phys, onset


def build_lili(r: Recipe, name: str, held_out: bool) -> Case:
    """Simulate, post-process and label one Li|Li case (see the module docstring)."""
    cell = _cell(r)
    trace = run_lili(
        cell, r.segments, area_cm2=AREA_CM2, interval_s=r.interval_s, fine=r.log is not None
    )
    if isinstance(cell, SimCell) and min(cell.li_working_mah_cm2, cell.li_counter_mah_cm2) <= 0:
        msg = f"{name}: an electrode ran out of Li; plan thicker ones"
        raise RuntimeError(msg)
    t, i, v, step, cycle, kind = trace.arrays()
    c = _Columns(t, i, v, v, step, cycle, kind)
    bounds = np.asarray(trace.bounds_s, dtype=np.float64)
    if r.short is not None:
        c = c.take(slice(0, int(np.searchsorted(t, r.onset_s + r.after_onset_s, side="right"))))
        bounds = bounds[bounds < c.t_s[-1]]

    rng = np.random.default_rng(r.seed)
    healthy_v, sigma = _healthy_extras(r, c, rng)
    faulty_v = _with_fault(r, c, healthy_v)
    noise = rng.normal(0.0, 1.0, len(c.t_s)) * sigma
    c = replace(
        c,
        voltage_v=_with_transients(c.t_s, faulty_v, bounds, r.tau_s) + noise,
        twin_v=_with_transients(c.t_s, healthy_v, bounds, r.tau_s) + noise,
    )
    if r.log is not None:
        c = c.take(log_on_change(c.t_s, c.voltage_v, c.step, dv_v=r.log[0], dt_s=r.log[1]))
    c = replace(c, voltage_v=np.clip(c.voltage_v, -VOLTAGE_RANGE_V, VOLTAGE_RANGE_V))
    glitches: tuple[int, ...] = ()
    if r.bursts:
        c, glitches = _spikes(r, c, rng)
    phys, onset = _labels(r, c, bounds, name)

    step_kind = None if r.kinds == "none" else c.kind
    if r.kinds == "unknown":
        step_kind = np.zeros_like(c.kind)
    return Case(
        name=name,
        family=r.family,
        t_s=c.t_s,
        voltage_v=c.voltage_v,
        current_a=c.current_a,
        step=c.step,
        cycle=c.cycle,
        cell=r.cell,
        fault="short" if r.short else None,
        subkind=r.short,
        physical_onset_index=phys,
        onset_index=onset,
        interval_s=r.interval_s if r.log is None else r.log[1],
        current_density_ma_cm2=r.density_ma_cm2,
        noise_v=r.noise_v,
        held_out=held_out,
        interphase="LLZO" if r.garnet_asr_ohm_cm2 > 0 else r.interphase,
        li_working_um=r.li_working_um,
        seed=r.seed,
        reversal_tau_s=r.tau_s,
        temperature_swing=r.swing,
        glitch_indices=glitches,
        step_kind=step_kind,
        protocol=r.protocol,
        log_dv_v=0.0 if r.log is None else r.log[0],
    )
