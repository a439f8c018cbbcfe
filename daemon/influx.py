"""The InfluxDB sink: samples and events over the v2 write API, spooled on disk when down.

Schema (line protocol, one line per sample / event):

``cellguard_samples``
    tags: ``instrument``, ``channel``, ``test_id``, ``interphase``, ``cell_type``,
    ``source`` ("live" | "recorded"); an empty tag is left out (line protocol has no
    empty tag values).
    fields: ``voltage_v``, ``current_a``, ``capacity_mah``, ``energy_mwh``,
    ``test_time_s`` (floats); ``step``, ``cycle``, ``seq`` (integers). A NaN or
    infinite float is left out (line protocol cannot carry it).

``cellguard_events``
    tags: ``instrument``, ``channel``, ``test_id``, ``kind`` (halt, warn, start, ...),
    ``fault``, ``subkind``.
    fields: every entry of ``EventRecord.values`` (measured, baseline, threshold, ...)
    as a float; ``occurred`` = 1 (integer: every event has a number to count, even
    without values); ``detail``, the explanation, is the **only string field** because
    there is no number for it (its line breaks become spaces).
    **VictoriaMetrics drops string fields** (it stores ``detail`` as 0): read the
    explanation from InfluxDB, the embedded store or the MQTT alert.

``cellguard_cycles`` (one line per cycle, from :mod:`cellguard.daemon.analytics_tap`)
    tags: ``instrument``, ``channel``, ``test_id``, ``interphase``, ``cell_type``,
    ``failure`` (the fault, only on the row that closed a failed test).
    fields: ``polarization_v``, ``max_polarization_v``, ``capacity_mah_cm2``,
    ``test_time_s``, ``coulombic_efficiency`` (floats; the last only for a depleted
    asymmetric cell); ``cycle``, ``complete`` (integers, ``complete`` 1 or 0).

Time: ``precision=ns``; a float UNIX time holds about a microsecond, so timestamps
are rounded to the microsecond, and a sample's nanoseconds carry its record position
(``seq`` modulo 1000) so that two records of one series never share a point time
(:func:`sample_time_ns`). VictoriaMetrics keeps milliseconds.

Transport: one ``POST /api/v2/write?org=&bucket=&precision=ns`` per batch through a
``urllib3`` connection pool, run in a worker thread (``asyncio.to_thread``): the same
request ``influxdb-client``'s synchronous write API makes (``Authorization: Token
...``, gzip), without its per-request serialisation and gzip level 9, which cost
more CPU than encoding the points (``bench/bench_influx.py``: ~50k points/s through
the client, ~150k direct). urllib3 retries are off, the sink retries on its own.
Requests are gzip-compressed at level 1 (line protocol still shrinks ~8x), at most
``batch_lines`` lines each. ``/api/v2/write`` is served by InfluxDB 1.8+ (token =
"user:password"), 2.x, 3.x and VictoriaMetrics.

What happens to a batch:

* accepted (2xx): done;
* server unreachable, timeout, HTTP 5xx or 429: :class:`SinkUnavailable` inside; the
  batch goes to the disk :class:`Spool` and :meth:`InfluxSink.write` returns; the
  spool is sent later, oldest first, by :meth:`InfluxSink.run`;
* HTTP 401/403/404/408 (wrong token, unknown org or bucket, request timeout): treated
  as unavailable too, logged with what to fix: the points would be accepted once the
  configuration is fixed, so they are kept;
* any other 4xx (400 malformed or too long line, 413, 422 type conflict ...): a bad
  point. It would never be accepted, so it is logged with the server's reason and
  dropped. The rejected request is first split in halves (a few times, bounded) so
  that the good points sharing a batch with a bad one still arrive.

Delivery is at least once: a batch whose request was cut off by cancellation is
spooled too, and a server may store the points before a bad one in a request it
rejects; such points can arrive twice. InfluxDB overwrites a point with the same
series and time, so nothing shows; VictoriaMetrics keeps the duplicate unless run
with ``-dedup.minScrapeInterval=1ms``.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import http.client
import logging
import math
import sqlite3
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Self

import urllib3
import urllib3.exceptions

from cellguard.daemon.analytics_tap import CycleRow
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.daemon.store import DamagedStoreError, SqliteWorker, move_aside
from cellguard.drivers.errors import CellguardError

log = logging.getLogger(__name__)

SAMPLES_MEASUREMENT = "cellguard_samples"
EVENTS_MEASUREMENT = "cellguard_events"
CYCLES_MEASUREMENT = "cellguard_cycles"
SPOOL_FILENAME = "spool.sqlite"
# Compressed bytes; line protocol compresses ~10x, so 1 GiB holds days of a full lab.
DEFAULT_SPOOL_MAX_BYTES = 1 << 30
DEFAULT_BATCH_LINES = 5000
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_BACKOFF_INITIAL_S = 1.0
DEFAULT_BACKOFF_MAX_S = 60.0

# gzip level 1: a tenth of level 9's CPU (which influxdb-client uses), nearly its ratio.
_GZIP_LEVEL = 1
# HTTP statuses that say "not now" or "fix the configuration", never "bad point".
_RETRY_4XX = {401, 403, 404, 408, 429}
_MAX_REASON_CHARS = 500
# A rejected request is halved at most this often to isolate its bad points.
_MAX_SPLIT_DEPTH = 6


class SinkUnavailable(CellguardError):
    """The InfluxDB server cannot take points now (unreachable, timeout, 5xx, 429,
    or a token / org / bucket it refuses). The message says which and what to fix."""


class _BatchRejected(CellguardError):
    """The server refused the batch itself (4xx): sending it again would not help."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"HTTP {status}: {reason}")


