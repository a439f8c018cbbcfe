"""The embedded SQLite store under ``state_dir``: samples, events and channel state.

Without an ``[influxdb]`` section the daemon keeps every sample and event here; with
one, it still keeps the channel state here, so a restarted daemon resumes watching the
same tests: no second start of a running test, no second stop of a halted channel.

Threading: the store owns **one connection used from one dedicated worker thread**
(a single-thread executor), never from the event loop and never from two threads, so
SQLite's own thread check stays on and no lock is needed. Every public coroutine hands
one job to that thread and awaits it; jobs run in the order they were handed over.
A job that was handed over runs to the end even if the awaiting task is cancelled
(the await is shielded): a cancelled ``write()`` still lands.

Durability: WAL journal with ``synchronous=NORMAL``. A crash of the daemon loses
nothing that a call returned for; a power cut may lose the last few transactions, never
corrupt the file. ``cellguard status`` may read the file while the daemon writes it
(WAL lets readers in other processes run beside the one writer).

Schema versions live in SQLite's ``user_version``; a file written by a newer
cellguard is refused with a message saying so, never altered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar, cast

from cellguard.daemon.analytics_tap import CycleRow
from cellguard.daemon.records import ChannelTags, EventKind, EventRecord, SampleRecord, SampleSource
from cellguard.drivers.errors import CellguardError

log = logging.getLogger(__name__)

STORE_FILENAME = "cellguard.sqlite"
SCHEMA_VERSION = 3
# How long a writer waits for another process's lock (``cellguard status``) before failing.
BUSY_TIMEOUT_MS = 5000

T = TypeVar("T")
ChannelKey = tuple[str, str]  # (instrument, channel)


class StoreError(CellguardError):
    """The SQLite file under ``state_dir`` cannot be opened, read or written.

    The message names the file and what the user can do about it.
    """


class DamagedStoreError(StoreError):
    """The file exists but SQLite cannot read it as a database (damaged, or not one)."""


@dataclass(frozen=True, slots=True)
class ChannelState:
    """What the daemon must remember about one channel across a restart.

    ``state`` is the supervisor's word for the channel ("running", "halting", "halted",
    "stopped", "finished", ...); ``last_seq`` is the instrument's last record sequence
    id already stored and judged, so a restart fetches only what follows;
    ``halt_event_id`` is the ``EventRecord.event_id`` of the halt that stopped the
    channel (``None`` if it was not halted), so a restart neither halts it again nor
    raises a second alert. ``updated_unix_s`` is wall-clock UNIX seconds.
    """

    instrument: str
    channel: str
    state: str
    test_id: str = ""
    last_seq: int = 0
    halt_event_id: str | None = None
    detail: str = ""
    updated_unix_s: float = 0.0

    @property
    def key(self) -> ChannelKey:
        """``(instrument, channel)``."""
        return (self.instrument, self.channel)


# Each entry migrates the file from version ``index`` to ``index + 1``. Never edit an
# entry that has shipped: append a new one and bump SCHEMA_VERSION.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE samples (
        instrument TEXT NOT NULL,
        channel TEXT NOT NULL,
        test_id TEXT NOT NULL,
        interphase TEXT NOT NULL,
        cell_type TEXT NOT NULL,
        time_unix_s REAL NOT NULL,
        test_time_s REAL,      -- NULL stores NaN (SQLite has no NaN)
        voltage_v REAL,
        current_a REAL,
        capacity_mah REAL,
        energy_mwh REAL,
        step INTEGER NOT NULL,
        cycle INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX samples_by_channel_time ON samples (instrument, channel, time_unix_s);
    CREATE TABLE events (
        event_id TEXT PRIMARY KEY,
        instrument TEXT NOT NULL,
        channel TEXT NOT NULL,
        test_id TEXT NOT NULL,
        interphase TEXT NOT NULL,
        cell_type TEXT NOT NULL,
        kind TEXT NOT NULL,
        time_unix_s REAL NOT NULL,
        fault TEXT NOT NULL,
        subkind TEXT NOT NULL,
        detail TEXT NOT NULL,
        values_json TEXT NOT NULL
    );
    CREATE INDEX events_by_channel_time ON events (instrument, channel, time_unix_s);
    CREATE TABLE channel_state (
        instrument TEXT NOT NULL,
        channel TEXT NOT NULL,
        state TEXT NOT NULL,
        test_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        halt_event_id TEXT,
        detail TEXT NOT NULL,
        updated_unix_s REAL NOT NULL,
        PRIMARY KEY (instrument, channel)
    );
    """,
    # 2: per-cycle analytics (cellguard.daemon.analytics_tap), written beside the samples.
    """
    CREATE TABLE cycles (
        instrument TEXT NOT NULL,
        channel TEXT NOT NULL,
        test_id TEXT NOT NULL,
        interphase TEXT NOT NULL,
        cell_type TEXT NOT NULL,
        cycle INTEGER NOT NULL,
        time_unix_s REAL NOT NULL,
        test_time_s REAL NOT NULL,
        polarization_v REAL,   -- NULL stores NaN
        max_polarization_v REAL,
        capacity_mah_cm2 REAL,
        complete INTEGER NOT NULL,
        failure TEXT NOT NULL,
        coulombic_efficiency REAL
    );
    CREATE INDEX cycles_by_channel_time ON cycles (instrument, channel, time_unix_s);
    """,
    # 3: auxiliary readings taken with a sample (host-driven channels), as JSON.
    """
    ALTER TABLE samples ADD COLUMN aux_json TEXT NOT NULL DEFAULT '';
    """,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


