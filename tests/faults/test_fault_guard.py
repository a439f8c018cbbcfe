"""Fault suite: the channel guard's invariants on a Neware instrument.

The guard runs against the simulated CT-4008 over TCP, in virtual time, with a fault
injected on the instrument's side (its request handler wrapped):

- a stop answered ``ok`` but not carried out is never reported as a halt: the channel
  stays "halting", a distinct ``stop_failed`` alert repeats and escalates, and the
  retries do not slow the other channels' polls; "halting" is persisted before every
  stop goes out;
- a new test on a halted channel (a new test id, records from 1) is a new run: every
  record stored, its fault halted;
- one unreadable recorded record (``volt="nan"``) is skipped with an alert; the other
  records and channels go on;
- a channel the instrument does not have, or whose current it cannot source, is
  refused alone with an ``unguarded`` alert; the rest are guarded;
- a lost state store never re-starts a channel the instrument says already ran.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path

from faults import CommandLog

from cellguard.daemon.guard.links.neware import ChannelSpec, InstrumentSupervisor
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareClient, NewareSimulator
from cellguard.drivers.neware._messages import (
    CommandReply,
    CommandResult,
    Download,
    Inquire,
    Reply,
    Request,
    Stop,
)
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCell, SimCellSpec
from cellguard.protocols import Cell, GalvanostaticCycling

NAME = "ct4008-guard"
POLL_S = 60.0
EPOCH = datetime(2026, 6, 1, 8, 0, 0)
DEPLETES = ChannelId(1, 1, 1)  # an asymmetric cell that runs out of Li (< 60 h)
HEALTHY = ChannelId(1, 1, 2)
SHORTS = ChannelId(1, 1, 3)  # a hard short at 10 h

Queue = asyncio.Queue[SampleRecord | EventRecord]


class Recorder:
    """A publisher and state store that remember what they were given."""

    def __init__(self) -> None:
        self.alerts: list[EventRecord] = []
        self.state: dict[tuple[str, str], tuple[str, int, str]] = {}

    async def publish_event(self, event: EventRecord) -> None:
        self.alerts.append(event)

    async def publish_status(self, tags: ChannelTags, status: dict[str, object]) -> None:
        pass

    def save_state(self, tags: ChannelTags, state: str, last_seq: int, detail: str) -> None:
        self.state[(tags.instrument, tags.channel)] = (state, last_seq, detail)

    def load_state(self, instrument: str, channel: str) -> tuple[str, int, str] | None:
        return self.state.get((instrument, channel))

    def of(self, channel: ChannelId, kind: str) -> list[EventRecord]:
        return [a for a in self.alerts if a.tags.channel == str(channel) and a.kind == kind]


def _simulator(clock: VirtualClock) -> NewareSimulator:
    cells = {
        DEPLETES: CellSlot(SimCellSpec("MII-1", li_working_um=20.0, never_short=True)),
        HEALTHY: CellSlot(SimCellSpec("SEI", never_short=True)),
        SHORTS: CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 10.0))),
    }
    return NewareSimulator(clock, cells=cells, seed=5, epoch=EPOCH)


def _specs(extra: Sequence[ChannelSpec] = ()) -> list[ChannelSpec]:
    asym = Cell.asymmetric(0.785, li_thin_um=20.0)
    sym = Cell.symmetric(0.785)
    return [
        ChannelSpec(DEPLETES, "asymmetric", "MII-1", "run", GalvanostaticCycling(asym, cycles=100)),
        ChannelSpec(HEALTHY, "symmetric", "SEI", "run", GalvanostaticCycling(sym, cycles=100)),
        ChannelSpec(SHORTS, "symmetric", "SEI", "run", GalvanostaticCycling(sym, cycles=100)),
        *extra,
    ]


@asynccontextmanager
async def guarding(
    port: int,
    recorder: Recorder,
    tmp_path: Path,
    clock: VirtualClock,
    specs: Sequence[ChannelSpec] | None = None,
) -> AsyncIterator[tuple[InstrumentSupervisor, Queue]]:
    queue: Queue = asyncio.Queue(maxsize=1_000_000)
    sup = InstrumentSupervisor(
        NAME,
        lambda: NewareClient("127.0.0.1", port, timeout_s=5.0),
        _specs() if specs is None else specs,
        queue,
        recorder,
        clock=clock,
        poll_interval_s=POLL_S,
        download_interval_s=600.0,
        state=recorder,
        step_file_dir=tmp_path,
    )
    task = asyncio.create_task(sup.run())
    try:
        await clock.wait_until_sleeping(task)
        yield sup, queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run_hours(clock: VirtualClock, hours: float, step_s: float = POLL_S) -> None:
    for _ in range(round(hours * 3600 / step_s)):
        await clock.advance(step_s)


def _recorded_seqs(queue: Queue, channel: ChannelId, test_id: str | None = None) -> list[int]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    for item in items:  # put back: a test may look twice
        queue.put_nowait(item)
    return [
        i.seq
        for i in items
        if isinstance(i, SampleRecord)
        and i.source == "recorded"
        and i.tags.channel == str(channel)
        and (test_id is None or i.tags.test_id == test_id)
    ]


def _wrap_handle(sim: NewareSimulator, wrap: Callable[[Request, Reply], Reply | None]) -> None:
    """Let ``wrap`` see (and replace) every reply ``sim`` gives."""
    handle = sim.handle

    def wrapped(request: Request) -> Reply:
        return wrap(request, handle(request)) or handle(request)

    sim.handle = wrapped  # type: ignore[method-assign]


async def test_a_stop_the_instrument_does_not_carry_out_is_never_reported_as_a_halt(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    deaf = {"on": True}
    states_at_stop: list[str] = []
    handle = sim.handle

    def stop_ignored(request: Request) -> Reply:
        if isinstance(request, Stop):
            for address in request.channels:
                states_at_stop.append(recorder.state[(NAME, str(address.channel))][0])
            if deaf["on"] and any(a.channel == SHORTS for a in request.channels):
                # "ok" for every channel; the short's cell goes on running.
                rest = tuple(a for a in request.channels if a.channel != SHORTS)
                if rest:
                    handle(Stop(rest))
                return CommandReply("stop", tuple(CommandResult(a, True) for a in request.channels))
        return handle(request)

    sim.handle = stop_ignored  # type: ignore[method-assign]
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, _ = await stack.enter_async_context(guarding(port, recorder, tmp_path, clock))
        await _run_hours(clock, 10.5)
        short = sup.channels[SHORTS]
        # Judged, stopped, not confirmed: no halt is reported.
        assert short.halt is not None
        assert short.halt.kind == "short"
        assert sim.channels[SHORTS].workstatus == "working"
        assert short.state == "halting"
        assert recorder.state[(NAME, str(SHORTS))][0] == "halting"
        assert recorder.of(SHORTS, "halt") == []
        failed = recorder.of(SHORTS, "stop_failed")
        assert len(failed) >= 3
        assert all("stop failed — cell still running" in a.detail for a in failed)
        attempts = [a.values["attempt"] for a in failed]
        assert attempts == sorted(attempts)
        assert attempts[-1] > attempts[0]
        assert failed[-1].values["unconfirmed_s"] > failed[0].values["unconfirmed_s"]
        # "halting" was saved before each stop went out.
        assert states_at_stop
        assert set(states_at_stop) == {"halting"}

        # The retries never hold up the polls of the other channels, even at 1 s.
        sup.poll_interval_s = 1.0
        await clock.advance(POLL_S)  # the poll already planned on the 60 s grid
        polls_before = sup.polls
        await _run_hours(clock, 120 / 3600, step_s=1.0)
        assert sup.polls - polls_before >= 115

        # The other faults are halted as usual meanwhile.
        sup.poll_interval_s = POLL_S
        await _run_hours(clock, 50.0)
        assert sup.channels[DEPLETES].state == "halted"
        assert len(recorder.of(DEPLETES, "halt")) == 1
        assert sim.channels[HEALTHY].workstatus == "working"

        # The instrument obeys again: the retry confirms it, one halt is reported.
        deaf["on"] = False
        await _run_hours(clock, 0.1)
        assert sim.channels[SHORTS].workstatus == "stop"
        assert short.state == "halted"
        assert len(recorder.of(SHORTS, "halt")) == 1
        assert recorder.of(SHORTS, "halt")[0].values["measured_v"] < 0.01


async def test_a_new_test_on_a_halted_channel_is_a_new_run_stored_whole_and_halted(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(guarding(port, recorder, tmp_path, clock))
        await _run_hours(clock, 11.0)
        short = sup.channels[SHORTS]
        assert short.state == "halted"
        first_test = short.test_id
        # A researcher puts in a new cell and starts a new test from the BTS software;
        # this cell shorts after 3 h.
        sim.channels[SHORTS].cell = SimCell(
            SimCellSpec("SEI", short=ShortSpec("hard", 3.0)), seed=77
        )
        async with NewareClient("127.0.0.1", port) as bts:
            step_file = tmp_path / f"{NAME}-{SHORTS}.xml"
            await bts.start([(SHORTS, "researcher-2", str(step_file))])
        new_test = sim.channels[SHORTS].test_id
        assert new_test != first_test
        await _run_hours(clock, 5.0)

        assert sim.channels[SHORTS].workstatus == "stop"
        assert short.state == "halted"
        halts = recorder.of(SHORTS, "halt")
        assert [h.tags.test_id for h in halts] == [str(first_test), str(new_test)]
        assert halts[1].fault == "short"
        assert 3 * 3600 <= halts[1].values["test_time_s"] <= 3 * 3600 + 3 * POLL_S
        # Every record of the new test is stored, from its first.
        count = sim.channels[SHORTS].record_count
        assert count > 100
        assert _recorded_seqs(queue, SHORTS, str(new_test)) == list(range(1, count + 1))


async def test_one_unreadable_record_is_skipped_and_guarding_goes_on(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    bad_seq = 40
    respond = sim.respond
    corrupted = []

    def nan_volt(request: Request) -> bytes:
        reply = respond(request)
        if isinstance(request, Download) and request.address.channel == HEALTHY:
            pattern = rb'(<data seqid="%d"[^>]*? volt=")[^"]*"' % bad_seq
            reply, n = re.subn(pattern, rb'\1nan"', reply)
            corrupted.append(n)
        return reply

    sim.respond = nan_volt  # type: ignore[method-assign]
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(guarding(port, recorder, tmp_path, clock))
        await _run_hours(clock, 60.0)

    assert sum(corrupted) >= 1
    # The faults of the other channels were halted.
    assert sup.channels[SHORTS].state == "halted"
    assert sup.channels[DEPLETES].state == "halted"
    # Every record is stored but the bad one, which is reported once.
    for channel in (DEPLETES, SHORTS):
        count = sim.channels[channel].record_count
        assert _recorded_seqs(queue, channel) == list(range(1, count + 1))
    healthy = _recorded_seqs(queue, HEALTHY)
    assert bad_seq not in healthy
    assert healthy == [s for s in range(1, healthy[-1] + 1) if s != bad_seq]
    assert healthy[-1] > 60 * 3600 / 60 - 70  # the records after it kept coming
    skipped = recorder.of(HEALTHY, "skipped")
    assert len(skipped) == 1
    assert f"record {bad_seq}" in skipped[0].detail
    assert "volt" in skipped[0].detail


async def test_a_bad_channel_is_refused_alone_and_the_rest_are_guarded(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    missing = ChannelId(1, 9, 1)
    too_much = ChannelId(1, 1, 4)
    sym = Cell.symmetric(0.785)
    extra = [
        ChannelSpec(missing, "symmetric", "SEI", "run", GalvanostaticCycling(sym, cycles=10)),
        # 39 mA on a 10 mA channel.
        ChannelSpec(
            too_much,
            "symmetric",
            "SEI",
            "run",
            GalvanostaticCycling(sym, current_density_ma_cm2=49.7, cycles=10),
        ),
    ]
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, _ = await stack.enter_async_context(
            guarding(port, recorder, tmp_path, clock, _specs(extra))
        )
        await _run_hours(clock, 11.0)

    # The valid channels of the same instrument run and are guarded.
    assert sup.channels[SHORTS].state == "halted"
    assert sim.channels[SHORTS].workstatus == "stop"
    assert sim.channels[HEALTHY].workstatus == "working"
    assert sim.channels[too_much].workstatus != "working"
    assert set(sup.refused) == {missing, too_much}
    unguarded = {a.tags.channel: a.detail for a in recorder.alerts if a.kind == "unguarded"}
    assert set(unguarded) == {str(missing), str(too_much)}
    assert "no channel 1-9-1" in unguarded[str(missing)]
    assert "mA" in unguarded[str(too_much)]
    assert all("UNGUARDED" in d for d in unguarded.values())
    # Reported once, not at every poll.
    assert len([a for a in recorder.alerts if a.kind == "unguarded"]) == 2


async def test_a_lost_state_store_never_restarts_a_halted_channel(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    commands = CommandLog.tap(sim)
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        first = Recorder()
        async with guarding(port, first, tmp_path, clock) as (sup, _):
            await _run_hours(clock, 11.0)
            assert sup.channels[SHORTS].state == "halted"
        assert commands.starts[str(SHORTS)] == 1
        # The store is gone (deleted, or moved aside as damaged): a fresh one.
        second = Recorder()
        async with guarding(port, second, tmp_path, clock) as (sup, _):
            await _run_hours(clock, 1.0)
            assert commands.starts[str(SHORTS)] == 1
            withheld = sup.channels[SHORTS]
            assert withheld.start_withheld
            assert withheld.state != "running"
    # The halted cell was not started again; the running ones were joined, not started.
    assert commands.starts[str(SHORTS)] == 1
    assert sim.channels[SHORTS].workstatus == "stop"
    assert commands.starts[str(HEALTHY)] == 1
    assert sim.channels[HEALTHY].workstatus == "working"
    warned = second.of(SHORTS, "warn")
    assert len(warned) == 1
    assert "not started" in warned[0].detail


async def test_a_stop_under_way_reaches_the_instrument_when_the_guard_is_cancelled(
    tmp_path: Path,
) -> None:
    """Shutdown (SIGTERM cancels the guard) in the middle of a halt: "halting" is saved,
    and the stop already under way is carried out before the link is closed."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    stopping = asyncio.Event()
    gate = asyncio.Event()

    class SlowStop(NewareClient):
        async def stop(self, channels: object) -> None:
            stopping.set()
            await gate.wait()  # the instrument takes its time to answer
            await super().stop(channels)  # type: ignore[arg-type]

    async with sim.serve() as (_, port):
        queue: Queue = asyncio.Queue()
        sup = InstrumentSupervisor(
            NAME,
            lambda: SlowStop("127.0.0.1", port, timeout_s=5.0),
            _specs(),
            queue,
            recorder,
            clock=clock,
            poll_interval_s=POLL_S,
            download_interval_s=600.0,
            state=recorder,
            step_file_dir=tmp_path,
        )
        task = asyncio.create_task(sup.run())
        await clock.wait_until_sleeping(task)
        for _ in range(round(11 * 3600 / POLL_S)):
            await clock.advance(POLL_S)
            if stopping.is_set():
                break
        assert stopping.is_set()
        assert recorder.state[(NAME, str(SHORTS))][0] == "halting"
        assert sim.channels[SHORTS].workstatus == "working"
        task.cancel()
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert sim.channels[SHORTS].workstatus == "stop"
        assert sim.channels[HEALTHY].workstatus == "working"