# -- line protocol (pure) ----------------------------------------------------------------

# The same escaping as influxdb-client's Point, so the lines are what Point would write.
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


def _tag(key: str, value: str) -> str:
    if not value:
        return ""
    escaped = value.translate(_ESCAPE_KEY)
    if escaped.endswith("\\"):  # would escape the separator that follows
        escaped += " "
    return f",{key}={escaped}"


def _float_field(key: str, value: float) -> str | None:
    value = float(value)
    if not math.isfinite(value):
        return None
    text = repr(value)
    if text.endswith(".0"):  # as Point writes whole floats
        text = text[:-2]
    return f"{key.translate(_ESCAPE_KEY)}={text}"


def _number(key_eq: str, value: float) -> str:
    # The hot path of sample_line: key_eq is a constant "name=", the result ends in ",".
    if not math.isfinite(value):
        return ""
    text = repr(float(value))
    if text.endswith(".0"):
        text = text[:-2]
    return f"{key_eq}{text},"


def _time_ns(time_unix_s: float) -> int:
    return round(time_unix_s * 1_000_000) * 1000


def sample_time_ns(sample: SampleRecord) -> int:
    """A sample's point time: its time to the microsecond, and its record position
    (``seq``, modulo 1000) in the nanoseconds, so no two records of a series share one.

    InfluxDB identifies a point by measurement, tags and time, and overwrites the
    earlier of two alike: two records of one millisecond (a spike logged on change)
    would keep only the last. A ``seq`` tag would make each point a series of its own
    (unbounded series cardinality, InfluxDB's index in memory grows with it); a time
    made unique on arrival would differ on a re-send, storing the point twice. The
    position is the record's identity and the same each time it is sent: a re-sent
    point still overwrites itself. Time moves by at most 999 ns, below the µs kept.
    """
    return round(sample.time_unix_s * 1_000_000) * 1000 + sample.seq % 1000


