"""The Neware driver against every server variant in ``realworld.md``, over real TCP.

A 2025 server's ``download`` is in mA/mAh/mWh: the client judges the unit against the
live ``inquire`` current (or the programmed one), says which it found and converts.
A reply about another channel is an error, not data. Positions come from seqids. An
unreadable record is reported with its position and the page goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from shared import NEWARE_API_FIXTURES

from cellguard.daemon.guard.links.neware import ChannelSpec, InstrumentSupervisor
from cellguard.daemon.records import SampleRecord
from cellguard.drivers import ProtocolViolation, VirtualClock
from cellguard.drivers.neware import (
    ChannelId,
    Download,
    GetChlStatus,
    Inquire,
    NewareClient,
    NewareSimulator,
    Request,
    decode_reply,
)
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.neware._units import beyond_range, judge_units
from cellguard.drivers.sim import SimCellSpec
from cellguard.protocols import Cell, GalvanostaticCycling, write_step_file

EPOCH = datetime(2026, 1, 5, 9, 0, 0)
AREA_CM2 = 0.785
CURRENT_A = 0.5e-3 * AREA_CM2  # 0.5 mA cm⁻², what the step file programs
CH = ChannelId(1, 1, 1)

Rewrite = Callable[[Request, bytes], bytes]


@asynccontextmanager
async def running(
    tmp_path: Path, rewrite: Rewrite | None = None, **options: object
) -> AsyncIterator[tuple[NewareClient, NewareSimulator, VirtualClock]]:
    """A simulator (replies optionally rewritten) with a test started on 1-1-1."""
    clock = VirtualClock()
    sim = NewareSimulator(clock, units=2, epoch=EPOCH, **options)  # type: ignore[arg-type]
    if rewrite is not None:
        respond = sim.respond

        def rewritten(request: Request) -> bytes:
            return rewrite(request, respond(request))

        sim.respond = rewritten  # type: ignore[method-assign]
    program = GalvanostaticCycling(Cell.symmetric(AREA_CM2), cycles=3, record_interval_s=60.0)
    step_file = write_step_file(tmp_path / "sym.xml", program.to_step_file())
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([(CH, "cell", str(step_file))])
        clock.set(1800.0)  # half an hour of the first charge recorded
        yield client, sim, clock


# ================================================================ units


async def test_a_2025_server_in_milliamperes_is_found_reported_and_converted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Read as amperes, a mA page would be 1000× too large: the live inquire current
    says which unit it is; the records come back in A/Ah/Wh with units="mA"."""
    caplog.set_level(logging.INFO, "cellguard.drivers.neware")
    async with running(tmp_path, download_units="mA") as (client, _, _):
        page = await client.download(CH, 1, 100)
    assert page.units == "mA"
    assert client.download_units[CH] == "mA"
    charging = [r for r in page.records if r.current_a]
    assert charging
    assert all(r.current_a == pytest.approx(CURRENT_A) for r in charging)
    assert max(r.capacity_ah for r in page.records) <= CURRENT_A * 0.5 + 1e-12  # ≤ 30 min
    assert "mA/mAh/mWh" in caplog.text
    assert "live inquire current" in caplog.text


async def test_a_server_in_amperes_is_found_and_left_as_it_is(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, _, _):
        page = await client.download(CH, 1, 100)
        again = await client.download(CH, 1, 100)
    assert (page.units, client.download_units[CH]) == ("A", "A")
    assert all(r.current_a == pytest.approx(CURRENT_A) for r in page.records if r.current_a)
    assert again.records == page.records


async def test_without_a_live_current_the_programmed_one_decides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A paused channel has no live current: the unit cannot be told from inquire, so
    it is said so (once) and nothing is settled; the step file's current decides."""
    async with running(tmp_path, download_units="mA") as (client, _, _):
        await client.pause(CH)
        unsure = await client.download(CH, 1, 100)
        assert CH not in client.download_units
        assert "cannot tell yet" in caplog.text
        page = await client.download(CH, 1, 100, programmed_current_a=CURRENT_A)
    assert unsure.units == "A"
    assert page.units == "mA"
    assert client.download_units[CH] == "mA"
    assert all(r.current_a == pytest.approx(CURRENT_A) for r in page.records if r.current_a)


async def test_a_current_beyond_the_channels_range_read_as_amperes_is_milliamperes(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, download_units="mA") as (client, _, _):
        await client.pause(CH)
        client.current_range_a = 1e-4  # 0.39 "A" on a 0.1 mA channel: must be mA
        page = await client.download(CH, 1, 100)
    assert page.units == "mA"


