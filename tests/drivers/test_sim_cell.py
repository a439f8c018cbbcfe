"""The simulated cell reproduces the paper's orderings and keeps its physics consistent.

Protocol of the main paper unless a test says otherwise: 0.5 mA cm⁻² on 0.785 cm²,
1 h half cycles (0.5 mAh cm⁻²), first half cycle stripping the working electrode.
Polarization is the mean |V| over the middle third of each half cycle; depletion is the
first |V| > 5 V; a short is the first |V| < 1 mV while current flows.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from functools import cache

import pytest

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.sim import (
    INTERPHASES,
    LI_MAH_CM2_PER_UM,
    ShortSpec,
    SimCell,
    SimCellSpec,
    interphase,
    simulate_square_wave,
)

AREA_CM2 = 0.785
CURRENT_A = 0.5e-3 * AREA_CM2
HALF_S = 3600.0
SEED = 7


@dataclass(frozen=True)
class Profile:
    pol_mv: tuple[float, ...]  # per half cycle
    max_abs_v: tuple[float, ...]  # per half cycle
    depletion_h: float | None
    short_h: float | None


@cache
def profile(
    name: str,
    working_um: float,
    hours: float,
    dt_s: float = 60.0,
    seed: int = SEED,
    short: ShortSpec | None = None,
) -> Profile:
    """Cycle one cell with the paper's protocol and reduce it to per-half-cycle figures."""
    cell = SimCell(SimCellSpec(interphase=name, li_working_um=working_um, short=short), seed)
    per_half = round(HALF_S / dt_s)
    mid: dict[int, list[float]] = {}
    peak: dict[int, float] = {}
    depletion_h = short_h = None
    for k, (t_s, i_a, v) in enumerate(
        simulate_square_wave(cell, CURRENT_A, HALF_S, hours * 3600, dt_s)
    ):
        half, pos = divmod(k, per_half)
        if per_half / 3 <= pos < 2 * per_half / 3:
            mid.setdefault(half, []).append(abs(v))
        peak[half] = max(peak.get(half, 0.0), abs(v))
        if depletion_h is None and abs(v) > 5.0:
            depletion_h = t_s / 3600
        if short_h is None and i_a != 0 and abs(v) < 1e-3:
            short_h = t_s / 3600
    return Profile(
        pol_mv=tuple(1e3 * sum(x) / len(x) for x in mid.values()),
        max_abs_v=tuple(peak.values()),
        depletion_h=depletion_h,
        short_h=short_h,
    )


def daily_mean_mv(p: Profile, day: int) -> float:
    window = p.pol_mv[24 * day : 24 * (day + 1)]
    return sum(window) / len(window)


def never(x: float | None) -> float:
    return math.inf if x is None else x


# -- determinism, conservation, sign ---------------------------------------------------


def run_voltages(seed: int, spec: SimCellSpec, steps: int = 2000) -> list[float]:
    cell = SimCell(spec, seed)
    return [v for _, _, v in simulate_square_wave(cell, CURRENT_A, HALF_S, steps * 60.0, 60.0)]


def test_same_seed_gives_identical_voltages() -> None:
    spec = SimCellSpec(interphase="SEI", short=ShortSpec("soft", 5.0))
    assert run_voltages(3, spec) == run_voltages(3, spec)


def test_different_seeds_give_different_noise_and_short_onsets() -> None:
    spec = SimCellSpec(interphase="SEI")
    assert run_voltages(3, spec, 50) != run_voltages(4, spec, 50)
    onsets = {SimCell(spec, seed).short.onset_h for seed in range(20)}  # type: ignore[union-attr]
    assert len(onsets) == 20
    nominal = INTERPHASES["SEI"].short_onset_h
    assert all(0.9 * nominal <= h <= 1.1 * nominal for h in onsets)


