"""The guard's state machine and event schema, shared by every instrument.

Rules: the legal moves are one table; a move it does not allow raises (a halting
channel leaves only by a confirmed stop; a halted one never goes back to "running"
by itself through "unavailable"); every persisted state reads back; events carry
the same keys whatever the instrument.
"""

from __future__ import annotations

import pytest

from cellguard.daemon.guard import (
    STATES,
    TRANSITIONS,
    GuardEvent,
    HaltProgress,
    IllegalTransition,
    move,
    parse_state,
)
from cellguard.daemon.records import ChannelTags
from cellguard.protocols.detectors import Verdict


def test_every_state_has_a_row_and_every_move_names_a_state() -> None:
    assert set(TRANSITIONS) == set(STATES)
    for targets in TRANSITIONS.values():
        assert targets <= set(STATES)


def test_a_halting_channel_leaves_only_by_a_confirmed_stop() -> None:
    assert move("halting", "halted") == "halted"
    for state in STATES:
        if state not in ("halting", "halted"):
            with pytest.raises(IllegalTransition, match="halting -> "):
                move("halting", state, channel="ct 1-1-1")


def test_a_halted_channel_is_never_marked_unavailable_or_stopped() -> None:
    # "unavailable" resumes as running after a reconnect: a halted cell must not.
    with pytest.raises(IllegalTransition, match="ct 1-1-1: illegal"):
        move("halted", "unavailable", channel="ct 1-1-1")
    with pytest.raises(IllegalTransition):
        move("halted", "stopped")
    # A new test (operator start, new test id) is the way out.
    assert move("halted", "running") == "running"


def test_staying_put_is_always_legal() -> None:
    for state in STATES:
        assert move(state, state) == state


def test_a_saved_state_reads_back_and_an_unknown_one_names_its_source() -> None:
    for state in STATES:
        assert parse_state(state, where="x") == state
    with pytest.raises(ValueError, match=r"state.db ct 1-1-1: unknown channel state 'runnin'"):
        parse_state("runnin", where="state.db ct 1-1-1")


def test_halt_events_have_the_same_keys_for_every_instrument() -> None:
    verdict = Verdict(
        "halt",
        kind="short",
        subkind="hard",
        t_s=36000.0,
        measured=1e-4,
        baseline=0.012,
        threshold=0.002,
        unit="V",
        detail="collapse",
    )
    values = GuardEvent.of_verdict("halt", verdict).record(ChannelTags("a", "1"), 1.0).values
    assert values == {
        "measured_v": 1e-4,
        "baseline_v": 0.012,
        "threshold_v": 0.002,
        "test_time_s": 36000.0,
    }
    # A verdict without a unit is judged in volts: the same keys.
    bare = Verdict("halt", kind="limit", measured=5.2, detail="over")
    assert set(GuardEvent.of_verdict("halt", bare).values()) == {"measured_v"}


def test_an_unconfirmed_stop_alerts_again_and_escalates() -> None:
    progress = HaltProgress(Verdict("halt", kind="short", detail="collapse"), judged_at_s=0.0)
    alerts = []
    retries = []
    now_s = 0.0
    for _ in range(8):
        progress.attempts += 1
        alerts.append(progress.not_confirmed(now_s))
        retries.append(progress.next_try_s - now_s)
        assert not progress.due(now_s)
        now_s = progress.next_try_s
        assert progress.due(now_s)
    assert all(a.kind == "stop_failed" and a.is_alert for a in alerts)
    assert all("stop failed — cell still running" in a.detail for a in alerts)
    assert [a.attempt for a in alerts] == list(range(1, 9))
    assert retries == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    waited = [a.values()["unconfirmed_s"] for a in alerts]
    assert waited == sorted(waited)
    assert waited[-1] > 60.0