@functools.lru_cache(maxsize=4096)
def _sample_prefix(tags: ChannelTags, source: str) -> str:
    # The same for every sample of a channel: escaped once, not once per sample.
    return (
        SAMPLES_MEASUREMENT
        + _tag("cell_type", tags.cell_type)
        + _tag("channel", tags.channel)
        + _tag("instrument", tags.instrument)
        + _tag("interphase", tags.interphase)
        + _tag("source", source)
        + _tag("test_id", tags.test_id)
        + " "
    )


_isfinite = math.isfinite


def sample_line(sample: SampleRecord) -> str:
    """One sample as a line of ``cellguard_samples`` (tags and fields sorted by key)."""
    # The hot path of the sink (one call per point): one f-string for the fields. A
    # sum is finite only if every term is, so one test covers the five floats; a
    # float's repr ends in ".0" only when whole, which Point writes without it.
    # Samples with auxiliary readings or a NaN / infinity take the general path.
    capacity = float(sample.capacity_mah)
    current = float(sample.current_a)
    energy = float(sample.energy_mwh)
    test_time = float(sample.test_time_s)
    voltage = float(sample.voltage_v)
    if not sample.aux and _isfinite(capacity + current + energy + test_time + voltage):
        body = (
            f"capacity_mah={capacity!r},current_a={current!r},cycle={int(sample.cycle)}i,"
            f"energy_mwh={energy!r},seq={int(sample.seq)}i,step={int(sample.step)}i,"
            f"test_time_s={test_time!r},voltage_v={voltage!r} "
        ).replace(".0,", ",")
        if body.endswith(".0 "):
            body = body[:-3] + " "
        prefix = _sample_prefix(sample.tags, sample.source)
        # sample_time_ns, inlined (the hot path): the record position in the ns.
        return f"{prefix}{body}{round(sample.time_unix_s * 1_000_000) * 1000 + sample.seq % 1000}"
    return _sample_line_general(sample)


def _sample_line_general(sample: SampleRecord) -> str:
    # NaN or infinite floats are left out, field by field.
    body = (
        _number("capacity_mah=", sample.capacity_mah)
        + _number("current_a=", sample.current_a)
        + f"cycle={int(sample.cycle)}i,"
        + _number("energy_mwh=", sample.energy_mwh)
        + f"seq={int(sample.seq)}i,step={int(sample.step)}i,"
        + _number("test_time_s=", sample.test_time_s)
        + _number("voltage_v=", sample.voltage_v)
    )
    if sample.aux:  # auxiliary readings join the sample, as aux_<name> fields
        body += "".join(_number(f"aux_{name}=", value) for name, value in sample.aux)
    prefix = _sample_prefix(sample.tags, sample.source)
    return f"{prefix}{body[:-1]} {sample_time_ns(sample)}"


def event_line(event: EventRecord) -> str:
    """One event as a line of ``cellguard_events`` (tags and fields sorted by key)."""
    t = event.tags
    tags = (
        _tag("channel", t.channel)
        + _tag("fault", event.fault)
        + _tag("instrument", t.instrument)
        + _tag("kind", event.kind)
        + _tag("subkind", event.subkind)
        + _tag("test_id", t.test_id)
    )
    fields: dict[str, str | None] = {k: _float_field(k, v) for k, v in event.values.items() if k}
    fields["occurred"] = "occurred=1i"
    if event.detail:
        detail = " ".join(event.detail.splitlines()).translate(_ESCAPE_STRING)
        fields["detail"] = f'detail="{detail}"'
    body = ",".join(f for _, f in sorted(fields.items()) if f is not None)
    return f"{EVENTS_MEASUREMENT}{tags} {body} {_time_ns(event.time_unix_s)}"


