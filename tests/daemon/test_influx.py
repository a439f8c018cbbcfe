"""The InfluxDB sink against a real VictoriaMetrics: points arrive, outages lose nothing.

VictoriaMetrics speaks the InfluxDB v2 write API and stores each field as the series
``{measurement}_{field}`` with the tags as labels; it is read back through
``/api/v1/export`` after ``/internal/force_flush``, polling briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import sqlite3
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision
from victoria import VictoriaMetrics

from cellguard.daemon.influx import (
    SPOOL_FILENAME,
    InfluxSink,
    SinkUnavailable,
    Spool,
    event_line,
    sample_line,
)
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord

T0_S = 1_700_000_000.0
READ_TIMEOUT_S = 20.0


def tags(instrument: str, channel: str = "21-1-3") -> ChannelTags:
    return ChannelTags(instrument, channel, "T-42", "LPSC:LGPS 4:1", "asymmetric")


def samples(instrument: str, n: int, start: int = 0) -> list[SampleRecord]:
    return [
        SampleRecord(
            tags(instrument),
            time_unix_s=T0_S + 0.5 * i,
            test_time_s=0.5 * i,
            voltage_v=0.01 + i * 1e-4,
            current_a=-3.927e-4,
            capacity_mah=0.25 * i,
            energy_mwh=0.5,
            step=2,
            cycle=3,
            seq=1000 + i,
        )
        for i in range(start, start + n)
    ]


def sink(state_dir: Path, url: str, **options: Any) -> InfluxSink:
    return InfluxSink(
        url=url, org="lab", bucket="cycling", token="secret-token", state_dir=state_dir, **options
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


async def export(
    base_url: str, selector: str, expect: int, *, end: int | None = None
) -> list[dict[str, Any]]:
    """The series matching ``selector`` once ``expect`` points are readable (or the
    timeout passed), then read once more so late duplicates would show too. ``end``
    (UNIX s): read up to then (the default is now; virtual time may run ahead)."""
    params = {"match[]": selector} | ({"end": str(end)} if end is not None else {})
    query = urllib.parse.urlencode(params)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READ_TIMEOUT_S
    while True:
        await asyncio.to_thread(_get, f"{base_url}/internal/force_flush")
        body = await asyncio.to_thread(_get, f"{base_url}/api/v1/export?{query}")
        series = [json.loads(line) for line in body.splitlines() if line.strip()]
        got = sum(len(s["values"]) for s in series)
        if got >= expect or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.to_thread(_get, f"{base_url}/internal/force_flush")
    body = await asyncio.to_thread(_get, f"{base_url}/api/v1/export?{query}")
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def voltage_of(instrument: str) -> str:
    return f'cellguard_samples_voltage_v{{instrument="{instrument}"}}'


def points(series: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return sorted((t, v) for s in series for t, v in zip(s["timestamps"], s["values"], strict=True))


def spooled_rows(state_dir: Path) -> int:
    with sqlite3.connect(state_dir / SPOOL_FILENAME) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM batches").fetchone()
    conn.close()
    return int(n)


@pytest.fixture
def instrument() -> str:
    """A name of this test's own, so tests can share one server."""
    return f"ct-{uuid.uuid4().hex[:10]}"


# -- line protocol -----------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@given(
    instrument=text,
    channel=text,
    test_id=text,
    interphase=text,
    voltage_v=st.floats(allow_nan=True, allow_infinity=True, width=64),
    step=st.integers(-(2**31), 2**31),
)
def test_sample_lines_are_what_influxdb_client_point_writes(
    instrument: str, channel: str, test_id: str, interphase: str, voltage_v: float, step: int
) -> None:
    """Our encoder escapes tags and formats fields exactly like the client's own Point."""
    s = SampleRecord(
        ChannelTags(instrument, channel, test_id, interphase, "full"),
        time_unix_s=T0_S + 0.125,
        test_time_s=12.5,
        voltage_v=voltage_v,
        current_a=1e-20,
        step=step,
        seq=7,
        source="live",
    )
    # The nanoseconds carry the record position (seq 7): see sample_time_ns.
    point = Point("cellguard_samples").time(1_700_000_000_125_000_007, WritePrecision.NS)
    for key in ("instrument", "channel", "test_id", "interphase", "cell_type"):
        point.tag(key, getattr(s.tags, key))
    point.tag("source", "live")
    for key in ("voltage_v", "current_a", "capacity_mah", "energy_mwh", "test_time_s"):
        point.field(key, getattr(s, key))
    for key in ("step", "cycle", "seq"):
        point.field(key, getattr(s, key))
    assert sample_line(s) == point.to_line_protocol()


