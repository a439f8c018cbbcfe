"""Live polls are instants: what lies between two of them is unseen. Polled live
(``polled_live``), evidence lasts over three polls, or over two far enough apart that
one transient cannot cover both; a recorded stream keeps confirming on two samples."""

from __future__ import annotations

import numpy as np
import pytest

from cellguard.protocols.detectors import DetectorSettings, Verdict, make_detector

HALF_S = 3600.0
I_A = 1e-3
R_OHM = 20.0  # 20 mV of overpotential at 1 mA


def _polls(interval_s: float, hours: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A quiet Li|Li cell at ±1 mA polled every ``interval_s``: (t, V, I)."""
    t = np.arange(0.0, hours * 3600.0, interval_s)
    i = np.where((t // HALF_S) % 2 == 0, I_A, -I_A)
    rng = np.random.default_rng(5)
    v = R_OHM * i + rng.normal(0.0, 1e-4, len(t))
    return t, v, i


def _first_halt(
    t: np.ndarray, v: np.ndarray, i: np.ndarray, *, polled_live: bool
) -> Verdict | None:
    settings = DetectorSettings(cell="symmetric", polled_live=polled_live)
    step = (t // HALF_S).astype(np.int64) + 1
    verdicts = make_detector(settings).feed_batch(t, v, i, step)
    return next((x for x in verdicts if x.severity == "halt"), None)


@pytest.mark.parametrize(("factor", "recorded_halts"), [(3.5, True), (0.3, False)])
def test_two_polls_a_second_apart_on_two_transients_never_halt_live(
    factor: float, recorded_halts: bool
) -> None:
    """Two polls in a row, each on its own sub-second spike (or dip): the recorded
    stream, which shows them as they are, halts a shift two samples a second apart; the
    live stream cannot know the cell was back between them, and does not. (Recorded, a
    drop that close needs a third low sample of its dip: test_detectors_dips.)"""
    t, v, i = _polls(1.0, 6.0)
    k = int(np.searchsorted(t, 4.5 * 3600.0))
    v[k : k + 2] *= factor
    assert _first_halt(t, v, i, polled_live=True) is None
    recorded = _first_halt(t, v, i, polled_live=False)
    if not recorded_halts:
        assert recorded is None
        v[k + 2] *= factor
        recorded = _first_halt(t, v, i, polled_live=False)
        k += 1
    assert recorded is not None
    assert recorded.index == k + 1


@pytest.mark.parametrize(("interval_s", "polls"), [(1.0, 3), (10.0, 3), (30.0, 2), (60.0, 2)])
def test_a_lasting_shift_is_halted_live_on_three_polls_or_two_far_apart(
    interval_s: float, polls: int
) -> None:
    """A depletion's shift lasts: polled live it halts on the third poll, or on the
    second where two polls are 30 s or more apart (a transient covers no two)."""
    t, v, i = _polls(interval_s, 6.0)
    k = int(np.searchsorted(t, 4.5 * 3600.0))
    v[k:] *= 4.0
    halt = _first_halt(t, v, i, polled_live=True)
    assert halt is not None
    assert halt.kind == "voltage_shift"  # (a symmetric cell: no thin electrode to name)
    assert halt.index == k + polls - 1


def test_a_lasting_drop_is_halted_live_and_a_burst_of_lone_low_polls_is_not() -> None:
    """Lone low polls with normal ones between (a burst of flicker, sampled) are not a
    soft short's separate drops: each drop must show on two low polls of its own."""
    t, v, i = _polls(10.0, 8.0)
    k = int(np.searchsorted(t, 4.5 * 3600.0))
    flicker = v.copy()
    for j in (0, 2, 4, 6, 8, 10):
        flicker[k + j] *= 0.5
    assert _first_halt(t, flicker, i, polled_live=True) is None
    drop = v.copy()
    drop[k:] *= 0.5
    halt = _first_halt(t, drop, i, polled_live=True)
    assert halt is not None
    assert halt.kind == "short"
    assert k <= halt.index <= k + 2