@pytest.mark.parametrize(
    ("recorded", "reference_a", "units"),
    [
        ([0.0004, -0.0004], 0.0004, "A"),
        ([0.4, -0.4], 0.0004, "mA"),
        ([0.4], -0.0004, "mA"),  # a discharge now, a charge then: magnitudes compare
        ([0.0001], 0.001, "A"),  # a tenth of today's current: still amperes
        ([0.0], 0.001, None),  # a rest: nothing to compare
        ([0.4], 0.0, None),  # an idle channel: nothing to compare with
        ([0.4], None, None),
        ([400.0], 0.0004, None),  # a million times: neither unit
    ],
)
def test_units_are_judged_by_the_ratio_to_a_current_in_amperes(
    recorded: list[float], reference_a: float | None, units: str | None
) -> None:
    assert judge_units(recorded, reference_a) == units


def test_only_a_value_beyond_the_range_proves_milliamperes() -> None:
    assert beyond_range([0.39], current_range_a=0.01)
    assert not beyond_range([0.00039], current_range_a=0.01)


# ================================================================ addresses


def _other_channel(request: Request, reply: bytes) -> bytes:
    if isinstance(request, Download):
        return reply.replace(b'chlid="1" testid=', b'chlid="2" testid=', 1)
    return reply


async def test_a_download_reply_about_another_channel_is_an_error_not_data(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, _other_channel) as (client, _, _):
        with pytest.raises(ProtocolViolation, match=r"about 1-1-2.*asked: 1-1-1"):
            await client.download(CH, 1, 100)
        assert not client.connected  # a late reply to another request: out of step


def _extra_item(request: Request, reply: bytes) -> bytes:
    if isinstance(request, Inquire):
        item = re.search(rb"    <inquire [^\n]*\n", reply)
        assert item is not None
        stranger = item.group(0).replace(b'dev="27-1-1-1-0"', b'dev="27-1-2-7-0"')
        return reply.replace(item.group(0), item.group(0) + stranger)
    return reply


async def test_an_inquire_reply_naming_a_channel_not_asked_is_an_error(tmp_path: Path) -> None:
    async with running(tmp_path, _extra_item) as (client, _, _):
        with pytest.raises(ProtocolViolation, match="about 1-2-7"):
            await client.inquire(CH)


def _subdevid_ten(request: Request, reply: bytes) -> bytes:
    if isinstance(request, GetChlStatus):
        return reply.replace(b'subdevid="2"', b'subdevid="10"')
    return reply


async def test_a_wrong_subdevid_in_getchlstatus_maps_by_the_address_asked(
    tmp_path: Path,
) -> None:
    """One server reported subdevid 10 for unit 2 (realworld.md)."""
    async with running(tmp_path, _subdevid_ten) as (client, _, _):
        status = await client.get_status(["1-1-1", "1-2-3"])
    assert status == {CH: "working", ChannelId(1, 2, 3): "finish"}


# ================================================================ positions and bad records


def _repeat_the_second_record(request: Request, reply: bytes) -> bytes:
    if isinstance(request, Download):
        lines = reply.split(b"\r\n")
        data = [i for i, line in enumerate(lines) if line.lstrip().startswith(b"<data ")]
        lines.insert(data[1] + 1, lines[data[1]])
        # ...and the last two swapped: order comes from seqids, not from the page.
        lines[data[-1] + 1], lines[data[-1]] = lines[data[-1]], lines[data[-1] + 1]
        return b"\r\n".join(lines)
    return reply


async def test_a_repeated_record_never_shifts_the_next_position(tmp_path: Path) -> None:
    async with running(tmp_path, _repeat_the_second_record) as (client, _, _):
        page = await client.download(CH, 1, 10)
    assert [r.seq_id for r in page.records] == list(range(1, 11))


def _unreadable(request: Request, reply: bytes) -> bytes:
    if isinstance(request, Download):
        reply = re.sub(rb'(<data seqid="3"[^>]*? volt=")[^"]*"', rb'\1nan"', reply)
        return re.sub(rb'(<data seqid="6"[^>]*?) cap="[^"]*"', rb"\1", reply)
    return reply