def test_event_lines_carry_values_as_floats_and_detail_as_the_only_string() -> None:
    """Numbers stay numbers; the explanation is one string field on one line."""
    event = EventRecord(
        ChannelTags("ct 4008,a", "21-1-3", "T=42"),
        "halt",
        T0_S + 1.5,
        fault="short",
        detail='voltage "collapsed"\nto 0.1 mV \\ stop',
        values={"measured": 1e-4, "baseline": 3, "nan": math.nan},
    )
    assert event_line(event) == (
        r"cellguard_events,channel=21-1-3,fault=short,instrument=ct\ 4008\,a,kind=halt,"
        r'test_id=T\=42 baseline=3,detail="voltage \"collapsed\" to 0.1 mV \\ stop",'
        r"measured=0.0001,occurred=1i 1700000001500000000"
    )
    bare = EventRecord(ChannelTags("a", "1"), "start", T0_S)
    assert event_line(
        bare
    ) == "cellguard_events,channel=1,instrument=a,kind=start occurred=1i " + str(
        1_700_000_000_000_000_000
    )


# -- against a real server -----------------------------------------------------------------


async def test_samples_and_events_arrive_with_their_tags_and_values(
    tmp_path: Path, victoria_metrics: str, instrument: str
) -> None:
    """Every sample field becomes a series with the channel's tags; events keep their
    numbers, and (VictoriaMetrics only) the string ``detail`` reads as 0."""
    batch = samples(instrument, 50)
    event = EventRecord(
        tags(instrument),
        "halt",
        T0_S + 10,
        fault="short",
        subkind="collapse",
        detail="voltage fell to 0.1 mV",
        values={"measured": 1e-4, "threshold": 0.002},
    )
    async with sink(tmp_path, victoria_metrics) as s:
        await s.write(batch, [event])
        assert s.online
        assert s.spool.pending_batches == 0

    voltage = await export(victoria_metrics, voltage_of(instrument), 50)
    assert len(voltage) == 1
    assert voltage[0]["metric"] == {
        "__name__": "cellguard_samples_voltage_v",
        "instrument": instrument,
        "channel": "21-1-3",
        "test_id": "T-42",
        "interphase": "LPSC:LGPS 4:1",
        "cell_type": "asymmetric",
        "source": "recorded",
    }
    assert points(voltage) == [
        (round(s.time_unix_s * 1000), pytest.approx(s.voltage_v)) for s in batch
    ]
    seq = await export(victoria_metrics, f'cellguard_samples_seq{{instrument="{instrument}"}}', 50)
    assert [v for _, v in points(seq)] == [s.seq for s in batch]

    events = await export(
        victoria_metrics, f'{{__name__=~"cellguard_events_.*",instrument="{instrument}"}}', 4
    )
    by_name = {e["metric"]["__name__"]: e for e in events}
    assert set(by_name) == {
        "cellguard_events_measured",
        "cellguard_events_threshold",
        "cellguard_events_occurred",
        "cellguard_events_detail",
    }
    measured = by_name["cellguard_events_measured"]
    assert measured["metric"]["kind"] == "halt"
    assert measured["metric"]["fault"] == "short"
    assert measured["metric"]["subkind"] == "collapse"
    assert points([measured]) == [(round((T0_S + 10) * 1000), pytest.approx(1e-4))]
    assert by_name["cellguard_events_detail"]["values"] == [0]  # VictoriaMetrics drops strings


