"""A stream that joins a test part-way (monitor mode, a restart of the service): the
Li|Li detector sees none of the cell's past half cycles, but the test time of the first
sample says how far into its test the cell is. A fall half cycle after half cycle from
the first half cycle seen is no activation when the cell is past its fresh half cycles;
from a test's first hours, or when the test time tells nothing, it stays a warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cellguard.drivers.files import Recording
from cellguard.protocols.detectors import DetectorSettings, Verdict, make_detector
from cellguard.protocols.detectors.injected import inject
from cellguard.protocols.detectors.real import load_real_corpus, settings_for, watched_from

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "real-cells"
JOINED = DetectorSettings(cell="symmetric", stream_starts_at_reversal=False)
_H = 3600.0


def _verdicts(rec: Recording, settings: DetectorSettings) -> list[Verdict]:
    return make_detector(settings).feed_batch(
        rec.t_s, rec.voltage_v, rec.current_a, rec.step, rec.cycle, rec.step_kind
    )


def _halt(verdicts: list[Verdict]) -> Verdict | None:
    return next((v for v in verdicts if v.severity == "halt"), None)


def _restarted_jr862_micro_short() -> tuple[Recording, float, DetectorSettings]:
    """The liquid Li|Li cell (1 h plating blocks in one direction, an impedance scan
    before each) with a micro short from 8.54 h (τ ≈ 4 h: 0.90, 0.74, 0.58 and 0.44 of
    the healthy block, block after block), watched from a restart at 6.54 h: one of
    bench_real's injected faults in its restart view. The labelled onset is 10.31 h."""
    case = next(c for c in load_real_corpus(CORPUS) if c.name.startswith("jr862"))
    assert case.recording is not None
    settings = dataclasses.replace(settings_for(case), stream_starts_at_reversal=False)
    fault = inject(case.recording, "short-micro", 30726.9, seed=5008202,
                   voltage_range_v=settings.voltage_range_v)  # fmt: skip
    assert fault.onset_index is not None
    t0 = float(fault.recording.t_s[0])
    onset_s = float(fault.recording.t_s[fault.onset_index]) - t0
    return watched_from(fault.recording, fault.onset_s - 2 * _H), t0 + onset_s, settings


def test_a_micro_short_two_hours_after_a_restart_is_halted_from_the_first_block_seen() -> None:
    """Before: every block after the restart was a provisional profile (no earlier one
    judged it), each fell 10-27 % from the last, never below drop_ratio of it, and the
    fall was only warned of ("drop", at 8.97 h) to the end of the 4 h injected."""
    view, onset_t_s, settings = _restarted_jr862_micro_short()
    halt = _halt(_verdicts(view, settings))
    assert halt is not None, "the micro short was never halted"
    assert halt.criterion == "slide"
    assert "first half cycle seen since watching began" in halt.detail
    assert "6.5 h into its test" in halt.detail
    assert 0.0 <= halt.t_s - onset_t_s <= 0.5 * _H


def test_the_same_samples_with_a_test_time_that_tells_nothing_are_only_warned_of() -> None:
    """The same samples, their test time counted from the first (as a source that
    restarts its clock would give): the first block seen may be a fresh cell's, whose
    activation takes half the overpotential in hours, so the fall stays a warning."""
    view, _, settings = _restarted_jr862_micro_short()
    verdicts = _verdicts(dataclasses.replace(view, t_s=view.t_s - view.t_s[0]), settings)
    assert _halt(verdicts) is None
    assert any(v.severity == "warn" for v in verdicts)


def _square(factor: npt.NDArray[np.float64], t: npt.NDArray[np.float64]) -> Recording:
    """A quiet Li|Li cell at ±1 mA in 1 h half cycles, 20 mV of overpotential times
    ``factor``, 0.1 mV of noise, a sample every 10 s."""
    i = np.where((t // _H) % 2 == 0, 1e-3, -1e-3)
    v = 20.0 * i * factor + np.random.default_rng(5).normal(0.0, 1e-4, len(t))
    return Recording(Path("square.csv"), t, v, i, (t // _H).astype(np.int64) + 1, None,
                     "bdf-csv")  # fmt: skip


def _activating(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The fastest activation of the reality corpus: 0.5x, 95 % of the way in 10 h."""
    out: npt.NDArray[np.float64] = 0.5 + 0.5 * np.exp(-t / (10.0 / 3.0 * _H))
    return out


@pytest.mark.parametrize("joined_h", [0.25, 1.25, 2.25, 6.25])
def test_activation_watched_from_any_hour_of_a_fresh_cell_is_never_halted(joined_h: float) -> None:
    t = np.arange(joined_h * _H, 24 * _H, 10.0)
    assert _halt(_verdicts(_square(_activating(t), t), JOINED)) is None


def _sliding(t: npt.NDArray[np.float64], onset_s: float, tau_h: float) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = np.exp(-np.clip(t - onset_s, 0.0, None) / (tau_h * _H))
    return out


@pytest.mark.parametrize("joined_h", [8.25, 20.25])
def test_a_micro_short_in_a_cell_joined_past_its_fresh_half_cycles_is_halted(
    joined_h: float,
) -> None:
    """The shunt began an hour before the join and takes the overpotential by e every
    6 h: each half cycle sits at 0.72x the last in its direction. No profile is ever
    established (each fell by more than a tenth), none falls below drop_ratio of the
    last, and before, each was only warned of."""
    t = np.arange(joined_h * _H, (joined_h + 10) * _H, 10.0)
    onset_s = (joined_h - 1) * _H
    halt = _halt(_verdicts(_square(_sliding(t, onset_s, 6.0), t), JOINED))
    assert halt is not None
    assert halt.criterion == "slide"
    assert "first half cycle seen since watching began" in halt.detail
    assert halt.t_s < (joined_h + 6) * _H


def test_the_same_micro_short_joined_in_the_cells_first_hours_is_only_warned_of() -> None:
    """Joined 1.25 h into the test, the first half cycles seen may be a fresh cell's."""
    t = np.arange(1.25 * _H, 11.25 * _H, 10.0)
    verdicts = _verdicts(_square(_sliding(t, 0.25 * _H, 6.0), t), JOINED)
    assert _halt(verdicts) is None
    assert any(v.severity == "warn" for v in verdicts)