def cycle_line(row: CycleRow) -> str:
    """One cycle as a line of ``cellguard_cycles`` (tags and fields sorted by key)."""
    t = row.tags
    tags = (
        _tag("cell_type", t.cell_type)
        + _tag("channel", t.channel)
        + _tag("failure", row.failure)
        + _tag("instrument", t.instrument)
        + _tag("interphase", t.interphase)
        + _tag("test_id", t.test_id)
    )
    fields = [
        _float_field("capacity_mah_cm2", row.capacity_mah_cm2),
        f"complete={int(row.complete)}i",
        _float_field("coulombic_efficiency", row.coulombic_efficiency),
        f"cycle={int(row.cycle)}i",
        _float_field("max_polarization_v", row.max_polarization_v),
        _float_field("polarization_v", row.polarization_v),
        _float_field("test_time_s", row.test_time_s),
    ]
    body = ",".join(f for f in fields if f is not None)
    return f"{CYCLES_MEASUREMENT}{tags} {body} {_time_ns(row.time_unix_s)}"


def encode_lines(samples: Iterable[SampleRecord], events: Iterable[EventRecord]) -> list[str]:
    """Samples then events as line protocol, one string per point."""
    return [*(sample_line(s) for s in samples), *(event_line(e) for e in events)]


# -- the disk spool --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One batch waiting in the spool: line protocol (ns precision), ``n_lines`` points."""

    batch_id: int
    payload: bytes
    n_lines: int


_SPOOL_MIGRATIONS = (
    """
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: order of arrival
        created_unix_s REAL NOT NULL,
        n_lines INTEGER NOT NULL,
        payload BLOB NOT NULL                  -- zlib-compressed line protocol, precision=ns
    )
    """,
)