async def test_outage_spools_on_disk_and_drains_oldest_first_exactly_once(
    tmp_path: Path,
    victoria_metrics_process: VictoriaMetrics,
    instrument: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server down: write() returns, the points wait on disk; server back: drain() sends
    them oldest first, and every point is stored exactly once."""
    vm = victoria_metrics_process
    caplog.set_level(logging.INFO, logger="cellguard.daemon.influx")
    async with sink(tmp_path, vm.url, batch_lines=40, timeout_s=2) as s:
        await s.write(samples(instrument, 100, 0), [])
        assert s.spool.pending_batches == 0

        await asyncio.to_thread(vm.stop)
        await s.write(samples(instrument, 100, 100), [])  # 3 batches: unreachable, spooled
        await s.write(samples(instrument, 100, 200), [])  # behind them, no request made
        assert not s.online
        assert s.spool.pending_lines == 200
        assert spooled_rows(tmp_path) == 6
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "only the first failure is logged"
        assert "unreachable" in warnings[0].getMessage()
        assert "secret-token" not in caplog.text

        with pytest.raises(SinkUnavailable):
            await s.drain()

        removed: list[int] = []
        remove = s.spool.remove

        async def spy(batch_ids: Any) -> None:
            removed.extend(batch_ids)
            await remove(batch_ids)

        s.spool.remove = spy  # type: ignore[method-assign]
        await asyncio.to_thread(vm.start)
        assert await s.drain() == 200
        assert removed == sorted(removed)
        assert len(removed) == 6
        assert s.online
        assert spooled_rows(tmp_path) == 0
        assert "takes points again" in caplog.text

    voltage = await export(vm.url, voltage_of(instrument), 300)
    times = [t for t, _ in points(voltage)]
    assert times == [round((T0_S + 0.5 * i) * 1000) for i in range(300)]


async def test_the_spool_survives_a_restart_and_run_sends_it(
    tmp_path: Path, victoria_metrics: str, instrument: str
) -> None:
    """Points spooled before the daemon stopped are sent by the next daemon's run()."""
    async with sink(tmp_path, closed_port_url(), timeout_s=2) as first:
        await first.write(samples(instrument, 30), [])
        await first.write(samples(instrument, 30, 30), [])
        assert first.spool.pending_lines == 60
    assert spooled_rows(tmp_path) == 2

    async with sink(tmp_path, victoria_metrics, backoff_initial_s=0.01) as second:
        assert second.spool.pending_lines == 60
        runner = asyncio.create_task(second.run())
        try:
            voltage = await export(victoria_metrics, voltage_of(instrument), 60)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        assert second.spool.pending_batches == 0
    assert len(points(voltage)) == 60
    assert spooled_rows(tmp_path) == 0


async def test_run_retries_with_backoff_until_the_server_is_back(
    tmp_path: Path, victoria_metrics_process: VictoriaMetrics, instrument: str
) -> None:
    """run() keeps trying while the server is down and empties the spool once it is up."""
    vm = victoria_metrics_process
    await asyncio.to_thread(vm.stop)
    async with sink(tmp_path, vm.url, timeout_s=1, backoff_initial_s=0.02, backoff_max_s=0.1) as s:
        runner = asyncio.create_task(s.run())
        try:
            await s.write(samples(instrument, 20), [])
            assert s.spool.pending_lines == 20
            await asyncio.to_thread(vm.start)
            voltage = await export(vm.url, voltage_of(instrument), 20)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        assert s.spool.pending_batches == 0
    assert len(points(voltage)) == 20


async def test_a_bad_point_is_logged_and_dropped(
    tmp_path: Path, victoria_metrics: str, instrument: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch the server refuses (HTTP 400: a tag longer than its line limit) is logged
    with the reason and dropped, not spooled; the next batch goes through."""
    bad = SampleRecord(ChannelTags(instrument, "1", "x" * 300_000), T0_S, 0.0, 3.0, 0.0)
    async with sink(tmp_path, victoria_metrics) as s:
        await s.write([bad], [])
        assert s.spool.pending_batches == 0
        assert s.rejected_lines == 1
        assert s.online
        await s.write(samples(instrument, 5), [])
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "HTTP 400" in record.getMessage()
    assert "too long line" in record.getMessage()
    voltage = await export(victoria_metrics, voltage_of(instrument), 5)
    assert len(points(voltage)) == 5


async def test_good_points_sharing_a_batch_with_a_bad_one_still_arrive(
    tmp_path: Path, victoria_metrics: str, instrument: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected request is split until the bad point is alone: every good point of
    the batch arrives (at least once), only the bad one is dropped, one ERROR logged."""
    bad = SampleRecord(ChannelTags(instrument, "1", "x" * 300_000), T0_S, 0.0, 3.0, 0.0)
    good = samples(instrument, 40)
    async with sink(tmp_path, victoria_metrics) as s:
        await s.write([*good[:17], bad, *good[17:]], [])
        assert s.rejected_lines == 1
        assert s.spool.pending_batches == 0
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 1
    voltage = await export(victoria_metrics, voltage_of(instrument), 40)
    assert {t for t, _ in points(voltage)} == {round(g.time_unix_s * 1000) for g in good}


async def test_a_bad_spooled_point_does_not_hold_back_the_good_ones(
    tmp_path: Path, victoria_metrics: str, instrument: str, caplog: pytest.LogCaptureFixture
) -> None:
    """drain() sends small spooled batches together; a bad point among them is dropped,
    the good ones arrive, and the spool ends empty."""
    bad = SampleRecord(ChannelTags(instrument, "1", "x" * 300_000), T0_S, 0.0, 3.0, 0.0)
    async with sink(tmp_path, closed_port_url(), timeout_s=2) as down:
        await down.write(samples(instrument, 10), [])
        await down.write([bad], [])
        await down.write(samples(instrument, 10, 10), [])
    async with sink(tmp_path, victoria_metrics) as s:
        assert await s.drain() == 20
        assert s.rejected_lines == 1
        assert s.spool.pending_batches == 0
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 1
    voltage = await export(victoria_metrics, voltage_of(instrument), 20)
    expected = {round(g.time_unix_s * 1000) for g in samples(instrument, 20)}
    assert {t for t, _ in points(voltage)} == expected


# -- HTTP answers, cancellation, the spool bound ----------------------------------------------


class FakeServer:
    """A bare HTTP server answering every request with one status, or never answering."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.requests = 0
        self.connected = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.append(writer)
        self.connected.set()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            self.requests += 1
            if self.status is None:
                await reader.read()  # hang until the client gives up
                return
            body = b'{"code":"x","message":"fake answer"}'
            writer.write(
                f"HTTP/1.1 {self.status} Fake\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)


@contextlib.asynccontextmanager
async def fake_server(status: int | None) -> AsyncIterator[tuple[str, FakeServer]]:
    fake = FakeServer(status)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", fake
    finally:
        server.close()
        await fake.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        (500, True),
        (503, True),
        (429, True),
        (401, True),
        (403, True),
        (404, True),
        (400, False),
        (413, False),
        (422, False),
    ],
)
async def test_http_answers_decide_between_spooling_and_dropping(
    tmp_path: Path, instrument: str, status: int, kept: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """5xx, 429 and token/org/bucket refusals keep the points (one request, no hidden
    retries); other 4xx drop them, after splitting the request to find the bad points
    (3 points: 1 + 2 + 2 requests). Either way write() raises nothing."""
    async with fake_server(status) as (url, fake), sink(tmp_path, url) as s:
        await s.write(samples(instrument, 3), [])
        assert fake.requests == (1 if kept else 5)
        assert s.spool.pending_lines == (3 if kept else 0)
        assert s.online is not kept
    if status in (401, 403):
        assert "check [influxdb] token" in caplog.text
    if status == 404:
        assert "check [influxdb] org and bucket" in caplog.text
    if not kept:
        assert f"HTTP {status}" in caplog.text
        assert "fake answer" in caplog.text


async def test_a_write_cancelled_mid_request_keeps_its_points(
    tmp_path: Path, instrument: str
) -> None:
    """Cancellation during the HTTP request spools the batch before CancelledError goes on."""
    async with fake_server(None) as (url, fake), sink(tmp_path, url, timeout_s=30) as s:
        writer = asyncio.create_task(s.write(samples(instrument, 7), []))
        await fake.connected.wait()
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        assert s.spool.pending_lines == 7
    assert spooled_rows(tmp_path) == 1


async def test_spool_keeps_order_across_reopen_and_drops_oldest_loudly_when_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Oldest first, on disk across reopen; past the bound the oldest batches go, with
    an ERROR, and the counters say how many."""
    path = tmp_path / SPOOL_FILENAME
    async with Spool(path) as spool:
        await spool.append([(b"m a=1 1", 1), (b"m a=2 2\nm a=3 3", 2)])
    async with Spool(path) as spool:
        assert (spool.pending_batches, spool.pending_lines) == (2, 3)
        assert [b.payload for b in await spool.oldest(10)] == [b"m a=1 1", b"m a=2 2\nm a=3 3"]
        assert [b.n_lines for b in await spool.oldest(1)] == [1]  # at least one batch
        first = (await spool.oldest(1))[0]
        await spool.remove([first.batch_id])
        assert [b.payload for b in await spool.oldest(10)] == [b"m a=2 2\nm a=3 3"]

    payloads = [(os.urandom(300), 1) for _ in range(10)]  # incompressible: ~300 bytes each
    async with Spool(tmp_path / "small.sqlite", max_bytes=1000) as spool:
        for payload in payloads:
            await spool.append([payload])
        assert spool.pending_bytes <= 1000
        kept = [b.payload for b in await spool.oldest(100)]
        assert kept == [p for p, _ in payloads[-len(kept) :]], "the newest are kept, in order"
        assert spool.dropped_batches == 10 - len(kept)
        assert spool.dropped_lines == 10 - len(kept)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors, "dropping is never silent"
        assert "is full" in errors[0]
        assert len(errors) < spool.dropped_batches, "logged when the count doubles, not per batch"
        await spool.remove([b.batch_id for b in await spool.oldest(100)])
        assert "has room again" in caplog.records[-1].getMessage()
