"""The reality families of the corpus: present, labelled sensibly, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from cellguard.drivers.files import StepKind
from cellguard.protocols.detectors.corpus import AREA_CM2, Case
from cellguard.protocols.detectors.corpus_reality import (
    REALITY_FAULT_FAMILIES,
    REALITY_NON_FAULT_FAMILIES,
    generate_reality,
)

ONE_WAY = ("plating", "hold", "ccd-same")


_SETS = {"tuning": (0, False), "held-out": (0, True)}


@pytest.fixture(scope="module", params=list(_SETS))
def tuning(request: pytest.FixtureRequest) -> list[Case]:
    """Each property holds on the tuning set and on the held-out one."""
    seed, held = _SETS[request.param]
    return generate_reality(seed, held_out=held, quick=True)


@pytest.fixture(scope="module")
def held_out() -> list[Case]:
    return generate_reality(0, held_out=True, quick=True)


def _family(cases: list[Case], family: str) -> list[Case]:
    found = [c for c in cases if c.family == family]
    assert found, f"no {family} case"
    return found


def _charge_as(case: Case, mask: np.ndarray) -> float:
    """Charge (A s) of the samples in ``mask``: each sample's current flowed since the
    previous sample (the recorder's convention; steps end on a sample)."""
    dt_s = np.diff(case.t_s, prepend=0.0)
    return float(np.sum(case.current_a[mask] * dt_s[mask]))


def test_the_same_arguments_give_the_same_cases_bit_for_bit(tuning: list[Case]) -> None:
    again = generate_reality(0, held_out=tuning[0].held_out, quick=True)
    assert [c.name for c in again] == [c.name for c in tuning]
    for a, b in zip(tuning, again, strict=True):
        for field in ("t_s", "voltage_v", "current_a", "step", "cycle"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (a.name, field)
        if a.step_kind is None or b.step_kind is None:
            assert a.step_kind is b.step_kind is None
        else:
            assert np.array_equal(a.step_kind, b.step_kind)
        assert (a.physical_onset_index, a.onset_index) == (b.physical_onset_index, b.onset_index)
    other = generate_reality(1, held_out=tuning[0].held_out, quick=True)
    assert not all(
        len(a.t_s) == len(b.t_s) and np.array_equal(a.voltage_v, b.voltage_v)
        for a, b in zip(tuning, other, strict=True)
    ), "another seed gives other cases"


def test_every_family_is_present_with_consistent_arrays(tuning: list[Case]) -> None:
    assert {c.family for c in tuning} == set(REALITY_FAULT_FAMILIES) | set(
        REALITY_NON_FAULT_FAMILIES
    )
    for case in tuning:
        n = len(case.t_s)
        assert n > 10, case.name
        for name in ("t_s", "voltage_v", "current_a"):
            assert getattr(case, name).dtype == np.float64, (case.name, name)
            assert len(getattr(case, name)) == n
        for name in ("step", "cycle"):
            assert getattr(case, name).dtype == np.int64, (case.name, name)
            assert len(getattr(case, name)) == n
        if case.step_kind is not None:
            assert case.step_kind.dtype == np.int64
            assert len(case.step_kind) == n
        assert np.all(np.diff(case.t_s) > 0), f"{case.name}: time must increase"
        assert np.all(np.abs(case.voltage_v) <= 5.0)
        assert case.cell in ("symmetric", "asymmetric", "full")
        assert len(case.t_s) <= 105_000


def test_labels_follow_the_classic_semantics(tuning: list[Case]) -> None:
    for case in tuning:
        if case.family in REALITY_NON_FAULT_FAMILIES:
            assert case.fault is None, case.name
            assert case.physical_onset_index is None
            assert case.onset_index is None
            continue
        assert case.family in REALITY_FAULT_FAMILIES
        assert case.fault == "short"
        phys, onset = case.physical_onset_index, case.onset_index
        assert phys is not None
        assert onset is not None
        assert 0 <= phys <= onset < len(case.t_s), case.name
        assert case.current_a[onset] != 0, "observable under current"
        assert case.t_s[-1] - case.t_s[onset] >= 3600 - 1e-6, "an hour goes on after it"


def test_one_direction_protocols_never_change_sign(tuning: list[Case]) -> None:
    one_way = [c for c in tuning if c.protocol in ONE_WAY]
    assert {c.family for c in one_way} >= {"plating", "hold", "ccd", "early-short-hard",
                                           "one-way-short-soft"}  # fmt: skip
    for case in one_way:
        signs = np.sign(case.current_a)
        assert signs[0] != 0
        assert np.all(signs == signs[0]), case.name
    plating = _family(tuning, "plating")[0]
    assert plating.current_a[0] < 0, "anode-free: Li is plated onto the (Cu) working electrode"
    assert plating.t_s[-1] >= 5 * 3600
    hold = _family(tuning, "hold")[0]
    assert hold.t_s[-1] >= 10 * 3600


def test_ccd_steps_carry_a_quarter_mah_at_rising_density(tuning: list[Case]) -> None:
    cases = _family(tuning, "ccd")
    assert {c.protocol for c in cases} == {"ccd-same", "ccd-alternating"}
    for case in cases:
        densities = []
        for step in np.unique(case.step):
            mask = case.step == step
            charge_mah_cm2 = abs(_charge_as(case, mask)) / 3.6 / AREA_CM2
            assert charge_mah_cm2 == pytest.approx(0.25, rel=1e-9), (case.name, step)
            densities.append(abs(case.current_a[mask][0]) * 1e3 / AREA_CM2)
        assert densities[0] == pytest.approx(0.25)
        assert np.all(np.diff(densities) > 0)
        assert densities[-1] >= 2.0
    alternating = next(c for c in cases if c.protocol == "ccd-alternating")
    assert np.any(alternating.current_a > 0)
    assert np.any(alternating.current_a < 0)


def test_early_hard_shorts_strike_in_the_first_minutes(tuning: list[Case]) -> None:
    for case in _family(tuning, "early-short-hard"):
        assert case.protocol in (*ONE_WAY, "ccd-alternating")
        assert case.physical_onset_index is not None
        assert case.onset_index is not None
        assert case.t_s[case.physical_onset_index] <= 600 + case.interval_s
        assert case.onset_index == case.physical_onset_index, "observable at once"
        # |V| collapses to ~0.1 mV under current.
        assert abs(case.voltage_v[case.onset_index]) < 1e-3 + 5 * case.noise_v


def test_logging_on_change_spans_milliseconds_to_minutes(tuning: list[Case]) -> None:
    for case in _family(tuning, "log-on-change"):
        dt_s = np.diff(case.t_s)
        assert dt_s.min() < 1e-3
        assert dt_s.max() > 10.0
        assert case.log_dv_v > 0
        assert case.glitch_indices
        bursts = np.split(np.asarray(case.glitch_indices), np.flatnonzero(
            np.diff(case.glitch_indices) > 1) + 1)  # fmt: skip
        for burst in bursts:
            assert len(burst) >= 4, "a spike arrives as several samples"
            span_s = case.t_s[burst[-1]] - case.t_s[burst[0]]
            assert span_s <= 3.1e-3
            assert np.all(np.diff(case.t_s[burst]) < 1e-3)
            assert np.all(case.current_a[burst] != 0), "under current"
        # Between spikes, a point is kept when V moved by dE or dt passed (checked on
        # the instrument's 1 s grid).
        normal = np.ones(len(case.t_s), dtype=bool)
        normal[list(case.glitch_indices)] = False
        assert np.max(np.diff(case.t_s[normal])) <= case.interval_s + 1.0


def test_impedance_segments_have_zero_mean_current_between_rests(tuning: list[Case]) -> None:
    cases = _family(tuning, "impedance")
    assert {("source" if c.step_kind is not None and c.step_kind.any() else "unknown")
            for c in cases} == {"source", "unknown"}  # fmt: skip
    source = next(c for c in cases if c.step_kind is not None and c.step_kind.any())
    assert source.step_kind is not None
    eis = source.step_kind == StepKind.IMPEDANCE
    assert eis.any()
    assert set(np.unique(source.step_kind).tolist()) == {StepKind.CC, StepKind.REST,
                                                         StepKind.IMPEDANCE}  # fmt: skip
    for step in np.unique(source.step[eis]):
        seg = source.step == step
        amplitude_a = np.max(np.abs(source.current_a[seg]))
        assert 0.99 * 10e-6 <= amplitude_a <= 100e-6
        assert abs(np.mean(source.current_a[seg])) < 1e-3 * amplitude_a
        # A sinusoid sampled at the recorded points: many values, not just ±amplitude.
        assert len(np.unique(np.round(source.current_a[seg] / amplitude_a, 3))) > 20
        # OCV rest right before and after the sweep.
        first, last = np.flatnonzero(seg)[[0, -1]]
        assert source.current_a[first - 1] == 0.0
        assert source.current_a[last + 1] == 0.0
    unknown = next(c for c in cases if c is not source)
    assert unknown.step_kind is not None
    assert not unknown.step_kind.any(), "the UNKNOWN variant says nothing"


def test_a_pause_holds_zero_current_and_the_half_cycle_keeps_its_charge(
    tuning: list[Case],
) -> None:
    cases = _family(tuning, "pause")
    assert len(cases) >= 2
    for case in cases:
        zero = case.current_a == 0.0
        assert zero.any()
        paused_steps = np.unique(case.step[zero])
        assert len(paused_steps) == 1, "one pause, inside one half cycle"
        step = paused_steps[0]
        in_step = case.step == step
        zero_idx = np.flatnonzero(zero)
        pause_s = case.t_s[zero_idx[-1]] - case.t_s[zero_idx[0] - 1]
        assert 3600 - 1e-6 <= pause_s <= 5 * 3600 + 1e-6
        assert np.all(zero[zero_idx[0] : zero_idx[-1] + 1]), "one uninterrupted pause"
        # Current flows before and after the pause in the same step.
        assert case.current_a[zero_idx[0] - 1] == case.current_a[zero_idx[-1] + 1] != 0
        assert case.step[zero_idx[0] - 1] == case.step[zero_idx[-1] + 1] == step
        # The half cycle's charge is the protocol's: 1 h at its current, not more.
        expected_as = case.current_density_ma_cm2 * 1e-3 * AREA_CM2 * 3600
        assert abs(_charge_as(case, in_step)) == pytest.approx(expected_as, rel=1e-9)
        assert case.step_kind is not None
        if case.step_kind.any():
            assert np.array_equal(case.step_kind == StepKind.PAUSE, zero)
            assert np.all(case.step_kind[~zero] == StepKind.CC)
        # Relaxed towards 0 V (Li|Li open circuit) by the end of the pause.
        assert abs(case.voltage_v[zero_idx[-1]]) < 5 * case.noise_v + 1e-6
    assert {bool(c.step_kind is not None and c.step_kind.any()) for c in cases} == {True, False}


def _flowing_median(case: Case, start_s: float, end_s: float) -> float:
    mask = (case.t_s >= start_s) & (case.t_s < end_s) & (case.current_a != 0)
    return float(np.median(np.abs(case.voltage_v[mask])))


def test_fresh_cells_nucleate_and_their_polarization_falls(tuning: list[Case]) -> None:
    nucleating = _family(tuning, "nucleation")[0]
    peak_v = np.max(np.abs(nucleating.voltage_v[nucleating.t_s <= 600]))
    assert peak_v > 1.3 * _flowing_median(nucleating, 1800, 3600), "a peak, then lower"
    active = _family(tuning, "fresh-activation")[0]
    end_s = active.t_s[-1]
    early = _flowing_median(active, 2 * 3600, 4 * 3600)
    late = _flowing_median(active, end_s - 2 * 3600, end_s)
    assert 0.45 < late / early < 0.9
    liquid = _family(tuning, "liquid-early")[0]
    jumps = np.abs(np.diff(liquid.voltage_v))
    hour = liquid.t_s[1:] < 3600
    settled = liquid.t_s[1:] > liquid.t_s[-1] - 3 * 3600
    assert np.median(jumps[hour]) > 2 * np.median(jumps[settled]), "noisy at first"


def test_formation_starts_fresh_and_the_window_is_the_protocols(tuning: list[Case]) -> None:
    cases = _family(tuning, "formation")
    assert sorted({c.v_max_v or 0.0 for c in cases}) == pytest.approx([4.3, 5.0])
    for case in cases:
        assert case.cell == "full"
        assert 0.15 < case.voltage_v[0] < 0.5, "a fresh cell rests at 0.2-0.4 V"
        assert case.v_min_v == 0.0
        assert case.v_max_v is not None
        cutoff_v = case.v_max_v - 0.1
        assert np.max(case.voltage_v) == pytest.approx(cutoff_v, abs=0.01)
        assert case.step_kind is not None
        kinds = set(np.unique(case.step_kind).tolist())
        assert {StepKind.CC, StepKind.REST} <= kinds
        assert (StepKind.CV in kinds) == ("cccv" in case.protocol)


def test_garnet_cells_run_at_microamps_with_noise_like_the_signal(tuning: list[Case]) -> None:
    for case in _family(tuning, "garnet") + _family(tuning, "garnet-short-hard"):
        flowing = case.current_a != 0
        assert np.all((np.abs(case.current_a[flowing]) >= 1e-6)
                      & (np.abs(case.current_a[flowing]) <= 20e-6))  # fmt: skip
        end = case.physical_onset_index or len(case.t_s)
        overpotential_v = _flowing_median(case, 600, case.t_s[end - 1])
        assert 1e-3 < overpotential_v < 8e-3
        assert 0.1 * overpotential_v < case.noise_v < 0.5 * overpotential_v


def test_real_soft_shorts_halve_within_minutes_and_go_on_for_hours(tuning: list[Case]) -> None:
    for case in _family(tuning, "soft-short-telegraph") + _family(tuning, "one-way-short-soft"):
        phys, onset = case.physical_onset_index, case.onset_index
        assert phys is not None
        assert onset is not None
        assert case.t_s[onset] - case.t_s[phys] <= 300 + 3 * case.interval_s
        assert case.t_s[-1] - case.t_s[onset] >= 6 * 3600
        t_on = case.t_s[phys]
        before = _flowing_median(case, t_on - 1800, t_on)
        after = _flowing_median(case, case.t_s[onset], case.t_s[onset] + 1800)
        assert 0.3 < after / before < 0.62, case.name


def test_held_out_is_disjoint_from_tuning(held_out: list[Case]) -> None:
    tuning = generate_reality(0, quick=True)
    assert all(c.held_out for c in held_out)
    assert not any(c.held_out for c in tuning)
    assert not {c.seed for c in tuning} & {c.seed for c in held_out}
    assert {c.family for c in held_out} == {c.family for c in tuning}


def test_a_noisy_channel_keeps_its_level_and_only_its_noise_rises(tuning: list[Case]) -> None:
    """noise-rise: a healthy cell whose channel turns noisy (a loose contact). Against
    the same case without the rise (same draws), the trace is identical up to the rise,
    then differs by the extra noise only: (gain - 1) × the instrument noise, centred."""
    from dataclasses import replace  # noqa: PLC0415

    from cellguard.protocols.detectors import corpus_reality as cr  # noqa: PLC0415
    from cellguard.protocols.detectors._reality_build import build_lili  # noqa: PLC0415

    cases = _family(tuning, "noise-rise")
    assert {c.protocol for c in cases} == {"square-wave", "hold"}
    held = cases[0].held_out
    for n, case in enumerate(cases):
        recipe = cr._noise_rise_case(cr._Draw(0, held, "noise-rise", n), n, True)
        assert recipe.noise_rise is not None
        gain, from_s = recipe.noise_rise
        assert 2.0 <= gain <= 5.0
        assert 0.1 <= case.current_density_ma_cm2 <= 0.5
        quiet = build_lili(replace(recipe, noise_rise=None), case.name, held)
        assert np.array_equal(quiet.t_s, case.t_s)
        before = case.t_s < from_s
        assert np.array_equal(case.voltage_v[before], quiet.voltage_v[before]), case.name
        extra_v = (case.voltage_v - quiet.voltage_v)[~before] / (gain - 1.0)
        assert np.std(extra_v) == pytest.approx(case.noise_v, rel=0.15), case.name
        assert abs(np.mean(extra_v)) < 0.1 * case.noise_v, "the level is unchanged"
