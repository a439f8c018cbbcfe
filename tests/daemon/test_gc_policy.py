"""The collector's policy and the CPU priority of the long-running service (speed
goals live in bench/)."""

from __future__ import annotations

import gc
import os
import sys

import pytest

from cellguard.daemon.guard import gc_policy, priority


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """The collector's settings and collections, recorded instead of carried out (the
    test process keeps its own), on a process where nothing was applied yet."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(gc_policy, "_applied", False)
    monkeypatch.setattr(gc_policy, "_polls", 0)
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(("threshold", t)))
    monkeypatch.setattr(sys, "setswitchinterval", lambda s: calls.append(("switch", s)))
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(("collect", generation)))
    return calls


def test_the_policy_is_applied_once_per_process(recorded: list[tuple[str, object]]) -> None:
    assert gc_policy.apply_service_policy() is True
    assert gc_policy.apply_service_policy() is False
    assert recorded == [
        (
            "threshold",
            (gc_policy.GEN0_THRESHOLD, gc_policy.GEN1_THRESHOLD, gc_policy.GEN2_THRESHOLD),
        ),
        ("switch", gc_policy.SWITCH_INTERVAL_S),
    ]
    # Raised above CPython's defaults (700, 10, 10): automatic collections are rare.
    assert gc_policy.GEN0_THRESHOLD > 700


def test_after_each_poll_the_young_generations_and_every_minute_everything(
    recorded: list[tuple[str, object]],
) -> None:
    polls = 2 * gc_policy.FULL_EVERY_POLLS
    for _ in range(polls):
        gc_policy.collect_after_poll()
    generations = [g for what, g in recorded if what == "collect"]
    assert len(generations) == polls
    full = [i + 1 for i, g in enumerate(generations) if g == 2]
    assert full == [gc_policy.FULL_EVERY_POLLS, 2 * gc_policy.FULL_EVERY_POLLS]
    assert set(generations) == {1, 2}


def test_no_automatic_full_collection_comes_before_the_routine_one() -> None:
    # A full collection runs by itself after GEN2_THRESHOLD middle ones; one middle
    # collection per poll must reach the routine full one first.
    assert gc_policy.GEN2_THRESHOLD > gc_policy.FULL_EVERY_POLLS


def test_on_linux_the_priority_is_the_service_managers_and_only_reported() -> None:
    before = os.nice(0)
    running_at = priority.raise_priority()
    assert os.nice(0) == before
    assert f"nice {before}" in running_at
