"""The channel guard over a Maccor tester (MacNet, JSON port): poll, judge, halt at once.

One :class:`MaccorSupervisor` owns one MacNet connection and every watched channel on
it. Each poll reads every watched channel with (4, 7) "all status and readings of one
channel" (MacNet has no all-channel readings message: (4, 1) gives statuses only).
Each running channel's value is judged by its detector, and a halt verdict sends
(6, 3) *suspend* for that channel before anything else is done with the poll, then
reads the channel back until it is no longer active (the shared halt path of
:mod:`cellguard.daemon.guard.core`). Suspend, not reset: the output goes off at once
and the test and its data file stay on the tester for the operator to judge (a reset
ends the test and frees the channel for anyone's next start).

Monitor mode: MacTest32 runs its own procedure; cellguard judges and halts. Run mode:
cellguard programmes the channel's own safety limits (6, 10) when the instrument's
``current_limit_a`` is set (voltage at the detectors' range backstop), then starts
the configured procedure (6, 2), once; a halted, stopped or finished channel is never
started again by a reconnect.

No backfill: MacNet reports the present values of a channel only. The records of the
test are in MacTest32's data file, which the binary port's (1, 7) can send whole, in
500-byte blocks ("slow", says the help, which points to Maccor's MIMS instead), in a
format the MacNet help does not describe; cellguard does not fetch or parse it. What
the tester recorded while the link was down is therefore not judged here: the stored
series has a gap there, and the reconnect says so in an ``available`` event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from cellguard.daemon.guard import (
    ChannelState,
    GuardEvent,
    HaltProgress,
    move,
    parse_state,
    stop_once,
)
from cellguard.daemon.guard.base import Command, InstrumentGuard
from cellguard.daemon.guard.ports import Publisher, SampleQueue, StateStore
from cellguard.daemon.records import ChannelTags, EventKind, EventRecord, SampleRecord
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CommandRefused
from cellguard.drivers.files import StepKind
from cellguard.drivers.maccor import ChannelState as Reading
from cellguard.drivers.maccor import MaccorClient, SafetyLimits, status_name
from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict, make_detector

log = logging.getLogger(__name__)

__all__ = ["MaccorChannelSpec", "MaccorSupervisor", "step_kind_of_rf1"]

# Stat of a channel whose test is over (or held), and the state the guard then takes.
_ENDED: dict[int, ChannelState] = {
    0: "stopped",  # Available
    3: "stopped",  # Suspended (by the operator or a Pause step)
    4: "finished",  # Completed
    5: "protected",  # Problem
    7: "stopped",  # Reset
}


def step_kind_of_rf1(rf1: int) -> StepKind:
    """The detectors' step kind of the controller board's RF1 code.

    Charge and discharge do not say whether current or voltage is held: the detector
    then tells from the data (UNKNOWN), as it does for files that do not say.
    """
    if rf1 == 4:
        return StepKind.REST
    if rf1 in (5, 30):
        return StepKind.PAUSE
    if rf1 == 26:
        return StepKind.IMPEDANCE
    return StepKind.UNKNOWN


@dataclass(frozen=True)
class MaccorChannelSpec:
    """A watched channel: which one (1-based, as MacTest32 shows it), what cell, what to do."""

    channel: int
    cell_type: str  # "symmetric" | "asymmetric" | "full"
    interphase: str = ""
    mode: str = "monitor"  # "monitor" | "run"
    procedure: str | None = None  # run mode: the test procedure (.000, without it) to start
    detector: DetectorSettings | None = None

    @property
    def index(self) -> int:
        """The channel's ``Chan`` on the wire (0-based)."""
        return self.channel - 1


@dataclass
class MaccorRuntime:
    spec: MaccorChannelSpec
    tags: ChannelTags
    detector: Detector
    settings: DetectorSettings
    state: ChannelState = "idle"
    detail: str = ""
    halt: Verdict | None = None
    halting: HaltProgress | None = None
    last_status: int | None = None
    test_name: str = ""
    last_test_time_s: float = -math.inf  # of the last value judged
    last_offered_s: float = -math.inf  # of the last value stored
    test_start_unix_s: float = math.nan
    samples: int = 0
    starts: int = 0
    tests_seen: int = 0
    halt_latencies_s: list[float] = field(default_factory=list)

    def to(self, state: ChannelState) -> None:
        self.state = move(self.state, state, channel=f"{self.tags.instrument} {self.spec.channel}")


