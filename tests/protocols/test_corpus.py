"""The labelled corpus: deterministic, sane labels, realistic post-processing, disjoint sets."""

from __future__ import annotations

import numpy as np
import pytest

from cellguard.protocols.detectors.corpus import (
    FAULT_FAMILIES,
    HALF_CYCLE_S,
    NON_FAULT_FAMILIES,
    Case,
    generate,
)


@pytest.fixture(scope="module")
def tuning() -> list[Case]:
    return generate(0, quick=True)


@pytest.fixture(scope="module")
def held_out() -> list[Case]:
    return generate(0, held_out=True, quick=True)


def _same(a: Case, b: Case) -> bool:
    arrays = ("t_s", "voltage_v", "current_a", "step", "cycle")
    scalars = (
        "name",
        "family",
        "cell",
        "fault",
        "subkind",
        "physical_onset_index",
        "onset_index",
        "interval_s",
        "current_density_ma_cm2",
        "noise_v",
        "held_out",
        "seed",
        "reversal_tau_s",
        "glitch_indices",
    )
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in arrays) and all(
        getattr(a, f) == getattr(b, f) for f in scalars
    )


def test_the_same_arguments_give_the_same_corpus_bit_for_bit(tuning: list[Case]) -> None:
    again = generate(0, quick=True)
    assert [c.name for c in again] == [c.name for c in tuning]
    assert all(_same(a, b) for a, b in zip(tuning, again, strict=True))


def test_every_family_is_present_with_arrays_of_one_length_and_dtype(tuning: list[Case]) -> None:
    assert {c.family for c in tuning} == set(FAULT_FAMILIES) | set(NON_FAULT_FAMILIES)
    for case in tuning:
        n = len(case.t_s)
        assert n > 0
        for name in ("t_s", "voltage_v", "current_a"):
            assert getattr(case, name).dtype == np.float64, (case.name, name)
            assert len(getattr(case, name)) == n
        for name in ("step", "cycle"):
            assert getattr(case, name).dtype == np.int64, (case.name, name)
            assert len(getattr(case, name)) == n
        assert np.allclose(np.diff(case.t_s), case.interval_s)
        assert np.all(np.abs(case.voltage_v) <= 5.0), "recorded voltages stay in the ±5 V range"
        assert len(case.t_s) <= 105_000


def test_fault_labels_lie_in_the_trace_after_two_full_cycles(tuning: list[Case]) -> None:
    for case in (c for c in tuning if c.fault is not None):
        phys, onset = case.physical_onset_index, case.onset_index
        assert phys is not None, case.name
        assert onset is not None, case.name
        assert 0 <= phys <= onset < len(case.t_s), case.name
        period_s = 2 * (HALF_CYCLE_S + case.rest_s)
        assert case.t_s[phys] >= 2 * period_s, f"{case.name}: fault before two full cycles"
        # The trace goes on for about 3 h after the onset, and not forever.
        after_h = (case.t_s[-1] - case.t_s[phys]) / 3600
        assert 2.9 <= after_h <= 14, case.name
        # The observable onset is a sample under current.
        assert case.current_a[onset] != 0, case.name
        if case.fault == "depletion":
            assert case.cell == "asymmetric"
            # Observable at the second depleted sample: one alone could be a glitch.
            assert onset > phys
            assert case.current_a[onset] > 0, "depletion strips the (thin) working electrode"
        else:
            assert case.subkind in ("hard", "soft", "micro")


def test_a_hard_short_collapses_the_voltage_at_its_observable_onset(tuning: list[Case]) -> None:
    for case in (c for c in tuning if c.subkind == "hard"):
        assert case.onset_index is not None
        phys = case.physical_onset_index
        flowing = case.current_a[:phys] != 0
        before = np.abs(case.voltage_v[:phys][flowing])
        assert abs(case.voltage_v[case.onset_index]) < 0.3 * np.median(before), case.name