def test_inventory_change_equals_charge_passed_minus_consumption() -> None:
    rng = random.Random(1)
    spec = SimCellSpec(interphase="MII-2", li_working_um=50, never_short=True)
    cell = SimCell(spec, 1)
    passed_mah_cm2 = 0.0
    for _ in range(3000):
        dt_s = rng.uniform(0.1, 600.0)
        # Keep the net charge within ±1 mAh cm⁻² so neither electrode hits its floor.
        sign = (
            -1.0 if passed_mah_cm2 > 1 else 1.0 if passed_mah_cm2 < -1 else rng.choice([-1, 0, 1])
        )
        current_a = sign * rng.uniform(0.0, 1e-3)
        cell.advance(dt_s, current_a)
        passed_mah_cm2 += current_a * 1000 / AREA_CM2 * dt_s / 3600
    loss = interphase("MII-2").li_loss_mah_cm2(cell.t_s / 3600)
    assert cell.li_working_mah_cm2 == pytest.approx(50 * LI_MAH_CM2_PER_UM - passed_mah_cm2 - loss)
    assert cell.li_counter_mah_cm2 == pytest.approx(100 * LI_MAH_CM2_PER_UM + passed_mah_cm2 - loss)


def test_voltage_sign_follows_current_from_the_first_sample() -> None:
    for name in INTERPHASES:
        cell = SimCell(SimCellSpec(interphase=name, never_short=True), 2)
        for dt_s in (0.1, 1.0, 10.0, 60.0):
            for current_a in (CURRENT_A, -CURRENT_A, CURRENT_A):
                assert math.copysign(1.0, cell.advance(dt_s, current_a)) == math.copysign(
                    1.0, current_a
                )


def test_rest_is_open_circuit_noise_around_zero() -> None:
    cell = SimCell(SimCellSpec(interphase="MII-1"), 5)
    cell.advance(3600.0, CURRENT_A)
    rest = [cell.advance(10.0, 0.0) for _ in range(2000)]
    assert max(abs(v) for v in rest) < 6 * 50e-6
    assert abs(sum(rest) / len(rest)) < 10e-6


# -- the paper's orderings ----------------------------------------------------------------


def test_sei_symmetric_polarization_is_10_to_13_mv_and_slowly_rising() -> None:
    p = profile("SEI", 100, 800)
    first, fourth = daily_mean_mv(p, 0), daily_mean_mv(p, 3)
    assert 10.0 <= first < fourth <= 13.0
    assert fourth - first < 1.5


def test_sei_symmetric_cell_shorts_first_of_all_symmetric_cells_at_100_to_130_h() -> None:
    sei = never(profile("SEI", 100, 800).short_h)
    assert 100 <= sei <= 130
    others = [profile(name, 100, 800) for name in ("MII-1", "MII-2", "MII-3")]
    assert all(sei < never(p.short_h) for p in others)
    # A symmetric cell may only deplete once it has failed otherwise (never for MII-1).
    assert all(p.depletion_h is None or p.depletion_h > never(p.short_h) for p in others)


def test_sei_asymmetric_cells_do_not_deplete_and_short_1_0_to_1_2_times_later() -> None:
    sym = never(profile("SEI", 100, 800).short_h)
    for working_um in (50, 20):
        p = profile("SEI", working_um, 600)
        assert p.depletion_h is None
        assert 1.0 * sym <= never(p.short_h) <= 1.2 * sym


def test_mii1_20um_leaves_the_5v_range_fastest_of_all_cells_within_30_to_60_h() -> None:
    fastest = never(profile("MII-1", 20, 600).depletion_h)
    assert 30 <= fastest <= 60
    for name in INTERPHASES:
        for working_um in (20, 50):
            p = profile(name, working_um, 600)
            assert fastest <= never(p.depletion_h)
            assert fastest < never(p.short_h)


def test_mii1_50um_depletes_2_to_6_times_later_than_20um_and_before_300_h() -> None:
    thin = never(profile("MII-1", 20, 600).depletion_h)
    thick = never(profile("MII-1", 50, 600).depletion_h)
    assert 2 * thin <= thick < 300
    assert thick <= 6 * thin


