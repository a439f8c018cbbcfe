"""Supervision of one instrument: poll, judge, halt at once, hand samples to the sinks.

One :class:`InstrumentSupervisor` owns one connection to one BTS server and every
watched channel on it. Each poll is one ``inquire`` for all channels (the live
stream: the least delay); every ``download_interval_s`` the recorded history is
fetched by position (the stored series: nothing lost between polls, during an outage
or while the daemon was down). Both streams go through their own detector.

The halt path is the first thing done with a halt verdict: the ``stop`` goes on the
wire before the sample is queued, logged or published, and is retried until the
instrument confirms the channel no longer runs. Sinks sit behind a bounded queue
that a halt never waits on.

Reconnection is this supervisor's policy: capped exponential backoff, the first
failure and the recovery logged (not every attempt), per-channel availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path

from cellguard.daemon.guard import (
    ChannelState,
    GuardEvent,
    HaltProgress,
    halts_due,
    move,
    parse_state,
    stop_once,
)
from cellguard.daemon.guard.base import Command, InstrumentGuard
from cellguard.daemon.guard.gc_policy import collect_after_poll, freeze_steady_heap
from cellguard.daemon.guard.links.wall_time import RecordDating
from cellguard.daemon.guard.ports import Publisher, SampleQueue, StateStore
from cellguard.daemon.guard.status import StatusPacer
from cellguard.daemon.records import ChannelTags, EventKind, EventRecord, SampleRecord
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import (
    CellguardError,
    CommandRefused,
    ProtocolViolation,
)
from cellguard.drivers.files import StepKind, neware_step_kind
from cellguard.drivers.neware import (
    ChannelId,
    DownloadRecord,
    DownloadReply,
    InquireRecord,
    NewareClient,
    StepFile,
)
from cellguard.protocols import GalvanostaticCycling, InstrumentLimits, write_step_file
from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict, make_detector
from cellguard.protocols.script import Protocol as ScriptProtocol
from cellguard.protocols.script import (
    StepLimitGuard,
    parse_protocol_text,
    prestart_setpoints,
    step_limits,
)
from cellguard.protocols.script import to_step_file as script_to_step_file

log = logging.getLogger(__name__)

DOWNLOAD_PAGE = 1000
# Records per ``download`` that is judged (DOWNLOAD_PAGE is for the warm-up, which
# judges nothing). A halt waits for its whole page to be decoded and every record
# before it judged: ~25 ms for 1,000 records, ~2 ms for 100. Catching up costs one
# round trip per 100 records; a channel polled every minute at 1 Hz needs one.
DOWNLOAD_SLICE = 100
# Channels per ``inquire``. A halt waits for its whole reply to be decoded and judged,
# so a rack of 2,048 channels is asked in slices: halt latency stays that of one
# slice (a few ms), whatever the rack's size, for one extra round trip per slice.
# 64 rather than 128: half the decoding and judging between a failing sample's arrival
# and its stop (bench p99 ~6-12 ms -> ~3 ms, also with a CPU-bound neighbour), for 32
# round trips a poll at 2,048 channels instead of 16 (no change in CPU measured).
INQUIRE_BATCH = 64
# After a restart the detectors relearn from this much recorded history (two full
# 0.5 mAh cm⁻² cycles and then some), at most this many records.
WARM_UP_S = 5 * 3600.0
WARM_UP_MAX_RECORDS = 20_000
__all__ = [
    "ChannelSpec",
    "InstrumentSupervisor",
    "drain_queue",
]
_RUNNING = ("working", "pause")


def _programmed_a(runtime: ChannelRuntime) -> float | None:
    """The current the daemon's own protocol programs on the channel, A (None: monitored).

    It tells the driver whether a server's ``download`` is in A or mA when the channel
    has no live current to compare (a rest, a pause, a restart after the test ended).
    """
    protocol = runtime.spec.protocol
    return None if protocol is None else protocol.current_a


def step_kind_of(step_type: str | None) -> StepKind | None:
    """The detectors' step kind of a BTS step type (``cc``, ``rest``...); None if absent."""
    return None if step_type is None else neware_step_kind(step_type)


_ENDED: dict[str, ChannelState] = {
    "stop": "stopped",
    "finish": "finished",
    "protect": "protected",
}


@dataclass(frozen=True)
class ChannelSpec:
    """A watched channel: which one, what cell, what to do with it."""

    channel: ChannelId
    cell_type: str  # "symmetric" | "asymmetric" | "full"
    interphase: str = ""
    mode: str = "monitor"  # "monitor" | "run"
    protocol: GalvanostaticCycling | None = None
    detector: DetectorSettings | None = None
    barcode: str = ""
    script: ScriptProtocol | None = None  # run mode: a protocol script instead of protocol

    @property
    def runs_protocol(self) -> bool:
        """A run-mode channel with something to run."""
        return self.mode == "run" and (self.protocol is not None or self.script is not None)

    def step_file(self, limits: InstrumentLimits) -> StepFile:
        """The BTS step file of the channel's protocol (raises if it does not fit)."""
        if self.script is not None:
            if prestart_setpoints(self.script):
                # A Neware channel has no chamber of its own to set.
                msg = "it sets a chamber before it starts; a Neware channel has none"
                raise CellguardError(msg)
            return script_to_step_file(self.script, limits)
        assert self.protocol is not None
        return self.protocol.to_step_file(limits)