class Spool:
    """Batches of line protocol kept on disk, oldest first, in their own SQLite file.

    WAL with ``synchronous=FULL``: a batch that :meth:`append` returned for survives a
    crash and a power cut, since it exists nowhere else. The file holds at most
    ``max_bytes`` of (compressed) payload: when a new batch would exceed that, the
    oldest batches are dropped to make room, and that is logged as an ERROR (first
    drop, then each time the count of dropped batches doubles, and once more when the
    spool has room again); ``dropped_batches`` / ``dropped_lines`` count them.
    The newest batch is never dropped. All I/O runs on the spool's own thread.
    """

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        if max_bytes <= 0:
            msg = f"the spool size must be positive, got max_bytes={max_bytes}"
            raise ValueError(msg)
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._db = SqliteWorker(self.path, synchronous="FULL")
        # Written only by the spool's thread; read anywhere.
        self._batches = 0
        self._lines = 0
        self._bytes = 0
        self.dropped_batches = 0
        self.dropped_lines = 0
        self._episode_dropped = 0
        self._next_report = 1

    @property
    def pending_batches(self) -> int:
        """Batches waiting to be sent."""
        return self._batches

    @property
    def pending_lines(self) -> int:
        """Points waiting to be sent."""
        return self._lines

    @property
    def pending_bytes(self) -> int:
        """Compressed bytes waiting to be sent (what ``max_bytes`` bounds)."""
        return self._bytes

    async def open(self) -> None:
        """Open or create the spool file and count what is waiting in it.

        A damaged file is moved aside (``spool.sqlite.damaged-<UTC time>``) and an
        empty spool created: refusing would leave the daemon, and every cell, down.
        """
        try:
            await self._db.open(_SPOOL_MIGRATIONS, what="cellguard spool")
        except DamagedStoreError as err:
            aside = move_aside(self.path)
            log.error(  # noqa: TRY400 - the cause is in the message
                "SPOOL DAMAGED: %s; moved to %s and started an empty spool (the points "
                "it held are only in the moved file)",
                err,
                aside,
            )
            self._db = SqliteWorker(self.path, synchronous="FULL")
            await self._db.open(_SPOOL_MIGRATIONS, what="cellguard spool")

        def count(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_lines), 0), COALESCE(SUM(LENGTH(payload)), 0) "
                "FROM batches"
            ).fetchone()
            self._batches, self._lines, self._bytes = (int(v) for v in row)

        await self._db.call(count)

    async def aclose(self) -> None:
        """Close the file (shielded from cancellation)."""
        await self._db.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def append(self, batches: Sequence[tuple[bytes, int]]) -> None:
        """Keep ``(payload, n_lines)`` batches on disk, after everything already there."""
        if not batches:
            return
        now_s = time.time()

        def insert(conn: sqlite3.Connection) -> tuple[int, int]:
            # Compressing here keeps the work off the event loop.
            rows = [(now_s, n, zlib.compress(payload, 1)) for payload, n in batches]
            # Counters change only after COMMIT, so a failed insert leaves them true.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO batches (created_unix_s, n_lines, payload) VALUES (?, ?, ?)",
                    rows,
                )
                dropped = self._drop_oldest_over_bound(conn, sum(len(r[2]) for r in rows))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            dropped_batches, dropped_lines, freed = dropped
            self._batches += len(rows) - dropped_batches
            self._lines += sum(r[1] for r in rows) - dropped_lines
            self._bytes += sum(len(r[2]) for r in rows) - freed
            self.dropped_batches += dropped_batches
            self.dropped_lines += dropped_lines
            return dropped_batches, dropped_lines

        dropped_batches, dropped_lines = await self._db.call(insert)
        if dropped_batches:
            self._report_drop(dropped_batches, dropped_lines)

    def _drop_oldest_over_bound(
        self, conn: sqlite3.Connection, new_bytes: int
    ) -> tuple[int, int, int]:
        excess = self._bytes + new_bytes - self.max_bytes
        if excess <= 0:
            return (0, 0, 0)
        victims: list[int] = []
        lines = freed = 0
        # Everything but the batches just added may go, oldest first.
        for batch_id, n_lines, size in conn.execute(
            "SELECT id, n_lines, LENGTH(payload) FROM batches ORDER BY id LIMIT ?",
            (self._batches,),
        ):
            if freed >= excess:
                break
            victims.append(batch_id)
            lines += n_lines
            freed += size
        conn.executemany("DELETE FROM batches WHERE id = ?", [(v,) for v in victims])
        return (len(victims), lines, freed)

    def _report_drop(self, batches: int, lines: int) -> None:
        self._episode_dropped += batches
        if self._episode_dropped >= self._next_report:
            log.error(
                "the InfluxDB spool %s is full (limit %d bytes): dropped the %d oldest "
                "batches (%d points); %d batches (%d points) dropped so far. Fix the link "
                "to InfluxDB or raise the spool size",
                self.path,
                self.max_bytes,
                batches,
                lines,
                self.dropped_batches,
                self.dropped_lines,
            )
            while self._next_report <= self._episode_dropped:
                self._next_report *= 2

    async def oldest(self, max_lines: int) -> list[SpooledBatch]:
        """The oldest batches, in order, up to ``max_lines`` points (at least one batch
        if any waits); empty if the spool is empty. They stay until :meth:`remove`."""

        def select(conn: sqlite3.Connection) -> list[SpooledBatch]:
            out: list[SpooledBatch] = []
            total = 0
            for batch_id, n_lines, payload in conn.execute(
                "SELECT id, n_lines, payload FROM batches ORDER BY id"
            ):
                if out and total + n_lines > max_lines:
                    break
                out.append(SpooledBatch(batch_id, zlib.decompress(payload), n_lines))
                total += n_lines
            return out

        return await self._db.call(select)

    async def remove(self, batch_ids: Sequence[int]) -> None:
        """Forget batches that were delivered (or that the server will never accept)."""
        ids = list(batch_ids)

        def delete(conn: sqlite3.Connection) -> None:
            removed = lines = size = 0
            conn.execute("BEGIN IMMEDIATE")
            try:
                for batch_id in ids:
                    row = conn.execute(
                        "DELETE FROM batches WHERE id = ? RETURNING n_lines, LENGTH(payload)",
                        (batch_id,),
                    ).fetchone()
                    if row is not None:
                        removed += 1
                        lines += row[0]
                        size += row[1]
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._batches -= removed
            self._lines -= lines
            self._bytes -= size

        await self._db.call(delete)
        if self._episode_dropped and self._bytes < self.max_bytes:
            log.error(
                "the InfluxDB spool %s has room again; %d batches (%d points) were dropped "
                "since it was opened",
                self.path,
                self.dropped_batches,
                self.dropped_lines,
            )
            self._episode_dropped = 0
            self._next_report = 1


