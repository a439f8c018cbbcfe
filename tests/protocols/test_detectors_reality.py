"""What real cells and instruments do, each of which fooled the detectors once.

Every trace here is built from the behaviour ``../shared/realworld.md`` lists (a short in
the first minutes, tests that never reverse, logging on change, impedance between
cycling blocks, the first half cycle's nucleation spike and a fresh cell's activation,
pauses, full cells at formation). Each test failed on the detectors before they were
taught that behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pytest

from cellguard.drivers.files import StepKind
from cellguard.drivers.neware import ChannelAddress, ChannelId, SimChannel
from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.protocols import Cell, GalvanostaticCycling
from cellguard.protocols.detectors import DetectorSettings, Verdict, make_detector

I_A = 0.3927e-3  # 0.5 mA cm⁻² on a 0.785 cm² disc
HALF_S = 3600.0
R_OHM = 50.0  # ~20 mV at 0.39 mA: a good interphase


@dataclass
class Seg:
    """A stretch of constant current: ``duration_s`` at ``current_a`` (0: rest)."""

    duration_s: float
    current_a: float
    kind: StepKind = StepKind.CC
    step: int = 0
    # r(position in the half cycle, time since the start) in Ω; V = r·I.
    r_ohm: Callable[[float, float], float] | None = None
    continues: bool = False  # a resumed half cycle: positions go on


def shape(p_s: float) -> float:
    """A Li|Li half cycle's shape: a peak early on, a plateau, a rise at the end."""
    return 1.0 + 0.25 * math.exp(-p_s / 300.0) + 0.15 * (p_s / HALF_S) ** 4