async def test_one_unreadable_live_value_leaves_the_other_channels_polled(
    tmp_path: Path,
) -> None:
    """A channel whose live value cannot be read (``voltage="nan"``) is left out of the
    poll alone: the other channels' polls go on at their pace and a short among them is
    halted from the live stream within a few polls."""
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()
    respond = sim.respond
    corrupt = {"on": False}

    def nan_voltage(request: Request) -> bytes:
        reply = respond(request)
        if corrupt["on"] and isinstance(request, Inquire):
            reply = re.sub(
                rb'(<inquire dev="\d+-1-1-2-\d+"[^>]*? voltage=")[^"]*"', rb'\1nan"', reply
            )
        return reply

    sim.respond = nan_voltage  # type: ignore[method-assign]
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        sup, queue = await stack.enter_async_context(guarding(port, recorder, tmp_path, clock))
        await _run_hours(clock, 1.0)
        assert sim.channels[HEALTHY].workstatus == "working"
        corrupt["on"] = True
        await _run_hours(clock, 10.0)

    assert sup.polls >= 11 * 60 - 2
    short = sup.channels[SHORTS]
    assert short.halt is not None
    assert 10 * 3600 <= short.halt.t_s <= 10 * 3600 + 3 * POLL_S
    assert sim.channels[SHORTS].workstatus == "stop"
    # The unreadable channel's recorded series is still stored whole.
    count = sim.channels[HEALTHY].record_count
    assert count > 500
    assert _recorded_seqs(queue, HEALTHY) == list(range(1, count + 1))