# -- the sink ------------------------------------------------------------------------------


def _reason(response: urllib3.BaseHTTPResponse) -> str:
    body = response.data.decode("utf-8", "replace") if response.data else ""
    text = " ".join((body or response.reason or "").split())
    return text[:_MAX_REASON_CHARS]


class InfluxSink:
    """Sends samples and events to an InfluxDB v2 write API; spools them when it is down.

    Use as::

        async with InfluxSink(url=..., org=..., bucket=..., token=..., state_dir=...) as sink:
            task_group.create_task(sink.run())   # sends the spool when the server is back
            await sink.write(samples, events)

    ``timeout_s`` bounds one HTTP request; ``batch_lines`` the points per request;
    ``spool_max_bytes`` the disk spool (``state_dir/spool.sqlite``, see :class:`Spool`);
    ``backoff_initial_s`` .. ``backoff_max_s`` the pause between attempts of :meth:`run`
    while the server stays down (doubling each time). The token is never logged.
    """

    def __init__(
        self,
        *,
        url: str,
        org: str,
        bucket: str,
        token: str,
        state_dir: Path,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        batch_lines: int = DEFAULT_BATCH_LINES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
    ) -> None:
        if batch_lines < 1:
            msg = f"batch_lines must be at least 1, got {batch_lines}"
            raise ValueError(msg)
        self.url = url
        self.org = org
        self.bucket = bucket
        self._token = token
        self._batch_lines = batch_lines
        self._timeout_s = timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self.spool = Spool(Path(state_dir) / SPOOL_FILENAME, max_bytes=spool_max_bytes)
        self._http: urllib3.PoolManager | None = None
        self._write_url = (
            url.rstrip("/")
            + "/api/v2/write?"
            + urllib.parse.urlencode({"org": org, "bucket": bucket, "precision": "ns"})
        )
        self._headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Encoding": "gzip",
            "Accept": "application/json",
        }
        if token:
            self._headers["Authorization"] = f"Token {token}"
        self._online = True
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self.rejected_lines = 0
        self._next_reject_report = 1

    def __repr__(self) -> str:
        return f"InfluxSink(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"

    @property
    def online(self) -> bool:
        """False from the first failed request until a request succeeds again."""
        return self._online

    async def open(self) -> None:
        """Open the spool (points left by an earlier run are sent by :meth:`run`)."""
        await self.spool.open()
        self._http = urllib3.PoolManager(
            num_pools=1,
            maxsize=1,
            retries=False,
            timeout=urllib3.Timeout(total=self._timeout_s),
        )
        if self.spool.pending_batches:
            log.info(
                "%d points spooled by an earlier run wait in %s; they are sent once %s answers",
                self.spool.pending_lines,
                self.spool.path,
                self.url,
            )
            self._wake.set()

    async def aclose(self) -> None:
        """Close the HTTP client and the spool (shielded); what is spooled stays on disk."""
        pool, self._http = self._http, None
        try:
            if pool is not None:
                pool.clear()
        finally:
            await self.spool.aclose()
        if self.spool.pending_batches:
            log.warning(
                "%d points stay spooled in %s until the next start",
                self.spool.pending_lines,
                self.spool.path,
            )

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def write(self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]) -> None:
        """Send samples and events; never raises because the server is down.

        When the server is unreachable, times out or answers 5xx / 429 (or refuses the
        token, org or bucket), the points go to the disk spool and this returns; while
        the spool holds anything, new points go straight behind it (no request, no
        timeout to wait for) and :meth:`run` sends them in order. Points the server
        rejects as malformed (another 4xx) are logged with the server's reason and
        dropped, because they would never be accepted (a rejected request is split
        to keep its good points: see :meth:`_deliver`). Raises only
        :class:`~cellguard.daemon.store.StoreError` if the spool's disk fails.
        """
        if not samples and not events:
            return
        try:
            chunks = await asyncio.to_thread(self._encode, samples, events)
        except asyncio.CancelledError:
            await asyncio.shield(self._spool_records(samples, events))
            raise
        if self.spool.pending_batches:
            await self._spool(chunks)
            return
        for i, chunk in enumerate(chunks):
            try:
                await self._deliver(chunk)
            except SinkUnavailable as err:
                self._went_offline(err)
                await self._spool(chunks[i:])
                return
            except asyncio.CancelledError:
                # Whether the batch in flight arrived is unknown: spool it too.
                await asyncio.shield(self._spool(chunks[i:]))
                raise

    async def write_cycles(self, rows: Sequence[CycleRow]) -> None:
        """Send cycle rows (``cellguard_cycles``) the way :meth:`write` sends samples."""
        if not rows:
            return
        lines = [cycle_line(r).encode() for r in rows]
        step = self._batch_lines
        chunks = [lines[i : i + step] for i in range(0, len(lines), step)]
        if self.spool.pending_batches:
            await self._spool(chunks)
            return
        for i, chunk in enumerate(chunks):
            try:
                await self._deliver(chunk)
            except SinkUnavailable as err:
                self._went_offline(err)
                await self._spool(chunks[i:])
                return
            except asyncio.CancelledError:
                await asyncio.shield(self._spool(chunks[i:]))
                raise

    async def drain(self) -> int:
        """Send the spool, oldest first, until it is empty; return the points delivered.

        Several small spooled batches go in one request (up to ``batch_lines`` points);
        a batch leaves the spool only after the server answered for it. Points the
        server rejects as malformed (4xx other than 401/403/404/408/429) are logged and
        dropped, because they would never be accepted. Raises :class:`SinkUnavailable`
        if the server is still unavailable: what was not sent stays spooled.
        """
        async with self._drain_lock:
            delivered = 0
            while batches := await self.spool.oldest(self._batch_lines):
                lines = [line for b in batches for line in b.payload.split(b"\n")]
                try:
                    rejected = await self._deliver(lines)
                except SinkUnavailable as err:
                    self._went_offline(err)
                    raise
                await self.spool.remove([b.batch_id for b in batches])
                delivered += len(lines) - rejected
            if delivered:
                log.info("sent %d spooled points to %s", delivered, self.url)
            return delivered

    async def _deliver(self, lines: list[bytes], depth: int = 0) -> int:
        """Send lines in one request; return how many were rejected as malformed.

        A rejected request is split in halves, up to ``_MAX_SPLIT_DEPTH`` times, so one
        bad point costs at most a 1/64 share of its batch and ~12 requests, while a
        batch of nothing but bad points costs at most 127. A server may have stored the
        points before the bad one in a rejected request (InfluxDB and VictoriaMetrics
        both do), so those can arrive twice: delivery is at least once.
        Raises SinkUnavailable.
        """
        try:
            await self._send(b"\n".join(lines))
        except _BatchRejected as err:
            self._came_online()
            if len(lines) == 1 or depth >= _MAX_SPLIT_DEPTH:
                self._log_rejected(err, lines)
                return len(lines)
            mid = len(lines) // 2
            return await self._deliver(lines[:mid], depth + 1) + await self._deliver(
                lines[mid:], depth + 1
            )
        self._came_online()
        return 0

    async def run(self) -> NoReturn:
        """Send the spool whenever it holds points, forever; cancel the task to stop.

        While the server stays unavailable, attempts are spaced from
        ``backoff_initial_s`` doubling up to ``backoff_max_s``. Only the first failure
        and the recovery are logged. Cancellation leaves the spool consistent: a batch
        is removed only after the server accepted it.
        """
        delay_s = self._backoff_initial_s
        spool_failing = False
        while True:
            if not self.spool.pending_batches:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.drain()
            except SinkUnavailable:
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, self._backoff_max_s)
            except CellguardError as err:
                # The spool's own disk fails (full, deleted): never take the daemon's
                # task group down with it; what is spooled stays until it can be read.
                if not spool_failing:
                    log.error(  # noqa: TRY400 - the cause is in the message
                        "cannot read or update the spool %s: %s (retrying)", self.spool.path, err
                    )
                spool_failing = True
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, self._backoff_max_s)
            else:
                if spool_failing:
                    log.warning("the spool %s works again", self.spool.path)
                spool_failing = False
                delay_s = self._backoff_initial_s

    def _encode(
        self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]
    ) -> list[list[bytes]]:
        # Runs in a worker thread: 5000 samples take ~15 ms of CPU, not the loop's time.
        lines = [line.encode() for line in encode_lines(samples, events)]
        step = self._batch_lines
        return [lines[i : i + step] for i in range(0, len(lines), step)]

    async def _spool_records(
        self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]
    ) -> None:
        await self._spool(await asyncio.to_thread(self._encode, samples, events))

    async def _spool(self, chunks: Sequence[list[bytes]]) -> None:
        await self.spool.append([(b"\n".join(chunk), len(chunk)) for chunk in chunks])
        self._wake.set()

    async def _send(self, payload: bytes) -> None:
        await asyncio.to_thread(self._send_blocking, payload)

    def _send_blocking(self, payload: bytes) -> None:
        pool = self._http
        if pool is None:
            msg = f"the InfluxDB sink for {self.url} is closed"
            raise SinkUnavailable(msg)
        body = gzip.compress(payload, _GZIP_LEVEL, mtime=0)
        try:
            response = pool.request(
                "POST", self._write_url, body=body, headers=self._headers, retries=False
            )
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
            msg = f"InfluxDB at {self.url} is unreachable: {err}"
            raise SinkUnavailable(msg) from err
        if not 200 <= response.status < 300:
            raise self._classify(response)

    def _classify(self, response: urllib3.BaseHTTPResponse) -> SinkUnavailable | _BatchRejected:
        status = response.status
        reason = _reason(response)
        if status in (401, 403):
            msg = (
                f"InfluxDB at {self.url} refused the token (HTTP {status}: {reason}): "
                "check [influxdb] token / token_env / token_file"
            )
        elif status == 404:
            msg = (
                f"InfluxDB at {self.url} has no org {self.org!r} or bucket {self.bucket!r} "
                f"(HTTP 404: {reason}): check [influxdb] org and bucket"
            )
        elif 400 <= status < 500 and status not in _RETRY_4XX:
            return _BatchRejected(status, reason)
        else:
            msg = f"InfluxDB at {self.url} answered HTTP {status or '?'}: {reason}"
        return SinkUnavailable(msg)

    def _went_offline(self, err: SinkUnavailable) -> None:
        if self._online:
            log.warning("%s; spooling points to %s until it is back", err, self.spool.path)
            self._online = False

    def _came_online(self) -> None:
        if not self._online:
            log.info("InfluxDB at %s takes points again", self.url)
            self._online = True

    def _log_rejected(self, err: _BatchRejected, lines: list[bytes]) -> None:
        self.rejected_lines += len(lines)
        if self.rejected_lines < self._next_reject_report:
            return
        while self._next_reject_report <= self.rejected_lines:
            self._next_reject_report *= 2
        first = lines[0][:200].decode("utf-8", "replace")
        log.error(
            "InfluxDB at %s rejected %d points (HTTP %d: %s); dropping them, they would "
            "never be accepted (%d dropped so far; logged again when that doubles). "
            "The first one starts: %s",
            self.url,
            len(lines),
            err.status,
            err.reason,
            self.rejected_lines,
            first,
        )
