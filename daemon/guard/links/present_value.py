"""The guard of a cycler that serves present values only (Arbin's CTI, Maccor's MacNet).

Such a cycler has no history by position (as the Neware API's ``download`` has): each
poll reads the value of each channel now, judges it once, stores it once, and a halt
stops the channel before anything else of the poll. What is the same for every such
cycler is here, once: run-mode start, operator commands, the outage note, the channel
check at connect, status tracking, and the halt path glue around
:mod:`cellguard.daemon.guard.core`. A link says only what its vendor does differently
(its verbs, its readings, its words) through the hooks below; its ``poll_once`` is its
own because how channels are read (all at once or one by one) decides when a halt
can be sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar

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
from cellguard.daemon.guard.ports import Publisher, SampleQueue, StateStore
from cellguard.daemon.records import ChannelTags, EventKind, EventRecord, SampleRecord
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CommandRefused
from cellguard.drivers.files import StepKind
from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict, make_detector

__all__ = ["PresentValueGuard", "PresentValueRuntime"]


class ChannelSpec(Protocol):
    """What the shared guard needs of a vendor's channel spec."""

    @property
    def channel(self) -> int: ...
    @property
    def cell_type(self) -> str: ...
    @property
    def interphase(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def detector(self) -> DetectorSettings | None: ...
    @property
    def index(self) -> int: ...


class Reading(Protocol):
    """What the shared guard needs of a vendor's reading of one channel."""

    @property
    def running(self) -> bool: ...
    @property
    def test_time_s(self) -> float: ...
    @property
    def step_time_s(self) -> float: ...
    @property
    def voltage_v(self) -> float: ...
    @property
    def current_a(self) -> float: ...


class Client(Protocol):
    """What the shared guard needs of a vendor's client."""

    @property
    def channel_count(self) -> int: ...
    async def connect(self) -> object: ...
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=Client)
S = TypeVar("S", bound=ChannelSpec)
R = TypeVar("R", bound=Reading)


@dataclass
class PresentValueRuntime(Generic[S]):
    spec: S
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
    # Tests told apart by test time going back, for readings that carry no test name.
    tests_seen: int = 0

    def to(self, state: ChannelState) -> None:
        self.state = move(self.state, state, channel=f"{self.tags.instrument} {self.spec.channel}")