def test_mii1_symmetric_only_grows_polarization_no_depletion_no_short_before_800_h() -> None:
    p = profile("MII-1", 100, 800)
    assert p.depletion_h is None
    assert p.short_h is None
    days = [daily_mean_mv(p, d) for d in range(0, 33, 4)]
    assert 30 <= days[0] <= 60
    assert all(a < b for a, b in itertools.pairwise(days))
    assert daily_mean_mv(p, 20) >= 150  # 480-504 h


def test_mii2_symmetric_polarization_peaks_at_24_to_28_mv_then_activates_to_15_mv() -> None:
    p = profile("MII-2", 100, 800)
    peak_half = max(range(len(p.pol_mv)), key=p.pol_mv.__getitem__)
    assert 24 <= p.pol_mv[peak_half] <= 28
    assert 40 <= peak_half <= 70  # one half cycle is 1 h
    assert daily_mean_mv(p, 2) > daily_mean_mv(p, 4) > daily_mean_mv(p, 6)
    assert 13 <= daily_mean_mv(p, 8) <= 18


def test_mii2_symmetric_lives_2_5_to_3_5_times_longer_than_sei_symmetric() -> None:
    ratio = never(profile("MII-2", 100, 800).short_h) / never(profile("SEI", 100, 800).short_h)
    assert 2.5 <= ratio <= 3.5


def test_mii2_asymmetric_cells_deplete_thin_first_and_before_any_short() -> None:
    thin = profile("MII-2", 20, 600)
    thick = profile("MII-2", 50, 600)
    assert 80 <= never(thin.depletion_h) <= 150
    assert never(thin.depletion_h) < never(thick.depletion_h) < 450
    assert never(thin.depletion_h) < never(thin.short_h)
    assert never(thick.depletion_h) < never(thick.short_h)


def test_mii3_has_lower_polarization_than_sei_and_no_depletion_or_short_in_600_h() -> None:
    sei = profile("SEI", 100, 800)
    for working_um in (100, 50, 20):
        p = profile("MII-3", working_um, 800 if working_um == 100 else 600)
        assert p.depletion_h is None
        assert never(p.short_h) > 600
        for day in (0, 3):
            assert 6 <= daily_mean_mv(p, day) <= 9
            assert daily_mean_mv(p, day) < daily_mean_mv(sei, day)


# -- depletion ----------------------------------------------------------------------------


def test_depletion_episodes_repeat_every_stripping_half_cycle_and_recover_on_plating() -> None:
    p = profile("MII-1", 20, 600)
    first_half = int(never(p.depletion_h))  # the half cycle (1 h each) it happened in
    following = p.max_abs_v[first_half + 2 : first_half + 40]
    stripping, plating = following[::2], following[1::2]
    assert all(v > 5.0 for v in stripping)
    assert all(v < 0.5 for v in plating)


def test_depleted_flag_and_inventory_floor_while_stripping_an_empty_electrode() -> None:
    cell = SimCell(SimCellSpec(interphase="SEI", li_working_um=1.0, never_short=True), 1)
    depleted = []
    while cell.li_working_mah_cm2 > 0:
        cell.advance(60.0, CURRENT_A)
        depleted.append(cell.depleted)
    # 0.205 mAh cm⁻² at 0.5 mA cm⁻² lasts < 25 min; only the last step found it empty.
    assert len(depleted) < 25
    assert depleted.index(True) == len(depleted) - 1
    v = 0.0
    for _ in range(60):
        v = cell.advance(60.0, CURRENT_A)
    assert v > 2.0  # the SEI preset relaxes towards 3 V within minutes
    cell.advance(60.0, -CURRENT_A)
    depleted.append(cell.depleted)
    assert depleted[-2:] == [True, False]
    assert cell.li_working_mah_cm2 > 0.0


# -- shorts --------------------------------------------------------------------------------