def build(
    segments: Sequence[Seg], *, dt_s: float = 10.0, noise_v: float = 50e-6, seed: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays ``t, V, I, step, kind`` sampled every ``dt_s`` with Gaussian noise; after
    every current step the double layer relaxes with τ = 5 s, as real cells do."""
    rng = np.random.default_rng(seed)
    t: list[float] = []
    v: list[float] = []
    i: list[float] = []
    steps: list[int] = []
    kinds: list[int] = []
    now = 0.0
    p_s = 0.0
    v_prev = 0.0
    for seg in segments:
        if not seg.continues:
            p_s = 0.0
        n = max(1, round(seg.duration_s / dt_s))
        v_step = v_prev
        for k in range(1, n + 1):
            now += dt_s
            if seg.current_a:
                p_s += dt_s
            r = (seg.r_ohm or (lambda p, _t: R_OHM * shape(p)))(p_s, now)
            target = r * seg.current_a
            if k == 1:
                v_first = target
            value = target + (v_step - v_first) * math.exp(-(k * dt_s) / 5.0)
            t.append(now)
            v.append(value + rng.normal(0.0, noise_v))
            i.append(seg.current_a)
            steps.append(seg.step)
            kinds.append(int(seg.kind))
            v_prev = value
    return (
        np.array(t),
        np.array(v),
        np.array(i),
        np.array(steps, dtype=np.int64),
        np.array(kinds, dtype=np.int64),
    )


def cycling(n_half: int, **kw: object) -> list[Seg]:
    """``n_half`` 1-h half cycles, starting positive, steps numbered 1, 2, 1, 2..."""
    return [Seg(HALF_S, I_A if k % 2 == 0 else -I_A, step=1 + k % 2, **kw) for k in range(n_half)]  # type: ignore[arg-type]


def judge(
    arrays: tuple[np.ndarray, ...],
    cell: str = "symmetric",
    *,
    with_steps: bool = False,
    with_kinds: bool = False,
    **overrides: float,
) -> list[Verdict]:
    t, v, i, steps, kinds = arrays
    det = make_detector(DetectorSettings(cell=cell, **overrides))  # type: ignore[arg-type]
    batch = det.feed_batch(
        t, v, i, steps if with_steps else None, None, kinds if with_kinds else None
    )
    # Live, one sample at a time, the verdicts are the same.
    live = make_detector(DetectorSettings(cell=cell, **overrides))  # type: ignore[arg-type]
    one_by_one = []
    for k in range(len(t)):
        verdict = live.feed(
            float(t[k]),
            float(v[k]),
            float(i[k]),
            int(steps[k]) if with_steps else None,
            None,
            int(kinds[k]) if with_kinds else None,
        )
        if verdict.severity != "ok":
            one_by_one.append(verdict)
        if verdict.severity == "halt":
            break
    assert one_by_one == batch
    return batch


def halts(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.severity == "halt"]


def time_of(arrays: tuple[np.ndarray, ...], t_s: float) -> int:
    return int(np.searchsorted(arrays[0], t_s))


# ------------------------------------------------- 1. judged before any history


@pytest.mark.parametrize("dt_s", [1.0, 10.0, 60.0])
def test_a_hard_short_in_the_first_minutes_of_a_test_halts(dt_s: float) -> None:
    shorted = lambda p, t: R_OHM * shape(p) if t < 180.0 else 0.25  # noqa: E731
    arrays = build([Seg(HALF_S, I_A, r_ohm=shorted)], dt_s=dt_s)
    (halt,) = halts(judge(arrays))
    assert halt.kind == "short"
    assert halt.subkind == "hard"
    # |V| ~0.1 mV from 180 s: halted within 30 s and 3 samples of it.
    # Judged against the test's own first three minutes (at 60 s sampling: against the
    # lower of its two samples there, the first one included): within two samples.
    assert 180.0 <= halt.t_s <= 180.0 + 2 * dt_s
    assert "this step's own" in halt.detail


def test_a_cell_shorted_from_its_first_sample_halts() -> None:
    arrays = build([Seg(HALF_S, -I_A, r_ohm=lambda p, t: 0.3)], dt_s=5.0)
    (halt,) = halts(judge(arrays))
    assert halt.subkind == "hard"
    # Nothing to compare with: |V/I| itself, once the zero crossing's 30 s are past.
    assert halt.t_s <= 50.0
    assert "Ω" in halt.detail


def _plating(r_of_t: Callable[[float], float], hours: float, dt_s: float = 30.0) -> list[Seg]:
    """Plating to failure: one direction for hours, a nucleation spike at the start."""

    def r(p_s: float, t_s: float) -> float:
        nucleation = 1.0 + 1.5 * math.exp(-p_s / 60.0)
        return r_of_t(t_s) * nucleation

    return [Seg(hours * 3600.0, -I_A, r_ohm=r)]


def test_a_soft_short_in_a_test_that_never_reverses_halts_against_its_own_level() -> None:
    onset_s = 5.2 * 3600.0

    def r_of_t(t_s: float) -> float:
        healthy = R_OHM * (1.0 - 0.04 * t_s / 3600.0)  # slow decline, as plating roughens
        if t_s < onset_s:
            return healthy
        # Down by about half within two minutes, then a telegraph between levels.
        fall = min(1.0, (t_s - onset_s) / 120.0)
        telegraph = 0.1 * math.copysign(1.0, math.sin((t_s - onset_s) / 400.0))
        return healthy * (1.0 - fall * (0.5 + telegraph))

    arrays = build(_plating(r_of_t, 10.0), dt_s=30.0)
    (halt,) = halts(judge(arrays))
    assert halt.kind == "short"
    assert halt.criterion == "own_drop"
    assert onset_s <= halt.t_s <= onset_s + 600.0


def test_healthy_plating_to_failure_with_its_nucleation_spike_never_halts() -> None:
    arrays = build(_plating(lambda t: R_OHM * (1.0 - 0.04 * t / 3600.0), 12.0), dt_s=30.0)
    assert halts(judge(arrays)) == []


def test_tiny_currents_are_not_shorts_without_history() -> None:
    # An OCV-like stretch at 0.5 µA (|V/I| far below an ohm would need |V| < 0.5 µV):
    # a healthy Li|Li cell there reads ~0 V, which is no short.
    arrays = build([Seg(3600.0, -0.5e-6, r_ohm=lambda p, t: 0.2)], dt_s=10.0, noise_v=1e-7)
    assert halts(judge(arrays)) == []


# ------------------------------------------------- 2. persistence is time


def _with_burst(
    arrays: tuple[np.ndarray, ...], at_s: float, factor: float, samples: int = 4
) -> tuple[np.ndarray, ...]:
    """A 3 ms spike logged on change: ``samples`` extra samples < 1 ms apart."""
    t, v, i, steps, kinds = arrays
    k = time_of(arrays, at_s)
    times = t[k] + 0.5e-3 * np.arange(1, samples + 1)
    return (
        np.insert(t, k + 1, times),
        np.insert(v, k + 1, v[k] * factor * np.ones(samples)),
        np.insert(i, k + 1, np.full(samples, i[k])),
        np.insert(steps, k + 1, np.full(samples, steps[k])),
        np.insert(kinds, k + 1, np.full(samples, kinds[k])),
    )


@pytest.mark.parametrize(("factor", "what"), [(8.0, "shift"), (0.0, "collapse"), (0.4, "drop")])
def test_a_three_millisecond_spike_logged_as_a_burst_never_halts(factor: float, what: str) -> None:
    arrays = build(cycling(8), dt_s=10.0)
    spiked = _with_burst(arrays, 5.5 * 3600.0, factor)
    verdicts = judge(spiked, "asymmetric")
    assert halts(verdicts) == []
    assert any(v.severity == "warn" for v in verdicts), f"the {what} spike is still reported"


def test_two_bursts_of_one_drop_each_are_not_two_drops() -> None:
    arrays = build(cycling(10), dt_s=10.0)
    spiked = _with_burst(_with_burst(arrays, 5.5 * 3600.0, 0.3, 6), 7.5 * 3600.0, 1.0)
    assert halts(judge(spiked)) == []


def test_a_lasting_shift_still_halts_on_its_second_sample() -> None:
    def r(p: float, t: float) -> float:
        return R_OHM * shape(p) * (30.0 if t > 6.5 * 3600.0 else 1.0)

    arrays = build(cycling(8, r_ohm=r), dt_s=10.0)
    (halt,) = halts(judge(arrays, "asymmetric"))
    assert halt.kind == "depletion"
    first = time_of(arrays, 6.5 * 3600.0) + 1  # the first sample after 6.5 h
    assert halt.index == first + 1


# ------------------------------------------------- 3. not every segment is a half cycle


def _impedance(step: int, kind: StepKind) -> list[Seg]:
    """A PEIS sweep: a sinusoid's points (mean ~0.5 µA), OCV before and after."""
    points = []
    for k, amplitude_a in enumerate(10e-6 * np.sin(np.linspace(0.3, 40.0, 60))):
        points.append(
            Seg(2.0, float(amplitude_a) - 0.5e-6, kind=kind, step=step, r_ohm=lambda p, t: 40.0)
        )
        del k
    # The points' *mean* current over a whole sweep may look like a steady -0.5 µA.
    steady = Seg(600.0, -0.5e-6, kind=kind, step=step, r_ohm=lambda p, t: 40.0)
    rest = Seg(600.0, 0.0, kind=StepKind.REST, step=step + 1)
    return [rest, *points, steady, rest]


@pytest.mark.parametrize("told", [True, False])
def test_an_impedance_measurement_is_not_learnt_as_a_half_cycle(told: bool) -> None:
    kind = StepKind.IMPEDANCE if told else StepKind.UNKNOWN
    segs = cycling(4) + _impedance(10, kind) + cycling(6)
    arrays = build(segs, dt_s=10.0)
    assert halts(judge(arrays, with_steps=told, with_kinds=told)) == []


def test_a_step_that_is_not_cycling_is_not_judged_when_the_file_says_so() -> None:
    # A CV hold at ~0 V with current flowing reads as a collapse unless its kind is known.
    hold = Seg(1800.0, I_A, kind=StepKind.CV, step=7, r_ohm=lambda p, t: 0.1)
    arrays = build([*cycling(4), hold, *cycling(2)], dt_s=10.0)
    assert halts(judge(arrays, with_steps=True, with_kinds=True)) == []
    assert halts(judge(arrays))  # without the kind, |V/I| = 0.1 Ω under current is a short


# ------------------------------------------------- 4. the first half cycle


def _fresh(p_s: float, t_s: float) -> float:
    """A fresh cell: a nucleation spike, polarization falling over the first hours."""
    nucleation = 1.0 + 2.0 * math.exp(-t_s / 120.0)
    activation = 0.55 + 0.45 * math.exp(-t_s / (2.5 * 3600.0))
    return R_OHM * shape(p_s) * nucleation * activation


def test_a_fresh_cell_settling_after_its_first_half_cycle_is_not_a_micro_short() -> None:
    arrays = build(cycling(16, r_ohm=_fresh), dt_s=10.0)
    verdicts = judge(arrays)
    assert halts(verdicts) == []


def test_activation_is_warned_about_never_halted() -> None:
    # Polarization falling by 15-25 % per half cycle for the first hours, then steadying.
    def r(p: float, t: float) -> float:
        return R_OHM * shape(p) * (0.4 + 0.6 * math.exp(-t / (4 * HALF_S)))

    arrays = build(cycling(16, r_ohm=r), dt_s=10.0)
    verdicts = judge(arrays)
    assert halts(verdicts) == []
    assert any(v.severity == "warn" and v.subkind == "micro" for v in verdicts)


def test_a_micro_short_still_halts_after_a_fresh_start() -> None:
    onset_s = 10.3 * HALF_S

    def r(p: float, t: float) -> float:
        base = _fresh(p, t)
        return base * (max(0.05, 1.0 - (t - onset_s) / 900.0) if t > onset_s else 1.0)

    arrays = build(cycling(14, r_ohm=r), dt_s=10.0)
    (halt,) = halts(judge(arrays))
    assert halt.kind == "short"
    assert onset_s < halt.t_s < onset_s + 900.0


# ------------------------------------------------- 5. pause and resume


def declining(p_s: float, t_s: float) -> float:
    """A half cycle whose overpotential falls as it goes (the pits' area grows): where
    a half cycle is compared with matters."""
    return R_OHM * (1.3 - 0.5 * p_s / HALF_S) * (1.0 + 0.25 * math.exp(-p_s / 300.0))


def _paused(pause_s: float, kind: StepKind) -> list[Seg]:
    """Cycling with a pause in the middle of the 6th half cycle (step 2, negative)."""
    segs = cycling(5, r_ohm=declining)
    segs += [
        Seg(0.4 * HALF_S, -I_A, step=2, r_ohm=declining),
        Seg(pause_s, 0.0, kind=kind, step=2),
        Seg(0.6 * HALF_S, -I_A, step=2, continues=True, r_ohm=declining),
    ]
    return segs + cycling(8, r_ohm=declining)


@pytest.mark.parametrize("told", [True, False])
@pytest.mark.parametrize("pause_s", [3 * 3600.0, 600.0])
def test_a_paused_and_resumed_half_cycle_goes_on_where_it_stopped(
    told: bool, pause_s: float
) -> None:
    kind = StepKind.PAUSE if told else StepKind.REST
    arrays = build(_paused(pause_s, kind), dt_s=10.0)
    verdicts = judge(arrays, with_steps=told, with_kinds=told)
    assert halts(verdicts) == []


def test_a_pause_with_no_samples_at_all_is_a_gap_and_halts_nothing() -> None:
    arrays = build(_paused(3 * 3600.0, StepKind.PAUSE), dt_s=10.0)
    t, v, i, steps, kinds = arrays
    keep = i != 0.0  # the recorded stream of a paused channel: nothing while paused
    assert halts(judge((t[keep], v[keep], i[keep], steps[keep], kinds[keep]))) == []


def test_a_short_after_a_pause_still_halts() -> None:
    segs = _paused(3 * 3600.0, StepKind.PAUSE)
    arrays = build(segs, dt_s=10.0)
    t, v, i, steps, kinds = arrays
    late = t > t[-1] - 3 * HALF_S + 1800.0
    v = np.where(late, v * 0.02, v)  # a hard short 1.5 half cycles before the end
    (halt,) = halts(judge((t, v, i, steps, kinds)))
    assert halt.kind == "short"
    onset = float(t[np.argmax(late)])
    assert onset <= halt.t_s <= onset + 60.0


# ------------------------------------------------- 6. full cells


def _formation(top_v: float) -> tuple[np.ndarray, ...]:
    """A fresh cell resting at 0.3 V, charged at C/10 to ``top_v``, then cycled."""
    t = np.arange(0.0, 40 * 3600.0, 30.0)
    v = np.empty_like(t)
    i = np.zeros_like(t)
    rest_s = 2 * 3600.0
    for k, now in enumerate(t):
        if now < rest_s:
            v[k] = 0.3
            continue
        phase = ((now - rest_s) / (6 * 3600.0)) % 2.0
        charging = phase < 1.0
        x = phase if charging else 2.0 - phase
        if now - rest_s < 6 * 3600.0:  # the first charge starts from 0.3 V
            v[k] = 0.3 + (top_v - 0.3) * x**0.3
        else:
            v[k] = 3.0 + (top_v - 3.0) * x
        i[k] = 2e-3 if charging else -2e-3
    return t, v, i, np.zeros(len(t), dtype=np.int64), np.zeros(len(t), dtype=np.int64)


def test_a_fresh_full_cell_resting_at_low_voltage_before_formation_is_not_halted() -> None:
    assert halts(judge(_formation(4.2), "full")) == []


def test_the_window_comes_from_the_protocol() -> None:
    arrays = _formation(4.9)  # a high-voltage protocol: charged to 4.9 V on a ±5 V range
    (halt,) = halts(judge(arrays, "full"))  # the default window ends at 4.6 V
    assert halt.criterion == "window"
    assert halts(judge(arrays, "full", full_v_max_v=4.95)) == []
    (over,) = halts(judge(arrays, "full", full_v_max_v=4.8))
    assert over.criterion == "window"
    assert over.threshold == pytest.approx(4.85)  # the window plus its 50 mV margin


def test_a_full_cell_collapse_after_formation_still_halts() -> None:
    t, v, i, steps, kinds = _formation(4.2)
    v = np.where(t > 20 * 3600.0, 0.05, v)
    (halt,) = halts(judge((t, v, i, steps, kinds), "full"))
    assert halt.criterion == "collapse"
    assert halt.t_s >= 20 * 3600.0


def _ct4008_paused(pause_s: float, seed: int) -> tuple[list[tuple[float, float, float, int]], ...]:
    """A healthy Li|Li cell on the simulated CT-4008, paused for ``pause_s`` 30 min into
    its 4th cycle's plating half cycle: (recorded, live) samples as (t, V, I, step)."""
    cell = SimCell(SimCellSpec(interphase="SEI", never_short=True), seed)
    channel = SimChannel(ChannelAddress(ChannelId(1, 1, 1)), cell, current_range_ma=10.0)
    program = GalvanostaticCycling(
        Cell.symmetric(0.785398), cycles=20, record_interval_s=30.0
    ).to_step_file()
    assert channel.start(program, "cell", 0.0, datetime(2026, 1, 5))
    live: list[tuple[float, float, float, int]] = []
    pause_at_s = 3 * 2 * HALF_S + HALF_S + 1800.0
    now = 0.0
    paused = False
    while now < pause_at_s + pause_s + 12 * HALF_S:
        now += 10.0
        if not paused and now >= pause_at_s:
            assert channel.pause(now)
            paused = True
        if paused and now >= pause_at_s + pause_s and channel.workstatus == "pause":
            assert channel.resume(now)
        channel.advance_to(now)
        rec = channel.inquire()
        if rec.workstatus == "working":  # the service judges working channels only
            assert rec.step_id is not None
            live.append((rec.total_time_s, rec.voltage_v, rec.current_a, rec.step_id))
    recorded = [
        (r.test_time_ms / 1000.0, r.voltage_v, r.current_a, r.step_id)
        for r in channel.download(1, 1_000_000)
    ]
    return recorded, live


@pytest.mark.parametrize("seed", [1, 2])
def test_a_ct4008_channel_paused_for_three_hours_is_not_halted_after_the_resume(
    seed: int,
) -> None:
    recorded, live = _ct4008_paused(3 * 3600.0, seed)
    for rows, starts in ((recorded, True), (live, False)):
        det = make_detector(DetectorSettings(cell="symmetric", stream_starts_at_reversal=starts))
        out = [det.feed(t, v, i, step) for t, v, i, step in rows]
        assert [v for v in out if v.severity == "halt"] == [], ("recorded", "live")[not starts]
