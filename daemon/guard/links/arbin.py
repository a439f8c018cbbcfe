"""The channel guard over an Arbin cycler (MITS Pro's CTI): poll, judge, halt at once.

One :class:`ArbinSupervisor` owns one CTI connection and every watched channel on
it. Each poll is one ``GET_CHANNELS_INFO`` for every channel; each running channel's
value is judged by its detector, and a halt verdict sends ``STOP_SCHEDULE`` for that
channel before anything else is done with the poll (status, events, samples), then
reads the channel back until it no longer runs (the shared halt path of
:mod:`cellguard.daemon.guard.core`).

Monitor mode: MITS Pro runs its own schedule; cellguard judges and halts. Run mode:
cellguard assigns the configured schedule (a .sdx MITS Pro knows) and starts it,
once; a halted, stopped or finished channel is never started again by a reconnect.

No backfill: CTI reports the present value of each channel only; it has no history
by position as the Neware API's ``download`` has. What the cycler recorded while the
link was down (or the daemon was stopped) stays in MITS Pro's own results and is not
fetched or judged here: the stored series has a gap there, and the reconnect says so
in an ``available`` event with the gap's length.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
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
from cellguard.drivers.arbin import ArbinClient, ChannelReading, ChannelStatus, status_name
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CommandRefused
from cellguard.drivers.files import StepKind
from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict, make_detector

log = logging.getLogger(__name__)

__all__ = ["ArbinChannelSpec", "ArbinSupervisor", "step_kind_of_status"]

# "[3] 2: Step_B, Discharge": MITS Pro's "[cycle] step: name, type".
_STEP_AND_CYCLE = re.compile(r"^\s*\[(\d+)\]\s*(\d+)\s*:")
# How an instrument that ended a test says so, and the state the channel then takes.
_ENDED: dict[int, ChannelState] = {
    ChannelStatus.IDLE: "stopped",
    ChannelStatus.IDLE_FROM_MCU: "stopped",
    ChannelStatus.FINISHED: "finished",
    ChannelStatus.UNSAFE: "protected",
    ChannelStatus.ERROR: "protected",
    ChannelStatus.DAQ_MEMORY_UNSAFE: "protected",
}


def step_kind_of_status(status: int) -> StepKind:
    """The detectors' step kind of an Arbin channel status.

    Charge and discharge do not say whether the current or the voltage is held: the
    detector then tells from the data (UNKNOWN), as it does for files that do not say.
    """
    if status == ChannelStatus.REST:
        return StepKind.REST
    if status in (ChannelStatus.PAUSE, ChannelStatus.GO_PAUSE):
        return StepKind.PAUSE
    if status in (
        ChannelStatus.AC_IMPEDANCE,
        ChannelStatus.ACI_CELL,
        ChannelStatus.ACR,
        ChannelStatus.INTERNAL_RESISTANCE,
    ):
        return StepKind.IMPEDANCE
    if status == ChannelStatus.PULSE:
        return StepKind.OTHER
    return StepKind.UNKNOWN


@dataclass(frozen=True)
class ArbinChannelSpec:
    """A watched channel: which one (1-based, as MITS Pro shows it), what cell, what to do."""

    channel: int
    cell_type: str  # "symmetric" | "asymmetric" | "full"
    interphase: str = ""
    mode: str = "monitor"  # "monitor" | "run"
    schedule: str | None = None  # run mode: the .sdx to assign and start
    detector: DetectorSettings | None = None

    @property
    def index(self) -> int:
        """The channel's index on the wire (0-based)."""
        return self.channel - 1


@dataclass
class ArbinRuntime:
    spec: ArbinChannelSpec
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
    halt_latencies_s: list[float] = field(default_factory=list)

    def to(self, state: ChannelState) -> None:
        self.state = move(self.state, state, channel=f"{self.tags.instrument} {self.spec.channel}")