class PresentValueGuard(InstrumentGuard[C, int], Generic[C, S, R]):
    """Polls one present-value cycler and guards its configured channels."""

    # The vendor's words and logger: messages and log records stay the vendor's own.
    _log: ClassVar[logging.Logger]
    _device: ClassVar[str]  # "cycler", "tester": how messages name the instrument
    _program_word: ClassVar[str]  # "schedule", "procedure": what run mode starts
    _no_protocol: ClassVar[str]  # the refusal of a protocol script
    _gap_note: ClassVar[str]  # why the gap of an outage is not backfilled
    _test_name_max: ClassVar[int]  # the longest test name the instrument takes
    # Status code of a channel whose test is over (or held) -> the state the guard takes.
    _ended: ClassVar[Mapping[int, ChannelState]]

    def __init__(
        self,
        name: str,
        connect: Callable[[], C],
        channels: Sequence[S],
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
        self.channels: dict[int, PresentValueRuntime[S]] = {}
        self.refused: dict[int, PresentValueRuntime[S]] = {}
        self._lost_at_s: float | None = None
        for spec in channels:
            settings = spec.detector or DetectorSettings(
                cell=spec.cell_type,  # type: ignore[arg-type]
                voltage_range_v=voltage_range_v,
            )
            # Live values only: the stream always joins a test in progress, polled on
            # this PC's clock.
            settings = dataclasses.replace(
                settings, stream_starts_at_reversal=False, polled_live=True
            )
            tags = ChannelTags(name, str(spec.channel), "", spec.interphase, spec.cell_type)
            runtime = PresentValueRuntime(spec, tags, make_detector(settings), settings)
            if state is not None:
                saved = state.load_state(name, str(spec.channel))
                if saved is not None:
                    saved_state, _, runtime.detail = saved
                    runtime.state = parse_state(
                        saved_state, where=f"saved state of {name} {spec.channel}"
                    )
            self.channels[spec.channel] = runtime

    # ------------------------------------------------------------ the vendor's hooks

    @abstractmethod
    async def _read(self, client: C) -> dict[int, R]:
        """The reading of every guarded channel, by wire index."""

    @abstractmethod
    async def poll_once(self, client: C) -> None:
        """One poll: read, judge, halt at once, then status, samples and warnings."""

    @abstractmethod
    def _program(self, spec: S) -> str | None:
        """The run-mode channel's schedule/procedure; None in monitor mode."""

    @abstractmethod
    def _busy_words(self, reading: R) -> str:
        """How the log says a run-mode channel found running already."""

    @abstractmethod
    async def _launch(self, client: C, runtime: PresentValueRuntime[S], test_name: str) -> str:
        """Start the channel's program as ``test_name``; a note for the persisted detail."""

    @abstractmethod
    async def _halt_channel(self, client: C, index: int) -> None:
        """The vendor's verb that takes a channel's output off (stop, suspend)."""

    @abstractmethod
    async def _still_running(self, client: C, indexes: Collection[int]) -> list[int]:
        """Those of ``indexes`` whose channel still runs, read back now."""

    @abstractmethod
    def _no_action(self, action: str) -> str:
        """The refusal of an operator action the vendor's link has not."""

    @abstractmethod
    def _step_kind(self, reading: R) -> StepKind: ...

    @abstractmethod
    def _step_and_cycle(self, reading: R) -> tuple[int | None, int | None]: ...

    @abstractmethod
    def _capacity_and_energy(self, reading: R) -> tuple[float, float]:
        """Net charge in Ah and net energy in Wh of the reading."""

    @abstractmethod
    def _status_code(self, reading: R) -> int: ...

    @abstractmethod
    def _status_text(self, reading: R) -> str: ...

    @abstractmethod
    def _status_name(self, status: int) -> str: ...

    @abstractmethod
    def _new_test_note(self, reading: R) -> str:
        """The persisted detail of a new test on a halted channel."""

    # ------------------------------------------------------------ the loop

    def _new_link(self) -> C:
        return self._connect()

    async def _open(self, link: C) -> None:
        await link.connect()

    async def _close(self, link: C) -> None:
        await link.aclose()

    def _lost(self) -> None:
        if self._lost_at_s is None:
            self._lost_at_s = self._clock.now_s()
        for runtime in self.channels.values():
            if runtime.state == "running":
                runtime.to("unavailable")

    async def _session(self, client: C) -> None:
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

    async def _check_channels(self, client: C) -> None:
        """Refuse, alone, each configured channel the instrument does not have (at every
        connect: it may be reconfigured); the others are guarded."""
        count = client.channel_count
        for runtime in [*self.channels.values(), *self.refused.values()]:
            channel = runtime.spec.channel
            present = 1 <= channel <= count
            if present and channel in self.refused:
                self.channels[channel] = self.refused.pop(channel)
                self._log.warning("%s channel %d: guarded again", self.name, channel)
            elif not present and channel not in self.refused:
                self.refused[channel] = self.channels.pop(channel)
                detail = (
                    f"{self.name} channel {channel} is UNGUARDED: the {self._device} has "
                    f"{count} channels (1..{count})"
                )
                self._log.error("%s", detail)  # the reason is in the line
                await self._emit(runtime, GuardEvent("unguarded", detail=detail))

    async def _after_outage(self, readings: dict[int, R]) -> None:
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
                runtime, "available", detail=f"link back after {gap_s:.0f} s; {self._gap_note}"
            )
            if reading is None or not reading.running:
                runtime.to("stopped")
                self._persist(runtime, "ended while the link was down")

    async def _start_run_mode(self, client: C, readings: dict[int, R]) -> None:
        """Start each run-mode channel's program, once: only from "idle"."""
        for runtime in self.channels.values():
            spec = runtime.spec
            if spec.mode != "run" or self._program(spec) is None or runtime.state != "idle":
                continue
            reading = readings.get(spec.index)
            if reading is not None and reading.running:
                self._log.warning(
                    "%s channel %d %s: not started, guarded as it runs",
                    self.name,
                    spec.channel,
                    self._busy_words(reading),
                )
                continue
            await self._start(client, runtime, "run mode")

    async def _start(self, client: C, runtime: PresentValueRuntime[S], why: str) -> bool:
        spec = runtime.spec
        program = self._program(spec)
        assert program is not None
        runtime.starts += 1
        test_name = f"cg-{self.name}-{spec.channel}-{int(time.time())}-{runtime.starts}"
        test_name = test_name[: self._test_name_max]
        try:
            note = await self._launch(client, runtime, test_name)
        except CommandRefused as err:
            detail = f"{self.name} channel {spec.channel}: start refused ({why}): {err}"
            self._log.error("%s", detail)  # the reason is in the line
            await self._event(runtime, "stop", detail=detail)
            return False
        self._new_test(runtime, test_name)
        runtime.to("running")
        self._persist(runtime, f"started {program!r} as {test_name!r} ({why}{note})")
        await self._event(runtime, "start", detail=f"started {program!r} ({why})")
        return True

    def _new_test(self, runtime: PresentValueRuntime[S], test_name: str) -> None:
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
            return False, self._no_protocol
        try:
            number = int(channel)
        except ValueError:
            return False, f"{channel!r} is not a channel number of {self.name}"
        return await self._queue_command(number, action, None)

    async def _execute(self, link: C, command: Command[int]) -> tuple[bool, str]:
        runtime = self.channels.get(command.channel)
        if runtime is None:
            why = "refused at connect" if command.channel in self.refused else "not configured"
            return False, f"channel {command.channel} is not guarded on {self.name} ({why})"
        if command.action == "stop":
            await self._halt_channel(link, runtime.spec.index)
            if runtime.state in ("halting", "halted"):
                return True, f"stopped (the channel is {runtime.state} already)"
            runtime.to("stopped")
            self._persist(runtime, "stopped by an operator")
            await self._event(runtime, "stop", detail="stopped by an operator command")
            return True, "stopped"
        if command.action == "start":
            if self._program(runtime.spec) is None:
                word = self._program_word
                return False, f"only run-mode channels (with a {word}) are started by cellguard"
            if runtime.state in ("running", "halting"):
                return False, "the channel is already running"
            runtime.to("idle")
            ok = await self._start(link, runtime, "operator command")
            return ok, runtime.state
        return False, self._no_action(command.action)

    def records_stored(
        self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]
    ) -> None:
        """Nothing to keep: live values carry no position to resume from (no backfill)."""

    # ------------------------------------------------------------ the live stream

    def _judge(self, runtime: PresentValueRuntime[S], reading: R) -> Verdict | None:
        """Feed a running channel's new value to its detector; None when there is none."""
        if runtime.halt is not None or not reading.running:
            return None
        if reading.test_time_s <= runtime.last_test_time_s:
            return None  # the same value as last poll: judged once
        runtime.last_test_time_s = reading.test_time_s
        kind = self._step_kind(reading)
        step, cycle = self._step_and_cycle(reading)
        return runtime.detector.feed(
            reading.test_time_s,
            reading.voltage_v,
            0.0 if kind is StepKind.PAUSE else reading.current_a,
            step,
            cycle,
            kind,
            # A poll misses a short step between two runs of one step (a loop): the
            # step's own time going back still tells the detector a new step began.
            step_time_s=reading.step_time_s,
        )

    async def _after_judging(
        self,
        seen: Sequence[tuple[PresentValueRuntime[S], R]],
        warns: Sequence[tuple[PresentValueRuntime[S], Verdict]],
    ) -> None:
        """What a poll does once its halts are sent: status, samples, then warnings."""
        for runtime, reading in seen:
            await self._track_status(runtime, reading)
            if reading.running:
                self._offer(runtime, reading)
        for runtime, verdict in warns:
            await self._emit(runtime, GuardEvent.of_verdict("warn", verdict))

    def _offer(self, runtime: PresentValueRuntime[S], reading: R) -> None:
        if reading.test_time_s <= runtime.last_offered_s:
            return  # the value of the last poll again: stored once
        runtime.last_offered_s = reading.test_time_s
        if math.isnan(runtime.test_start_unix_s):
            runtime.test_start_unix_s = time.time() - reading.test_time_s
        step, cycle = self._step_and_cycle(reading)
        capacity_ah, energy_wh = self._capacity_and_energy(reading)
        runtime.samples += 1
        sample = SampleRecord(
            runtime.tags,
            runtime.test_start_unix_s + reading.test_time_s,
            reading.test_time_s,
            reading.voltage_v,
            reading.current_a,
            capacity_ah * 1000.0,
            energy_wh * 1000.0,
            step or 0,
            cycle or 0,
            0,
            "live",
        )
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.live_dropped += 1  # no position to fetch it again from: counted

    async def _track_status(self, runtime: PresentValueRuntime[S], reading: R) -> None:
        status = self._status_code(reading)
        if status == runtime.last_status:
            if reading.running and runtime.state == "unavailable":
                runtime.to("running")
                self._persist(runtime, "running again after the link came back")
            return
        previous, runtime.last_status = runtime.last_status, status
        text = self._status_text(reading)
        if reading.running:
            if runtime.state in ("idle", "unavailable", "stopped", "finished", "protected"):
                runtime.to("running")
                self._persist(runtime, f"running ({text})")
            elif runtime.state == "halted" and runtime.halt is None:
                runtime.to("running")  # a new test on a halted channel
                self._persist(runtime, self._new_test_note(reading))
        elif status in self._ended and runtime.state not in ("halted", "halting", "idle"):
            ended = self._ended[status]
            if runtime.state != ended:
                runtime.to(ended)
                self._persist(runtime, f"the {self._device} reports {text}")
                kind: EventKind = {"finished": "finish", "protected": "protect"}.get(ended, "stop")  # type: ignore[assignment]
                await self._event(runtime, kind, detail=f"the {self._device} reports {text}")
        await self._publisher.publish_status(
            runtime.tags,
            {
                "state": runtime.state,
                "status": text,
                "previous": "" if previous is None else self._status_name(previous),
            },
        )

    # ------------------------------------------------------------ halting

    async def _stop_halting(
        self,
        client: C,
        halts: Sequence[tuple[PresentValueRuntime[S], Verdict]],
        received_at: float,
    ) -> None:
        """Persist "halting", stop, confirm, persist "halted" (the shared halt path)."""
        for runtime, verdict in halts:
            self._mark_halting(runtime, verdict)
        await self._stop_attempt(client, [r for r, _ in halts], received_at)

    def _mark_halting(self, runtime: PresentValueRuntime[S], verdict: Verdict) -> None:
        """What comes before a stop: "halting" persisted before the stop is written, so
        that a kill between the two halts the channel again at restart."""
        runtime.halt = verdict
        runtime.halting = HaltProgress(verdict, self._clock.now_s())
        runtime.to("halting")
        self._persist(runtime, verdict.detail)

    async def _stop_attempt(
        self, client: C, runtimes: Sequence[PresentValueRuntime[S]], received_at: float
    ) -> None:
        by_index = {r.spec.index: r for r in runtimes}

        async def stop(indexes: Collection[int]) -> None:
            # One channel per request: the failing ones, one after another.
            for index in indexes:
                try:
                    await self._halt_channel(client, index)
                except CommandRefused as err:
                    # The read-back says whether it still runs; the reason is in the line.
                    self._log.error("%s: %s", self.name, err)
                by_index[index].halt_latencies_s.append(time.perf_counter() - received_at)

        async def still_running(indexes: Collection[int]) -> list[int]:
            return await self._still_running(client, indexes)

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

    async def _report_halts(self, runtimes: Sequence[PresentValueRuntime[S]]) -> None:
        for runtime in runtimes:
            event = runtime.halting.announce() if runtime.halting is not None else None
            if event is not None:
                await self._emit(runtime, event)

    async def _finish_halts(self, client: C) -> None:
        """Carry on halts left unconfirmed whose retry is due (a lost link, a restart
        that found "halting", a stop the instrument did not carry out)."""
        due = halts_due(self.channels.values(), self._clock.now_s())
        if due:
            await self._stop_attempt(client, due, time.perf_counter())
            await self._report_halts(due)

    # ------------------------------------------------------------ events and state

    async def _event(
        self, runtime: PresentValueRuntime[S], kind: EventKind, *, detail: str = ""
    ) -> None:
        await self._emit(runtime, GuardEvent(kind, detail=detail))

    async def _emit(self, runtime: PresentValueRuntime[S], event: GuardEvent) -> None:
        record = event.record(runtime.tags, time.time())
        self.events.append(record)
        self._outbox.put(record)
        if event.is_alert:
            await self._publisher.publish_event(record)

    def _persist(self, runtime: PresentValueRuntime[S], detail: str) -> None:
        if detail:
            runtime.detail = detail
        if self._state_store is not None:
            self._state_store.save_state(runtime.tags, runtime.state, 0, runtime.detail)