@dataclass
class ChannelRuntime:
    spec: ChannelSpec
    tags: ChannelTags
    live: Detector
    recorded: Detector
    state: ChannelState = "idle"  # see cellguard.daemon.guard.state
    next_seq: int = 1  # the next recorded sample to fetch (all before it are queued)
    # The last recorded sample the sink has written: the position saved for a restart,
    # so a kill loses nothing that was only queued (see samples_stored).
    stored_seq: int = 0
    detail: str = ""  # why the state is what it is (kept across position saves)
    test_id: int = 0
    test_start_unix_s: float = math.nan
    # Dates the recorded samples of the channel's test (the instrument's zone).
    dating: RecordDating = field(default_factory=RecordDating)
    halt: Verdict | None = None
    halting: HaltProgress | None = None  # the halt under way (until confirmed)
    last_workstatus: str = ""
    cycle: int = 0
    test_time_s: float = 0.0
    samples: int = 0
    halt_latencies_s: list[float] = field(default_factory=list)
    # A start the daemon did not send: the channel held an ended test it knew nothing of.
    start_withheld: bool = False
    # Recorded records before this position are fetched one at a time (a bad one is near).
    one_by_one_until: int = 0
    base_settings: DetectorSettings | None = None  # the detectors of a new run
    status_pacer: StatusPacer = field(default_factory=StatusPacer)

    @property
    def test_id_unsure(self) -> bool:
        """Whether the test now running may not be the one the tags name: nothing of it
        was fetched yet and its id is unknown (a restart's saved position is matched to
        its test at connect instead), or the channel runs again after it had ended (a
        new test started on the instrument, or a resume)."""
        if not self.test_id:
            return self.next_seq == 1
        return bool(self.last_workstatus) and self.last_workstatus not in _RUNNING

    def to(self, state: ChannelState) -> None:
        """Move to ``state`` if the guard's table allows it (else IllegalTransition)."""
        self.state = move(self.state, state, channel=f"{self.tags.instrument} {self.spec.channel}")


