"""Shapes from the corpus seed sweep (seeds 0-7) that the detectors judged wrong.

Each test is a small synthetic trace with the shape of one corpus case that was halted
late, halted falsely or missed (named in the test), and each failed on the detectors
before the change it covers.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from cellguard.protocols.detectors import (
    DetectorSettings,
    Verdict,
    corpus,
    corpus_reality,
    make_detector,
)
from cellguard.protocols.detectors._reality_build import build_lili
from cellguard.protocols.detectors.corpus import Case

HALF_S = 3600.0
AREA_CM2 = 0.785
SHORT_OHM = 0.2 / AREA_CM2  # a Li filament of 0.2 Ω cm²


def shape(p_s: float) -> float:
    """A Li|Li half cycle's shape: the rise after the reversal, a plateau, voids at the end."""
    return 0.35 + 0.65 * (1.0 - math.exp(-p_s / 90.0)) + 0.1 * (p_s / HALF_S) ** 2


def square_wave(
    n_half: int,
    r_ohm: Callable[[int, float], float],
    *,
    current_a: float,
    dt_s: float,
    noise_v: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_half`` 1-h half cycles (first positive) sampled every ``dt_s``; V = r(h, p)·I
    plus Gaussian noise, ``h`` the half cycle and ``p`` the time into it."""
    rng = np.random.default_rng(seed)
    per_half = round(HALF_S / dt_s)
    t, v, i = [], [], []
    for h in range(n_half):
        sign = 1.0 if h % 2 == 0 else -1.0
        for k in range(1, per_half + 1):
            p_s = k * dt_s
            t.append(h * HALF_S + p_s)
            i.append(sign * current_a)
            v.append(sign * current_a * r_ohm(h, p_s) + rng.normal(0.0, noise_v))
    return np.array(t), np.array(v), np.array(i)


def first_halt(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Verdict | None:
    """The first halt, fed as a batch and (the same verdicts) one sample at a time."""
    t, v, i = arrays
    batch = make_detector(DetectorSettings(cell="symmetric")).feed_batch(t, v, i)
    live = make_detector(DetectorSettings(cell="symmetric"))
    streamed = []
    for k in range(len(t)):
        verdict = live.feed(float(t[k]), float(v[k]), float(i[k]))
        if verdict.severity != "ok":
            streamed.append(verdict)
        if verdict.is_halt:
            break
    assert streamed == batch
    return next((x for x in batch if x.is_halt), None)


def index_at(arrays: tuple[np.ndarray, ...], t_s: float) -> int:
    return int(np.searchsorted(arrays[0], t_s - 1e-6))


def reality_verdicts(
    make_recipe: Callable[..., Any], family: str, seed: int, held_out: bool, n: int
) -> list[Verdict]:
    """The verdicts on one reality-corpus case, built alone from its recipe."""
    recipe = make_recipe(corpus_reality._Draw(seed, held_out, family, n), n, False)
    case = build_lili(recipe, f"{family}/{n:02d}", held_out)
    detector = make_detector(DetectorSettings(cell=case.cell))
    return detector.feed_batch(case.t_s, case.voltage_v, case.current_a, case.step)


def first_halt_after_onset(case: Case) -> tuple[Verdict, int]:
    """A labelled corpus case's first halt, and its delay in samples after the onset."""
    assert case.onset_index is not None
    detector = make_detector(DetectorSettings(cell=case.cell))
    verdicts = detector.feed_batch(case.t_s, case.voltage_v, case.current_a, case.step)
    halt = next(v for v in verdicts if v.is_halt)
    return halt, halt.index - case.onset_index


# ------------------------------------------------------------------ not faults


def test_spikes_of_a_liquid_cell_in_the_last_half_cycle_are_no_slide_in_the_next() -> None:
    # liquid-early (reality, seeds 4 and 6): two spikes one after the other left a
    # 3-4 sample bump in the profile; the next half cycle, smooth there, read as a
    # slide to 0.74x and was halted. One at the very end of a half cycle did the same.
    def r(h: int, p_s: float) -> float:
        bump = 1.0
        if h == 5 and 2000.0 <= p_s < 2040.0:  # four samples at +40 %
            bump = 1.4
        if h == 6 and p_s > HALF_S - 20.0:  # the last two samples
            bump = 1.45
        return 30.0 * shape(p_s) * bump

    arrays = square_wave(12, r, current_a=0.39e-3, dt_s=10.0, noise_v=50e-6, seed=4)
    assert first_halt(arrays) is None


# ------------------------------------------------------------------ faults


def test_a_garnet_cells_collapse_halts_within_three_samples_of_its_onset() -> None:
    # garnet-short-hard (reality, seeds 1, 3, 4): 10 µA, 4 mV of overpotential, noise
    # 0.2x of it. Collapsed to ~0 V, single samples still read anywhere within
    # ±0.4x, so two consecutive ones below 0.08x (or beyond 4 σ) took 4-15 samples.
    onset_s = 9 * HALF_S + 1200.0

    def healthy(h: int, p_s: float) -> float:
        return 400.0 * shape(p_s)

    def shorted(h: int, p_s: float) -> float:
        return SHORT_OHM if h * HALF_S + p_s >= onset_s else healthy(h, p_s)

    for seed in range(20):
        twin = square_wave(14, healthy, current_a=10e-6, dt_s=30.0, noise_v=0.8e-3, seed=seed)
        assert first_halt(twin) is None
        arrays = square_wave(14, shorted, current_a=10e-6, dt_s=30.0, noise_v=0.8e-3, seed=seed)
        halt = first_halt(arrays)
        assert halt is not None
        assert halt.kind == "short"
        onset = index_at(arrays, onset_s)
        assert onset <= halt.index <= onset + 3, (seed, halt.index - onset)


def test_a_garnet_collapse_in_noise_a_quarter_of_its_level_halts_as_a_run_at_zero() -> None:
    # garnet-short-hard/02 (reality held-out, seed 3): 17 µA, 5 mV, noise 0.2x of it;
    # collapsed, its samples read 0.15, 0.32, -0.02, 0.36, 0.16x: the run's mean
    # reached 6 σ below 1 only at the fifth (4 samples late). A run of three whose mean
    # is zero within its noise is a collapse at 5 σ. The case itself, built alone.
    recipe = corpus_reality._garnet(
        corpus_reality._Draw(3, True, "garnet-short-hard", 2), 2, False, short=True
    )
    halt, delay = first_halt_after_onset(build_lili(recipe, "garnet-short-hard/02", True))
    assert (halt.kind, halt.criterion) == ("short", "low_run")
    assert 0 <= delay <= 3, delay
    # The same cell without the short: not halted.
    twin = build_lili(replace(recipe, short=None), "garnet/02", True)
    quiet = make_detector(DetectorSettings(cell=twin.cell))
    assert not any(v.is_halt for v in quiet.feed_batch(twin.t_s, twin.voltage_v, twin.current_a))


def test_a_short_at_the_third_sample_of_a_plating_test_halts_at_the_fourth() -> None:
    # early-short-hard/02 (reality held-out, seed 1): plating at 0.1 mA cm⁻² sampled
    # every 30 s, the short 90 s in. Only one sample of the step after its settling
    # time to compare with, and |V/I| of a short (0.25 Ω) hidden in 0.64 Ω of noise:
    # halted 6 samples late.
    current_a = 78.5e-6

    def r(h: int, p_s: float) -> float:
        if p_s >= 90.0:
            return SHORT_OHM
        return 60.0 * (1.0 + 0.3 * math.exp(-p_s / 60.0))  # the nucleation spike

    for seed in range(5):
        t, v, i = square_wave(1, r, current_a=current_a, dt_s=30.0, noise_v=50e-6, seed=seed)
        arrays = (t, -v, -i)  # plating: negative current
        halt = first_halt(arrays)
        assert halt is not None
        assert halt.subkind == "hard"
        assert halt.index == 3, seed  # the samples at 90 s and 120 s: both collapsed


def test_a_half_cycle_with_one_low_sample_does_not_become_a_provisional_reference() -> None:
    # short-soft/11 (classic tuning, seed 4) and short-micro/06-07 (seed 7): one half
    # cycle with a lone drop (or a slide begun at its very end) became the profile as a
    # provisional one, and against it the next half cycle's lasting drop to 0.3x was
    # only a warn (34 samples late; the micro shorts were never halted).
    onset_s = 9 * HALF_S + 300.0

    def r(h: int, p_s: float) -> float:
        healthy = 30.0 * shape(p_s)
        if h == 7 and 1800.0 <= p_s < 1830.0:  # the short's first drop: one sample
            return 0.3 * healthy
        if h * HALF_S + p_s >= onset_s and h == 9:
            return 0.3 * healthy
        return healthy

    arrays = square_wave(11, r, current_a=0.39e-3, dt_s=30.0, noise_v=20e-6, seed=2)
    halt = first_halt(arrays)
    assert halt is not None
    assert halt.kind == "short"
    onset = index_at(arrays, onset_s)
    assert onset <= halt.index <= onset + 1


def test_a_half_cycle_far_below_the_cells_own_trend_is_a_micro_short() -> None:
    # short-micro/05 (classic tuning, seed 3): the micro short began in the half cycle
    # before; the next one ran at 0.83x its profile from its first minutes, falling
    # slowly. 0.80-0.85x is a shallow slide, halted only once it is seen falling
    # within the half cycle (300 s of it) or below 0.80x: 35 samples late. Its half
    # cycles had landed within ±2 % of each other for 16 h.
    scales = [1.0, 1.01, 0.99, 1.015, 1.0, 0.985, 1.01, 1.0, 0.99, 1.005, 1.0, 0.995]
    bad = 11

    def r(h: int, p_s: float) -> float:
        level = 0.83 if h == bad else scales[h]
        return 30.0 * shape(p_s) * level

    arrays = square_wave(12, r, current_a=0.39e-3, dt_s=10.0, noise_v=20e-6, seed=5)
    halt = first_halt(arrays)
    assert halt is not None
    assert (halt.kind, halt.subkind) == ("short", "micro")
    start = index_at(arrays, bad * HALF_S)
    assert halt.index <= start + 12  # within two minutes of the half cycle's start


def test_a_shallow_slide_in_a_cell_that_grows_is_judged_against_its_growth() -> None:
    # short-micro/11 (classic held-out, seed 4) and /09 (seed 1): the cell activated,
    # then grew 3-5 % per half cycle; the micro short holds a half cycle at 0.78x of
    # its healthy twin, which is 1.04x the last half cycle: the detector saw 0.81-0.83x,
    # a shallow slide, never "deep" (0.80x) and not falling within itself: 4-7
    # samples late, or never in the half cycle.
    scales = [1.0, 1.015, 0.986, 0.965, 0.958, 0.969, 1.001, 1.033, 1.055, 1.045]
    levels = list(itertools.accumulate(scales, operator.mul))
    bad = 18  # the 10th half cycle in the positive direction

    def r(h: int, p_s: float) -> float:
        healthy = 30.0 * shape(p_s) * levels[h // 2]
        return healthy * (0.78 if h == bad else 1.0)

    arrays = square_wave(bad + 1, r, current_a=0.39e-3, dt_s=60.0, noise_v=50e-6, seed=4)
    halt = first_halt(arrays)
    assert halt is not None
    assert (halt.kind, halt.subkind) == ("short", "micro")
    start = index_at(arrays, bad * HALF_S)
    assert halt.index <= start + 10, halt.index - start  # within 10 min of its start
    # The same cell without the short, its growth going on: never halted.
    healthy = square_wave(
        bad + 1, lambda h, p: 30.0 * shape(p) * levels[h // 2], current_a=0.39e-3,
        dt_s=60.0, noise_v=50e-6, seed=4,
    )  # fmt: skip
    assert first_halt(healthy) is None


@pytest.mark.parametrize(("seed", "n"), [(3, 6), (4, 11)])
def test_a_shallow_slide_is_judged_against_the_last_half_cycles_growth(seed: int, n: int) -> None:
    # short-micro/06 (classic held-out, seed 3) and /11 (seed 4), 4 samples late each:
    # the micro short holds the half cycle at 0.80-0.85x of the profile, where its
    # healthy twin would have stood 4.7-5.5 % above it. Seed 3 is a young cell with
    # one half cycle known (grown 4.7 %), seed 4 grew 3.3 % then 5.5 %: the growth
    # projected was their mean, or none with one half cycle, so the slide was "deep"
    # only once it reached 0.80-0.835x. The last half cycle's growth is the one to
    # expect; one half cycle's alone only on the plateau (past self_settle_s).
    plans = [p for p in corpus._plans(seed, held_out=True) if p.family == "short-micro"]
    case = corpus._simulate(plans[n], f"short-micro/{n:02d}", True)
    halt, delay = first_halt_after_onset(case)
    assert (halt.kind, halt.criterion) == ("short", "slide")
    assert delay <= 3, delay


@pytest.mark.parametrize("seed", [16, 17])
def test_a_young_liquid_cells_half_cycle_start_is_no_slide_after_one_that_grew(
    seed: int,
) -> None:
    # liquid-early/01 (reality held-out, seeds 16 and 17): one half cycle known, 4 %
    # above the first; the next one's first minutes read 0.83x of it (a liquid cell's
    # shape still changes from one half cycle to the next). Projecting that one
    # half cycle's growth there made it a "deep" slide: halted, healthy.
    verdicts = reality_verdicts(corpus_reality._liquid_case, "liquid-early", seed, True, 1)
    assert not [v for v in verdicts if v.is_halt]


def test_two_separate_drops_halt_in_a_cell_whose_polarization_grows_fast() -> None:
    # short-soft/09 (classic held-out, seed 7): MII-1 at 0.1 mA cm⁻², its polarization
    # growing >10 % from one half cycle to the next in the same direction. Every profile
    # was provisional (as for activation), so two clear drops to 0.1-0.4x were only
    # warns; the halt came 59 samples (an hour) late, in the other direction.
    drops_s = (8 * HALF_S + 1200.0, 8 * HALF_S + 2400.0)

    def r(h: int, p_s: float) -> float:
        healthy = 30.0 * shape(p_s) * 1.06**h
        if any(abs(h * HALF_S + p_s - d) < 1.0 for d in drops_s):
            return 0.3 * healthy
        return healthy

    arrays = square_wave(10, r, current_a=0.39e-3, dt_s=60.0, noise_v=50e-6, seed=7)
    halt = first_halt(arrays)
    assert halt is not None
    assert (halt.kind, halt.subkind) == ("short", "soft")
    assert halt.index == index_at(arrays, drops_s[1])


def test_polarization_growing_fast_is_no_fault() -> None:
    arrays = square_wave(
        16, lambda h, p: 30.0 * shape(p) * 1.06**h, current_a=0.39e-3, dt_s=60.0,
        noise_v=50e-6, seed=8,
    )  # fmt: skip
    assert first_halt(arrays) is None


def activation(h: int) -> float:
    """A fresh cell's polarization falling fast: -17 % between half cycles in a direction."""
    return 0.5 + 0.5 * math.exp(-h / 3.0)


def test_a_half_cycle_at_half_of_a_provisional_profile_halts_past_the_settling_time() -> None:
    # short-micro/06 (classic tuning, seed 7, missed): the micro short slid two half
    # cycles down in a row, the profile became a provisional one, and against a
    # provisional profile a drop is only a warn (activation, a nucleation spike...);
    # the next half cycle, at 0.4-0.5x of it throughout, never halted. Activation takes
    # ~17-25 % per half cycle, never over a third, and a nucleation spike is over by
    # self_settle_s: past it, a half cycle at half of the last one is a short.
    bad = 2

    def r(h: int, p_s: float) -> float:
        nucleation = 1.0 + 1.5 * math.exp(-p_s / 60.0) if h < 2 else 1.0
        return 30.0 * shape(p_s) * nucleation * (0.45 if h == bad else 1.0)

    arrays = square_wave(4, r, current_a=0.39e-3, dt_s=60.0, noise_v=50e-6, seed=9)
    halt = first_halt(arrays)
    assert halt is not None
    assert halt.kind == "short"
    start = index_at(arrays, bad * HALF_S)
    # From self_settle_s (600 s) into the half cycle, on the third sample there.
    assert start + 9 <= halt.index <= start + 13, halt.index - start


def test_fast_activation_is_no_fault() -> None:
    arrays = square_wave(
        16, lambda h, p: 30.0 * shape(p) * activation(h), current_a=0.39e-3, dt_s=60.0,
        noise_v=50e-6, seed=10,
    )  # fmt: skip
    assert first_halt(arrays) is None


def test_a_deeper_sample_during_a_slide_confirms_the_slide() -> None:
    # short-micro/09 (classic tuning, seed 3): a micro short shows as the negative half
    # cycle starting at 0.68x. The second slide sample read 0.62x, just below
    # drop_ratio: it waited outside the slide window (a spike must not drag its mean)
    # and confirmed nothing, so the slide halted a sample later, 4 after the onset. A
    # sample below a slide under way is that slide going on. The case itself, alone.
    plans = [p for p in corpus._plans(3) if p.family == "short-micro"]
    halt, delay = first_halt_after_onset(corpus._simulate(plans[9], "short-micro/09", False))
    assert (halt.kind, halt.criterion) == ("short", "slide")
    assert 0 <= delay <= 3, delay


def test_a_drop_below_a_half_cycle_that_fell_out_of_a_steady_history_halts() -> None:
    # short-micro/06 (classic tuning, seed 7): after ten steady half cycles (within
    # 5 % of each other), the micro short slid one to 0.87x: learnt as a provisional
    # profile, like a fresh cell's activation. The next half cycle dropped to half of
    # it and was only warned about until the "far below" rule had 10 min of it: 19
    # samples late. Activation comes in a fresh cell, not after steady half cycles.
    plans = [p for p in corpus._plans(7) if p.family == "short-micro"]
    halt, delay = first_halt_after_onset(corpus._simulate(plans[6], "short-micro/06", False))
    assert halt.kind == "short"
    # The first samples after the onset, at the half cycle's start, stand within its
    # noise (200 µV on 1-1.7 mV: σ 0.12-0.2x there); the fourth is out of it.
    assert 0 <= delay <= 4, delay


# Scales of a cell whose growth slowed, stopped and picked up again (short-micro/08,
# classic held-out, seed 14): 1-6 % from one half cycle to the next, 4.9 % around
# their mean.
DRIFTING = [1.0, 1.0, 1.111, 1.046, 0.998, 0.977, 0.993, 1.037, 1.0]


def drifting(short: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cell's half cycles; with ``short``, the last one slides from 0.92x of its
    healthy twin to 0.77x, evenly over the hour."""
    levels = list(itertools.accumulate(DRIFTING, operator.mul))
    n = 2 * len(DRIFTING) - 1

    def r(h: int, p_s: float) -> float:
        healthy = 30.0 * shape(p_s) * levels[h // 2]
        return healthy * (0.92 - 0.15 * p_s / HALF_S if short and h == n - 1 else 1.0)

    return square_wave(n, r, current_a=0.39e-3, dt_s=30.0, noise_v=50e-6, seed=14)


def test_a_slide_in_a_cell_whose_growth_drifts_is_judged_against_the_last_half_cycle() -> None:
    # short-micro/08 (classic held-out, seed 14), 27 samples late: the micro short slid
    # from 0.87x slowly down. The slide threshold came from the scales' deviation from
    # their mean (4.9 %: 1 - 4 σ = 0.80x), as if the cell's half cycles differed that
    # much at random: the slide had to reach 0.80x. A slide is judged against the last
    # half cycle, and this cell's differ from the last by 1-6 %: 0.85x holds.
    arrays = drifting(short=True)
    halt = first_halt(arrays)
    assert halt is not None
    assert (halt.kind, halt.subkind) == ("short", "micro")
    start_s = (2 * len(DRIFTING) - 2) * HALF_S
    # 0.85x is crossed 0.47 h in; 0.80x only 0.8 h in.
    assert halt.index <= index_at(arrays, start_s + 0.6 * HALF_S), halt.index
    assert first_halt(drifting(short=False)) is None


def test_the_drifting_cells_micro_short_of_the_corpus() -> None:
    # The case itself, alone: 27 samples late before, 7 now. It slides from 0.87x of a
    # profile its healthy twin stands 3.7 % above (a growth of one half cycle only,
    # after one of 0.993: no growth is projected from that), and halts as it crosses
    # slide_ratio, falling.
    plans = [p for p in corpus._plans(14, held_out=True) if p.family == "short-micro"]
    case = corpus._simulate(plans[8], "short-micro/08", True)
    halt, delay = first_halt_after_onset(case)
    assert (halt.kind, halt.criterion) == ("short", "slide")
    assert delay <= 7, delay
