"""The embedded SQLite store: what goes in comes back, and a restart resumes from it."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import pytest

from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.daemon.store import SCHEMA_VERSION, STORE_FILENAME, ChannelState, Store, StoreError
from cellguard.drivers.errors import CellguardError

TAGS = ChannelTags("ct4008-a", "21-1-3", "T-42", "LPSC:LGPS 4:1", "asymmetric")
OTHER = ChannelTags("ct4008-a", "21-1-4", "T-43")
T0_S = 1_700_000_000.0


def sample(i: int, tags: ChannelTags = TAGS, **overrides: object) -> SampleRecord:
    values: dict[str, object] = {
        "tags": tags,
        "time_unix_s": T0_S + i,
        "test_time_s": float(i),
        "voltage_v": 0.01 + i * 1e-4,
        "current_a": 3.927e-4,
        "capacity_mah": 0.1 * i,
        "energy_mwh": 0.001 * i,
        "step": 1 + i % 2,
        "cycle": 1 + i // 2,
        "seq": 100 + i,
        "source": "recorded",
    }
    values.update(overrides)
    return SampleRecord(**values)  # type: ignore[arg-type]


def halt(tags: ChannelTags = TAGS, at_s: float = T0_S + 5) -> EventRecord:
    return EventRecord(
        tags,
        "halt",
        at_s,
        fault="short",
        subkind="collapse",
        detail="voltage fell to 0.1 mV",
        values={"measured": 1e-4, "baseline": 0.012, "threshold": 0.002},
    )


async def test_samples_and_events_come_back_as_written(tmp_path: Path) -> None:
    """Every field and tag of a sample or event survives the store, NaN included."""
    samples = [sample(i) for i in range(5)] + [sample(5, voltage_v=math.nan, source="live")]
    events = [halt(), EventRecord(OTHER, "start", T0_S, values={"odd": math.inf})]
    async with Store(tmp_path) as store:
        await store.write([*samples, sample(0, OTHER)], events)
        got = await store.query_samples(TAGS.instrument, TAGS.channel)
        assert got[:5] == samples[:5]
        assert math.isnan(got[5].voltage_v)
        assert got[5].source == "live"
        assert got[5].tags == TAGS
        assert await store.query_events(TAGS.instrument, TAGS.channel) == [events[0]]
        assert await store.query_events(kind="start") == [events[1]]
        assert await store.query_events() == [events[1], events[0]]  # oldest first


async def test_since_and_limit_select_the_newest_samples_oldest_first(tmp_path: Path) -> None:
    """``since_unix_s`` is inclusive; ``limit`` keeps the newest rows, returned in time order."""
    async with Store(tmp_path) as store:
        await store.write([sample(i) for i in reversed(range(10))], [])
        since = await store.query_samples(TAGS.instrument, TAGS.channel, since_unix_s=T0_S + 7)
        assert [s.seq for s in since] == [107, 108, 109]
        last = await store.query_samples(TAGS.instrument, TAGS.channel, limit=3)
        assert [s.seq for s in last] == [107, 108, 109]
        assert [s.seq for s in await store.query_samples("ct4008-a", "21-1-3", limit=1)] == [109]
        assert await store.query_samples("ct4008-a", "no-such-channel") == []
        assert [e.kind for e in await store.query_events(limit=5)] == []


async def test_an_event_handed_over_twice_is_stored_once(tmp_path: Path) -> None:
    """Events are keyed by their id: a retried hand-over does not duplicate an alert."""
    event = halt()
    async with Store(tmp_path) as store:
        await store.write([], [event])
        await store.write([], [event])
        assert await store.query_events() == [event]


async def test_channel_state_survives_a_restart(tmp_path: Path) -> None:
    """A restarted daemon reads back each channel's state, last seq and halt event."""
    event = halt()
    halted = ChannelState(
        "ct4008-a", "21-1-3", "halted", "T-42", 812, event.event_id, "short", T0_S + 5
    )
    running = ChannelState("ct4008-a", "21-1-4", "running", "T-43", 17, None, "", T0_S)
    async with Store(tmp_path) as store:
        await store.save_channel_state(ChannelState("ct4008-a", "21-1-3", "running"))
        await store.save_channel_state(halted)  # replaces the first
        store.save_channel_state_nowait(running)  # the halt path's way: no await
    async with Store(tmp_path) as store:
        states = await store.load_channel_states()
        assert states == {("ct4008-a", "21-1-3"): halted, ("ct4008-a", "21-1-4"): running}
        assert store.cached_channel_state("ct4008-a", "21-1-3") == halted


async def test_supervisor_state_protocol_keeps_the_halt_event(tmp_path: Path) -> None:
    """``save_state``/``load_state`` (the supervisor's synchronous protocol) never block,
    persist across a restart and keep the stored halt event id."""
    async with Store(tmp_path) as store:
        await store.save_channel_state(
            ChannelState("ct4008-a", "21-1-3", "halting", "T-42", 5, "e1")
        )
        assert store.load_state("ct4008-a", "21-1-3") == ("halting", 5, "")
        store.save_state(TAGS, "halted", 9, "stop confirmed")
        assert store.load_state("ct4008-a", "21-1-3") == ("halted", 9, "stop confirmed")
        assert store.load_state("ct4008-a", "nope") is None
    async with Store(tmp_path) as store:
        assert store.load_state("ct4008-a", "21-1-3") == ("halted", 9, "stop confirmed")
        state = store.cached_channel_state("ct4008-a", "21-1-3")
        assert state is not None
        assert state.halt_event_id == "e1"
        assert state.updated_unix_s > T0_S


async def test_file_is_wal_and_versioned_and_readable_by_another_process(tmp_path: Path) -> None:
    """WAL mode and ``user_version`` are set; ``cellguard status`` can read while it runs."""
    async with Store(tmp_path) as store:
        await store.write([sample(1)], [halt()])
        with sqlite3.connect(tmp_path / STORE_FILENAME) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert reader.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert reader.execute("SELECT COUNT(*) FROM samples").fetchone() == (1,)
        reader.close()


async def test_a_file_from_a_newer_cellguard_is_refused_untouched(tmp_path: Path) -> None:
    """A newer schema is refused with a message naming the versions and the fix."""
    path = tmp_path / STORE_FILENAME
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = Store(tmp_path)
    known = (
        rf"newer cellguard .*version {SCHEMA_VERSION + 1}; this one knows up to {SCHEMA_VERSION}"
    )
    with pytest.raises(StoreError, match=known + r".*upgrade cellguard"):
        await store.open()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("future",)]
    conn.close()


async def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    """Garbage in state_dir is a CellguardError that says to move the file aside."""
    (tmp_path / STORE_FILENAME).write_bytes(b"not a database, just text" * 100)
    with pytest.raises(CellguardError, match="move it aside"):
        await Store(tmp_path).open()


async def test_a_cancelled_write_still_lands(tmp_path: Path) -> None:
    """Cancelling the writer does not lose the batch it handed over."""
    async with Store(tmp_path) as store:
        many = [sample(i) for i in range(20_000)]
        task = asyncio.create_task(store.write(many, []))
        await asyncio.sleep(0)  # let it hand the job to the store's thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(await store.query_samples(TAGS.instrument, TAGS.channel)) == 20_000


async def test_using_a_closed_store_is_a_store_error(tmp_path: Path) -> None:
    """After aclose() the store says it is not open instead of crashing."""
    store = Store(tmp_path)
    await store.open()
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="not open"):
        await store.write([sample(0)], [])