class InstrumentSupervisor(InstrumentGuard[NewareClient, ChannelId]):
    """Polls one BTS server and guards its channels."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], NewareClient],
        channels: Sequence[ChannelSpec],
        queue: SampleQueue,
        publisher: Publisher,
        *,
        clock: Clock,
        poll_interval_s: float = 1.0,
        download_interval_s: float = 60.0,
        state: StateStore | None = None,
        step_file_dir: Path | None = None,
        voltage_range_v: float = 5.0,
        current_range_ma: float = 10.0,
        on_halt: Callable[[ChannelRuntime], Awaitable[None]] | None = None,
        timezone: tzinfo | None = None,
    ) -> None:
        """``timezone``: the zone of the BTS PC's clock, which dates recorded samples
        without one (None: this PC's local zone)."""
        super().__init__(name, queue, publisher, clock=clock, state=state)
        self._connect = connect
        self.poll_interval_s = poll_interval_s
        self.download_interval_s = download_interval_s
        self._step_file_dir = step_file_dir
        self._limits = InstrumentLimits(
            current_range_ma=current_range_ma, voltage_range_v=voltage_range_v
        )
        self._on_halt = on_halt
        self.polls = 0
        self._poll_origin_s: float | None = None  # the live polls' grid
        self.live_dropped = 0
        self.recorded_deferred = 0  # recorded samples left on the instrument for later
        self._scripts: dict[ChannelId, tuple[str, StepFile, ScriptProtocol]] = {}
        self.channels: dict[ChannelId, ChannelRuntime] = {}
        for spec in channels:
            settings = spec.detector or DetectorSettings(
                cell=spec.cell_type,  # type: ignore[arg-type]
                voltage_range_v=voltage_range_v,
            )
            tags = ChannelTags(name, str(spec.channel), "", spec.interphase, spec.cell_type)
            # The live stream always joins a test in progress; the recorded one starts at
            # the test's first sample unless a restart resumes it (then it warms up).
            live_settings = dataclasses.replace(
                settings, stream_starts_at_reversal=False, polled_live=True
            )
            runtime = ChannelRuntime(
                spec, tags, make_detector(live_settings), make_detector(settings)
            )
            runtime.base_settings = settings
            runtime.dating = RecordDating(timezone)
            if spec.mode == "run" and spec.script is not None and step_limits(spec.script):
                # The step file holds only the whole-test protection: the script's
                # per-step windows are judged here, on both streams, by the step id.
                runtime.live = StepLimitGuard(runtime.live, spec.script)
                runtime.recorded = StepLimitGuard(runtime.recorded, spec.script)
            if state is not None:
                saved = state.load_state(name, str(spec.channel))
                if saved is not None:
                    saved_state, last_seq, runtime.detail = saved
                    runtime.state = parse_state(
                        saved_state, where=f"saved state of {name} {spec.channel}"
                    )
                    runtime.stored_seq = last_seq
                    runtime.next_seq = last_seq + 1
            self.channels[spec.channel] = runtime
        self._by_tag = {str(c): r for c, r in self.channels.items()}  # by tags.channel
        # Channels refused at connect (see _check_channels), with their runtime.
        self.refused: dict[ChannelId, ChannelRuntime] = {}
        # A halted channel runs again: its recorded history says whether a new test.
        self.download_due = False
        self._bad_live: set[ChannelId] = set()  # logged once until readable again

    # ------------------------------------------------------------ the loop

    def _new_link(self) -> NewareClient:
        return self._connect()

    async def _open(self, link: NewareClient) -> None:
        # A help in telling a server's mA downloads from A ones (a value beyond the range).
        link.current_range_a = self._limits.current_range_ma / 1000.0
        await link.connect()

    async def _close(self, link: NewareClient) -> None:
        await link.aclose()

    def _lost(self) -> None:
        self._mark_unavailable()

    def _mark_unavailable(self) -> None:
        for runtime in self.channels.values():
            if runtime.state == "running":
                runtime.to("unavailable")

    async def _session(self, client: NewareClient) -> None:
        await self._check_channels(client)
        await self._learn_tests(client)
        await self._warm_up(client)
        await self._start_run_mode(client)
        next_download_s = self._clock.now_s()
        if self._poll_origin_s is None:
            self._poll_origin_s = next_download_s
        else:
            # A reconnect: carry out what the outage left and backfill it (judged) at
            # once; the live polls wait for their grid (see _until_next_poll_s).
            await self._finish_halts(client)
            await self.download_once(client)
            next_download_s = self._clock.now_s() + self.download_interval_s
            await self._idle(client, self._until_next_poll_s())
        while True:
            await self._finish_halts(client)
            await self._run_commands(client)
            await self.poll_once(client)
            self._working()
            if self._clock.now_s() >= next_download_s or self.download_due:
                await self.download_once(client)
                next_download_s = self._clock.now_s() + self.download_interval_s
                freeze_steady_heap()
            # The poll's stops are out: the collector's routine work goes here, in the
            # idle time before the next poll, rather than between a sample and its stop.
            collect_after_poll()
            await self._idle(client, self._until_next_poll_s())

    async def _check_channels(self, client: NewareClient) -> None:
        """Refuse, alone, each channel this instrument cannot guard; the rest run.

        Checked at every connect against what the server reports (a unit may come back):
        the channel must exist there, and a run-mode protocol must fit the channel's
        range. A refused channel is reported once, by an ``unguarded`` alert that says
        why, and is left out of every request (one bad channel in a request would fail
        it for all the others).
        """
        present = {info.address.channel for info in client.channels}
        for runtime in [*self.channels.values(), *self.refused.values()]:
            channel = runtime.spec.channel
            why = self._why_unguardable(runtime, present)
            if why is None:
                if channel in self.refused:
                    del self.refused[channel]
                    self.channels[channel] = runtime
                    log.warning("%s %s: guarded again", self.name, channel)
                continue
            if channel in self.refused:
                continue
            del self.channels[channel]
            self.refused[channel] = runtime
            detail = f"{self.name} {channel} is UNGUARDED: {why}"
            log.error("%s", detail)
            await self._emit(runtime, GuardEvent("unguarded", detail=detail))

    async def _learn_tests(self, client: NewareClient) -> None:
        """The test id behind each saved position, before anything is judged.

        The saved state holds a position, not the test it belongs to: a test started on
        the instrument while the daemon was down is told by its record count, lower
        than the saved position (its records start again from 1): a new run.
        """
        unknown = [r for r in self.channels.values() if not r.test_id and r.next_seq > 1]
        if not unknown:
            return
        counts = await client.inquire_df([r.spec.channel for r in unknown])
        for runtime in unknown:
            held = counts[runtime.spec.channel]
            if not held.test_id:
                continue
            if held.count < runtime.next_seq - 1:
                await self._new_run(runtime, held.test_id)
            else:
                runtime.test_id = held.test_id
                runtime.tags = dataclasses.replace(runtime.tags, test_id=str(held.test_id))

    def _why_unguardable(self, runtime: ChannelRuntime, present: set[ChannelId]) -> str | None:
        spec = runtime.spec
        if spec.channel not in present:
            have = sorted(present, key=lambda c: (c.devid, c.subdevid, c.chlid))
            listed = f"{have[0]} .. {have[-1]}" if have else "none"
            return f"the instrument has no channel {spec.channel} (it has {listed})"
        if spec.runs_protocol:
            try:
                spec.step_file(self._limits)
            except CellguardError as err:
                return f"its protocol does not fit the channel: {err}"
        return None

    def _until_next_poll_s(self) -> float:
        """Seconds to the next point of the poll grid, which a reconnect never shifts.

        The live detectors place a sample in its half cycle by the time since the last
        sample before the current reversed; their profiles hold only while the polls
        keep one phase against the instrument's reversals. Polls shifted by a reconnect
        (the backoff) put the first sample after each reversal, still relaxing, where
        the profile is relaxed already: false drops, then a false soft-short halt.
        """
        assert self._poll_origin_s is not None
        elapsed_s = self._clock.now_s() - self._poll_origin_s
        # The tolerance keeps a poll that lands on its grid point from being repeated.
        polls_done = math.floor(elapsed_s / self.poll_interval_s + 1e-6) + 1
        return self._poll_origin_s + polls_done * self.poll_interval_s - self._clock.now_s()

    async def _start_run_mode(self, client: NewareClient, *, operator: bool = False) -> None:
        """Start the protocols of ``run`` channels that are not running yet (never twice).

        The instrument's own status and test id are read first: a channel that runs is
        joined, not started; one that already holds an ended test the daemon has no
        record of (its state store was lost, moved aside or damaged) is not started
        again unless an operator asks (``operator``): it may be a cell we halted.
        """
        to_start = []
        for runtime in self.channels.values():
            spec = runtime.spec
            if not spec.runs_protocol or runtime.state not in ("idle",):
                continue
            if runtime.start_withheld and not operator:
                continue
            if self._step_file_dir is None:
                msg = f"{self.name}: run mode needs step_file_dir"
                raise CellguardError(msg)
            self._step_file_dir.mkdir(parents=True, exist_ok=True)
            path = write_step_file(
                self._step_file_dir / f"{self.name}-{spec.channel}.xml",
                spec.step_file(self._limits),
            )
            barcode = spec.barcode or f"cellguard-{self.name}-{spec.channel}"
            to_start.append((spec.channel, barcode, str(path)))
        if not to_start:
            return
        channels = [c for c, _, _ in to_start]
        live = await self._inquire(client, channels)
        history = await client.inquire_df(channels)
        ready = []
        for item in to_start:
            channel = item[0]
            if channel not in live or live[channel].workstatus in _RUNNING:
                continue  # running already, or its status unreadable: not started now
            ran = history[channel]
            if ran.test_id and not operator:
                await self._withhold_start(self.channels[channel], live[channel], ran.test_id)
                continue
            ready.append(item)
        if ready:
            await client.start(ready)
            for channel, barcode, _ in ready:
                runtime = self.channels[channel]
                runtime.to("running")
                runtime.next_seq = 1
                runtime.stored_seq = 0
                runtime.test_id = 0  # the new test's id comes with its first download
                self._persist(runtime, f"started {barcode}")
                await self._event(runtime, "start", detail=f"started with barcode {barcode}")

    async def _withhold_start(
        self, runtime: ChannelRuntime, live: InquireRecord, test_id: int
    ) -> None:
        runtime.start_withheld = True
        detail = (
            f"not started: the instrument holds test {test_id} on this channel, ended "
            f"({live.workstatus}), and the daemon has no state for it (a lost, moved or "
            "damaged state store?); it may be a cell that was halted. Start it by an "
            "operator command if a new test is meant"
        )
        log.error("%s %s: %s", self.name, runtime.spec.channel, detail)
        await self._emit(runtime, GuardEvent("warn", fault="restart", detail=detail))

    async def _warm_up(self, client: NewareClient) -> None:
        """Rebuild the recorded detectors' baselines from the instrument's own history.

        A restarted daemon resumes a running test at ``last_seq``; its detectors would
        otherwise have to learn a full half cycle first. The samples before
        ``last_seq`` were judged by the previous run already, so their verdicts are
        not acted on again (the detectors are deterministic: they would be the same).
        """
        for runtime in self.channels.values():
            try:
                await self._warm_up_channel(client, runtime)
            except ProtocolViolation as err:
                if not client.connected:
                    raise
                # A bad record in the history: judge from the next sample on rather
                # than never guard the channel (or the instrument) again.
                log.error(  # noqa: TRY400 (the reason is in the line)
                    "%s %s: detector warm-up skipped: %s", self.name, runtime.spec.channel, err
                )

    async def _warm_up_channel(self, client: NewareClient, runtime: ChannelRuntime) -> None:
        last = runtime.next_seq - 1
        # "unavailable" was saved by daemons that lost the link and never saw the
        # channel come back: its test may still run, so its baseline is rebuilt.
        resumed = runtime.state in ("running", "unavailable")
        if not resumed or last < 1 or runtime.recorded.samples > 0:
            return
        tail = await client.download(
            runtime.spec.channel,
            max(1, last - DOWNLOAD_PAGE + 1),
            DOWNLOAD_PAGE,
            programmed_current_a=_programmed_a(runtime),
        )
        records = [r for r in tail.records if r.seq_id <= last]
        if len(records) >= 2:
            interval_s = max(
                (records[-1].test_time_ms - records[0].test_time_ms) / 1000.0 / (len(records) - 1),
                1e-3,
            )
            wanted = min(last, WARM_UP_MAX_RECORDS, math.ceil(WARM_UP_S / interval_s))
            first = last - wanted + 1
            while first < records[0].seq_id:
                start = max(first, records[0].seq_id - DOWNLOAD_PAGE)
                page = await client.download(
                    runtime.spec.channel,
                    start,
                    records[0].seq_id - start,
                    programmed_current_a=_programmed_a(runtime),
                )
                records = [*page.records, *records]
                if not page.records:
                    break
        settings = dataclasses.replace(
            runtime.recorded.settings,
            stream_starts_at_reversal=bool(records) and records[0].seq_id == 1,
        )
        detector = runtime.recorded = make_detector(settings)
        dating = runtime.dating
        for rec in records:
            # The history also dates the records to come: the first after a restart
            # may fall in a repeated DST hour, which only its predecessors resolve.
            dating.keep(dating.date(rec.wall_time, rec.test_time_ms), rec.test_time_ms)
            detector.feed(
                rec.test_time_ms / 1000.0,
                rec.voltage_v,
                rec.current_a,
                rec.step_id,
                rec.cycle_id,
                step_kind_of(rec.step_type),
            )
        if detector.halt is not None:
            # Already judged by the previous run, which did not halt: start clean
            # rather than leave a latched detector that judges nothing more.
            log.warning(
                "%s %s: warm-up history ends in a halt verdict (%s); relearning",
                self.name,
                runtime.spec.channel,
                detector.halt.detail,
            )
            runtime.recorded = make_detector(
                dataclasses.replace(settings, stream_starts_at_reversal=False)
            )
        log.info(
            "%s %s: detector baseline rebuilt from %d recorded samples",
            self.name,
            runtime.spec.channel,
            len(records),
        )

    # ------------------------------------------------------------ operator commands

    async def command(
        self, channel: ChannelId, action: str, protocol_text: str | None = None
    ) -> tuple[bool, str]:
        """Run an operator command on a channel between two polls; ``(ok, detail)``.

        ``start`` with ``protocol_text`` (a protocol script, TOML) validates it against
        the instrument, compiles it and starts it; an invalid script starts nothing.
        """
        if protocol_text is not None:
            if action != "start":
                return False, "a protocol goes only with start"
            try:
                script = parse_protocol_text(protocol_text)
                step_file = script_to_step_file(script, self._limits)
            except CellguardError as err:
                return False, f"protocol refused, nothing started: {err}"
            setpoints = prestart_setpoints(script)
            if setpoints:
                # A Neware channel has no chamber of its own to set: starting without the
                # soak would run the test at the wrong temperature, silently.
                first = setpoints[0]
                return False, (
                    f"protocol refused, nothing started: it sets a chamber to "
                    f"{first.temperature} before it starts, and a Neware channel has no "
                    "chamber; set it by hand and remove the step, or run it host-driven"
                )
            self._scripts[channel] = (script.name, step_file, script)
        return await self._queue_command(channel, action, None)

    async def _execute(self, link: NewareClient, command: Command[ChannelId]) -> tuple[bool, str]:
        channel, action = command.channel, command.action
        runtime = self.channels.get(channel)
        if runtime is None:
            why = "refused at connect (unguarded)" if channel in self.refused else "unknown"
            return False, f"{channel} is not guarded on {self.name} ({why})"
        if action == "stop":
            return await self._operator_stop(link, runtime)
        if action == "start":
            return await self._operator_start(link, runtime)
        return await self._operator_pause(link, runtime, action)

    async def _operator_stop(
        self, client: NewareClient, runtime: ChannelRuntime
    ) -> tuple[bool, str]:
        try:
            await client.stop([runtime.spec.channel])
        except CommandRefused:
            return False, "the instrument refused the stop (nothing runs there)"
        if runtime.state in ("halting", "halted"):
            # A fault's halt stays a halt (its retries, its restart rules).
            return True, f"stopped (the channel is {runtime.state} already)"
        runtime.to("stopped")
        self._persist(runtime, "stopped by an operator")
        await self._event(runtime, "stop", detail="stopped by an operator command")
        return True, "stopped"

    async def _operator_pause(
        self, client: NewareClient, runtime: ChannelRuntime, action: str
    ) -> tuple[bool, str]:
        channel = runtime.spec.channel
        try:
            await (client.pause if action == "pause" else client.resume)([channel])
        except CommandRefused:
            return False, f"the instrument refused to {action} (state {runtime.last_workstatus})"
        done = "paused" if action == "pause" else "resumed"
        self._persist(runtime, f"{done} by an operator")
        kind: EventKind = "pause" if action == "pause" else "resume"
        await self._event(runtime, kind, detail=f"{done} by an operator command")
        return True, done

    async def _operator_start(
        self, client: NewareClient, runtime: ChannelRuntime
    ) -> tuple[bool, str]:
        script = self._scripts.pop(runtime.spec.channel, None)
        if script is not None:
            return await self._start_script(client, runtime, *script)
        if not runtime.spec.runs_protocol:
            return False, "only run-mode channels are started by cellguard"
        if runtime.state in ("running", "halting"):
            return False, "the channel is already running"
        runtime.to("idle")
        runtime.halt = None
        runtime.halting = None
        settings = runtime.live.settings
        runtime.live = make_detector(settings)
        runtime.recorded = make_detector(settings)
        own = runtime.spec.script
        if own is not None and step_limits(own):
            runtime.live = StepLimitGuard(runtime.live, own)
            runtime.recorded = StepLimitGuard(runtime.recorded, own)
        runtime.test_start_unix_s = math.nan
        runtime.dating.reset()
        await self._start_run_mode(client, operator=True)
        return runtime.state == "running", runtime.state

    async def _start_script(
        self,
        client: NewareClient,
        runtime: ChannelRuntime,
        name: str,
        step_file: StepFile,
        script: ScriptProtocol,
    ) -> tuple[bool, str]:
        if runtime.last_workstatus in _RUNNING or runtime.state in ("running", "halting"):
            return False, "the channel is already running; stop it first"
        if self._step_file_dir is None:
            return False, f"{self.name}: no step_file_dir to write the protocol to"
        self._step_file_dir.mkdir(parents=True, exist_ok=True)
        path = write_step_file(
            self._step_file_dir / f"{self.name}-{runtime.spec.channel}-script.xml", step_file
        )
        barcode = f"cellguard-{self.name}-{runtime.spec.channel}"
        await client.start([(runtime.spec.channel, barcode, str(path))])
        settings = runtime.recorded.settings
        runtime.live = make_detector(
            dataclasses.replace(settings, stream_starts_at_reversal=False, polled_live=True)
        )
        runtime.recorded = make_detector(
            dataclasses.replace(settings, stream_starts_at_reversal=True)
        )
        if step_limits(script):
            # The BTS step file holds only the whole-test protection: the script's
            # per-step windows are judged here, on both streams, by the step id.
            runtime.live = StepLimitGuard(runtime.live, script)
            runtime.recorded = StepLimitGuard(runtime.recorded, script)
        runtime.halt = None
        runtime.halting = None
        runtime.to("running")
        runtime.next_seq = 1
        runtime.stored_seq = 0
        runtime.test_id = 0  # the new test's id comes with its first download
        runtime.test_start_unix_s = math.nan
        runtime.dating.reset()
        self._persist(runtime, f"started protocol {name!r}")
        await self._event(runtime, "start", detail=f"started protocol {name!r} on operator request")
        return True, f"started {name!r}"

    # ------------------------------------------------------------ live stream

    async def poll_once(self, client: NewareClient) -> None:
        """One ``inquire`` for every channel; judge every value; halt at once.

        Channels are asked in slices of :data:`INQUIRE_BATCH`. The verdicts of a slice
        are taken as soon as it arrives and every halting channel of it is stopped in
        one request before the next slice is asked and before anything else (status,
        events, samples) is handled, so no halt waits behind another channel's alert,
        a sink, or the rest of a large rack.
        """
        self._outbox.flush()
        warns: list[tuple[ChannelRuntime, Verdict]] = []
        halted: list[tuple[ChannelRuntime, Verdict]] = []
        seen: list[tuple[ChannelRuntime, InquireRecord]] = []
        watched = list(self.channels)
        for lo in range(0, len(watched), INQUIRE_BATCH):
            records = await self._inquire(client, watched[lo : lo + INQUIRE_BATCH])
            received_at = time.perf_counter()
            halts: list[tuple[ChannelRuntime, Verdict]] = []
            for channel, record in records.items():
                runtime = self.channels.get(channel)
                if runtime is None:
                    continue
                seen.append((runtime, record))
                # Live values judged: a working channel's, and a paused one's (as a pause).
                if runtime.halt is not None or record.workstatus not in _RUNNING:
                    continue
                # A paused channel is fed as a pause (no current): the detector then
                # carries the half cycle on from where it stopped when it resumes.
                kind = (
                    StepKind.PAUSE
                    if record.workstatus == "pause"
                    else step_kind_of(record.step_type)
                )
                verdict = runtime.live.feed(
                    record.total_time_s,
                    record.voltage_v,
                    0.0 if kind is StepKind.PAUSE else record.current_a,
                    record.step_id,
                    None,
                    kind,
                    # A poll misses a short step between two runs of one step (a loop):
                    # the step's own time going back still tells a new step began.
                    step_time_s=record.relative_time_s,
                )
                if verdict.severity == "halt":
                    halts.append((runtime, verdict))
                elif verdict.severity == "warn":
                    warns.append((runtime, verdict))
            if halts:
                await self._stop_halting(client, halts, received_at)
                halted += halts
        self.polls += 1
        if halted:
            await self._report_halts([r for r, _ in halted])
        await self._learn_new_test_ids(
            client, [r for r, rec in seen if rec.workstatus in _RUNNING and r.test_id_unsure]
        )
        for runtime, record in seen:
            await self._track_workstatus(runtime, record)
            if record.workstatus == "working":
                self._offer_live(runtime, record)
            await self._publish_status(runtime, record)
        for runtime, verdict in warns:
            await self._warn(runtime, verdict)

    async def _learn_new_test_ids(
        self, client: NewareClient, runtimes: Sequence[ChannelRuntime]
    ) -> None:
        """The test id of tests just started, joined or started anew, before their first
        live sample is queued: without it that sample (and every one until the next
        download, up to ``download_interval_s`` later) would be stored under no test
        at all, or under the test before."""
        if not runtimes:
            return
        counts = await client.inquire_df([r.spec.channel for r in runtimes])
        for runtime in runtimes:
            held = counts.get(runtime.spec.channel)
            if held is None or not held.test_id or held.test_id == runtime.test_id:
                continue
            if runtime.test_id:
                # Another test than the one that ended: guarded as a new run now, not
                # at the next download.
                await self._new_run(runtime, held.test_id)
            else:
                runtime.test_id = held.test_id
                runtime.tags = dataclasses.replace(runtime.tags, test_id=str(held.test_id))

    async def _publish_status(self, runtime: ChannelRuntime, record: InquireRecord) -> None:
        """The channel's retained status, kept current at a bounded rate (StatusPacer)."""
        now_s = self._clock.now_s()
        pacer = runtime.status_pacer
        if pacer.due(now_s, runtime.state, record.workstatus, record.cycle_id):
            body = pacer.status(
                now_s,
                runtime.state,
                record.workstatus,
                record.cycle_id,
                test_time_s=record.total_time_s,
                time_unix_s=time.time(),
            )
            await self._publisher.publish_status(runtime.tags, body)

    def _offer_live(self, runtime: ChannelRuntime, record: InquireRecord) -> None:
        """Queue a working channel's live value as a sample."""
        runtime.status_pacer.sample_seen(self._clock.now_s())
        runtime.cycle = record.cycle_id
        runtime.test_time_s = record.total_time_s
        if math.isnan(runtime.test_start_unix_s):
            runtime.test_start_unix_s = time.time() - record.total_time_s
        self._offer(
            SampleRecord(
                runtime.tags,
                runtime.test_start_unix_s + record.total_time_s,
                record.total_time_s,
                record.voltage_v,
                record.current_a,
                record.capacity_ah * 1000.0,
                record.energy_wh * 1000.0,
                record.step_id or 0,
                record.cycle_id,
                0,
                "live",
            )
        )

    async def _inquire(
        self, client: NewareClient, channels: Sequence[ChannelId]
    ) -> dict[ChannelId, InquireRecord]:
        """The live values of ``channels``; a channel whose value cannot be read is
        left out of this poll alone (one bad value fails a whole reply)."""
        try:
            records = await client.inquire(channels)
        except ProtocolViolation as err:
            if not client.connected:
                raise  # out of step: the link is gone, not a value
            if len(channels) == 1:
                if channels[0] not in self._bad_live:
                    self._bad_live.add(channels[0])
                    log.error(  # noqa: TRY400 (the reason is in the line)
                        "%s %s: live value unreadable (%s); skipped", self.name, channels[0], err
                    )
                return {}
            records = {}
            for channel in channels:
                records.update(await self._inquire(client, [channel]))
            return records
        for channel in channels:
            if channel in self._bad_live:
                self._bad_live.discard(channel)
                log.warning("%s %s: live values readable again", self.name, channel)
        return records

    async def _track_workstatus(self, runtime: ChannelRuntime, record: InquireRecord) -> None:
        status = record.workstatus
        if status == runtime.last_workstatus:
            if status in _RUNNING and runtime.state == "unavailable":
                # Back after a link loss, the test still running: the status text did
                # not change, the channel's state must (a restart reads it).
                runtime.to("running")
                self._persist(runtime, f"running again after the link came back ({status})")
            return
        previous = runtime.last_workstatus
        runtime.last_workstatus = status
        if status in _RUNNING and runtime.state == "halted":
            # Confirmed stopped, running again: a new test on the channel (or an
            # operator's resume); the next download's test id tells which.
            self.download_due = True
        if status in _RUNNING:
            if runtime.state in ("idle", "unavailable", "stopped", "finished", "protected"):
                runtime.to("running")
                self._persist(runtime, f"running (was {previous or 'unknown'})")
        elif (
            status in _ENDED
            and runtime.state not in ("halted", "halting")
            and (runtime.state == "running" or previous in _RUNNING)
        ):
            runtime.to(_ENDED[status])
            self._persist(runtime, f"instrument reports {status}")
            kind: EventKind = (
                "protect" if status == "protect" else ("finish" if status == "finish" else "stop")
            )
            await self._event(runtime, kind, detail=f"the instrument reports {status}")

    # ------------------------------------------------------------ recorded stream

    async def download_once(self, client: NewareClient) -> None:
        """Fetch every recorded sample not seen yet, judge it in order, queue it."""
        self.download_due = False
        for runtime in list(self.channels.values()):
            if runtime.state == "idle":
                continue
            while True:
                first = runtime.next_seq
                got = await self._download_slice(client, runtime)
                if got is None:
                    continue  # a bad record was skipped: go on after it
                reply, asked = got
                if reply.test_id and reply.test_id != runtime.test_id:
                    if runtime.test_id:
                        await self._new_run(runtime, reply.test_id)
                        continue  # fetched again from its first record
                    runtime.test_id = reply.test_id
                    runtime.tags = dataclasses.replace(runtime.tags, test_id=str(reply.test_id))
                taken = 0
                for rec in reply.records:
                    if not await self._recorded(client, runtime, rec):
                        break
                    taken += 1
                if taken == len(reply.records) and reply.skipped:
                    await self._skipped(runtime, first, reply)
                # The position is saved once the sink has the samples (samples_stored).
                if taken < len(reply.records) or runtime.next_seq < first + asked:
                    break

    async def _download_slice(
        self, client: NewareClient, runtime: ChannelRuntime
    ) -> tuple[DownloadReply, int] | None:
        """The next slice of recorded records and its size; None when a bad record was
        skipped. A record that cannot be read (``volt="nan"``) fails its whole reply:
        the slice is then fetched one record at a time, and the bad one is skipped,
        with an alert, so it never holds up the rows after it or the other channels."""
        channel = runtime.spec.channel
        asked = 1 if runtime.next_seq < runtime.one_by_one_until else DOWNLOAD_SLICE
        programmed_a = _programmed_a(runtime)
        try:
            return await client.download(
                channel, runtime.next_seq, asked, programmed_current_a=programmed_a
            ), asked
        except ProtocolViolation as err:
            if not client.connected:
                raise  # out of step: the link is gone, not a record
            if asked > 1:
                runtime.one_by_one_until = runtime.next_seq + asked
                return None
            seq = runtime.next_seq
            runtime.next_seq += 1
            detail = (
                f"recorded record {seq} of test {runtime.test_id or '?'} could not be read "
                f"({err}); skipped, the records after it are stored and judged"
            )
            log.error("%s %s: %s", self.name, channel, detail)  # noqa: TRY400 (said in detail)
            await self._emit(runtime, GuardEvent("skipped", detail=detail))
            return None

    async def _skipped(self, runtime: ChannelRuntime, first: int, reply: DownloadReply) -> None:
        """Records the driver could not read: alerted once each, and passed over."""
        for skip in reply.skipped:
            seq = skip.seq_id if skip.seq_id is not None else first + skip.position - 1
            if seq < first:
                continue  # before the slice asked for: not this slice's to report
            runtime.next_seq = max(runtime.next_seq, seq + 1)
            detail = (
                f"recorded record {seq} of test {runtime.test_id or '?'} could not be read "
                f"({skip.reason}); skipped, the records after it are stored and judged"
            )
            log.error("%s %s: %s", self.name, runtime.spec.channel, detail)
            await self._emit(runtime, GuardEvent("skipped", detail=detail))

    async def _new_run(self, runtime: ChannelRuntime, test_id: int) -> None:
        """A new test on the channel (a new test id, records from 1): a new run.

        Its records are all fetched and stored, its detectors start fresh, and a halt
        of the test before does not keep it from being judged and halted.
        """
        old_id = runtime.test_id
        progress = runtime.halting
        if runtime.state == "halting" and progress is not None:
            # A new test starts only on a channel that no longer runs: the old one's
            # stop is carried out.
            progress.confirmed = True
            runtime.to("halted")
            self._persist(runtime, progress.verdict.detail)
            await self._report_halts([runtime])
        runtime.halt = None
        runtime.halting = None
        settings = runtime.base_settings or runtime.recorded.settings
        runtime.live = make_detector(
            dataclasses.replace(settings, stream_starts_at_reversal=False, polled_live=True)
        )
        runtime.recorded = make_detector(settings)
        runtime.next_seq = 1
        runtime.stored_seq = 0
        runtime.one_by_one_until = 0
        runtime.test_start_unix_s = math.nan
        runtime.dating.reset()
        runtime.test_id = test_id
        runtime.tags = dataclasses.replace(runtime.tags, test_id=str(test_id))
        if runtime.state != "running":
            runtime.to("running")
        was = old_id or "unknown: before a restart"
        detail = f"test {test_id} started on the instrument (was {was}): guarded as a new run"
        self._persist(runtime, detail)
        log.warning("%s %s: %s", self.name, runtime.spec.channel, detail)
        await self._event(runtime, "start", detail=detail)

    async def _recorded(
        self, client: NewareClient, runtime: ChannelRuntime, rec: DownloadRecord
    ) -> bool:
        """Queue one recorded sample and judge it; False if the sinks are full.

        A full queue never blocks this loop (the live polls and every halt run here):
        the sample is left on the instrument and fetched again, by position, at the
        next download, and only then judged, so each sample is judged once, in order.
        """
        t_s = rec.test_time_ms / 1000.0
        # The instrument's own clock dates a recorded sample: its zone-less wall time
        # to the second, refined by the test time's milliseconds, made UTC and kept
        # increasing across DST changes and clock steps (wall_time.py). Live values
        # are dated from the same origin once a recorded sample has shown it.
        wall_unix_s = runtime.dating.date(
            rec.wall_time,
            rec.test_time_ms,
            expected_unix_s=runtime.test_start_unix_s + t_s,
        )
        sample = SampleRecord(
            runtime.tags,
            wall_unix_s,
            t_s,
            rec.voltage_v,
            rec.current_a,
            rec.capacity_ah * 1000.0,
            rec.energy_wh * 1000.0,
            rec.step_id,
            rec.cycle_id,
            rec.seq_id,
            "recorded",
        )
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.recorded_deferred += 1
            return False
        # Counted the moment it is queued: a halt judged on this very sample may lose
        # the link, and a queued sample must never be fetched (and stored) again by
        # this run. A restart resumes from stored_seq instead: what was only queued
        # died with the process. The position is the record's seqid, not a count: a
        # record left out (unreadable) or sent twice never shifts the next one.
        runtime.next_seq = rec.seq_id + 1
        runtime.dating.keep(wall_unix_s, rec.test_time_ms)
        runtime.test_start_unix_s = wall_unix_s - t_s
        runtime.samples += 1
        if runtime.halt is None:
            verdict = runtime.recorded.feed(
                t_s,
                rec.voltage_v,
                rec.current_a,
                rec.step_id,
                rec.cycle_id,
                step_kind_of(rec.step_type),
            )
            if verdict.severity == "halt":
                await self._halt(client, runtime, verdict, time.perf_counter())
            elif verdict.severity == "warn":
                await self._warn(runtime, verdict)
        return True

    # ------------------------------------------------------------ halting

    async def _halt(
        self, client: NewareClient, runtime: ChannelRuntime, verdict: Verdict, received_at: float
    ) -> None:
        await self._halt_all(client, [(runtime, verdict)], received_at)

    async def _halt_all(
        self,
        client: NewareClient,
        halts: Sequence[tuple[ChannelRuntime, Verdict]],
        received_at: float,
    ) -> None:
        await self._stop_halting(client, halts, received_at)
        await self._report_halts([r for r, _ in halts])

    async def _stop_halting(
        self,
        client: NewareClient,
        halts: Sequence[tuple[ChannelRuntime, Verdict]],
        received_at: float,
    ) -> None:
        """The halt path proper: persist "halting", stop, confirm, persist "halted"."""
        now_s = self._clock.now_s()
        for runtime, verdict in halts:
            runtime.halt = verdict
            runtime.halting = HaltProgress(verdict, now_s)
            runtime.to("halting")
            # Before the stop: a kill between the two re-halts at the restart.
            self._persist(runtime, verdict.detail)
        await self._stop_attempt(client, [r for r, _ in halts], received_at)

    async def _stop_attempt(
        self, client: NewareClient, runtimes: Sequence[ChannelRuntime], received_at: float
    ) -> None:
        """One stop of ``runtimes`` in one request, read back; never a sleep here (the
        other channels' polls wait on this loop)."""

        async def stop(channels: Collection[ChannelId]) -> None:
            # Refused = not running there any more: the status read back confirms it.
            with contextlib.suppress(CommandRefused):
                await client.stop(list(channels))
            sent_s = time.perf_counter() - received_at
            for runtime in runtimes:
                runtime.halt_latencies_s.append(sent_s)

        async def still_running(channels: Collection[ChannelId]) -> list[ChannelId]:
            status = await client.get_status(list(channels))
            return [c for c in channels if status[c] in _RUNNING]

        running = await stop_once(
            [r.spec.channel for r in runtimes], stop, still_running, in_flight=self._stops
        )
        now_s = self._clock.now_s()
        for runtime in runtimes:
            progress = runtime.halting
            assert progress is not None
            where = f"{self.name} {runtime.spec.channel}"
            alert = progress.attempted(runtime.spec.channel in running, now_s, where)
            if alert is not None:
                await self._emit(runtime, alert)
                continue
            runtime.to("halted")
            self._persist(runtime, progress.verdict.detail)

    async def _report_halts(self, runtimes: Sequence[ChannelRuntime]) -> None:
        """Events and alerts of halts the instrument confirmed (they may wait on the
        broker, so they come after every stop of the poll)."""
        for runtime in runtimes:
            event = runtime.halting.announce() if runtime.halting is not None else None
            if event is None:
                continue
            await self._emit(runtime, event)
            if self._on_halt is not None:
                await self._on_halt(runtime)

    async def _finish_halts(self, client: NewareClient) -> None:
        """Carry out halts left unconfirmed whose retry is due: the link was lost as the
        stop went out, a restart found "halting", or the instrument did not carry the
        stop out. A halt is never forgotten, and never waited for here."""
        due = halts_due(self.channels.values(), self._clock.now_s())
        if due:
            await self._stop_attempt(client, due, time.perf_counter())
            await self._report_halts(due)

    async def _warn(self, runtime: ChannelRuntime, verdict: Verdict) -> None:
        await self._emit(runtime, GuardEvent.of_verdict("warn", verdict))

    async def _event(self, runtime: ChannelRuntime, kind: EventKind, *, detail: str = "") -> None:
        await self._emit(runtime, GuardEvent(kind, detail=detail))

    async def _emit(self, runtime: ChannelRuntime, event: GuardEvent) -> None:
        record = event.record(runtime.tags, time.time())
        self.events.append(record)
        self._outbox.put(record)
        if event.is_alert:
            await self._publisher.publish_event(record)

    def _offer(self, sample: SampleRecord) -> None:
        """Queue a live sample; when the sinks lag, drop it (the recorded series,
        fetched by position, carries the same moment and is never dropped)."""
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.live_dropped += 1

    def samples_stored(self, samples: Sequence[SampleRecord]) -> None:
        """The sink has durably written ``samples``: save the position a restart resumes
        from (the sink writer calls this after each write; samples of other instruments
        are ignored).

        Only now, not when a sample is queued: a kill -9 loses the queue, and whatever
        it held must be fetched again. A restart between the sink's write and this save
        fetches a few samples twice; the sink keeps recorded samples once (by channel,
        test and seq). Nothing here waits: a halt never waits on the sink.
        """
        newest: dict[str, int] = {}
        for sample in samples:
            if sample.source != "recorded" or sample.tags.instrument != self.name:
                continue
            channel = sample.tags.channel
            runtime = self._by_tag.get(channel)
            if (
                runtime is None
                # From an earlier test (this one's samples are all queued below next_seq).
                or sample.tags.test_id != runtime.tags.test_id
                or sample.seq >= runtime.next_seq
            ):
                continue
            newest[channel] = max(newest.get(channel, 0), sample.seq)
        for channel, seq in newest.items():
            runtime = self._by_tag[channel]
            if seq > runtime.stored_seq:
                runtime.stored_seq = seq
                self._persist(runtime, "")

    def _persist(self, runtime: ChannelRuntime, detail: str) -> None:
        if detail:
            runtime.detail = detail
        if self._state_store is not None:
            self._state_store.save_state(
                runtime.tags, runtime.state, runtime.stored_seq, runtime.detail
            )


async def drain_queue(
    queue: asyncio.Queue[SampleRecord | EventRecord],
    write: Callable[[list[SampleRecord], list[EventRecord]], Awaitable[None]],
    *,
    batch: int = 5000,
) -> None:
    """The sink task: take what is queued, in batches, and hand it to the sink."""
    while True:
        first = await queue.get()
        items = [first]
        with contextlib.suppress(asyncio.QueueEmpty):
            while len(items) < batch:
                items.append(queue.get_nowait())
        samples = [i for i in items if isinstance(i, SampleRecord)]
        events = [i for i in items if isinstance(i, EventRecord)]
        await write(samples, events)
        for _ in items:
            queue.task_done()
