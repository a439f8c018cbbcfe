"""A channel that turns noisy at an unchanged level is no short; drops out of that noise are.

The synthetic cell is the one of ``test_detectors_seeds``: 1-h half cycles, a 2.4 mV
plateau at 0.1 mA cm⁻² (0.0785 mA), 200 µV of instrument noise, 30 s sampling. Before
the detector judged falls against the recent scatter, a noise rise of 4× halted this
healthy cell in 10 of 10 seeds (50 s to 3 h after the rise).
"""

from __future__ import annotations

import random
import statistics

import numpy as np

from cellguard.protocols.detectors import DetectorSettings, corpus, corpus_reality, make_detector
from cellguard.protocols.detectors._scatter import RecentScatter
from tests.protocols.test_detectors_seeds import reality_verdicts, shape

CURRENT_A = 0.0785e-3
R_OHM = 30.0  # 2.4 mV at the plateau
NOISE_V = 200e-6
DT_S = 30.0
RISE_S = 10 * 3600.0 + 1000.0


def _trace(seed: int, gain: float, drops: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    t, v, i = [], [], []
    for h in range(24):
        sign = 1.0 if h % 2 == 0 else -1.0
        for k in range(1, 121):
            t_s = h * 3600.0 + k * DT_S
            level = R_OHM * shape(k * DT_S)
            noise_v = NOISE_V * (gain if t_s >= RISE_S else 1.0)
            # A soft short's drops: to 0.25x for 5 min, every 40 min, from 14 h on.
            if drops and t_s >= 14 * 3600.0 and (t_s - 14 * 3600.0) % 2400.0 < 300.0:
                level *= 0.25
            t.append(t_s)
            i.append(sign * CURRENT_A)
            v.append(sign * CURRENT_A * level + rng.normal(0.0, noise_v))
    return np.array(t), np.array(v), np.array(i)


def _verdicts(arrays: tuple[np.ndarray, ...]) -> list[tuple[float, str, str]]:
    t, v, i = arrays
    verdicts = make_detector(DetectorSettings(cell="symmetric")).feed_batch(t, v, i)
    return [(float(t[x.index]), x.severity, x.criterion) for x in verdicts]


def test_a_healthy_channel_whose_noise_rises_is_not_halted_and_a_person_is_told() -> None:
    halted = []
    for seed in range(10):
        verdicts = _verdicts(_trace(seed, gain=4.0))
        halts = [t for t, severity, _ in verdicts if severity == "halt"]
        if halts:
            halted.append(seed)
            # Only in the first samples after the rise, before the estimate (15
            # samples) can follow: two low samples in a row are then the start of a
            # drop as much as noise.
            assert RISE_S <= halts[0] <= RISE_S + 10 * DT_S, (seed, halts[0])
            continue
        warned = [t for t, severity, c in verdicts if severity == "warn" and c == "scatter"]
        assert warned, seed
        assert min(warned) >= RISE_S
    # It was every seed, from 50 s to 3 h after the rise.
    assert len(halted) <= 3, halted


def test_a_soft_shorts_drops_in_a_noisy_channel_still_halt() -> None:
    for seed in range(5):
        verdicts = _verdicts(_trace(seed, gain=2.0, drops=True))
        halts = [(t, c) for t, severity, c in verdicts if severity == "halt"]
        assert halts, seed
        t_s, _ = halts[0]
        # The first drop begins at 14 h and lasts 5 min (10 samples).
        assert 14 * 3600.0 <= t_s <= 14 * 3600.0 + 300.0, (seed, halts[0])


def test_the_recent_scatter_reads_the_noise_not_a_trend_a_drop_or_a_glitch() -> None:
    rng = random.Random(3)

    def read(values: list[float]) -> float:
        scatter = RecentScatter()
        for k, x in enumerate(values):
            scatter.add(float(k), x)
        return scatter.sigma()

    plain = [read([rng.gauss(0.0, 2.0) for _ in range(15)]) for _ in range(2000)]
    assert 1.9 < statistics.mean(plain) < 2.2
    # A slow fall (a soft short's overpotential sliding over minutes) is no scatter.
    ramp = [read([-3.0 * k + rng.gauss(0.0, 2.0) for k in range(15)]) for _ in range(500)]
    assert statistics.mean(ramp) < 2.4
    # One glitch, far out, moves it little.
    glitched = [read([rng.gauss(0.0, 2.0) for _ in range(14)] + [500.0]) for _ in range(500)]
    assert statistics.mean(glitched) < 2.5
    # Unknown (0) until the window is full; a burst within spacing_s is one sample.
    scatter = RecentScatter()
    for k in range(14):
        scatter.add(float(k), rng.gauss(0.0, 2.0))
    assert scatter.sigma() == 0.0
    scatter.add(13.2, 100.0)
    assert scatter.sigma() == 0.0


def test_a_soft_shorts_own_scatter_does_not_hide_its_drops() -> None:
    # short-soft/06 (classic held-out, seed 1; 30 s, 0.1 mA cm⁻², 200 µV): the soft
    # phase's frequent drops of varying depth read as scatter 2-3× the learnt noise,
    # and the 15-sample estimate swings by ~30 %. Holding its peaks judged the drops
    # against 1.9-2.3× the noise: 18 samples late. The case itself, simulated alone.
    plans = [p for p in corpus._plans(1, held_out=True) if p.family == "short-soft"]
    case = corpus._simulate(plans[6], "short-soft/06", held_out=True)
    assert case.onset_index is not None
    detector = make_detector(DetectorSettings(cell=case.cell))
    verdicts = detector.feed_batch(case.t_s, case.voltage_v, case.current_a)
    halt = next(v for v in verdicts if v.is_halt)
    assert halt.kind == "short"
    assert 0 <= halt.index - case.onset_index <= 3, halt.index - case.onset_index


def test_a_held_profile_takes_the_noise_of_the_noisy_half_cycle_it_held_out() -> None:
    # noise-rise/02 (reality tuning, seed 11): 0.1 mA cm⁻², 2.2 mV, 200 µV at 10 s
    # sampling, the noise x2.44 from 4.2 h on. The first noisy half cycle looked low and
    # was held out of the profile, which then kept its quiet 190 µV while the channel
    # read 490 µV: two samples at 0.5x, 2.3 σ of the real noise, halted it as a soft
    # short at 6.6 h. The case itself, built alone.
    verdicts = reality_verdicts(corpus_reality._noise_rise_case, "noise-rise", 11, False, 2)
    assert not [v for v in verdicts if v.is_halt]
    assert any(v.criterion == "scatter" for v in verdicts)