def test_hard_short_collapses_the_voltage_below_1_mv_while_current_flows() -> None:
    cell = SimCell(SimCellSpec(interphase="MII-1", short=ShortSpec("hard", 2.0)), 1)
    samples = list(simulate_square_wave(cell, CURRENT_A, HALF_S, 6 * 3600, 30.0))
    before = [abs(v) for t, _, v in samples if t < 2 * 3600]
    after = [abs(v) for t, _, v in samples if t >= 2 * 3600]
    assert min(before) > 5e-3
    assert max(after) < 1e-3
    assert cell.shorted


def test_soft_short_drops_intermittently_more_often_then_turns_hard() -> None:
    spec = SimCellSpec(interphase="MII-2", short=ShortSpec("soft", 10.0))
    samples = list(simulate_square_wave(SimCell(spec, 4), CURRENT_A, HALF_S, 24 * 3600, 10.0))
    # Compare each sample to the cell without the short, so the shape does not count.
    clean = SimCell(SimCellSpec(interphase="MII-2", never_short=True, noise_v=0.0), 4)
    ref = [v for _, _, v in simulate_square_wave(clean, CURRENT_A, HALF_S, 24 * 3600, 10.0)]
    kept = [(t / 3600, v / r) for (t, _, v), r in zip(samples, ref, strict=True)]
    before = [k for h, k in kept if h <= 10]
    early = [k for h, k in kept if 10 < h <= 13]
    late = [k for h, k in kept if 17 < h < 19.99]
    hard = [abs(v) for t, _, v in samples if t >= 20 * 3600]
    assert min(before) > 0.95
    dropped = [k for k in early + late if k < 0.7]
    assert dropped
    assert all(0.05 < k < 0.7 for k in dropped)
    assert sum(k < 0.7 for k in late) > 2 * sum(k < 0.7 for k in early)
    assert max(hard) < 1e-3


def test_a_soft_short_shows_as_drops_out_of_barely_more_noise() -> None:
    # The soft short's evidence is its drops; its noise rises only a little, so that it
    # is told from a healthy channel whose noise rose (a loose contact), which is no fault.
    noise_v = 50e-6
    spec = SimCellSpec(interphase="MII-2", short=ShortSpec("soft", 10.0), noise_v=noise_v)
    samples = list(simulate_square_wave(SimCell(spec, 4), CURRENT_A, HALF_S, 18 * 3600, 10.0))
    clean = SimCell(SimCellSpec(interphase="MII-2", never_short=True, noise_v=0.0), 4)
    ref = [v for _, _, v in simulate_square_wave(clean, CURRENT_A, HALF_S, 18 * 3600, 10.0)]
    soft = [(v, r) for (t, _, v), r in zip(samples, ref, strict=True) if 10 < t / 3600 < 18]
    between = [v - r for v, r in soft if v / r > 0.7]
    dropped = [v / r for v, r in soft if v / r < 0.65]
    spread_v = math.sqrt(sum(d * d for d in between) / len(between))
    assert 1.2 * noise_v < spread_v < 2.0 * noise_v
    assert len(dropped) > 20
    # Every drop stands many times its noise out of the level (~15 mV here).
    assert max(dropped) < 0.65


def test_soft_short_drop_times_do_not_depend_on_dt() -> None:
    spec = SimCellSpec(interphase="SEI", short=ShortSpec("soft", 1.0), noise_v=0.0)

    def dropped_minutes(dt_s: float) -> set[int]:
        samples = simulate_square_wave(SimCell(spec, 9), CURRENT_A, HALF_S, 8 * 3600, dt_s)
        return {round(t / 60) for t, _, v in samples if t % 60 == 0 and abs(v) < 7e-3}

    assert dropped_minutes(10.0) == dropped_minutes(60.0)
    assert dropped_minutes(60.0)