class SqliteWorker:
    """One SQLite connection owned by one dedicated thread (shared by the store and spools).

    ``call()`` runs a function ``fn(connection)`` on that thread; the await is shielded,
    so a job that was handed over completes even if the caller is cancelled.
    """

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._submit_failing = False

    async def open(self, migrations: Sequence[str], *, what: str) -> None:
        """Create the thread, open (or create) the file and bring its schema up to date."""
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"cellguard-sqlite-{self.path.name}"
        )
        try:
            await self._run(lambda: self._connect(migrations, what))
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self, migrations: Sequence[str], what: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            msg = (
                f"cannot open the {what} {self.path}: {err}; check that state_dir exists "
                "and the daemon's user may write there"
            )
            raise StoreError(msg) from err
        try:
            _configure(conn, self.path, self._synchronous)
            _migrate(conn, migrations, self.path, what)
        except sqlite3.DatabaseError as err:
            conn.close()
            msg = (
                f"{self.path} is not a readable {what} ({err}); move it aside "
                "and the daemon starts with an empty one"
            )
            if isinstance(err, sqlite3.OperationalError):  # locked, disk I/O: not damage
                raise StoreError(msg) from err
            raise DamagedStoreError(msg) from err
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread; SQLite errors become StoreError
        (DamagedStoreError when SQLite finds the file damaged: SQLITE_CORRUPT, NOTADB)."""
        conn = self._conn
        if conn is None:
            msg = f"{self.path} is not open"
            raise StoreError(msg)

        def job() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as err:
                msg = f"{self.path}: {err}"
                # The bare DatabaseError is what corruption raises; its subclasses
                # (Operational: full, locked, I/O; Integrity ...) are not damage.
                if type(err) is sqlite3.DatabaseError:
                    raise DamagedStoreError(msg) from err
                raise StoreError(msg) from err

        return await self._run(job)

    def submit(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Hand ``fn(connection)`` to the worker thread without waiting; errors are logged.

        For synchronous callers on the event loop (the halt path): nothing blocks, and
        the job still runs in order with every other job.
        """
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            msg = f"{self.path} is not open"
            raise StoreError(msg)

        def done(fut: concurrent.futures.Future[object]) -> None:
            # Logged once per outage (a full disk fails every save), not a traceback each.
            if fut.cancelled():
                return
            if (err := fut.exception()) is not None:
                if not self._submit_failing:
                    log.error(
                        "writing %s failed: %s (states stay in memory, saved again later)",
                        self.path,
                        err,
                    )
                self._submit_failing = True
            elif self._submit_failing:
                self._submit_failing = False
                log.warning("writing %s works again", self.path)

        executor.submit(fn, conn).add_done_callback(done)

    async def _run(self, fn: Callable[[], T]) -> T:
        assert self._executor is not None
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        return await asyncio.shield(fut)

    async def aclose(self) -> None:
        """Finish the jobs handed over, close the connection, end the thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        conn, self._conn = self._conn, None

        def close() -> None:
            if conn is not None:
                conn.close()

        try:
            # Shielded: closing is cleanup and must finish even when we are cancelled.
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(executor, close))
        finally:
            executor.shutdown(wait=False)


def _configure(conn: sqlite3.Connection, path: Path, synchronous: str) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        msg = f"{path}: SQLite refused WAL mode (got {mode!r})"
        raise StoreError(msg)
    conn.execute(f"PRAGMA synchronous = {synchronous}")


def _migrate(conn: sqlite3.Connection, migrations: Sequence[str], path: Path, what: str) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    latest = len(migrations)
    if version > latest:
        msg = (
            f"{path} was written by a newer cellguard ({what} schema version {version}; "
            f"this one knows up to {latest}): upgrade cellguard, or point state_dir elsewhere"
        )
        raise StoreError(msg)
    for target in range(version + 1, latest + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migrations[target - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        log.info("%s: %s schema now at version %d", path, what, target)


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself on some errors (SQLITE_FULL); a second ROLLBACK
        # would raise and hide the error that says what went wrong.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _real(value: float) -> float | None:
    return None if math.isnan(value) else value


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


_SAMPLE_COLUMNS = (
    "instrument, channel, test_id, interphase, cell_type, time_unix_s, test_time_s, "
    "voltage_v, current_a, capacity_mah, energy_mwh, step, cycle, seq, source, aux_json"
)
_EVENT_COLUMNS = (
    "event_id, instrument, channel, test_id, interphase, cell_type, kind, time_unix_s, "
    "fault, subkind, detail, values_json"
)
_STATE_COLUMNS = (
    "instrument, channel, state, test_id, last_seq, halt_event_id, detail, updated_unix_s"
)


def _sample_row(s: SampleRecord) -> tuple[object, ...]:
    t = s.tags
    return (
        t.instrument,
        t.channel,
        t.test_id,
        t.interphase,
        t.cell_type,
        s.time_unix_s,
        _real(s.test_time_s),
        _real(s.voltage_v),
        _real(s.current_a),
        _real(s.capacity_mah),
        _real(s.energy_mwh),
        s.step,
        s.cycle,
        s.seq,
        s.source,
        json.dumps(dict(s.aux), sort_keys=True) if s.aux else "",
    )


def _sample_from_row(row: tuple[Any, ...]) -> SampleRecord:
    (instrument, channel, test_id, interphase, cell_type, time_unix_s, test_time_s) = row[:7]
    voltage_v, current_a, capacity_mah, energy_mwh, step, cycle, seq, source, aux_json = row[7:]
    aux = tuple(sorted(json.loads(aux_json).items())) if aux_json else ()
    return SampleRecord(
        tags=ChannelTags(instrument, channel, test_id, interphase, cell_type),
        time_unix_s=time_unix_s,
        test_time_s=_float(test_time_s),
        voltage_v=_float(voltage_v),
        current_a=_float(current_a),
        capacity_mah=_float(capacity_mah),
        energy_mwh=_float(energy_mwh),
        step=step,
        cycle=cycle,
        seq=seq,
        source=cast("SampleSource", source),
        aux=aux,
    )


def _event_row(e: EventRecord) -> tuple[object, ...]:
    t = e.tags
    return (
        e.event_id,
        t.instrument,
        t.channel,
        t.test_id,
        t.interphase,
        t.cell_type,
        e.kind,
        e.time_unix_s,
        e.fault,
        e.subkind,
        e.detail,
        # Python's JSON keeps NaN and ±inf, so the values come back as they went in.
        json.dumps(e.values, sort_keys=True),
    )


def _event_from_row(row: tuple[Any, ...]) -> EventRecord:
    event_id, instrument, channel, test_id, interphase, cell_type, kind = row[:7]
    time_unix_s, fault, subkind, detail, values_json = row[7:]
    values = {str(k): float(v) for k, v in json.loads(values_json).items()}
    return EventRecord(
        tags=ChannelTags(instrument, channel, test_id, interphase, cell_type),
        kind=cast("EventKind", kind),
        time_unix_s=time_unix_s,
        fault=fault,
        subkind=subkind,
        detail=detail,
        values=values,
        event_id=event_id,
    )


def _state_row(s: ChannelState) -> tuple[object, ...]:
    return (
        s.instrument,
        s.channel,
        s.state,
        s.test_id,
        s.last_seq,
        s.halt_event_id,
        s.detail,
        s.updated_unix_s,
    )


def _where(
    clauses: Iterable[tuple[str, object | None]],
) -> tuple[str, list[object]]:
    parts: list[str] = []
    params: list[object] = []
    for clause, value in clauses:
        if value is not None:
            parts.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _newest_last(
    table: str, columns: str, where: str, params: list[object], limit: int | None
) -> tuple[str, list[object]]:
    # With a limit, keep the newest rows, then hand them back oldest first.
    if limit is None:
        return f"SELECT {columns} FROM {table}{where} ORDER BY time_unix_s, rowid", params
    inner = (
        f"SELECT {columns}, rowid AS r FROM {table}{where} ORDER BY time_unix_s DESC, rowid DESC "
        "LIMIT ?"
    )
    return f"SELECT {columns} FROM ({inner}) ORDER BY time_unix_s, r", [*params, limit]


class Store:
    """The embedded database ``state_dir/cellguard.sqlite``.

    Use as ``async with Store(state_dir) as store: ...`` (or ``await store.open()`` /
    ``await store.aclose()``). All I/O runs on the store's own thread (module doc).
    """

    def __init__(self, state_dir: Path, *, move_aside_damaged: bool = False) -> None:
        self.path = Path(state_dir) / STORE_FILENAME
        self._db = SqliteWorker(self.path, synchronous="NORMAL")
        self._states: dict[ChannelKey, ChannelState] = {}
        self._move_aside_damaged = move_aside_damaged
        # Where a damaged file was moved at open (the daemon raises an alert naming it).
        self.moved_aside: Path | None = None
        # Set while the file is being replaced: its absence then is ours, not a deletion.
        self._replacing = False

    async def open(self) -> None:
        """Open or create the file; raise StoreError if it is unusable or from a newer version.

        With ``move_aside_damaged`` (the daemon), a file SQLite cannot read is renamed
        ``cellguard.sqlite.damaged-<UTC time>`` (kept for whoever wants to rescue it)
        and an empty store is created: a daemon that refused to start would leave
        every cell unguarded, and a halted channel is protected by the instrument's
        own status, checked before any start, not by this file. ``moved_aside`` names
        the renamed file.
        """
        try:
            await self._db.open(_MIGRATIONS, what="cellguard store")
        except DamagedStoreError as err:
            if not self._move_aside_damaged:
                raise
            self.moved_aside = move_aside(self.path)
            log.error(  # noqa: TRY400 - the cause is in the message; a traceback adds nothing
                "STORE DAMAGED: %s; moved to %s and started an empty store (channel "
                "states, samples and events before now are only in the moved file)",
                err,
                self.moved_aside,
            )
            self._db = SqliteWorker(self.path, synchronous="NORMAL")
            await self._db.open(_MIGRATIONS, what="cellguard store")
        self._states = await self.load_channel_states()

    def exists(self) -> bool:
        """Whether the file is still where it was opened (someone may delete state_dir)."""
        return self._replacing or self.path.exists()

    async def reopen(self) -> None:
        """Create the file again (after ``state_dir`` was deleted) and write back every
        channel state known to this process, so a restart still resumes from them."""
        await self._replace(move_aside_old=False)

    async def move_aside_and_reopen(self) -> Path:
        """The file was found damaged while running: move it aside (kept, named with
        the time), start an empty one with every channel state this process holds."""
        await self._replace(move_aside_old=True)
        return self.moved_aside if self.moved_aside is not None else self.path

    async def _replace(self, *, move_aside_old: bool) -> None:
        if self._replacing:  # the other repair is under way: it does the same
            return
        self._replacing = True
        try:
            old, self._db = self._db, SqliteWorker(self.path, synchronous="NORMAL")
            await old.aclose()
            if move_aside_old:
                self.moved_aside = move_aside(self.path)
            await self._db.open(_MIGRATIONS, what="cellguard store")
            await self.resave_states()
        finally:
            self._replacing = False

    async def resave_states(self) -> None:
        """Write every channel state known to this process (after writes failed)."""
        states = list(self._states.values())

        def upsert_all(conn: sqlite3.Connection) -> None:
            for state in states:
                _upsert_state(conn, state)

        await self._db.call(lambda conn: _transaction(conn, upsert_all))

    async def aclose(self) -> None:
        """Finish pending writes and close the file (shielded from cancellation)."""
        await self._db.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- samples and events: the embedded sink ----------------------------------------

    async def write(self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]) -> None:
        """Store samples and events in one transaction (the embedded sink).

        An event already stored (same ``event_id``) is kept as it was, so handing the
        same event over twice stores it once.
        """
        if not samples and not events:
            return
        sample_rows = [_sample_row(s) for s in samples if s.source != "recorded"]
        # A recorded sample is kept once: a daemon killed after writing a batch but
        # before saving its position fetches that batch again (at-least-once delivery
        # made exactly-once here). Looked up by (instrument, channel, time): indexed.
        recorded_rows = [
            (*row, row[0], row[1], row[5], row[2], row[13])
            for row in (_sample_row(s) for s in samples if s.source == "recorded")
        ]
        event_rows = [_event_row(e) for e in events]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT INTO samples ({_SAMPLE_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                sample_rows,
            )
            conn.executemany(
                f"INSERT INTO samples ({_SAMPLE_COLUMNS}) SELECT {', '.join('?' * 16)} "
                "WHERE NOT EXISTS (SELECT 1 FROM samples WHERE instrument = ? AND channel = ? "
                "AND time_unix_s = ? AND test_id = ? AND seq = ? AND source = 'recorded')",
                recorded_rows,
            )
            conn.executemany(
                f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                event_rows,
            )

        await self._db.call(lambda conn: _transaction(conn, insert))

    async def query_samples(
        self,
        instrument: str,
        channel: str,
        since_unix_s: float | None = None,
        limit: int | None = None,
    ) -> list[SampleRecord]:
        """One channel's samples, oldest first.

        ``since_unix_s``: only samples at or after this UNIX time. ``limit``: only the
        newest ``limit`` of them (still returned oldest first), e.g. ``limit=1`` for the
        last sample.
        """
        where, params = _where(
            [
                ("instrument = ?", instrument),
                ("channel = ?", channel),
                ("time_unix_s >= ?", since_unix_s),
            ]
        )
        sql, params = _newest_last("samples", _SAMPLE_COLUMNS, where, params, limit)
        rows = await self._db.call(lambda conn: conn.execute(sql, params).fetchall())
        return [_sample_from_row(r) for r in rows]

    async def query_events(
        self,
        instrument: str | None = None,
        channel: str | None = None,
        since_unix_s: float | None = None,
        limit: int | None = None,
        *,
        kind: EventKind | None = None,
    ) -> list[EventRecord]:
        """Events, oldest first; every filter left as ``None`` matches everything.

        ``since_unix_s`` and ``limit`` work as in :meth:`query_samples`.
        """
        where, params = _where(
            [
                ("instrument = ?", instrument),
                ("channel = ?", channel),
                ("time_unix_s >= ?", since_unix_s),
                ("kind = ?", kind),
            ]
        )
        sql, params = _newest_last("events", _EVENT_COLUMNS, where, params, limit)
        rows = await self._db.call(lambda conn: conn.execute(sql, params).fetchall())
        return [_event_from_row(r) for r in rows]

    # -- per-cycle analytics (the analytics tap) ---------------------------------------

    async def write_cycles(self, rows: Sequence[CycleRow]) -> None:
        """Store cycle rows of the analytics tap in one transaction."""
        if not rows:
            return
        values = [_cycle_row(r) for r in rows]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT INTO cycles ({_CYCLE_COLUMNS}) VALUES ({', '.join('?' * 14)})", values
            )

        await self._db.call(lambda conn: _transaction(conn, insert))

    async def query_cycles(
        self,
        instrument: str | None = None,
        channel: str | None = None,
        *,
        test_id: str | None = None,
        limit: int | None = None,
    ) -> list[CycleRow]:
        """Cycle rows, oldest first; ``limit`` keeps the newest (as :meth:`query_samples`)."""
        where, params = _where(
            [("instrument = ?", instrument), ("channel = ?", channel), ("test_id = ?", test_id)]
        )
        sql, params = _newest_last("cycles", _CYCLE_COLUMNS, where, params, limit)
        rows = await self._db.call(lambda conn: conn.execute(sql, params).fetchall())
        return [_cycle_from_row(r) for r in rows]

    # -- channel state: what a restarted daemon resumes from --------------------------

    async def save_channel_state(self, state: ChannelState) -> None:
        """Remember one channel's state (replacing what was stored for it); wait until stored."""
        self._states[state.key] = state
        await self._db.call(lambda conn: _upsert_state(conn, state))

    def save_channel_state_nowait(self, state: ChannelState) -> None:
        """Like :meth:`save_channel_state`, for synchronous code on the event loop.

        Returns at once without touching the disk (safe in the halt path); the write
        runs on the store's thread in order with every other write. A failure is logged.
        """
        self._states[state.key] = state
        try:
            self._db.submit(lambda conn: _upsert_state(conn, state))
        except StoreError as err:
            # Reopening (state_dir deleted): the halt path must not fail on it; the
            # state is kept here and written back by reopen().
            log.error("channel state of %s not saved now: %s", state.key, err)  # noqa: TRY400

    async def load_channel_states(self) -> dict[ChannelKey, ChannelState]:
        """Every stored channel state, by ``(instrument, channel)``, read from the file."""

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(f"SELECT {_STATE_COLUMNS} FROM channel_state").fetchall()

        rows = await self._db.call(select)
        return {(r[0], r[1]): ChannelState(*r) for r in rows}

    # The supervisor's synchronous ``StateStore`` protocol, served from the states read at
    # open() plus those saved since: no disk I/O on the event loop.

    def save_state(self, tags: ChannelTags, state: str, last_seq: int, detail: str) -> None:
        """Remember a channel's state without blocking (keeps a stored ``halt_event_id``)."""
        old = self._states.get((tags.instrument, tags.channel))
        new = ChannelState(
            instrument=tags.instrument,
            channel=tags.channel,
            state=state,
            test_id=tags.test_id,
            last_seq=last_seq,
            halt_event_id=old.halt_event_id if old is not None else None,
            detail=detail,
            updated_unix_s=time.time(),
        )
        self.save_channel_state_nowait(new)

    def load_state(self, instrument: str, channel: str) -> tuple[str, int, str] | None:
        """``(state, last_seq, detail)`` of a channel as last saved, or ``None``."""
        s = self._states.get((instrument, channel))
        return None if s is None else (s.state, s.last_seq, s.detail)

    def cached_channel_state(self, instrument: str, channel: str) -> ChannelState | None:
        """The channel's state as last saved or loaded, without I/O."""
        return self._states.get((instrument, channel))


