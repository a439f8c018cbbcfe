"""Per-cycle analytics against traces whose answers are known.

- a constant-resistance cell: polarization is |I|·R exactly, capacity is I·t;
- an asymmetric SimCell whose interphase eats a known, constant amount of Li per
  cycle: the Coulombic efficiency ``1 − Q_thin / Q_cycled`` must come back;
- the streaming (live) and vectorised (file) paths give identical records.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cellguard.drivers.sim._cell as sim_cell
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.sim import SimCell, SimCellSpec, simulate_square_wave
from cellguard.drivers.sim._interphase import interphase
from cellguard.protocols.analytics import (
    PAPER_AREA_CM2,
    AnalyticsSettings,
    CycleAnalyzer,
    FailureSummary,
    analyze_arrays,
    analyze_stream,
    coulombic_efficiency,
)
from cellguard.protocols.detectors import DetectorSettings
from cellguard.protocols.units import LI_MAH_CM2_PER_UM

AREA_CM2 = PAPER_AREA_CM2
CURRENT_A = 0.5e-3 * AREA_CM2  # 0.5 mA cm⁻²
HALF_S = 3600.0  # 0.5 mAh cm⁻² per half cycle
DT_S = 60.0
R_OHM = 30.0


def _resistor_trace(cycles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A square wave through a constant resistance, with a 3× spike in the first and
    last five samples of every half cycle (outside the middle third: polarization must
    ignore it, the max must show it). The sample at t = 0 already carries the current."""
    per_half = int(HALF_S / DT_S)
    t_s = np.arange(0, 2 * cycles * per_half + 1) * DT_S
    half = np.maximum(0, (np.arange(len(t_s)) - 1) // per_half)
    sign = np.where(half % 2 == 0, 1.0, -1.0)
    current_a = sign * CURRENT_A
    position = (np.arange(len(t_s)) - 1) % per_half
    gain = np.where((position < 5) | (position >= per_half - 5), 3.0, 1.0)
    voltage_v = current_a * R_OHM * gain
    step = (half + 1).astype(np.int64)
    return t_s, voltage_v, current_a, step


def test_a_constant_resistance_gives_polarization_i_r_and_capacity_i_t() -> None:
    t_s, v, i, step = _resistor_trace(cycles=4)
    analysis = analyze_arrays(AnalyticsSettings(cell="symmetric"), t_s, v, i, step)
    expected_v = CURRENT_A * R_OHM  # 11.78 mV
    assert [c.cycle for c in analysis.cycles] == [1, 2, 3, 4]
    assert all(c.complete for c in analysis.cycles)
    for c in analysis.cycles:
        assert c.polarization_v == pytest.approx(expected_v, rel=1e-12)
        assert c.max_polarization_v == pytest.approx(3 * expected_v, rel=1e-12)
    # 0.5 mAh cm⁻² plated per half cycle: 1 per cycle, cumulative.
    assert [c.capacity_mah_cm2 for c in analysis.cycles] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert [c.hours for c in analysis.cycles] == pytest.approx([2.0, 4.0, 6.0, 8.0])
    assert [h.direction for h in analysis.half_cycles] == [1, -1] * 4
    assert analysis.failure is None
    assert analysis.average_coulombic_efficiency is None


def test_the_json_form_has_exactly_the_issues_keys_in_mv_and_hours() -> None:
    t_s, v, i, step = _resistor_trace(cycles=2)
    body = analyze_arrays(AnalyticsSettings(cell="symmetric"), t_s, v, i, step).as_dict()
    assert set(body) == {"cycles", "failure", "average_coulombic_efficiency"}
    assert set(body["cycles"][0]) == {
        "cycle",
        "polarization_mv",
        "max_polarization_mv",
        "capacity_mah_cm2",
        "hours",
    }
    # Rounded to 0.1 µV: far below what a cycler resolves.
    assert body["cycles"][1]["polarization_mv"] == pytest.approx(CURRENT_A * R_OHM * 1e3, abs=1e-4)
    assert body["cycles"][1]["hours"] == pytest.approx(4.0)


def test_a_test_ending_inside_a_cycle_closes_it_as_partial() -> None:
    t_s, v, i, _ = _resistor_trace(cycles=2)
    end = len(t_s) - int(HALF_S / DT_S)  # the last half cycle is missing
    analysis = analyze_arrays(AnalyticsSettings(cell="symmetric"), t_s[:end], v[:end], i[:end])
    assert [(c.cycle, c.complete) for c in analysis.cycles] == [(1, True), (2, False)]
    assert analysis.cycles[-1].capacity_mah_cm2 == pytest.approx(1.5)


def test_a_halt_reported_from_outside_gives_hours_cycles_and_capacity_to_failure() -> None:
    t_s, v, i, step = _resistor_trace(cycles=3)
    analyzer = CycleAnalyzer(AnalyticsSettings(cell="symmetric"))
    stop = int(2.5 * 2 * HALF_S / DT_S)  # in the middle of cycle 3's first half
    closed = []
    for k in range(stop + 1):
        closed += analyzer.feed(float(t_s[k]), float(v[k]), float(i[k]), int(step[k]))
    assert [c.cycle for c in closed] == [1, 2]
    tail = analyzer.fail("short", float(t_s[stop]), subkind="hard", detail="collapsed")
    assert [(c.cycle, c.complete) for c in tail] == [(3, False)]
    failure = analyzer.analysis.failure
    assert failure is not None
    assert (failure.kind, failure.subkind, failure.cycles) == ("short", "hard", 2)
    assert failure.hours == pytest.approx(5.0)
    assert failure.capacity_mah_cm2 == pytest.approx(2.5)
    # After the failure the analyzer ignores samples (the channel is stopped).
    assert analyzer.feed(1e6, 0.01, CURRENT_A, 9) == []
    assert analyzer.fail("short", 1e6) == []


# -- the asymmetric cell: Coulombic efficiency from a known Li loss per cycle ------------

LOSS_PER_H_MAH_CM2 = 0.025  # from each electrode: 0.05 mAh cm⁻² per 2 h cycle
THIN_LI_UM = 20.0
# 0.5 mAh cm⁻² stripped from the thin electrode per cycle, 0.05 of it lost for good.
TRUE_CE = 1.0 - 2 * LOSS_PER_H_MAH_CM2 * HALF_S / 3600.0 / 0.5


@pytest.fixture
def linear_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """SimCell's MII-1 (no short, a 6.5 V depletion plateau) with a Li loss linear in
    time: a constant loss per cycle, so the true CE is known exactly."""
    model = dataclasses.replace(
        interphase("MII-1"),
        li_loss_coeff_mah_cm2=LOSS_PER_H_MAH_CM2,
        li_loss_exponent=1.0,
        asr_growth_ohm_cm2_per_mah_cm2=0.0,
    )
    monkeypatch.setattr(sim_cell, "interphase", lambda name: model)


def _depleting_trace() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cell = SimCell(SimCellSpec("MII-1", li_working_um=THIN_LI_UM, never_short=True), seed=3)
    rows = list(simulate_square_wave(cell, CURRENT_A, HALF_S, 200 * 3600.0, DT_S))
    t_s, i_a, v = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return t_s, v, i_a


@pytest.mark.usefixtures("linear_loss")
def test_an_asymmetric_cell_with_a_known_li_loss_per_cycle_gives_its_coulombic_efficiency() -> None:
    t_s, v, i = _depleting_trace()
    settings_ = AnalyticsSettings(cell="asymmetric", thin_li_um=THIN_LI_UM)
    analysis = analyze_arrays(settings_, t_s, v, i, detector=DetectorSettings(cell="asymmetric"))
    failure = analysis.failure
    assert failure is not None
    assert failure.kind == "depletion"
    # The thin electrode (4.1 mAh cm⁻²) is gone once the loss (0.025 mAh cm⁻² h⁻¹) and
    # the half cycle being stripped (up to 0.5) add up to it: between 144 and 164 h.
    assert 143.0 < failure.hours < 165.0
    assert failure.cycles == len([c for c in analysis.cycles if c.complete])
    ce = analysis.average_coulombic_efficiency
    assert ce is not None
    # The method's resolution: the last, partial stripping counts as lost, so CE is low
    # by at most one half cycle's charge over the charge cycled (0.5 / ~36 mAh cm⁻²).
    tolerance = 0.5 / failure.stripped_mah_cm2
    assert tolerance < 0.015
    assert TRUE_CE - tolerance <= ce <= TRUE_CE + 1e-3
    assert ce == pytest.approx(
        1.0 - THIN_LI_UM * LI_MAH_CM2_PER_UM / failure.stripped_mah_cm2, rel=1e-12
    )
    # Only the asymmetric cell with a known thin electrode has a CE.
    assert (
        dataclasses.replace(analysis, settings=AnalyticsSettings()).average_coulombic_efficiency
        is None
    )


@pytest.mark.usefixtures("linear_loss")
def test_the_stream_and_the_arrays_agree_record_for_record_up_to_the_detectors_halt() -> None:
    t_s, v, i = _depleting_trace()
    settings_ = AnalyticsSettings(cell="asymmetric", thin_li_um=THIN_LI_UM)
    detector = DetectorSettings(cell="asymmetric")
    arrays = analyze_arrays(settings_, t_s, v, i, detector=detector)
    stream = analyze_stream(
        settings_,
        list(zip(t_s.tolist(), v.tolist(), i.tolist(), [None] * len(t_s), strict=True)),
        detector=detector,
    )
    assert stream.cycles == arrays.cycles
    assert stream.half_cycles == arrays.half_cycles
    assert stream.failure == arrays.failure
    assert stream.average_coulombic_efficiency == arrays.average_coulombic_efficiency


# A trace as segments: (current sign or 0 for rest, step, samples, voltage scale).
_segments = st.lists(
    st.tuples(
        st.sampled_from([1, -1, 0]),
        st.integers(1, 3),
        st.integers(1, 12),
        st.floats(0.001, 5.0),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(segments=_segments, dts=st.lists(st.floats(0.5, 300.0), min_size=1, max_size=7))
def test_streaming_and_vectorised_paths_give_identical_records(
    segments: list[tuple[int, int, int, float]], dts: list[float]
) -> None:
    t, v, i, s = [], [], [], []
    now_s = 0.0
    for sign, step, n, scale in segments:
        for k in range(n):
            now_s += dts[(len(t) + k) % len(dts)]
            t.append(now_s)
            v.append(sign * scale * (1.0 + 0.1 * math.sin(len(t))))
            i.append(sign * CURRENT_A)
            s.append(step)
    settings_ = AnalyticsSettings(cell="symmetric")
    arrays = analyze_arrays(
        settings_,
        np.array(t),
        np.array(v),
        np.array(i),
        np.array(s, dtype=np.int64),
    )
    stream = analyze_stream(settings_, list(zip(t, v, i, s, strict=True)))
    assert stream.half_cycles == arrays.half_cycles
    assert stream.cycles == arrays.cycles
    assert stream.failure is None
    assert arrays.failure is None
    # Every sample under current belongs to exactly one half cycle.
    assert sum(h.samples for h in arrays.half_cycles) == sum(1 for x in i if x != 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cell": "triangle"}, "cell"),
        ({"area_cm2": 0.0}, "area_cm2"),
        ({"area_cm2": math.nan}, "area_cm2"),
        ({"rest_current_a": -1.0}, "rest_current_a"),
        ({"thin_li_um": -20.0}, "thin_li_um"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        AnalyticsSettings(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def _depletion(stripped_mah_cm2: float) -> FailureSummary:
    return FailureSummary("depletion", "range", 270.0, 0, stripped_mah_cm2, stripped_mah_cm2)


def test_a_cell_depleted_before_its_thin_electrode_was_stripped_has_no_coulombic_efficiency() -> (
    None
):
    """Issue 17 item 11: 0.075 mAh cm⁻² stripped from a stated 20 µm (4.1 mAh cm⁻²)
    electrode stored CE = 1 − 4.1/0.075 = −53.67. Such a cell did not hold the Li
    stated: its CE is undefined (None), never negative."""
    settings_ = AnalyticsSettings(cell="asymmetric", thin_li_um=20.0)
    assert coulombic_efficiency(settings_, _depletion(0.075)) is None
    assert coulombic_efficiency(settings_, _depletion(4.0)) is None
    assert coulombic_efficiency(settings_, _depletion(4.1)) == pytest.approx(0.0, abs=1e-12)
    assert coulombic_efficiency(settings_, _depletion(41.0)) == pytest.approx(0.9)


@given(
    thin_li_um=st.floats(1.0, 200.0),
    stripped_mah_cm2=st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False),
)
def test_coulombic_efficiency_is_none_or_within_0_and_1(
    thin_li_um: float, stripped_mah_cm2: float
) -> None:
    settings_ = AnalyticsSettings(cell="asymmetric", thin_li_um=thin_li_um)
    ce = coulombic_efficiency(settings_, _depletion(stripped_mah_cm2))
    assert ce is None or 0.0 <= ce <= 1.0