def test_micro_short_slides_plating_voltage_towards_zero_over_hours_never_recovering() -> None:
    p = profile("MII-2", 100, 40, short=ShortSpec("micro", 10.0))
    plating = p.pol_mv[11:40:2]  # half cycles with negative current after onset
    stripping = p.pol_mv[10:40:2]
    sliding = plating[:8]  # after that it is down in the 50 µV noise
    assert all(a > b for a, b in itertools.pairwise(sliding))
    assert plating[0] > 10
    assert max(plating[8:]) < 0.1
    assert min(stripping) > 15
    assert 12 < never(p.short_h) < 30


def test_never_short_overrides_the_preset_and_preset_shorts_come_later_in_thin_cells() -> None:
    assert SimCell(SimCellSpec(interphase="SEI", never_short=True), 1).short is None
    assert SimCell(SimCellSpec(interphase="MII-1"), 1).short is None
    sym = SimCell(SimCellSpec(interphase="SEI"), 1).short
    thin = SimCell(SimCellSpec(interphase="SEI", li_working_um=20), 1).short
    assert sym is not None
    assert thin is not None
    assert sym.kind == thin.kind == "soft"
    assert 1.0 < thin.onset_h / sym.onset_h <= 1.2


# -- dt consistency ------------------------------------------------------------------------


def test_polarization_and_depletion_time_agree_between_dt_10_s_and_60_s() -> None:
    for name, working_um in (("SEI", 100), ("MII-2", 100), ("MII-1", 20)):
        fine = profile(name, working_um, 60, dt_s=10.0)
        coarse = profile(name, working_um, 60, dt_s=60.0)
        for day in (0, 1):
            assert daily_mean_mv(fine, day) == pytest.approx(daily_mean_mv(coarse, day), rel=0.02)
    fine_h = never(profile("MII-1", 20, 60, dt_s=10.0).depletion_h)
    coarse_h = never(profile("MII-1", 20, 60, dt_s=60.0).depletion_h)
    assert fine_h == pytest.approx(coarse_h, rel=0.02)


def test_charge_per_half_cycle_is_exact_when_dt_does_not_divide_it() -> None:
    cell = SimCell(SimCellSpec(interphase="MII-3", never_short=True), 1)
    list(simulate_square_wave(cell, CURRENT_A, HALF_S, HALF_S, 47.0))
    loss = interphase("MII-3").li_loss_mah_cm2(1.0)
    assert cell.t_s == pytest.approx(HALF_S)
    assert cell.li_working_mah_cm2 == pytest.approx(20.5 - 0.5 - loss)


# -- configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interphase": "LPSC"}, "interphase"),
        ({"area_cm2": 0.0}, "area_cm2"),
        ({"area_cm2": math.nan}, "area_cm2"),
        ({"li_counter_um": -1.0}, "li_counter_um"),
        ({"li_working_um": 0.0}, "li_working_um"),
        ({"noise_v": -1e-6}, "noise_v"),
        ({"temperature_swing": 1.5}, "temperature_swing"),
        ({"never_short": True, "short": ShortSpec("hard", 1.0)}, "short"),
    ],
)
def test_bad_cell_spec_raises_config_error_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        SimCellSpec(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_bad_short_spec_raises_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        ShortSpec("sudden", 1.0)  # type: ignore[arg-type]
    assert info.value.field == "short.kind"
    with pytest.raises(ConfigError) as info:
        ShortSpec("hard", -1.0)
    assert info.value.field == "short.onset_h"


def test_unknown_interphase_name_raises_config_error_listing_the_presets() -> None:
    with pytest.raises(ConfigError, match="must be one of MII-1, MII-2, MII-3, SEI") as info:
        interphase("MII-4")
    assert info.value.field == "interphase"
    assert set(INTERPHASES) == {"MII-1", "MII-2", "MII-3", "SEI"}


def test_non_positive_step_raises_config_error_naming_dt_s() -> None:
    cell = SimCell(SimCellSpec(), 1)
    with pytest.raises(ConfigError) as info:
        cell.advance(0.0, CURRENT_A)
    assert info.value.field == "dt_s"