async def test_an_unreadable_record_is_reported_with_its_position_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, _unreadable) as (client, _, _):
        page = await client.download(CH, 1, 10)
        assert client.connected  # a bad record is not a bad link
    assert [r.seq_id for r in page.records] == [1, 2, 4, 5, 7, 8, 9, 10]
    assert [(s.position, s.seq_id) for s in page.skipped] == [(3, 3), (6, 6)]
    assert "'volt' is not finite" in page.skipped[0].reason
    assert "'cap' is missing" in page.skipped[1].reason
    assert "position 3 of the page (seqid 3) skipped" in caplog.text


# ================================================================ through the guard


class _Silent:
    """A publisher and state store that keep nothing."""

    async def publish_event(self, event: object) -> None:
        pass

    async def publish_status(self, tags: object, status: object) -> None:
        pass

    def save_state(self, tags: object, state: str, last_seq: int, detail: str) -> None:
        pass

    def load_state(self, instrument: str, channel: str) -> None:
        return None


async def test_the_guard_stores_a_2025_servers_samples_in_amperes(tmp_path: Path) -> None:
    """End to end: a mA server, the supervisor in run mode; every recorded sample it
    queues carries amperes and ampere-hours (read as A they would be 1000× too large)."""
    clock = VirtualClock()
    sim = NewareSimulator(
        clock,
        cells={CH: CellSlot(SimCellSpec("SEI", never_short=True))},
        epoch=EPOCH,
        download_units="mA",
    )
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=100_000)
    protocol = GalvanostaticCycling(Cell.symmetric(AREA_CM2), cycles=10)
    async with sim.serve() as (_, port):
        sup = InstrumentSupervisor(
            "ct4008",
            lambda: NewareClient("127.0.0.1", port, timeout_s=5.0),
            [ChannelSpec(CH, "symmetric", "SEI", "run", protocol)],
            queue,  # type: ignore[arg-type]
            _Silent(),  # type: ignore[arg-type]
            clock=clock,
            poll_interval_s=60.0,
            download_interval_s=600.0,
            state=_Silent(),  # type: ignore[arg-type]
            step_file_dir=tmp_path,
        )
        task = asyncio.create_task(sup.run())
        try:
            await clock.wait_until_sleeping(task)
            for _ in range(3 * 60):  # three hours, a poll a minute
                await clock.advance(60.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    recorded = [
        s
        for s in (queue.get_nowait() for _ in range(queue.qsize()))
        if isinstance(s, SampleRecord) and s.source == "recorded"
    ]
    assert len(recorded) > 100
    assert sup.channels[CH].state == "running"  # no halt on a 1000× voltage-current mix-up
    currents = [abs(s.current_a) for s in recorded if s.current_a]
    assert currents == pytest.approx([CURRENT_A] * len(currents))
    assert max(s.capacity_mah for s in recorded) <= CURRENT_A * 1000 * 2.0 + 1e-9


def test_a_2025_devinfo_with_client_dev_and_xwj_elements_decodes() -> None:
    """A 2025 server adds <client> and, under <server>, <dev>/<xwj> (realworld.md)."""
    raw = (NEWARE_API_FIXTURES / "get_devinfo_response.xml").read_bytes()
    richer = raw.replace(
        b'    <server ip="127.0.0.1" port="3306" />',
        b'    <server ip="127.0.0.1" port="3306" version="8.0.0.520" devCount="1">\r\n'
        b'      <dev ip="127.0.0.1" devid="21" zwjVersion="1.2" xwjCount="2">\r\n'
        b'        <xwj subdevid="1" /><xwj subdevid="2" />\r\n'
        b"      </dev>\r\n"
        b"    </server>",
    ).replace(b"  <serverip", b'  <client version="2025.3.17" />\r\n  <serverip')
    assert richer.count(b"<xwj") == 2
    assert b"<client" in richer
    assert decode_reply(richer) == decode_reply(raw)


def _inquire_without_current(request: Request, reply: bytes) -> bytes:
    if isinstance(request, Inquire):
        return re.sub(rb' current="[^"]*"', b"", reply)
    return reply


async def test_a_broken_inquire_does_not_make_the_page_unreadable(tmp_path: Path) -> None:
    """The inquire only helps to judge the unit: without it the page is still read
    (and the unit left open), and the link stays up."""
    async with running(tmp_path, _inquire_without_current, download_units="mA") as (
        client,
        _,
        _,
    ):
        page = await client.download(CH, 1, 10)
        assert client.connected
    assert len(page.records) == 10
    assert CH not in client.download_units
