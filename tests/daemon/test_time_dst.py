"""Time: recorded samples are stored in UTC on a monotonic axis, whatever the BTS PC's clock.

A BTS server dates recorded samples (``atime``) in its PC's local time, without a zone:
in autumn an hour of those times repeats, in spring an hour is missing (issue 16: 360
of 1,318 samples of a DST night overwritten in InfluxDB). Rules checked: across the
fall-back and the spring-forward every recorded sample of the simulated CT-4008, read
over TCP by the supervisor and written to a real VictoriaMetrics and to SQLite, reads
back exactly once, at its true UTC time (test start + test time), in record order, and
no two samples of a series share a point time. A clock stepped back never reorders.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cellguard.daemon.guard.links.neware import ChannelSpec, InstrumentSupervisor, drain_queue
from cellguard.daemon.guard.links.wall_time import RecordDating
from cellguard.daemon.influx import InfluxSink, sample_line, sample_time_ns
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.daemon.store import Store
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareClient, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec
from cellguard.protocols import Cell, GalvanostaticCycling

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-10-25 01:00 UTC: Berlin's clocks go from 03:00 CEST back to 02:00 CET.
FALL_BACK_UTC = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
# 2026-03-29 01:00 UTC: Berlin's clocks go from 02:00 CET on to 03:00 CEST.
SPRING_FORWARD_UTC = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
CHANNEL = ChannelId(1, 1, 1)
RECORD_S = 10.0
POLL_S = 60.0
READ_TIMEOUT_S = 30.0


# -- the pure dating ---------------------------------------------------------------------


def _local(instant: datetime, zone: ZoneInfo = BERLIN) -> datetime:
    """What a BTS PC in ``zone`` shows for ``instant``: local time, no zone, to the second."""
    return instant.astimezone(zone).replace(tzinfo=None, microsecond=0)


def test_the_repeated_autumn_hour_is_resolved_by_the_test_time() -> None:
    """Records every 10 s from 23:00 to 03:00 UTC: the two passes of 02:xx local are told
    apart, each record dated at its true UTC time (no two alike, none out of order)."""
    dating = RecordDating(BERLIN)
    start = FALL_BACK_UTC - timedelta(hours=2)
    got = []
    for i in range(4 * 360):
        test_time_ms = i * 10_000 + 250
        instant = start + timedelta(milliseconds=test_time_ms)
        unix_s = dating.date(_local(instant), test_time_ms)
        dating.keep(unix_s, test_time_ms)
        got.append((unix_s, instant.timestamp()))
    locals_ = [_local(start + timedelta(seconds=10 * i)) for i in range(4 * 360)]
    assert len(set(locals_)) == 4 * 360 - 360  # the PC's clock did repeat an hour
    assert [g for g, _ in got] == pytest.approx([t for _, t in got], abs=1e-6)


def test_the_first_record_in_the_repeated_hour_takes_the_fold_of_the_expected_time() -> None:
    """With no record before (a daemon started in the second pass), the expected time
    (the live stream's origin) picks the pass; without one, the first pass is taken."""
    instant = FALL_BACK_UTC + timedelta(minutes=30)  # 02:30 CET, the second 02:30
    wall = _local(instant)
    assert RecordDating(BERLIN).date(wall, 0, expected_unix_s=instant.timestamp() + 20) == (
        instant.timestamp()
    )
    assert RecordDating(BERLIN).date(wall, 0) == instant.timestamp() - 3600


def test_a_clock_stepped_back_never_reorders_the_samples() -> None:
    """The PC's clock is set back 90 s, then an hour: the samples after each step are
    dated by the test time from the last one, so the times only increase."""
    dating = RecordDating(ZoneInfo("UTC"))
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    times = []
    for i in range(60):
        test_time_ms = i * 10_000
        step_back_s = 0 if i < 20 else 90 if i < 40 else 3600
        shown = start + timedelta(milliseconds=test_time_ms) - timedelta(seconds=step_back_s)
        unix_s = dating.date(shown.replace(tzinfo=None), test_time_ms)
        dating.keep(unix_s, test_time_ms)
        times.append(unix_s)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[-1] - times[0] == pytest.approx(590.0)


@pytest.fixture
def process_zone() -> Iterator[Callable[[str], None]]:
    """Sets the daemon PC's own zone (TZ) for this test, and restores it after."""
    before = os.environ.get("TZ")

    def set_zone(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    try:
        yield set_zone
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_without_a_configured_zone_the_pcs_own_zone_is_used(
    process_zone: Callable[[str], None],
) -> None:
    """No ``timezone``: this PC's zone (TZ), with its DST, dates the records the same."""
    process_zone("Europe/Berlin")
    local, configured = RecordDating(None), RecordDating(BERLIN)
    for i in range(0, 3 * 3600, 600):
        instant = FALL_BACK_UTC - timedelta(hours=1) + timedelta(seconds=i)
        a = local.date(_local(instant), i * 1000)
        b = configured.date(_local(instant), i * 1000)
        local.keep(a, i * 1000)
        configured.keep(b, i * 1000)
        assert a == b == instant.timestamp()


def test_two_records_of_one_millisecond_are_two_points() -> None:
    """InfluxDB keeps one point per series and time: records of the same millisecond
    (a spike logged on change) get distinct point times from their position, and the
    same record always the same one (a re-send overwrites itself, never doubles)."""
    tags = ChannelTags("ct", "1-1-1", "7")
    first = SampleRecord(tags, 1_793_000_000.123, 5.123, 0.01, 1e-3, seq=41)
    second = SampleRecord(tags, 1_793_000_000.123, 5.123, 0.02, 1e-3, seq=42)
    assert sample_time_ns(first) != sample_time_ns(second)
    assert sample_time_ns(first) // 1_000_000 == sample_time_ns(second) // 1_000_000
    assert sample_line(first).rsplit(" ", 1)[1] == str(sample_time_ns(first))
    assert sample_line(first) == sample_line(first)


# -- end to end: simulated CT-4008 over TCP -> supervisor -> VictoriaMetrics and SQLite ----


class _Publisher:
    async def publish_event(self, event: EventRecord) -> None:
        pass

    async def publish_status(self, tags: ChannelTags, status: dict[str, object]) -> None:
        pass


@dataclass
class Readback:
    records: int  # recorded samples the instrument holds
    repeated_walls: int  # of them, how many show a local time another one shows too
    test_start_unix_s: float  # the instrument's test start, UTC
    stored: list[SampleRecord]  # the SQLite store's recorded samples, as it returns them
    points: list[tuple[int, float]]  # VictoriaMetrics: (time in ms, seq) as exported


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


async def _export(base_url: str, selector: str, expect: int) -> list[dict[str, Any]]:
    """The series of ``selector`` once ``expect`` points are readable (or the timeout
    passed), read once more after that so late duplicates would show too."""
    query = urllib.parse.urlencode({"match[]": selector})
    deadline = asyncio.get_running_loop().time() + READ_TIMEOUT_S
    while True:
        await asyncio.to_thread(_get, f"{base_url}/internal/force_flush")
        body = await asyncio.to_thread(_get, f"{base_url}/api/v1/export?{query}")
        series = [json.loads(line) for line in body.splitlines() if line.strip()]
        got = sum(len(s["values"]) for s in series)
        if got >= expect or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.to_thread(_get, f"{base_url}/internal/force_flush")
    body = await asyncio.to_thread(_get, f"{base_url}/api/v1/export?{query}")
    return [json.loads(line) for line in body.splitlines() if line.strip()]


async def _run_across(
    epoch_utc: datetime,
    hours: float,
    tmp_path: Path,
    victoria_metrics: str,
    *,
    restart_after_h: float | None = None,
) -> Readback:
    """A test started at ``epoch_utc`` on a BTS PC in Berlin, guarded for ``hours``
    (with ``restart_after_h``: by a daemon killed then, and another one started 10 min
    later from the saved position); every queued sample written to VictoriaMetrics and
    SQLite, then read back."""
    instrument = f"ct-dst-{uuid.uuid4().hex[:8]}"
    clock = VirtualClock()
    cell = SimCellSpec("SEI", never_short=True)
    sim = NewareSimulator(
        clock, cells={CHANNEL: CellSlot(cell)}, seed=3, epoch=epoch_utc, wall_zone=BERLIN
    )
    protocol = GalvanostaticCycling(Cell.symmetric(0.785), cycles=100, record_interval_s=RECORD_S)
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        store = await stack.enter_async_context(Store(tmp_path / "state"))
        sink = await stack.enter_async_context(
            InfluxSink(
                url=victoria_metrics,
                org="lab",
                bucket="cycling",
                token="t",
                state_dir=tmp_path / "spool",
            )
        )

        async def guard(run_h: float) -> None:
            queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=1_000_000)
            sup = InstrumentSupervisor(
                instrument,
                lambda: NewareClient("127.0.0.1", port, timeout_s=5.0),
                [ChannelSpec(CHANNEL, "symmetric", "SEI", "run", protocol)],
                queue,
                _Publisher(),
                clock=clock,
                poll_interval_s=POLL_S,
                download_interval_s=600.0,
                state=store,
                step_file_dir=tmp_path / "steps",
                timezone=BERLIN,
            )

            async def write(samples: list[SampleRecord], events: list[EventRecord]) -> None:
                await store.write(samples, events)
                await sink.write(samples, events)
                sup.samples_stored(samples)

            drain = asyncio.create_task(drain_queue(queue, write))
            task = asyncio.create_task(sup.run())
            try:
                await clock.wait_until_sleeping(task)
                for _ in range(round(run_h * 3600 / POLL_S)):
                    await clock.advance(POLL_S)
                await asyncio.wait_for(queue.join(), READ_TIMEOUT_S)
            finally:
                task.cancel()
                drain.cancel()
                await asyncio.gather(task, drain, return_exceptions=True)

        if restart_after_h is None:
            await guard(hours)
        else:
            await guard(restart_after_h)
            await clock.advance(600.0)  # no daemon: the instrument records on
            await guard(hours - restart_after_h - 600.0 / 3600)
        assert sink.spool.pending_lines == 0  # every point was accepted by the server
        records = sim.channels[CHANNEL].download(1, 1_000_000)
        stored = [
            s for s in await store.query_samples(instrument, str(CHANNEL)) if s.source == "recorded"
        ]
    seq_series = await _export(
        victoria_metrics,
        f'cellguard_samples_seq{{instrument="{instrument}",source="recorded"}}',
        len(records),
    )
    walls = [r.wall_time for r in records]
    return Readback(
        records=len(records),
        repeated_walls=len(walls) - len(set(walls)),
        test_start_unix_s=_test_start_unix_s(sim),
        stored=stored,
        points=[
            (t, v) for s in seq_series for t, v in zip(s["timestamps"], s["values"], strict=True)
        ],
    )


def _test_start_unix_s(sim: NewareSimulator) -> float:
    """When the simulated test began: with a zone, the simulator keeps it as a UTC
    instant (the truth the daemon must find from the zone-less local times)."""
    start = sim.channels[CHANNEL]._test_start_wall
    assert start.tzinfo is not None
    return start.timestamp()


def _check(back: Readback) -> None:
    """Every record once, in order, at test start + test time, unique point times."""
    n = back.records
    stored = back.stored
    assert [s.seq for s in stored] == list(range(1, n + 1)), "SQLite: lost, doubled or reordered"
    times = [s.time_unix_s for s in stored]
    assert all(b > a for a, b in itertools.pairwise(times)), "SQLite: not increasing"
    offsets = [s.time_unix_s - s.test_time_s - back.test_start_unix_s for s in stored]
    assert max(abs(o) for o in offsets) < 1e-3, "SQLite: not test start + test time (UTC)"
    assert len(back.points) == n, "VictoriaMetrics: samples lost or doubled"
    assert len({t for t, _ in back.points}) == n, "VictoriaMetrics: two samples at one time"
    in_time_order = [int(seq) for _, seq in sorted(back.points)]
    assert in_time_order == list(range(1, n + 1)), "VictoriaMetrics: reordered"
    expected_ms = [round(t * 1000) for t in times]
    assert sorted(t for t, _ in back.points) == expected_ms


async def test_no_sample_is_overwritten_or_reordered_across_the_autumn_fall_back(
    tmp_path: Path, victoria_metrics: str, process_zone: Callable[[str], None]
) -> None:
    """BTS PC and daemon in Europe/Berlin, a test from 01:40 CEST to 02:40 CET (3 h,
    a record every 10 s): the 02:xx hour shows twice on the PC's clock, yet every
    sample is stored once, in order, at its true UTC time."""
    process_zone("Europe/Berlin")
    back = await _run_across(FALL_BACK_UTC - timedelta(minutes=80), 3.0, tmp_path, victoria_metrics)
    print(
        f"\nfall-back: {back.records} records, {back.repeated_walls} show a repeated local "
        f"time; stored {len(back.stored)} in SQLite, {len(back.points)} points "
        f"({len({t for t, _ in back.points})} distinct times) in VictoriaMetrics"
    )
    assert back.repeated_walls >= 300  # the test did cross the repeated hour
    _check(back)


async def test_no_hour_is_invented_across_the_spring_forward(
    tmp_path: Path, victoria_metrics: str, process_zone: Callable[[str], None]
) -> None:
    """BTS PC in Europe/Berlin, daemon on a server in UTC: local time jumps from 02:00
    to 03:00, the samples do not; each is at test start + test time, 10 s apart."""
    process_zone("UTC")
    back = await _run_across(
        SPRING_FORWARD_UTC - timedelta(minutes=40), 1.5, tmp_path, victoria_metrics
    )
    _check(back)
    gaps_s = [b.time_unix_s - a.time_unix_s for a, b in itertools.pairwise(back.stored)]
    print(
        f"\nspring-forward: {back.records} records, gaps between samples "
        f"{min(gaps_s):.3f}..{max(gaps_s):.3f} s"
    )
    assert max(gaps_s) <= RECORD_S + 1e-3  # no missing hour in the stored series


async def test_a_daemon_restarted_inside_the_repeated_hour_dates_on_from_the_history(
    tmp_path: Path, victoria_metrics: str, process_zone: Callable[[str], None]
) -> None:
    """Killed at 02:19 CEST (the first pass of 02:xx) and started again at 02:29: the
    records it resumes with are ambiguous on their own; the history before them (the
    detectors' warm-up) dates them in the right pass, so the two runs' samples neither
    collide nor reorder."""
    process_zone("Europe/Berlin")
    back = await _run_across(
        FALL_BACK_UTC - timedelta(minutes=80),
        3.0,
        tmp_path,
        victoria_metrics,
        restart_after_h=1.0,
    )
    assert back.repeated_walls >= 300
    _check(back)
