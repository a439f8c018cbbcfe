"""The journal of a host-driven channel: samples and events not yet written by the sink
are saved with the channel's state, handed over again after a crash, and dropped once
the sink has written them. (End to end, with kill -9: tests/faults.)"""

from __future__ import annotations

import asyncio
import logging

import pytest

from cellguard.daemon.guard.links.host import HostChannelSpec, HostState, HostSupervisor
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord, new_event
from cellguard.drivers import VirtualClock
from cellguard.drivers.errors import InstrumentConnectionError

TAGS = ChannelTags("smu-j", "1", "", "SEI", "symmetric")


class MemoryStates:
    """The supervisor's StateStore, in a dict: what a restart would read back."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], tuple[str, int, str]] = {}

    def save_state(self, tags: ChannelTags, state: str, last_seq: int, detail: str) -> None:
        self.saved[(tags.instrument, tags.channel)] = (state, last_seq, detail)

    def load_state(self, instrument: str, channel: str) -> tuple[str, int, str] | None:
        return self.saved.get((instrument, channel))


class NoPublisher:
    async def publish_event(self, event: EventRecord) -> None: ...

    async def publish_status(self, tags: ChannelTags, status: dict[str, object]) -> None: ...


class Unreachable:
    """An instrument that cannot be reached: the supervisor waits in its backoff."""

    async def connect(self) -> None:
        raise InstrumentConnectionError("unplugged")

    async def close(self) -> None: ...


def _sample(seq: int, *, tags: ChannelTags = TAGS, start_s: float = 1.7e9) -> SampleRecord:
    return SampleRecord(
        tags,
        time_unix_s=start_s + 60.0 * seq,
        test_time_s=60.0 * seq,
        voltage_v=0.0123 * (-1) ** seq,
        current_a=3.925e-4,
        capacity_mah=0.0065 * seq,
        step=1 + seq % 2,
        cycle=1 + seq // 2,
        seq=seq,
        source="recorded",
        aux=(("chamber_temperature_c", 25.1), ("stack_pressure_mpa", 5.0)),
    )


def _supervisor(
    states: MemoryStates, queue: asyncio.Queue[SampleRecord | EventRecord]
) -> HostSupervisor:
    return HostSupervisor(
        TAGS.instrument,
        Unreachable,  # type: ignore[arg-type]
        HostChannelSpec(interphase="SEI"),
        queue,
        NoPublisher(),
        clock=VirtualClock(),
        state=states,
    )


def test_samples_and_events_round_trip_through_the_saved_state() -> None:
    halt = new_event(
        TAGS, "halt", 1.7e9 + 200.0, fault="short", detail="collapse", values={"measured": 1e-4}
    )
    host = HostState(state="halted", seq=3, test_start_unix_s=1.7e9, test_time_s=180.0)
    host.unsent = [_sample(1), _sample(2), halt, _sample(3)]
    again = HostState.from_saved(TAGS, host.state, host.seq, host.to_json())
    assert again.unsent == host.unsent
    assert again.test_time_s == 180.0
    # Nothing journaled: nothing in the JSON either.
    assert "unsent" not in HostState(state="running").to_json()


def test_a_journal_entry_of_another_form_is_skipped_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detail = '{"unsent": [{"sample": [1, 2]}, {"what": 1}], "test_time_s": 5.0}'
    with caplog.at_level(logging.ERROR):
        host = HostState.from_saved(TAGS, "running", 2, detail)
    assert host.unsent == []
    assert host.test_time_s == 5.0
    assert caplog.text.count("a journal entry of an unknown form") == 2


async def test_a_restart_hands_the_journal_to_the_sinks_and_writes_clear_it() -> None:
    states = MemoryStates()
    halt = new_event(TAGS, "halt", 1.7e9 + 200.0, fault="short")
    crashed = HostState(state="halted", seq=3, test_start_unix_s=1.7e9)
    crashed.unsent = [_sample(1), _sample(2), halt, _sample(3)]
    states.save_state(TAGS, crashed.state, crashed.seq, crashed.to_json())

    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue()
    sup = _supervisor(states, queue)
    task = asyncio.create_task(sup.run())
    try:
        handed = [await queue.get() for _ in range(4)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert handed == crashed.unsent

    # The sink wrote a batch holding the first sample, the event, and records of other
    # channels and of an earlier test with the same seq: only this channel's go.
    sup.records_stored(
        [
            handed[0],
            _sample(2, tags=ChannelTags("other", "1")),
            _sample(3, start_s=1.6e9),  # same seq, another test (another time)
        ],
        [handed[2]],  # type: ignore[list-item]
    )
    left = HostState.from_saved(TAGS, *states.saved[(TAGS.instrument, TAGS.channel)])
    assert [r.seq for r in left.unsent if isinstance(r, SampleRecord)] == [2, 3]
    assert not any(isinstance(r, EventRecord) for r in left.unsent)
    sup.records_stored(handed[1::2], [])  # type: ignore[arg-type]
    _, _, detail = states.saved[(TAGS.instrument, TAGS.channel)]
    assert "unsent" not in detail


def test_without_a_state_store_nothing_is_journaled() -> None:
    # Benchmarks and library users run a supervisor alone: no journal grows in memory.
    queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue()
    sup = HostSupervisor(
        TAGS.instrument,
        Unreachable,  # type: ignore[arg-type]
        HostChannelSpec(),
        queue,
        NoPublisher(),
        clock=VirtualClock(),
    )
    sup._journal(_sample(1))
    assert sup.host.unsent == []