_CYCLE_COLUMNS = (
    "instrument, channel, test_id, interphase, cell_type, cycle, time_unix_s, test_time_s, "
    "polarization_v, max_polarization_v, capacity_mah_cm2, complete, failure, "
    "coulombic_efficiency"
)


def _cycle_row(r: CycleRow) -> tuple[object, ...]:
    t = r.tags
    return (
        t.instrument,
        t.channel,
        t.test_id,
        t.interphase,
        t.cell_type,
        r.cycle,
        r.time_unix_s,
        r.test_time_s,
        _real(r.polarization_v),
        _real(r.max_polarization_v),
        _real(r.capacity_mah_cm2),
        int(r.complete),
        r.failure,
        _real(r.coulombic_efficiency),
    )


def _cycle_from_row(row: tuple[Any, ...]) -> CycleRow:
    instrument, channel, test_id, interphase, cell_type, cycle, time_unix_s = row[:7]
    test_time_s, pol, max_pol, capacity, complete, failure, ce = row[7:]
    return CycleRow(
        tags=ChannelTags(instrument, channel, test_id, interphase, cell_type),
        cycle=cycle,
        time_unix_s=time_unix_s,
        test_time_s=test_time_s,
        polarization_v=_float(pol),
        max_polarization_v=_float(max_pol),
        capacity_mah_cm2=_float(capacity),
        complete=bool(complete),
        failure=failure,
        coulombic_efficiency=_float(ce),
    )


def move_aside(path: Path) -> Path:
    """Rename a damaged SQLite file (with its WAL and shared-memory files) out of the
    way, as ``<name>.damaged-<UTC time>``; return the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():  # two damaged files in one second: keep both
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(target.with_name(target.name + suffix))
    return target


def _upsert_state(conn: sqlite3.Connection, state: ChannelState) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO channel_state ({_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        _state_row(state),
    )