async def test_a_new_test_started_while_the_daemon_was_down_is_a_new_run(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    recorder = Recorder()  # the state store, kept across the restart
    async with AsyncExitStack() as stack:
        _, port = await stack.enter_async_context(sim.serve())
        async with guarding(port, recorder, tmp_path, clock) as (sup, _):
            await _run_hours(clock, 11.0)
            assert sup.channels[SHORTS].state == "halted"
            first_test = sup.channels[SHORTS].test_id
        # The daemon is down; a researcher starts a new test with a new cell.
        sim.channels[SHORTS].cell = SimCell(
            SimCellSpec("SEI", short=ShortSpec("hard", 3.0)), seed=78
        )
        async with NewareClient("127.0.0.1", port) as bts:
            step_file = tmp_path / f"{NAME}-{SHORTS}.xml"
            await bts.start([(SHORTS, "researcher-2", str(step_file))])
        new_test = sim.channels[SHORTS].test_id
        clock.set(clock.now_s() + 3600.0)
        sim.advance()
        async with guarding(port, recorder, tmp_path, clock) as (sup, queue):
            await _run_hours(clock, 4.0)
            short = sup.channels[SHORTS]
            assert short.test_id == new_test != first_test
            assert short.state == "halted"
            assert sim.channels[SHORTS].workstatus == "stop"
            halts = recorder.of(SHORTS, "halt")
            assert [h.tags.test_id for h in halts] == [str(first_test), str(new_test)]
            await _run_hours(clock, 0.5)  # a download after the halt
            count = sim.channels[SHORTS].record_count
            assert _recorded_seqs(queue, SHORTS, str(new_test)) == list(range(1, count + 1))