class ArbinSupervisor(InstrumentGuard[ArbinClient, int]):
    """Polls one Arbin cycler over CTI and guards its configured channels."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], ArbinClient],
        channels: Sequence[ArbinChannelSpec],
        queue: SampleQueue,
        publisher: Publisher,
        *,
        clock: Clock,
        poll_interval_s: float = 1.0,
        state: StateStore | None = None,
        voltage_range_v: float = 5.0,
    ) -> None:
        super().__init__(name, queue, publisher, clock=clock, state=state)
        self._connect = connect
        self.poll_interval_s = poll_interval_s
        self.polls = 0
        self.live_dropped = 0
        self.channels: dict[int, ArbinRuntime] = {}
        self.refused: dict[int, ArbinRuntime] = {}
        self._lost_at_s: float | None = None
        for spec in channels:
            settings = spec.detector or DetectorSettings(
                cell=spec.cell_type,  # type: ignore[arg-type]
                voltage_range_v=voltage_range_v,
            )
            # Live values only: the stream always joins a test in progress.
            settings = dataclasses.replace(settings, stream_starts_at_reversal=False)
            tags = ChannelTags(name, str(spec.channel), "", spec.interphase, spec.cell_type)
            runtime = ArbinRuntime(spec, tags, make_detector(settings), settings)
            if state is not None:
                saved = state.load_state(name, str(spec.channel))
                if saved is not None:
                    saved_state, _, runtime.detail = saved
                    runtime.state = parse_state(
                        saved_state, where=f"saved state of {name} {spec.channel}"
                    )
            self.channels[spec.channel] = runtime

    # ------------------------------------------------------------ the loop

    def _new_link(self) -> ArbinClient:
        return self._connect()

    async def _open(self, link: ArbinClient) -> None:
        await link.connect()

    async def _close(self, link: ArbinClient) -> None:
        await link.aclose()

    def _lost(self) -> None:
        if self._lost_at_s is None:
            self._lost_at_s = self._clock.now_s()
        for runtime in self.channels.values():
            if runtime.state == "running":
                runtime.to("unavailable")

    async def _session(self, client: ArbinClient) -> None:
        await self._check_channels(client)
        await self._finish_halts(client)
        readings = await client.channels_info()
        await self._after_outage(readings)
        await self._start_run_mode(client, readings)
        while True:
            await self._finish_halts(client)
            await self._run_commands(client)
            await self.poll_once(client)
            self._working()
            await self._idle(client, self.poll_interval_s)

    async def _check_channels(self, client: ArbinClient) -> None:
        """Refuse, alone, each configured channel the cycler does not have (at every
        connect: the cycler may be reconfigured); the others are guarded."""
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
                    f"{self.name} channel {channel} is UNGUARDED: the cycler has "
                    f"{count} channels (1..{count})"
                )
                log.error("%s", detail)
                await self._emit(runtime, GuardEvent("unguarded", detail=detail))

    async def _after_outage(self, readings: dict[int, ChannelReading]) -> None:
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
                    f"link back after {gap_s:.0f} s; CTI has no recorded history, so the "
                    "samples of the gap are not backfilled (they are in MITS Pro's own "
                    "results) and were not judged"
                ),
            )
            if reading is None or not reading.running:
                runtime.to("stopped")
                self._persist(runtime, "ended while the link was down")

    async def _start_run_mode(
        self, client: ArbinClient, readings: dict[int, ChannelReading]
    ) -> None:
        """Assign and start each run-mode channel's schedule, once: only from "idle"."""
        for runtime in self.channels.values():
            spec = runtime.spec
            if spec.mode != "run" or spec.schedule is None or runtime.state != "idle":
                continue
            reading = readings.get(spec.index)
            if reading is not None and reading.running:
                log.warning(
                    "%s channel %d runs %r already: not started, guarded as it runs",
                    self.name,
                    spec.channel,
                    reading.test_name,
                )
                continue
            await self._start(client, runtime, "run mode")

    async def _start(self, client: ArbinClient, runtime: ArbinRuntime, why: str) -> bool:
        spec = runtime.spec
        assert spec.schedule is not None
        runtime.starts += 1
        test_name = f"cg-{self.name}-{spec.channel}-{int(time.time())}-{runtime.starts}"[:72]
        try:
            await client.assign_schedule(spec.index, spec.schedule)
            await client.start(spec.index, test_name)
        except CommandRefused as err:
            detail = f"{self.name} channel {spec.channel}: start refused ({why}): {err}"
            log.error("%s", detail)  # noqa: TRY400 (the reason is in the line)
            await self._event(runtime, "stop", detail=detail)
            return False
        self._new_test(runtime, test_name)
        runtime.to("running")
        self._persist(runtime, f"started {spec.schedule!r} as {test_name!r} ({why})")
        await self._event(runtime, "start", detail=f"started {spec.schedule!r} ({why})")
        return True

    def _new_test(self, runtime: ArbinRuntime, test_name: str) -> None:
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
            return False, "an Arbin channel runs a MITS Pro schedule, not a protocol script"
        try:
            number = int(channel)
        except ValueError:
            return False, f"{channel!r} is not a channel number of {self.name}"
        return await self._queue_command(number, action, None)

    async def _execute(self, link: ArbinClient, command: Command[int]) -> tuple[bool, str]:
        runtime = self.channels.get(command.channel)
        if runtime is None:
            why = "refused at connect" if command.channel in self.refused else "not configured"
            return False, f"channel {command.channel} is not guarded on {self.name} ({why})"
        if command.action == "stop":
            await link.stop(runtime.spec.index)
            if runtime.state in ("halting", "halted"):
                return True, f"stopped (the channel is {runtime.state} already)"
            runtime.to("stopped")
            self._persist(runtime, "stopped by an operator")
            await self._event(runtime, "stop", detail="stopped by an operator command")
            return True, "stopped"
        if command.action == "start":
            if runtime.spec.schedule is None:
                return False, "only run-mode channels (with a schedule) are started by cellguard"
            if runtime.state in ("running", "halting"):
                return False, "the channel is already running"
            runtime.to("idle")
            ok = await self._start(link, runtime, "operator command")
            return ok, runtime.state
        return False, f"CTI has no {command.action}: use MITS Pro's Monitor and Control window"

    def records_stored(
        self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]
    ) -> None:
        """Nothing to keep: live values carry no position to resume from (no backfill)."""

    # ------------------------------------------------------------ the live stream

    async def poll_once(self, client: ArbinClient) -> None:
        """One channel-info request for every channel; judge each running one; stop at
        once every channel judged failing, before anything else of this poll."""
        self._outbox.flush()
        readings = await client.channels_info()
        received_at = time.perf_counter()
        self.polls += 1
        halts: list[tuple[ArbinRuntime, Verdict]] = []
        warns: list[tuple[ArbinRuntime, Verdict]] = []
        seen: list[tuple[ArbinRuntime, ChannelReading]] = []
        for runtime in self.channels.values():
            reading = readings.get(runtime.spec.index)
            if reading is None:
                continue
            seen.append((runtime, reading))
            if reading.test_name != runtime.test_name or (
                reading.running and reading.test_time_s < runtime.last_test_time_s
            ):
                self._new_test(runtime, reading.test_name)
            if runtime.halt is not None or not reading.running:
                continue
            if reading.test_time_s <= runtime.last_test_time_s:
                continue  # the same value as last poll: judged once
            runtime.last_test_time_s = reading.test_time_s
            kind = step_kind_of_status(reading.status)
            step, cycle = _step_and_cycle(reading.step_and_cycle)
            verdict = runtime.detector.feed(
                reading.test_time_s,
                reading.voltage_v,
                0.0 if kind is StepKind.PAUSE else reading.current_a,
                step,
                cycle,
                kind,
            )
            if verdict.severity == "halt":
                halts.append((runtime, verdict))
            elif verdict.severity == "warn":
                warns.append((runtime, verdict))
        if halts:
            await self._stop_halting(client, halts, received_at)
            await self._report_halts([r for r, _ in halts])
        for runtime, reading in seen:
            await self._track_status(runtime, reading)
            if reading.running:
                self._offer(runtime, reading)
        for runtime, verdict in warns:
            await self._emit(runtime, GuardEvent.of_verdict("warn", verdict))

    def _offer(self, runtime: ArbinRuntime, reading: ChannelReading) -> None:
        if reading.test_time_s <= runtime.last_offered_s:
            return  # the value of the last poll again: stored once
        runtime.last_offered_s = reading.test_time_s
        if math.isnan(runtime.test_start_unix_s):
            runtime.test_start_unix_s = time.time() - reading.test_time_s
        step, cycle = _step_and_cycle(reading.step_and_cycle)
        runtime.samples += 1
        sample = SampleRecord(
            runtime.tags,
            runtime.test_start_unix_s + reading.test_time_s,
            reading.test_time_s,
            reading.voltage_v,
            reading.current_a,
            (reading.charge_capacity_ah - reading.discharge_capacity_ah) * 1000.0,
            (reading.charge_energy_wh - reading.discharge_energy_wh) * 1000.0,
            step or 0,
            cycle or 0,
            0,
            "live",
        )
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.live_dropped += 1  # no position to fetch it again from: counted

    async def _track_status(self, runtime: ArbinRuntime, reading: ChannelReading) -> None:
        status = reading.status
        if status == runtime.last_status:
            if reading.running and runtime.state == "unavailable":
                runtime.to("running")
                self._persist(runtime, "running again after the link came back")
            return
        previous, runtime.last_status = runtime.last_status, status
        if reading.running:
            if runtime.state in ("idle", "unavailable", "stopped", "finished", "protected"):
                runtime.to("running")
                self._persist(runtime, f"running ({reading.status_name})")
            elif runtime.state == "halted" and runtime.halt is None:
                runtime.to("running")  # a new test on a halted channel (new test name)
                self._persist(runtime, f"a new test runs: {reading.test_name!r}")
        elif status in _ENDED and runtime.state not in ("halted", "halting", "idle"):
            ended = _ENDED[status]
            if runtime.state != ended:
                runtime.to(ended)
                self._persist(runtime, f"the cycler reports {reading.status_name}")
                kind: EventKind = {"finished": "finish", "protected": "protect"}.get(ended, "stop")  # type: ignore[assignment]
                await self._event(runtime, kind, detail=f"the cycler reports {reading.status_name}")
        await self._publisher.publish_status(
            runtime.tags,
            {
                "state": runtime.state,
                "status": reading.status_name,
                "previous": "" if previous is None else status_name(previous),
            },
        )

    # ------------------------------------------------------------ halting

    async def _stop_halting(
        self,
        client: ArbinClient,
        halts: Sequence[tuple[ArbinRuntime, Verdict]],
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
        self, client: ArbinClient, runtimes: Sequence[ArbinRuntime], received_at: float
    ) -> None:
        by_index = {r.spec.index: r for r in runtimes}

        async def stop(indexes: Collection[int]) -> None:
            # CTI stops one channel per request: the failing ones, one after another.
            for index in indexes:
                try:
                    await client.stop(index)
                except CommandRefused as err:
                    # The read-back says whether it still runs; the reason is in the line.
                    log.error("%s: %s", self.name, err)  # noqa: TRY400
                by_index[index].halt_latencies_s.append(time.perf_counter() - received_at)

        async def still_running(indexes: Collection[int]) -> list[int]:
            readings = await client.channels_info()
            return [i for i in indexes if i in readings and readings[i].running]

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

    async def _report_halts(self, runtimes: Sequence[ArbinRuntime]) -> None:
        for runtime in runtimes:
            event = runtime.halting.announce() if runtime.halting is not None else None
            if event is not None:
                await self._emit(runtime, event)

    async def _finish_halts(self, client: ArbinClient) -> None:
        """Carry on halts left unconfirmed whose retry is due (a lost link, a restart
        that found "halting", a stop the cycler did not carry out)."""
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

    async def _event(self, runtime: ArbinRuntime, kind: EventKind, *, detail: str = "") -> None:
        await self._emit(runtime, GuardEvent(kind, detail=detail))

    async def _emit(self, runtime: ArbinRuntime, event: GuardEvent) -> None:
        record = event.record(runtime.tags, time.time())
        self.events.append(record)
        self._outbox.put(record)
        if event.is_alert:
            await self._publisher.publish_event(record)

    def _persist(self, runtime: ArbinRuntime, detail: str) -> None:
        if detail:
            runtime.detail = detail
        if self._state_store is not None:
            self._state_store.save_state(runtime.tags, runtime.state, 0, runtime.detail)


def _step_and_cycle(text: str) -> tuple[int | None, int | None]:
    """(step, cycle) from MITS Pro's "[cycle] step: ..." text; None where it says nothing."""
    match = _STEP_AND_CYCLE.match(text)
    if match is None:
        return None, None
    return int(match.group(2)), int(match.group(1))
