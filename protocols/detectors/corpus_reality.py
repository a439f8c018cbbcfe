"""The reality families: what real cells, protocols and instruments do that the classic
corpus (:mod:`cellguard.protocols.detectors.corpus`) lacks (issue 14, and
/work/shared/realworld.md).

One call gives them::

    from cellguard.protocols.detectors.corpus_reality import generate_reality
    cases = generate_reality(seed=0, held_out=False, quick=False)

Same :class:`~cellguard.protocols.detectors.corpus.Case` type, same label semantics
(``physical_onset_index``: first sample at or after the fault's start;
``onset_index``: first *observable* sample, from the healthy twin that shares every
draw; healthy cases have both ``None``), same 0.785 cm² cells and ±5 V range, even /
odd cell seeds for the tuning / held-out sets. The classic corpus is untouched: its
cases stay byte-identical. ``quick=True`` is a subset (one or two per family) for
tests: under a second on one core (the whole tuning set takes ~3 s).

Every case carries ``t_s``, ``voltage_v``, ``current_a``, ``step``, ``cycle``, the cell
profile (``cell``: symmetric, asymmetric or full), ``protocol`` and ``step_kind``: an
int array of :class:`~cellguard.drivers.files.StepKind` codes (1 CC, 2 CV, 3 REST,
4 IMPEDANCE, 5 PAUSE) where the source says what each step was, all ``UNKNOWN`` (0)
where the source has a column that does not, ``None`` where there is no column.

Families — must never halt:

* ``plating`` — anode-free plating onto Cu (negative current, never reversed) for hours
  to tens of hours, with the first plating's nucleation peak.
* ``hold`` — long galvanostatic hold in one direction, symmetric cell with thick Li.
* ``ccd`` — critical-current-density steps: 0.25 mAh cm⁻² per step at 0.25, 0.5, …
  mA cm⁻² up to 2-4 mA cm⁻², one direction (``ccd-same``) or alternating
  (``ccd-alternating``), healthy to the end.
* ``log-on-change`` — square wave recorded as EC-Lab does (a point when V moved by dE
  or after dt, and at each step's ends: intervals from ms to minutes), with 3 ms
  spikes that arrive as bursts of samples < 1 ms apart (``glitch_indices``).
* ``impedance`` — cycling blocks with a GEIS sweep between them (1 MHz…0.1 Hz, 10 µA…
  0.1 mA about zero mean, two recorded points per frequency half a period apart),
  OCV rest before and after; ``step_kind`` from the source or all UNKNOWN.
* ``nucleation`` — fresh cell: a sharp peak in the first half cycle, then lower.
* ``fresh-activation`` — polarization falling smoothly to 0.5-0.8× over 10-50 h, the
  half-cycle shape kept (after a milder nucleation peak).
* ``liquid-early`` — liquid-cell noise, several times louder at first, and upward
  spikes on one or two samples, both settling over hours.
* ``pause`` — a channel paused 1-5 h in the middle of a half cycle (zero current,
  V relaxing to ~0), then the half cycle goes on with its remaining charge, same
  step number; ``step_kind`` PAUSE or all UNKNOWN.
* ``formation`` — fresh full cell resting at 0.2-0.4 V, then CC or CC-CV to 4.2 V or
  4.9 V, rest, discharge, twice; ``v_min_v``/``v_max_v`` carry the protocol's window
  (0 V: a fresh cell is legitimately far below its discharge cut-off; the top: the
  charge cut-off + 0.1 V).
* ``noise-rise`` — a healthy cell whose channel turns noisy (a loose contact, a noisy
  instrument channel): the noise ×2-×5 from some hour on, to the end, at an unchanged
  level; Li|Li cycling or a one-direction hold at 0.1-0.5 mA cm⁻².
* ``garnet`` — Li|LLZO|Li at 1-20 µA: 2-6 mV of overpotential, noise of the same
  order (0.12-0.2× it, 0.3-1.2 mV).

Faults:

* ``early-short-hard`` — a hard short 1-10 min into a one-direction test (plating,
  hold or CCD): no learnt half cycle to compare with.
* ``one-way-short-soft`` — the real soft-short shape in a never-reversing test.
* ``soft-short-telegraph`` — the real soft-short shape while cycling: overpotential
  down by about half within 1-5 min, held, then a telegraph between that level and a
  lower one for hours, maybe a partial recovery (Menkin et al. 2023). Observable onset
  as the classic soft short (second low sample below 0.6× the twin).
* ``garnet-short-hard`` — a hard short in a µA garnet cell. Its observable onset is
  the first judgeable sample at or after the onset whose deficit against the twin is
  over 4× the noise (the classic soft/micro noise clause; classic hard shorts and the
  early ones here meet it at once, a noisy garnet cell may need a few samples).

Fault traces end 3 h (hard) or 8 h (soft, to show the telegraph) after the onset.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np

from cellguard.drivers.files import StepKind
from cellguard.drivers.sim import SimFullCell, SimFullCellSpec
from cellguard.protocols.detectors._reality_build import Kinds, Recipe, build_lili
from cellguard.protocols.detectors._reality_sim import Segment, eis_schedule, run_full
from cellguard.protocols.detectors.corpus import AREA_CM2, VOLTAGE_RANGE_V, Case, CellKind

__all__ = [
    "REALITY_FAULT_FAMILIES",
    "REALITY_NON_FAULT_FAMILIES",
    "generate_reality",
]

REALITY_FAULT_FAMILIES = (
    "early-short-hard",
    "one-way-short-soft",
    "soft-short-telegraph",
    "garnet-short-hard",
)
REALITY_NON_FAULT_FAMILIES = (
    "plating",
    "hold",
    "ccd",
    "log-on-change",
    "impedance",
    "nucleation",
    "fresh-activation",
    "liquid-early",
    "pause",
    "formation",
    "garnet",
    "noise-rise",
)


_S_PER_H = 3600.0
_HALF_S = 3600.0
_CCD_STEP_MAH_CM2 = 0.25
_NOISES_V = (20e-6, 50e-6, 200e-6)


def _amps(density_ma_cm2: float) -> float:
    return density_ma_cm2 * 1e-3 * AREA_CM2


class _Draw:
    """The private stream of one case: independent of every other case and family."""

    def __init__(self, seed: int, held_out: bool, family: str, n: int) -> None:
        set_name = "held-out" if held_out else "tuning"
        self.held_out = held_out
        self.rng = random.Random(f"cellguard-reality/{seed}/{set_name}/{family}/{n}")

    def cell_seed(self) -> int:
        # Even seeds for tuning, odd ones held out, as in the classic corpus.
        return self.rng.getrandbits(31) * 2 + (1 if self.held_out else 0)

    def u(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi)

    def pick(self, options: tuple[float, ...]) -> float:
        return self.rng.choice(options)

    def tau_s(self) -> float:
        return round(self.rng.uniform(2.0, 10.0), 2)

    def noise_v(self) -> float:
        return self.rng.choice(_NOISES_V)


# -- protocols as segments -------------------------------------------------------------


def _square(
    current_a: float, n_half: int, *, half_s: float = _HALF_S, first_step: int = 1
) -> list[Segment]:
    """Galvanostatic square wave, first half cycle positive, one step per half cycle."""
    return [
        Segment(
            StepKind.CC,
            half_s,
            current_a if h % 2 == 0 else -current_a,
            step=first_step + h,
            cycle=1 + h // 2,
        )
        for h in range(n_half)
    ]


def _ccd(j_max_ma_cm2: float, *, alternating: bool, sign: float) -> list[Segment]:
    """0.25 mAh cm⁻² per step at 0.25, 0.50, … mA cm⁻² up to ``j_max_ma_cm2``."""
    out: list[Segment] = []
    n = round(j_max_ma_cm2 / 0.25)
    for k in range(1, n + 1):
        j = 0.25 * k
        direction = sign * (-1.0 if alternating and k % 2 == 0 else 1.0)
        duration_s = _CCD_STEP_MAH_CM2 / j * _S_PER_H
        out.append(Segment(StepKind.CC, duration_s, direction * _amps(j), step=k, cycle=1))
    return out


def _one_way(
    d: _Draw, protocol: str, hours: float, n: int
) -> tuple[list[Segment], float, dict[str, float]]:
    """Segments of a one-direction protocol; its nominal density and cell geometry."""
    if protocol == "plating":
        j = (1.0, 0.5, 0.1, 0.5)[n % 4]
        segs = [Segment(StepKind.CC, hours * _S_PER_H, -_amps(j), step=1, cycle=1)]
        return segs, j, {"working": 0.05, "counter": 500.0}
    if protocol == "hold":
        j = (0.25, 0.1, 0.5)[n % 3]
        sign = d.pick((1.0, -1.0))
        segs = [Segment(StepKind.CC, hours * _S_PER_H, sign * _amps(j), step=1, cycle=1)]
        return segs, j, {"working": 300.0, "counter": 300.0}
    alternating = protocol == "ccd-alternating"
    j_max = d.pick((2.0, 3.0, 4.0))
    return (
        _ccd(j_max, alternating=alternating, sign=-1.0),
        0.25,
        {"working": 300.0, "counter": 300.0},
    )


# -- the families ----------------------------------------------------------------------


def _plating(d: _Draw, n: int, quick: bool) -> Recipe:
    iv, hours = ((30.0, 10.0), (60.0, 40.0), (10.0, 20.0), (1.0, 5.0))[n]
    if quick:
        hours = min(hours, 8.0)
    segs, j, geo = _one_way(d, "plating", hours, n)
    return Recipe(
        "plating", "plating", segs, d.cell_seed(), iv, j, d.noise_v(), d.tau_s(),
        cell="asymmetric", interphase=("SEI", "MII-3", "MII-2", "MII-1")[n],
        li_working_um=geo["working"], li_counter_um=geo["counter"], swing=d.u(0.0, 0.1),
        nucleation=(d.u(1.0, 3.0), d.u(2.0, 60.0)),
    )  # fmt: skip


def _hold(d: _Draw, n: int, quick: bool) -> Recipe:
    iv, hours = ((60.0, 30.0), (30.0, 50.0), (10.0, 12.0))[n]
    if quick:
        hours = min(hours, 10.0)
    segs, j, geo = _one_way(d, "hold", hours, n)
    return Recipe(
        "hold", "hold", segs, d.cell_seed(), iv, j, d.noise_v(), d.tau_s(),
        interphase=("MII-3", "SEI", "MII-1")[n], li_working_um=geo["working"],
        li_counter_um=geo["counter"], swing=d.u(0.0, 0.1),
    )  # fmt: skip


def _ccd_case(d: _Draw, n: int, quick: bool) -> Recipe:
    protocol, iv = (("ccd-same", 10.0), ("ccd-alternating", 5.0), ("ccd-same", 1.0))[n]
    segs, j, geo = _one_way(d, protocol, 0.0, n)
    return Recipe(
        "ccd", protocol, segs, d.cell_seed(), iv, j, d.noise_v(), d.tau_s(),
        interphase=("SEI", "MII-3", "MII-2")[n], li_working_um=geo["working"],
        li_counter_um=geo["counter"],
    )  # fmt: skip


def _early_hard(d: _Draw, n: int, quick: bool) -> Recipe:
    protocol, iv = (("hold", 10.0), ("ccd-same", 5.0), ("plating", 30.0), ("ccd-alternating", 1.0))[
        n
    ]
    segs, j, geo = _one_way(d, protocol, 6.0, n)
    r = Recipe(
        "early-short-hard", protocol, segs, d.cell_seed(), iv, j, d.noise_v(), d.tau_s(),
        cell="asymmetric" if protocol == "plating" else "symmetric",
        interphase=("SEI", "MII-3", "MII-1", "MII-2")[n], li_working_um=geo["working"],
        li_counter_um=geo["counter"], short="hard", onset_s=round(d.u(60.0, 600.0), 1),
    )  # fmt: skip
    if protocol == "plating":
        r.nucleation = (d.u(1.0, 3.0), d.u(2.0, 30.0))
    return r


def _one_way_soft(d: _Draw, n: int, quick: bool) -> Recipe:
    protocol, iv = (("hold", 30.0), ("plating", 60.0), ("hold", 10.0))[n]
    onset_h = d.u(2.0, 6.0 if quick else 20.0)
    segs, _, geo = _one_way(d, protocol, onset_h + 10.0, n)
    # Soft shorts need an overpotential well out of the noise: 0.5 mA cm⁻² or more.
    j = 0.5 if protocol == "hold" else 1.0
    sign = 1.0 if segs[0].current_a > 0 else -1.0
    segs = [Segment(StepKind.CC, segs[0].duration_s, sign * _amps(j), step=1, cycle=1)]
    return Recipe(
        "one-way-short-soft", protocol, segs, d.cell_seed(), iv, j, d.pick((20e-6, 50e-6)),
        d.tau_s(), cell="asymmetric" if protocol == "plating" else "symmetric",
        interphase=("SEI", "MII-3", "MII-2")[n], li_working_um=geo["working"],
        li_counter_um=geo["counter"], short="soft", onset_s=onset_h * _S_PER_H,
        after_onset_s=8 * _S_PER_H,
    )  # fmt: skip


def _telegraph(d: _Draw, n: int, quick: bool) -> Recipe:
    iv = (30.0, 60.0, 10.0, 1.0)[n]
    j = (0.5, 1.0, 0.5, 1.0)[n]
    onset_h = d.u(4.05, 8.0 if quick or iv == 1.0 else 24.0)
    half = math.ceil(onset_h + 9.0)
    cell: CellKind = ("symmetric", "asymmetric")[n % 2]
    return Recipe(
        "soft-short-telegraph", "square-wave", _square(_amps(j), half), d.cell_seed(), iv, j,
        d.pick((20e-6, 50e-6, 200e-6) if j >= 1.0 else (20e-6, 50e-6)), d.tau_s(), cell=cell,
        interphase=("SEI", "MII-3", "MII-2", "SEI")[n],
        li_working_um=100.0 if cell == "symmetric" else 50.0, swing=d.u(0.0, 0.1),
        short="soft", onset_s=onset_h * _S_PER_H, after_onset_s=8 * _S_PER_H,
    )  # fmt: skip


def _log_on_change(d: _Draw, n: int, quick: bool) -> Recipe:
    de_v, dt_s, hours = ((10e-3, 60.0, 24.0), (5e-3, 30.0, 48.0), (1e-3, 120.0, 36.0),
                         (10e-3, 15.0, 12.0))[n]  # fmt: skip
    if quick:
        hours = 12.0
    j = d.pick((0.5, 1.0))
    return Recipe(
        "log-on-change", "square-wave", _square(_amps(j), int(hours)), d.cell_seed(), dt_s, j,
        d.noise_v(), d.tau_s(), interphase=("SEI", "MII-3", "MII-2", "MII-1")[n],
        swing=d.u(0.0, 0.1), log=(de_v, dt_s), bursts=2 if quick else 3,
    )  # fmt: skip


def _impedance_case(d: _Draw, n: int, quick: bool) -> Recipe:
    iv = (30.0, 10.0, 60.0, 1.0)[n]
    kinds: Kinds = ("source", "unknown")[n % 2]
    j = d.pick((0.1, 0.5, 1.0))
    blocks = 2 if quick or iv == 1.0 else 3
    per_decade = int(d.pick((6.0, 8.0, 10.0)))
    amplitude_a = d.u(10e-6, 100e-6)
    _, _, sweep_s = eis_schedule(per_decade)
    segs: list[Segment] = []
    step = 1
    cycle = 1
    for _ in range(blocks):
        n_cycles = int(d.pick((2.0, 3.0, 4.0)))
        for seg in _square(_amps(j), 2 * n_cycles, first_step=step):
            segs.append(Segment(StepKind.CC, seg.duration_s, seg.current_a, step=seg.step,
                                cycle=cycle + seg.cycle - 1))  # fmt: skip
        step += 2 * n_cycles
        cycle += n_cycles
        segs.append(Segment(StepKind.REST, 60.0 * round(d.u(10, 30)), step=step, cycle=cycle))
        segs.append(Segment(StepKind.IMPEDANCE, sweep_s, step=step + 1, cycle=cycle,
                            eis_amplitude_a=amplitude_a, eis_per_decade=per_decade))  # fmt: skip
        segs.append(Segment(StepKind.REST, 60.0 * round(d.u(5, 10)), step=step + 2, cycle=cycle))
        step += 3
    return Recipe(
        "impedance", "cycling+geis", segs, d.cell_seed(), iv, j, d.noise_v(), d.tau_s(),
        interphase=("SEI", "MII-3", "MII-2", "SEI")[n], kinds=kinds,
    )  # fmt: skip


def _nucleation_case(d: _Draw, n: int, quick: bool) -> Recipe:
    iv, hours = ((1.0, 6.0), (30.0, 24.0))[n]
    j = d.pick((0.5, 1.0))
    return Recipe(
        "nucleation", "square-wave", _square(_amps(j), int(hours)), d.cell_seed(), iv, j,
        d.noise_v(), d.tau_s(), interphase=("SEI", "MII-3")[n],
        nucleation=(d.u(1.0, 3.0), d.u(2.0, 120.0)),
    )  # fmt: skip


def _activation_case(d: _Draw, n: int, quick: bool) -> Recipe:
    iv, over_h = ((60.0, 30.0), (30.0, 10.0), (10.0, 50.0))[n]
    if quick:
        over_h = 10.0
    j = d.pick((0.5, 1.0))
    half = math.ceil(over_h * 1.2)
    return Recipe(
        "fresh-activation", "square-wave", _square(_amps(j), half), d.cell_seed(), iv, j,
        d.noise_v(), d.tau_s(), interphase=("SEI", "MII-3", "SEI")[n],
        activation=(round(d.u(0.5, 0.8), 3), over_h), nucleation=(d.u(0.5, 2.0), d.u(2.0, 60.0)),
    )  # fmt: skip


def _liquid_case(d: _Draw, n: int, quick: bool) -> Recipe:
    iv, hours = ((10.0, 24.0), (60.0, 48.0))[n]
    if quick:
        hours = 12.0
    j = d.pick((0.5, 1.0))
    return Recipe(
        "liquid-early", "square-wave", _square(_amps(j), int(hours)), d.cell_seed(), iv, j,
        d.pick((20e-6, 50e-6)), d.tau_s(), interphase="SEI",
        liquid=(d.u(3.0, 10.0), d.u(2.0, 10.0), d.u(1.0, 3.0)),
    )  # fmt: skip


def _noise_rise_case(d: _Draw, n: int, quick: bool) -> Recipe:
    protocol, iv, hours = (
        ("square-wave", 30.0, 24), ("hold", 30.0, 20), ("square-wave", 10.0, 16),
        ("square-wave", 60.0, 30),
    )[n]  # fmt: skip
    if quick:
        hours = 12
    j = d.pick((0.1, 0.25, 0.5))
    if protocol == "hold":
        segs = [
            Segment(StepKind.CC, hours * _S_PER_H, d.pick((1.0, -1.0)) * _amps(j), step=1, cycle=1)
        ]
    else:
        segs = _square(_amps(j), hours)
    # The rise comes once a few half cycles are learnt (or, in a hold, past its first
    # hours), at any point of a half cycle.
    from_s = d.u(3.0, 0.4 * hours) * _S_PER_H
    return Recipe(
        "noise-rise", protocol, segs, d.cell_seed(), iv, j, d.pick((50e-6, 200e-6)),
        d.tau_s(), interphase=("SEI", "MII-3", "SEI", "MII-2")[n],
        li_working_um=300.0, li_counter_um=300.0,
        noise_rise=(round(d.u(2.0, 5.0), 2), from_s),
    )  # fmt: skip


def _pause_case(d: _Draw, n: int, quick: bool) -> Recipe:
    iv = (30.0, 10.0, 60.0, 1.0)[n]
    kinds: Kinds = ("source", "unknown")[n % 2]
    j = d.pick((0.1, 0.5, 1.0))
    n_half = 8 if quick or iv == 1.0 else 16
    paused = d.rng.randint(2, n_half - 2)
    fraction = d.u(0.2, 0.8)
    pause_s = 60.0 * round(d.u(60, 300))
    segs: list[Segment] = []
    for seg in _square(_amps(j), n_half):
        if seg.step - 1 != paused:
            segs.append(seg)
            continue
        done_s = round(fraction * seg.duration_s)
        segs += [
            Segment(StepKind.CC, done_s, seg.current_a, step=seg.step, cycle=seg.cycle),
            Segment(StepKind.PAUSE, pause_s, 0.0, step=seg.step, cycle=seg.cycle),
            Segment(StepKind.CC, seg.duration_s - done_s, seg.current_a, step=seg.step,
                    cycle=seg.cycle),
        ]  # fmt: skip
    return Recipe(
        "pause", "square-wave+pause", segs, d.cell_seed(), iv, j, d.noise_v(), d.tau_s(),
        interphase=("SEI", "MII-3", "MII-2", "MII-1")[n], kinds=kinds,
    )  # fmt: skip


def _garnet(d: _Draw, n: int, quick: bool, *, short: bool) -> Recipe:
    iv = (30.0, 60.0, 10.0)[n]
    current_a = d.u(1e-6, 20e-6)
    overpotential_v = d.u(2e-3, 6e-3)
    asr_ohm_cm2 = overpotential_v / (current_a / AREA_CM2)
    # The same order as the overpotential, yet a collapse to ~0 V stays out of the noise.
    noise_v = overpotential_v * d.u(0.12, 0.2)
    onset_s = d.u(4.05, 12.0) * _S_PER_H
    half = 12 if quick else 24
    if short:
        half = math.ceil(onset_s / _HALF_S + 4)
    return Recipe(
        "garnet-short-hard" if short else "garnet", "square-wave",
        _square(current_a, half), d.cell_seed(), iv, current_a * 1e3 / AREA_CM2, noise_v,
        d.tau_s(), garnet_asr_ohm_cm2=asr_ohm_cm2, short="hard" if short else None,
        onset_s=onset_s,
    )  # fmt: skip


def _formation(d: _Draw, n: int, quick: bool, held_out: bool) -> Case:
    cutoff_v, cv = ((4.2, True), (4.9, False), (4.2, False), (4.9, True))[n]
    iv = (60.0, 30.0, 60.0, 10.0)[n]
    seed = d.cell_seed()
    capacity_mah = d.u(1.0, 4.0)
    empty_v, full_v = (3.0, 4.15) if cutoff_v < 4.5 else (3.5, 4.85)
    spec = SimFullCellSpec(capacity_mah=capacity_mah, ocv_empty_v=empty_v, ocv_full_v=full_v,
                           r_ohm=d.u(5.0, 20.0), r1_ohm=d.u(5.0, 15.0), soc0=0.0)  # fmt: skip
    rest_v = d.u(0.2, 0.4)
    c_rate = d.pick((0.05, 0.1)) if not quick else 0.1
    i_a = capacity_mah * 1e-3 * c_rate
    rest_s = 60.0 * round(d.u(30, 360 if not quick else 60))
    max_charge_s = 1.3 / c_rate * _S_PER_H
    segs = [Segment(StepKind.REST, rest_s, 0.0, step=1, cycle=1)]
    step = 2
    for cyc in (1, 2):
        segs.append(Segment(StepKind.CC, max_charge_s, i_a, step=step, cycle=cyc, until_v=cutoff_v))
        step += 1
        if cv:
            segs.append(Segment(StepKind.CV, 5 * _S_PER_H, i_a, step=step, cycle=cyc,
                                hold_v=cutoff_v, end_current_a=i_a / 5))  # fmt: skip
            step += 1
        segs.append(Segment(StepKind.REST, _S_PER_H, 0.0, step=step, cycle=cyc))
        segs.append(Segment(StepKind.CC, max_charge_s, -i_a, step=step + 1, cycle=cyc,
                            until_v=empty_v))  # fmt: skip
        segs.append(Segment(StepKind.REST, _S_PER_H, 0.0, step=step + 2, cycle=cyc))
        step += 3
    trace = run_full(SimFullCell(spec, seed), segs, interval_s=iv, rest_v=rest_v,
                     fresh_fraction=d.u(0.01, 0.03))  # fmt: skip
    t, i, v, step_a, cycle_a, kind = trace.arrays()
    v = np.clip(v, -VOLTAGE_RANGE_V, VOLTAGE_RANGE_V)
    protocol = f"formation-{'cccv' if cv else 'cc'}-{cutoff_v:g}V"
    name = f"formation/{n:02d}/{protocol}/{capacity_mah:.2f}mAh/{iv:g}s/C{1 / c_rate:g}"
    return Case(
        name=name,
        family="formation",
        t_s=t,
        voltage_v=v,
        current_a=i,
        step=step_a,
        cycle=cycle_a,
        cell="full",
        fault=None,
        subkind=None,
        physical_onset_index=None,
        onset_index=None,
        interval_s=iv,
        current_density_ma_cm2=i_a * 1e3 / AREA_CM2,
        noise_v=spec.noise_v,
        held_out=held_out,
        interphase="",
        seed=seed,
        step_kind=kind,
        protocol=protocol,
        v_min_v=0.0,
        v_max_v=cutoff_v + 0.1,
    )


# (family, cases in the full set, in the quick set, maker)
_FAMILIES: tuple[tuple[str, int, int, Callable[[_Draw, int, bool], Recipe]], ...] = (
    ("plating", 4, 1, _plating),
    ("hold", 3, 1, _hold),
    ("ccd", 3, 2, _ccd_case),
    ("log-on-change", 4, 1, _log_on_change),
    ("impedance", 4, 2, _impedance_case),
    ("nucleation", 2, 1, _nucleation_case),
    ("fresh-activation", 3, 1, _activation_case),
    ("liquid-early", 2, 1, _liquid_case),
    ("pause", 4, 2, _pause_case),
    ("garnet", 3, 1, lambda d, n, q: _garnet(d, n, q, short=False)),
    ("noise-rise", 4, 2, _noise_rise_case),
    ("early-short-hard", 4, 2, _early_hard),
    ("one-way-short-soft", 3, 1, _one_way_soft),
    ("soft-short-telegraph", 4, 2, _telegraph),
    ("garnet-short-hard", 3, 1, lambda d, n, q: _garnet(d, n, q, short=True)),
)
_FORMATION_CASES = (4, 2)


def _name(r: Recipe, n: int) -> str:
    kind = f"{r.cell[:3]}-{'LLZO' if r.garnet_asr_ohm_cm2 > 0 else r.interphase}"
    if r.cell == "asymmetric":
        kind += f"-{r.li_working_um:g}um"
    sampling = f"{r.interval_s:g}s" if r.log is None else f"dE{r.log[0] * 1e3:g}mV-dt{r.log[1]:g}s"
    suffix = f"/kinds-{r.kinds}" if r.kinds != "none" else ""
    return (
        f"{r.family}/{n:02d}/{r.protocol}/{kind}/{sampling}/{r.density_ma_cm2:.3g}mAcm2/"
        f"{r.noise_v * 1e6:.3g}uV{suffix}"
    )


def generate_reality(
    seed: int = 0,
    *,
    held_out: bool = False,
    quick: bool = False,
    progress: Callable[[Case], None] | None = None,
) -> list[Case]:
    """Simulate and label the reality families: deterministic for given arguments.

    ``held_out=True`` gives the disjoint held-out set (odd cell seeds, own draws);
    ``quick=True`` one or two cases per family. ``progress`` is called after each case.
    """
    cases: list[Case] = []
    for family, full_n, quick_n, make in _FAMILIES:
        for n in range(quick_n if quick else full_n):
            recipe = make(_Draw(seed, held_out, family, n), n, quick)
            cases.append(build_lili(recipe, _name(recipe, n), held_out))
            if progress is not None:
                progress(cases[-1])
    for n in range(_FORMATION_CASES[1] if quick else _FORMATION_CASES[0]):
        cases.append(_formation(_Draw(seed, held_out, "formation", n), n, quick, held_out))
        if progress is not None:
            progress(cases[-1])
    return cases
