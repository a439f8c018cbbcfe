"""StepRuns: which run of a step a live poll sees, from the step number and the time
within the step (a poll misses a step shorter than its interval)."""

from __future__ import annotations

import math

from cellguard.protocols.detectors import StepRuns


def test_a_new_run_where_the_step_changes_or_its_time_goes_back() -> None:
    runs = StepRuns()
    # step 3 for an hour, a 7 s step 2 no poll caught, step 3 again: its time went back
    polls = [(3, 10.0), (3, 70.0), (3, 3590.0), (3, 50.0), (3, 110.0), (2, 3.0), (3, 40.0)]
    assert [runs.of(step, t) for step, t in polls] == [1, 1, 1, 2, 2, 3, 4]


def test_a_pause_continues_its_run_whether_its_time_freezes_or_runs_on() -> None:
    frozen, running = StepRuns(), StepRuns()
    assert [frozen.of(1, t) for t in (100.0, 160.0, 160.0, 160.0, 220.0)] == [1] * 5
    assert [running.of(1, t) for t in (100.0, 160.0, 5000.0, 5060.0)] == [1] * 4


def test_a_reading_rounded_back_by_a_millisecond_is_the_same_run() -> None:
    runs = StepRuns()
    assert [runs.of(1, t) for t in (60.0, 59.9995, 120.0)] == [1, 1, 1]
    assert runs.of(1, 119.99) == 2


def test_without_a_step_time_the_numbers_follow_the_step_number_only() -> None:
    runs = StepRuns()
    steps = [1, 1, 2, 2, 1, 1, None, 1, 3]
    # (a recorded stream keeps every step's samples; None: no step reported, no change)
    assert [runs.of(s, math.nan) for s in steps] == [1, 1, 2, 2, 3, 3, None, 3, 4]