def test_non_fault_cases_carry_no_labels(tuning: list[Case]) -> None:
    for case in (c for c in tuning if c.fault is None):
        assert case.family in NON_FAULT_FAMILIES
        assert case.subkind is None
        assert case.physical_onset_index is None
        assert case.onset_index is None


def test_the_reversal_transient_is_visible_at_1_s(tuning: list[Case]) -> None:
    """At 1 s the first sample after a reversal still has the old sign (double layer);
    the simulator alone would flip the sign at once (ohmic drop)."""
    case = next(c for c in tuning if c.family == "reversal" and c.interval_s == 1.0)
    assert 2.0 <= case.reversal_tau_s <= 10.0
    i, v = case.current_a, case.voltage_v
    reversals = np.flatnonzero(np.sign(i[1:]) == -np.sign(i[:-1])) + 1
    assert len(reversals) >= 4
    for k in reversals:
        assert v[k] * i[k] < 0, f"sample {k} after the reversal already follows the current"
        settled = k + int(10 * case.reversal_tau_s) + 1
        assert v[settled] * i[settled] > 0, f"still crossing {settled - k} s after a reversal"


def test_glitches_are_single_samples_never_two_within_24_h(tuning: list[Case]) -> None:
    glitchy = [c for c in tuning if c.family == "glitch"]
    assert glitchy
    for case in glitchy:
        v = case.voltage_v
        assert case.glitch_indices
        odd = np.flatnonzero((np.abs(v) >= 0.5) | (v == 0.0))
        assert tuple(odd.tolist()) == case.glitch_indices, "glitches are the only odd samples"
        for k in case.glitch_indices:
            assert v[k] == 0.0 or 1.0 <= abs(v[k]) <= 3.0
            assert case.current_a[k] != 0
            assert abs(v[k - 1]) < 0.5
            assert abs(v[k + 1]) < 0.5
        gaps_h = np.diff(case.t_s[list(case.glitch_indices)]) / 3600
        assert np.all(gaps_h >= 24.0)
    for case in (c for c in tuning if c.family != "glitch"):
        assert case.glitch_indices == ()


def test_reversed_leads_flip_the_voltage_sign_not_the_current(tuning: list[Case]) -> None:
    case = next(c for c in tuning if c.family == "reversed-leads")
    flowing = case.current_a != 0
    assert case.current_a[0] > 0, "the first half cycle is positive"
    agree = np.mean(case.voltage_v[flowing] * case.current_a[flowing] > 0)
    assert agree < 0.05


def test_rest_periods_hold_zero_current_and_near_zero_voltage(tuning: list[Case]) -> None:
    case = next(c for c in tuning if c.family == "rest")
    assert 5 * 60 <= case.rest_s <= 30 * 60
    resting = case.current_a == 0
    assert resting.any()
    # Past the double-layer transient, a Li|Li cell at rest reads 0 V ± noise.
    assert np.median(np.abs(case.voltage_v[resting])) < 5 * case.noise_v


def test_held_out_is_disjoint_from_tuning(tuning: list[Case], held_out: list[Case]) -> None:
    assert all(c.held_out for c in held_out)
    assert not any(c.held_out for c in tuning)
    assert not {c.seed for c in tuning} & {c.seed for c in held_out}
    assert {c.family for c in held_out} == {c.family for c in tuning}
    assert not any(
        len(a.t_s) == len(b.t_s) and np.array_equal(a.voltage_v, b.voltage_v)
        for a in tuning
        for b in held_out
    )
    draws = [(c.family, c.interphase, c.interval_s, c.current_density_ma_cm2, c.noise_v)
             for c in tuning]  # fmt: skip
    held_draws = [(c.family, c.interphase, c.interval_s, c.current_density_ma_cm2, c.noise_v)
                  for c in held_out]  # fmt: skip
    assert draws != held_draws, "the held-out set draws its parameters differently"
