"""Detectors: every fault halts, every non-fault never does (rules stated per test)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellguard.drivers import ConfigError
from cellguard.drivers.sim import ShortSpec, SimCell, SimCellSpec, simulate_square_wave
from cellguard.protocols.detectors import (
    OK,
    DetectorSettings,
    FullCellDetector,
    Verdict,
    make_detector,
)

AREA_CM2 = 0.785


class Trace:
    """A galvanostatic square wave from the simulator, as arrays."""

    def __init__(
        self,
        spec: SimCellSpec,
        *,
        seed: int = 1,
        hours: float,
        dt_s: float = 60.0,
        j_ma_cm2: float = 0.5,
        areal_mah_cm2: float = 0.5,
    ) -> None:
        self.cell = SimCell(spec, seed)
        current_a = j_ma_cm2 * spec.area_cm2 / 1000.0
        half_s = areal_mah_cm2 / j_ma_cm2 * 3600.0
        rows = []
        depleted_at = None
        for t, i, v in simulate_square_wave(self.cell, current_a, half_s, hours * 3600.0, dt_s):
            if depleted_at is None and self.cell.depleted:
                depleted_at = len(rows)
            rows.append((t, v, i))
        data = np.array(rows)
        self.t_s = data[:, 0].copy()
        self.voltage_v = data[:, 1].copy()
        self.current_a = data[:, 2].copy()
        self.depleted_index = depleted_at

    def first_index_after_h(self, hours: float) -> int:
        return int(np.searchsorted(self.t_s, hours * 3600.0))


def judge(trace: Trace, cell: str = "asymmetric", **overrides: float) -> list[Verdict]:
    detector = make_detector(DetectorSettings(cell=cell, **overrides))  # type: ignore[arg-type]
    return detector.feed_batch(trace.t_s, trace.voltage_v, trace.current_a)


def halts(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.severity == "halt"]


# ---------------------------------------------------------------- depletion


@pytest.mark.parametrize("dt_s", [1.0, 10.0, 30.0, 60.0])
def test_depletion_halts_within_two_samples_of_the_thin_electrode_running_out(
    dt_s: float,
) -> None:
    hours = 56.0 if dt_s >= 10 else 54.0
    trace = Trace(
        SimCellSpec("MII-1", li_working_um=20.0, never_short=True), hours=hours, dt_s=dt_s
    )
    if dt_s == 1.0:  # keep the 1 s trace short: only the hours around the onset matter
        assert trace.depleted_index is not None
    (halt,) = halts(judge(trace))
    assert halt.kind == "depletion"
    assert trace.depleted_index is not None
    assert 0 <= halt.index - trace.depleted_index <= 2
    if dt_s <= 10.0:  # the rise takes ~1 min: at fine sampling it is caught before the range
        assert halt.criterion == "shift_ratio"
        assert halt.measured < 4.9
    assert "expected" in halt.detail or "range" in halt.detail


def test_a_jump_straight_to_the_range_halts_on_that_very_sample() -> None:
    trace = Trace(SimCellSpec("SEI", never_short=True), hours=10.0)
    trace.voltage_v[400] = 5.0
    (halt,) = halts(judge(trace))
    assert halt.index == 400
    assert halt.criterion == "range"


def test_symmetric_cells_report_a_voltage_shift_not_a_depletion() -> None:
    trace = Trace(SimCellSpec("SEI", never_short=True), hours=10.0)
    mid = trace.first_index_after_h(6.5)
    trace.voltage_v[mid : mid + 5] *= 20
    (halt,) = halts(judge(trace, cell="symmetric"))
    assert halt.kind == "voltage_shift"
    assert halt.index == mid + 1


# ---------------------------------------------------------------- shorts


@pytest.mark.parametrize(("kind", "criterion"), [("hard", "collapse"), ("soft", "drop")])
@pytest.mark.parametrize("j_ma_cm2", [0.1, 0.5, 1.0])
def test_hard_and_soft_shorts_halt_and_never_before_the_onset(
    kind: str, criterion: str, j_ma_cm2: float
) -> None:
    onset_h = 9.3
    spec = SimCellSpec("SEI", short=ShortSpec(kind, onset_h))  # type: ignore[arg-type]
    trace = Trace(spec, hours=22.0, dt_s=30.0, j_ma_cm2=j_ma_cm2, areal_mah_cm2=j_ma_cm2)
    (halt,) = halts(judge(trace))
    assert halt.kind == "short"
    onset = trace.first_index_after_h(onset_h)
    assert halt.index >= onset
    if kind == "hard":
        assert halt.subkind == "hard"
        assert halt.index - onset <= 2
    # A soft short at low current density may first show as a slide: still a short.
    assert halt.criterion in (criterion, "collapse", "drop", "slide")


def test_a_micro_short_halts_while_the_plating_voltage_slides_towards_zero() -> None:
    onset_h = 12.0
    spec = SimCellSpec("MII-2", short=ShortSpec("micro", onset_h))
    trace = Trace(spec, hours=24.0, dt_s=60.0)
    twin = Trace(SimCellSpec("MII-2", never_short=True), hours=24.0, dt_s=60.0)
    (halt,) = halts(judge(trace, cell="symmetric"))
    assert halt.kind == "short"
    assert halt.subkind == "micro"
    assert halt.index >= trace.first_index_after_h(onset_h)
    # Caught before the voltage has lost a third of its value against the healthy twin.
    k = halt.index
    assert abs(trace.voltage_v[k]) > 0.6 * abs(twin.voltage_v[k])


# ---------------------------------------------------------------- not faults


@pytest.mark.parametrize(
    ("interphase", "hours", "cell"),
    [("MII-1", 300.0, "symmetric"), ("MII-2", 150.0, "symmetric"), ("MII-3", 200.0, "asymmetric")],
)
def test_slow_growth_activation_and_healthy_cells_never_halt(
    interphase: str, hours: float, cell: str
) -> None:
    thin = 100.0 if cell == "symmetric" else 20.0
    spec = SimCellSpec(interphase, li_working_um=thin, never_short=True, temperature_swing=0.1)
    verdicts = judge(Trace(spec, hours=hours), cell=cell)
    assert halts(verdicts) == []


@pytest.mark.parametrize("glitch_v", [0.0, 2.0, -1.5])
def test_a_single_sample_glitch_warns_but_never_halts(glitch_v: float) -> None:
    trace = Trace(SimCellSpec("SEI", never_short=True), hours=12.0)
    k = trace.first_index_after_h(7.4)
    trace.voltage_v[k] = glitch_v
    verdicts = judge(trace)
    assert halts(verdicts) == []
    assert [v.index for v in verdicts if v.severity == "warn"] == [k]


def test_reversed_leads_are_healthy_and_their_faults_still_halt() -> None:
    trace = Trace(SimCellSpec("MII-3", never_short=True), hours=48.0)
    trace.voltage_v *= -1
    assert halts(judge(trace, cell="symmetric")) == []
    shorted = Trace(SimCellSpec("SEI", short=ShortSpec("hard", 10.2)), hours=14.0)
    shorted.voltage_v *= -1
    (halt,) = halts(judge(shorted, cell="symmetric"))
    assert halt.kind == "short"


def test_rest_periods_between_half_cycles_never_halt() -> None:
    cell = SimCell(SimCellSpec("SEI", never_short=True), 3)
    current_a = 0.5 * AREA_CM2 / 1000.0
    rows = []
    t = 0.0
    for half in range(24):
        sign = 1 if half % 2 == 0 else -1
        for _ in range(60):
            t += 60.0
            rows.append((t, cell.advance(60.0, sign * current_a), sign * current_a))
        for _ in range(20):  # 20 min of rest: V relaxes to ~0
            t += 60.0
            rows.append((t, cell.advance(60.0, 0.0), 0.0))
    data = np.array(rows)
    detector = make_detector(DetectorSettings(cell="symmetric"))
    assert halts(detector.feed_batch(data[:, 0], data[:, 1], data[:, 2])) == []


def test_the_zero_crossing_at_each_reversal_never_halts_at_1_s() -> None:
    trace = Trace(SimCellSpec("SEI", never_short=True), hours=8.0, dt_s=1.0)
    # A double-layer transient at every reversal: V passes through zero over seconds.
    signs = np.sign(trace.current_a)
    reversals = np.flatnonzero(np.diff(signs) != 0) + 1
    for k in reversals:
        before = trace.voltage_v[k - 1]
        after = trace.voltage_v[k + 60]
        n = min(60, len(trace.t_s) - k)
        trace.voltage_v[k : k + n] += (before - after) * np.exp(-np.arange(1, n + 1) / 8.0)
    assert halts(judge(trace)) == []


@given(seed=st.integers(0, 10_000), scale=st.floats(0.0, 1.0), dt_s=st.sampled_from([10.0, 60.0]))
@settings(max_examples=12, deadline=None)
def test_scaling_the_voltage_noise_down_never_adds_a_halt(
    seed: int, scale: float, dt_s: float
) -> None:
    """If a noisy healthy trace does not halt, the same trace with less noise does not."""
    noisy = Trace(
        SimCellSpec("MII-3", never_short=True, noise_v=200e-6), seed=seed, hours=16.0, dt_s=dt_s
    )
    clean = Trace(
        SimCellSpec("MII-3", never_short=True, noise_v=0.0), seed=seed, hours=16.0, dt_s=dt_s
    )
    noise = noisy.voltage_v - clean.voltage_v
    assert halts(judge(noisy)) == []
    clean.voltage_v = clean.voltage_v + scale * noise
    assert halts(judge(clean)) == []


@given(cuts=st.lists(st.integers(1, 2000), min_size=1, max_size=6))
@settings(max_examples=20, deadline=None)
def test_feeding_one_by_one_or_in_any_batches_gives_the_same_verdicts(cuts: list[int]) -> None:
    trace = Trace(SimCellSpec("SEI", short=ShortSpec("soft", 8.0)), hours=14.0)
    trace.voltage_v[200] = 0.0
    one = make_detector(DetectorSettings(cell="symmetric"))
    by_sample = [
        v
        for t, vv, i in zip(trace.t_s, trace.voltage_v, trace.current_a, strict=True)
        if (v := one.feed(float(t), float(vv), float(i))) is not OK
    ]
    batched = make_detector(DetectorSettings(cell="symmetric"))
    bounds = sorted({0, *[c % len(trace.t_s) for c in cuts], len(trace.t_s)})
    by_batch: list[Verdict] = []
    for a, b in itertools.pairwise(bounds):
        by_batch += batched.feed_batch(trace.t_s[a:b], trace.voltage_v[a:b], trace.current_a[a:b])
    assert by_batch == by_sample
    assert batched.samples == one.samples == len(trace.t_s)
    assert batched.halt == one.halt is not None


def test_after_a_halt_nothing_more_is_judged() -> None:
    trace = Trace(SimCellSpec("SEI", short=ShortSpec("hard", 6.0)), hours=12.0)
    detector = make_detector(DetectorSettings(cell="symmetric"))
    verdicts = detector.feed_batch(trace.t_s, trace.voltage_v, trace.current_a)
    assert verdicts[-1].severity == "halt"
    assert detector.feed(1e9, 9.9, 1.0) is OK
    assert detector.samples == len(trace.t_s) + 1


def test_a_halt_explains_criterion_measured_baseline_and_threshold() -> None:
    trace = Trace(SimCellSpec("SEI", short=ShortSpec("hard", 6.0)), hours=12.0)
    (halt,) = halts(judge(trace))
    assert halt.criterion == "collapse"
    assert halt.unit == "V"
    assert halt.measured < halt.threshold < halt.baseline
    assert not math.isnan(halt.t_s)
    as_json = halt.as_dict()
    assert as_json["severity"] == "halt"
    assert as_json["kind"] == "short"
    assert "mV" in str(as_json["detail"])


def test_settings_refuse_impossible_thresholds_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="cell"):
        DetectorSettings(cell="pouch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="shift_floor_v"):
        DetectorSettings(shift_floor_v=-1.0)
    with pytest.raises(ConfigError, match="drop_ratio"):
        DetectorSettings(drop_ratio=0.95)


# ---------------------------------------------------------------- full cells


def _full_cell_cycle(n: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(n, dtype=float)
    phase = (t // 1000) % 2
    i = np.where(phase == 0, 2e-3, -2e-3)
    v = np.where(phase == 0, 3.5 + 0.6 * (t % 1000) / 1000, 4.1 - 0.6 * (t % 1000) / 1000)
    return t, v, i


def test_full_cell_charge_discharge_and_rate_changes_never_halt() -> None:
    t, v, i = _full_cell_cycle()
    i[2500:3000] *= 3  # a rate step: the voltage jumps with it
    v[2500:3000] -= 0.2
    assert halts(FullCellDetector(DetectorSettings(cell="full")).feed_batch(t, v, i)) == []


def test_full_cell_collapse_and_drop_while_charging_halt() -> None:
    t, v, i = _full_cell_cycle()
    v[500:] = np.where(np.arange(len(v) - 500) < 3, v[500:] - 0.5, v[500:])
    (halt,) = halts(FullCellDetector(DetectorSettings(cell="full")).feed_batch(t, v, i))
    assert (halt.kind, halt.subkind, halt.index) == ("short", "soft", 501)
    t, v, i = _full_cell_cycle()
    v[1500:] = 0.05
    (halt,) = halts(FullCellDetector(DetectorSettings(cell="full")).feed_batch(t, v, i))
    assert (halt.kind, halt.subkind, halt.index) == ("short", "hard", 1501)


def test_full_cell_batch_and_single_samples_agree() -> None:
    t, v, i = _full_cell_cycle()
    v[700] = 0.1  # a glitch: warn only
    v[2200:2210] = 4.9
    a = FullCellDetector(DetectorSettings(cell="full"))
    single = [x for k in range(len(t)) if (x := a.feed(t[k], v[k], i[k])) is not OK]
    b = FullCellDetector(DetectorSettings(cell="full"))
    batched = b.feed_batch(t[:1000], v[:1000], i[:1000]) + b.feed_batch(
        t[1000:], v[1000:], i[1000:]
    )
    assert batched == single
    assert [(x.severity, x.kind) for x in single] == [
        ("warn", "short"),
        ("warn", "limit"),  # the first sample at the range: not yet lasting
        ("halt", "limit"),
    ]


def test_a_full_scale_record_where_a_charge_begins_is_a_spike_not_a_halt() -> None:
    # A real Neware file (nw4-120-1-6-53.ndax): a discharge ends at 3.50 V, then two
    # records stamped at the same instant read 4.99985 V under +0.62 mA as the CC-CV
    # charge begins, and the CV step holds 4.90 V. One instant at the rail is a spike.
    t = np.array([0.0, 10.0, 20.0, 20.0, 20.0, 30.0, 40.0])
    v = np.array([3.52, 3.51, 3.50, 4.99985, 4.99985, 4.9002, 4.8999])
    i = np.array([-3.9e-4, -3.9e-4, -3.9e-4, 6.19e-4, 6.19e-4, 4.97e-4, 4.66e-4])
    settings = DetectorSettings(cell="full", full_v_max_v=4.9)
    verdicts = FullCellDetector(settings).feed_batch(t, v, i)
    assert halts(verdicts) == []
    assert {(x.severity, x.criterion) for x in verdicts} == {("warn", "range")}
    # A cell that stays at the range is halted one confirm_s later.
    v[5:] = 4.99985
    (halt,) = halts(FullCellDetector(settings).feed_batch(t, v, i))
    assert (halt.kind, halt.criterion, halt.index) == ("limit", "range", 5)


def test_a_gap_in_the_data_never_halts_a_healthy_cell_and_a_fault_after_it_still_halts() -> None:
    """After a link outage the half-cycle position is unknown until the next reversal."""
    trace = Trace(SimCellSpec("SEI", never_short=True), hours=20.0)
    keep = (trace.t_s < 9 * 3600) | (trace.t_s > 12.3 * 3600)  # 3.3 h missing
    t, v, i = trace.t_s[keep], trace.voltage_v[keep], trace.current_a[keep]
    assert halts(make_detector(DetectorSettings(cell="symmetric")).feed_batch(t, v, i)) == []
    shorted = Trace(SimCellSpec("SEI", short=ShortSpec("hard", 15.2)), hours=20.0)
    keep = (shorted.t_s < 9 * 3600) | (shorted.t_s > 12.3 * 3600)
    (halt,) = halts(
        make_detector(DetectorSettings(cell="symmetric")).feed_batch(
            shorted.t_s[keep], shorted.voltage_v[keep], shorted.current_a[keep]
        )
    )
    assert halt.kind == "short"
    assert 15.2 * 3600 <= halt.t_s <= 15.2 * 3600 + 3 * 60


def test_a_noise_free_record_is_halted_with_a_message_not_an_exception() -> None:
    # A figure's data or a coarse ADC on a flat plateau learns a noise of exactly 0.
    # A drop at a half cycle's start, a sample rising out of it (the zero crossing, which
    # clears the low run) and a lower one after: the run of samples below drop_ratio
    # halts, and its message used to divide by that noise.
    detector = make_detector(DetectorSettings(cell="symmetric"))
    r_ohm, current_a, t_s = 100.0, 1e-3, 0.0
    for half in range(6):
        sign = 1.0 if half % 2 == 0 else -1.0
        for _ in range(180):  # 30 min at 10 s
            t_s += 10.0
            assert detector.feed(t_s, sign * current_a * r_ohm, sign * current_a).severity == "ok"
    verdicts = []
    for ratio in (0.3, 0.5, 0.4):
        t_s += 10.0
        verdicts.append(detector.feed(t_s, current_a * r_ohm * ratio, current_a))
    assert [v.severity for v in verdicts] == ["warn", "ok", "halt"]
    halt = verdicts[-1]
    assert halt.kind == "short"
    assert halt.criterion == "low_run"
    assert "0.35× on average" in halt.detail
    assert "no noise learnt" in halt.detail