class MaccorSupervisor(InstrumentGuard[MaccorClient, int]):
    """Polls one Maccor tester over MacNet and guards its configured channels."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], MaccorClient],
        channels: Sequence[MaccorChannelSpec],
        queue: SampleQueue,
        publisher: Publisher,
        *,
        clock: Clock,
        poll_interval_s: float = 1.0,
        state: StateStore | None = None,
        voltage_range_v: float = 5.0,
        current_limit_a: float | None = None,
    ) -> None:
        super().__init__(name, queue, publisher, clock=clock, state=state)
        self._connect = connect
        self.poll_interval_s = poll_interval_s
        self.polls = 0
        self.live_dropped = 0
        self.channels: dict[int, MaccorRuntime] = {}
        self.refused: dict[int, MaccorRuntime] = {}
        self._lost_at_s: float | None = None
        self.current_limit_a = current_limit_a
        for spec in channels:
            settings = spec.detector or DetectorSettings(
                cell=spec.cell_type,  # type: ignore[arg-type]
                voltage_range_v=voltage_range_v,
            )
            # Live values only: the stream always joins a test in progress.
            settings = dataclasses.replace(settings, stream_starts_at_reversal=False)
            tags = ChannelTags(name, str(spec.channel), "", spec.interphase, spec.cell_type)
            runtime = MaccorRuntime(spec, tags, make_detector(settings), settings)
            if state is not None:
                saved = state.load_state(name, str(spec.channel))
                if saved is not None:
                    saved_state, _, runtime.detail = saved
                    runtime.state = parse_state(
                        saved_state, where=f"saved state of {name} {spec.channel}"
                    )
            self.channels[spec.channel] = runtime

    # ------------------------------------------------------------ the loop

    def _new_link(self) -> MaccorClient:
        return self._connect()

    async def _open(self, link: MaccorClient) -> None:
        await link.connect()

    async def _close(self, link: MaccorClient) -> None:
        await link.aclose()

    def _lost(self) -> None:
        if self._lost_at_s is None:
            self._lost_at_s = self._clock.now_s()
        for runtime in self.channels.values():
            if runtime.state == "running":
                runtime.to("unavailable")

    async def _session(self, client: MaccorClient) -> None:
        await self._check_channels(client)
        await self._finish_halts(client)
        readings = await self._read(client)
        await self._after_outage(readings)
        await self._start_run_mode(client, readings)
        while True:
            await self._finish_halts(client)
            await self._run_commands(client)
            await self.poll_once(client)
            self._working()
            await self._idle(client, self.poll_interval_s)

    async def _check_channels(self, client: MaccorClient) -> None:
        """Refuse, alone, each configured channel the tester does not have (at every
        connect: the tester may be reconfigured); the others are guarded."""
        count = client.channel_count
        for runtime in [*self.channels.values(), *self.refused.values()]:
            channel = runtime.spec.channel
            present = 1 <= channel <= count
            if present and channel in self.refused:
                self.channels[channel] = self.refused.pop(channel)
                log.warning("%s channel %d: guarded again", self.name, channel)
            elif not present and channel not in self.refused:
                self.refused[channel] = self.channels.pop(channel)
                detail = (
                    f"{self.name} channel {channel} is UNGUARDED: the tester has "
                    f"{count} channels (1..{count})"
                )
                log.error("%s", detail)
                await self._emit(runtime, GuardEvent("unguarded", detail=detail))

    async def _after_outage(self, readings: dict[int, Reading]) -> None:
        """Back after a lost link: what the gap means, said once per channel."""
        if self._lost_at_s is None:
            return
        gap_s = self._clock.now_s() - self._lost_at_s
        self._lost_at_s = None
        for runtime in self.channels.values():
            if runtime.state != "unavailable":
                continue
            reading = readings.get(runtime.spec.index)
            await self._event(
                runtime,
                "available",
                detail=(
                    f"link back after {gap_s:.0f} s; MacNet serves present values only, so "
                    "the samples of the gap are not backfilled (they are in MacTest32's "
                    "data file) and were not judged"
                ),
            )
            if reading is None or not reading.running:
                runtime.to("stopped")
                self._persist(runtime, "ended while the link was down")

    async def _start_run_mode(self, client: MaccorClient, readings: dict[int, Reading]) -> None:
        """Start each run-mode channel's procedure, once: only from "idle"."""
        for runtime in self.channels.values():
            spec = runtime.spec
            if spec.mode != "run" or spec.procedure is None or runtime.state != "idle":
                continue
            reading = readings.get(spec.index)
            if reading is not None and reading.running:
                log.warning(
                    "%s channel %d is active already: not started, guarded as it runs",
                    self.name,
                    spec.channel,
                )
                continue
            await self._start(client, runtime, "run mode")

    def safety_limits(self, runtime: MaccorRuntime) -> SafetyLimits | None:
        """The tester's own limits for a run-mode channel: the detectors' range backstop
        in V and ``current_limit_a`` both ways (None without a current limit: (6, 10)
        sets all six at once and a current it does not know is not invented)."""
        if self.current_limit_a is None:
            return None
        settings = runtime.settings
        voltage_v = settings.range_fraction * settings.voltage_range_v
        power_w = voltage_v * self.current_limit_a
        return SafetyLimits(
            voltage_v, -voltage_v, self.current_limit_a, self.current_limit_a, power_w, power_w
        )

    async def _start(self, client: MaccorClient, runtime: MaccorRuntime, why: str) -> bool:
        spec = runtime.spec
        assert spec.procedure is not None
        runtime.starts += 1
        test_name = f"cg-{self.name}-{spec.channel}-{int(time.time())}-{runtime.starts}"[:250]
        limits = self.safety_limits(runtime)
        try:
            if limits is not None:
                await client.set_safety(spec.index, limits)
            await client.start_test(spec.index, spec.procedure, test_name)
        except CommandRefused as err:
            detail = f"{self.name} channel {spec.channel}: start refused ({why}): {err}"
            log.error("%s", detail)  # noqa: TRY400 (the reason is in the line)
            await self._event(runtime, "stop", detail=detail)
            return False
        self._new_test(runtime, test_name)
        runtime.to("running")
        limited = "" if limits is None else f", tester limits ±{limits.voltage_max_v:.3g} V"
        self._persist(runtime, f"started {spec.procedure!r} as {test_name!r} ({why}{limited})")
        await self._event(runtime, "start", detail=f"started {spec.procedure!r} ({why})")
        return True

    def _new_test(self, runtime: MaccorRuntime, test_name: str) -> None:
        runtime.test_name = test_name
        runtime.tags = dataclasses.replace(runtime.tags, test_id=test_name)
        runtime.detector = make_detector(runtime.settings)
        runtime.halt = None
        runtime.halting = None
        runtime.last_test_time_s = -math.inf
        runtime.last_offered_s = -math.inf
        runtime.test_start_unix_s = math.nan

    # ------------------------------------------------------------ operator commands

    async def command(
        self, channel: str, action: str, protocol_text: str | None = None
    ) -> tuple[bool, str]:
        """An operator command on a channel ("3", 1-based), run between two polls."""
        if protocol_text is not None:
            return False, "a Maccor channel runs a MacTest32 procedure, not a protocol script"
        try:
            number = int(channel)
        except ValueError:
            return False, f"{channel!r} is not a channel number of {self.name}"
        return await self._queue_command(number, action, None)

    async def _execute(self, link: MaccorClient, command: Command[int]) -> tuple[bool, str]:
        runtime = self.channels.get(command.channel)
        if runtime is None:
            why = "refused at connect" if command.channel in self.refused else "not configured"
            return False, f"channel {command.channel} is not guarded on {self.name} ({why})"
        if command.action == "stop":
            await link.suspend(runtime.spec.index)
            if runtime.state in ("halting", "halted"):
                return True, f"stopped (the channel is {runtime.state} already)"
            runtime.to("stopped")
            self._persist(runtime, "stopped by an operator")
            await self._event(runtime, "stop", detail="stopped by an operator command")
            return True, "stopped"
        if command.action == "start":
            if runtime.spec.procedure is None:
                return False, "only run-mode channels (with a procedure) are started by cellguard"
            if runtime.state in ("running", "halting"):
                return False, "the channel is already running"
            runtime.to("idle")
            ok = await self._start(link, runtime, "operator command")
            return ok, runtime.state
        return False, f"cellguard has no {command.action} for MacNet: use MacTest32"

    def records_stored(
        self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]
    ) -> None:
        """Nothing to keep: live values carry no position to resume from (no backfill)."""

    # ------------------------------------------------------------ the live stream

    async def _read(self, client: MaccorClient) -> dict[int, Reading]:
        """(4, 7) of every guarded channel, by wire index."""
        return {r.spec.index: await client.state(r.spec.index) for r in self.channels.values()}

    async def poll_once(self, client: MaccorClient) -> None:
        """One (4, 7) per guarded channel; judge each running one; suspend at once every
        channel judged failing, before anything else of this poll."""
        self._outbox.flush()
        halts: list[tuple[MaccorRuntime, Verdict]] = []
        warns: list[tuple[MaccorRuntime, Verdict]] = []
        seen: list[tuple[MaccorRuntime, Reading]] = []
        received_at = time.perf_counter()
        for runtime in list(self.channels.values()):
            reading = await client.state(runtime.spec.index)
            received_at = time.perf_counter()
            seen.append((runtime, reading))
            if reading.running and reading.test_time_s < runtime.last_test_time_s:
                # Test time went back: a new test (MacNet's (4, 7) carries no test name).
                runtime.tests_seen += 1
                self._new_test(runtime, f"{self.name}-{runtime.spec.channel}-t{runtime.tests_seen}")
            if runtime.halt is not None or not reading.running:
                continue
            if reading.test_time_s <= runtime.last_test_time_s:
                continue  # the same value as last poll: judged once
            runtime.last_test_time_s = reading.test_time_s
            kind = step_kind_of_rf1(reading.rf1)
            verdict = runtime.detector.feed(
                reading.test_time_s,
                reading.voltage_v,
                0.0 if kind is StepKind.PAUSE else reading.current_a,
                reading.step,
                reading.cycle,
                kind,
            )
            if verdict.severity == "halt":
                # Suspended now, before the other channels are read: each read costs time.
                await self._stop_halting(client, [(runtime, verdict)], received_at)
                halts.append((runtime, verdict))
            elif verdict.severity == "warn":
                warns.append((runtime, verdict))
        self.polls += 1
        if halts:
            await self._report_halts([r for r, _ in halts])
        for runtime, reading in seen:
            await self._track_status(runtime, reading)
            if reading.running:
                self._offer(runtime, reading)
        for runtime, verdict in warns:
            await self._emit(runtime, GuardEvent.of_verdict("warn", verdict))

    def _offer(self, runtime: MaccorRuntime, reading: Reading) -> None:
        if reading.test_time_s <= runtime.last_offered_s:
            return  # the value of the last poll again: stored once
        runtime.last_offered_s = reading.test_time_s
        if math.isnan(runtime.test_start_unix_s):
            runtime.test_start_unix_s = time.time() - reading.test_time_s
        runtime.samples += 1
        sample = SampleRecord(
            runtime.tags,
            runtime.test_start_unix_s + reading.test_time_s,
            reading.test_time_s,
            reading.voltage_v,
            reading.current_a,
            reading.capacity_ah * 1000.0,
            reading.energy_wh * 1000.0,
            reading.step,
            reading.cycle,
            0,
            "live",
        )
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.live_dropped += 1  # no position to fetch it again from: counted

    async def _track_status(self, runtime: MaccorRuntime, reading: Reading) -> None:
        status = reading.stat
        if status == runtime.last_status:
            if reading.running and runtime.state == "unavailable":
                runtime.to("running")
                self._persist(runtime, "running again after the link came back")
            return
        previous, runtime.last_status = runtime.last_status, status
        if reading.running:
            if runtime.state in ("idle", "unavailable", "stopped", "finished", "protected"):
                runtime.to("running")
                self._persist(runtime, f"running ({reading.status})")
            elif runtime.state == "halted" and runtime.halt is None:
                runtime.to("running")  # a new test on a halted channel
                self._persist(runtime, "a new test runs")
        elif status in _ENDED and runtime.state not in ("halted", "halting", "idle"):
            ended = _ENDED[status]
            if runtime.state != ended:
                runtime.to(ended)
                self._persist(runtime, f"the tester reports {reading.status}")
                kind: EventKind = {"finished": "finish", "protected": "protect"}.get(ended, "stop")  # type: ignore[assignment]
                await self._event(runtime, kind, detail=f"the tester reports {reading.status}")
        await self._publisher.publish_status(
            runtime.tags,
            {
                "state": runtime.state,
                "status": reading.status,
                "previous": "" if previous is None else status_name(previous),
            },
        )

    # ------------------------------------------------------------ halting

    async def _stop_halting(
        self,
        client: MaccorClient,
        halts: Sequence[tuple[MaccorRuntime, Verdict]],
        received_at: float,
    ) -> None:
        """Persist "halting", stop, confirm, persist "halted" (the shared halt path)."""
        now_s = self._clock.now_s()
        for runtime, verdict in halts:
            runtime.halt = verdict
            runtime.halting = HaltProgress(verdict, now_s)
            runtime.to("halting")
            self._persist(runtime, verdict.detail)  # before the stop: a kill re-halts
        await self._stop_attempt(client, [r for r, _ in halts], received_at)

    async def _stop_attempt(
        self, client: MaccorClient, runtimes: Sequence[MaccorRuntime], received_at: float
    ) -> None:
        by_index = {r.spec.index: r for r in runtimes}

        async def stop(indexes: Collection[int]) -> None:
            # MacNet suspends one channel per request: the failing ones, one after another.
            for index in indexes:
                try:
                    await client.suspend(index)
                except CommandRefused as err:
                    # The read-back says whether it still runs; the reason is in the line.
                    log.error("%s: %s", self.name, err)  # noqa: TRY400
                by_index[index].halt_latencies_s.append(time.perf_counter() - received_at)

        async def still_running(indexes: Collection[int]) -> list[int]:
            return [i for i in indexes if (await client.state(i)).running]

        running = await stop_once(list(by_index), stop, still_running, in_flight=self._stops)
        now_s = self._clock.now_s()
        for runtime in runtimes:
            progress = runtime.halting
            assert progress is not None
            where = f"{self.name} channel {runtime.spec.channel}"
            alert = progress.attempted(runtime.spec.index in running, now_s, where)
            if alert is not None:
                await self._emit(runtime, alert)
                continue
            runtime.to("halted")
            self._persist(runtime, progress.verdict.detail)

    async def _report_halts(self, runtimes: Sequence[MaccorRuntime]) -> None:
        for runtime in runtimes:
            event = runtime.halting.announce() if runtime.halting is not None else None
            if event is not None:
                await self._emit(runtime, event)

    async def _finish_halts(self, client: MaccorClient) -> None:
        """Carry on halts left unconfirmed whose retry is due (a lost link, a restart
        that found "halting", a suspend the tester did not carry out)."""
        now_s = self._clock.now_s()
        due = []
        for runtime in self.channels.values():
            if runtime.state != "halting":
                continue
            if runtime.halting is None:
                runtime.halting = HaltProgress.restored(runtime.halt, runtime.detail, now_s)
            if runtime.halting.due(now_s):
                due.append(runtime)
        if due:
            await self._stop_attempt(client, due, time.perf_counter())
            await self._report_halts(due)

    # ------------------------------------------------------------ events and state

    async def _event(self, runtime: MaccorRuntime, kind: EventKind, *, detail: str = "") -> None:
        await self._emit(runtime, GuardEvent(kind, detail=detail))

    async def _emit(self, runtime: MaccorRuntime, event: GuardEvent) -> None:
        record = event.record(runtime.tags, time.time())
        self.events.append(record)
        self._outbox.put(record)
        if event.is_alert:
            await self._publisher.publish_event(record)

    def _persist(self, runtime: MaccorRuntime, detail: str) -> None:
        if detail:
            runtime.detail = detail
        if self._state_store is not None:
            self._state_store.save_state(runtime.tags, runtime.state, 0, runtime.detail)
