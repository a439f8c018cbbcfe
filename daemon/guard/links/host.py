"""Supervise a host-driven channel: cellguard runs the protocol, measures, judges, halts.

A SCPI source-meter or a Modbus supply has no sequencer of its own: the host decides
the set-point at every sample (:class:`~cellguard.protocols.script.HostRun`) and is the
recorder, so every sample the host measures is the recorded series. One
:class:`HostSupervisor` guards one such instrument (one channel) and its auxiliary
devices (a temperature chamber, a stack-pressure cell), whose readings join each
sample and may bound it (``AuxLimit``: halt when the chamber leaves its band).

The order at each sample is the same as on the Neware path: judge first, and when a
verdict says halt, the output goes off (shielded from cancellation) and is confirmed
off before anything else happens with the verdict; then the event, the alert, the
state. The run's position is persisted with every sample, so a restart resumes the
half cycle where it stood (neither repeated nor skipped) and never re-halts or
re-starts a channel that was halted, stopped or finished.

The host is the only recorder of a host-driven channel: a sample the sink has not
written yet exists nowhere else (no instrument history to fetch it from again). So
the saved state carries a journal of the samples and events not yet written; the
sink writer clears it (:meth:`HostSupervisor.records_stored`) and a restart hands
what is left to the sinks again, which keep each record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
from cellguard.daemon.guard.status import StatusPacer
from cellguard.daemon.records import ChannelTags, EventKind, EventRecord, SampleRecord
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CellguardError, ConfigError, InstrumentConnectionError
from cellguard.drivers.galvanostat import Galvanostat, GalvanostatInfo, Measurement
from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict, make_detector
from cellguard.protocols.script import (
    Action,
    Finished,
    HostRun,
    InstrumentCapability,
    OutputOff,
    SetAux,
    SourceCurrent,
    SourceVoltage,
    StepStarted,
    parse_protocol_text,
)
from cellguard.protocols.script import (
    Protocol as ScriptProtocol,
)

log = logging.getLogger(__name__)

HALT_CONFIRM_TRIES = 5
# How long a shutdown waits for the output-off to be answered.
SHUTDOWN_OFF_TIMEOUT_S = 5.0


class AuxReadingLike(Protocol):
    """What an auxiliary device returns (``cellguard.drivers.modbus.AuxReading``)."""

    @property
    def values(self) -> Mapping[str, float]: ...


class AuxSource(Protocol):
    """An auxiliary device: read named values (units in the names), set setpoints."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read(self) -> AuxReadingLike: ...

    async def set(self, name: str, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class AuxLimit:
    """Halt the channel when the aux reading ``name`` leaves ``[low, high]``."""

    name: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError(
                field=f"aux_limits.{self.name}",
                problem=f"need finite low < high, got {self.low!r} .. {self.high!r}",
            )

    def __str__(self) -> str:
        return f"{self.name} between {self.low:g} and {self.high:g}"


@dataclass(frozen=True)
class HostChannelSpec:
    """The one channel of a host-driven instrument: its cell, protocol and judge."""

    channel: str = "1"
    cell_type: str = "symmetric"
    interphase: str = ""
    mode: str = "monitor"  # "run": start ``protocol`` when first connected
    protocol: ScriptProtocol | None = None
    detector: DetectorSettings | None = None
    aux_limits: tuple[AuxLimit, ...] = ()
    # How often operator commands are looked at between samples (and while idle).
    command_interval_s: float = 1.0
    # Leave the output on when the daemon stops (default: off; see _at_shutdown).
    keep_output_on: bool = False


@dataclass
class HostState:
    """What a restart needs, persisted as the state's detail (JSON)."""

    state: ChannelState = "idle"  # see cellguard.daemon.guard.state
    seq: int = 0
    test_start_unix_s: float = math.nan
    test_time_s: float = 0.0
    position: dict[str, Any] | None = None
    protocol_text: str | None = None
    detail: str = ""
    # Samples and events handed to the sinks but not yet written (the journal).
    unsent: list[SampleRecord | EventRecord] = field(default_factory=list)

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "test_start_unix_s": None
            if math.isnan(self.test_start_unix_s)
            else self.test_start_unix_s,
            "test_time_s": self.test_time_s,
            "position": self.position,
            "protocol_text": self.protocol_text,
            "detail": self.detail,
        }
        if self.unsent:
            body["unsent"] = [_journal_entry(r) for r in self.unsent]
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_saved(cls, tags: ChannelTags, state: str, seq: int, detail: str) -> HostState:
        out = cls(state=parse_state(state, where=f"saved state of {tags.instrument}"), seq=seq)
        try:
            body = json.loads(detail) if detail.startswith("{") else {"detail": detail}
        except json.JSONDecodeError:
            body = {"detail": detail}
        start = body.get("test_start_unix_s")
        out.test_start_unix_s = float(start) if isinstance(start, int | float) else math.nan
        elapsed = body.get("test_time_s")
        out.test_time_s = float(elapsed) if isinstance(elapsed, int | float) else 0.0
        position = body.get("position")
        out.position = position if isinstance(position, dict) else None
        text = body.get("protocol_text")
        out.protocol_text = text if isinstance(text, str) else None
        out.detail = str(body.get("detail", ""))
        journal = body.get("unsent")
        for entry in journal if isinstance(journal, list) else []:
            try:
                out.unsent.append(_from_journal(tags, entry))
            except ValueError as err:
                log.error("%s %s: saved state: %s; skipped", tags.instrument, tags.channel, err)  # noqa: TRY400
        return out


def _journal_entry(record: SampleRecord | EventRecord) -> dict[str, Any]:
    if isinstance(record, SampleRecord):
        return {
            "sample": [
                record.time_unix_s,
                record.test_time_s,
                record.voltage_v,
                record.current_a,
                record.capacity_mah,
                record.step,
                record.cycle,
                record.seq,
                [list(pair) for pair in record.aux],
            ]
        }
    return {
        "event": {
            "kind": record.kind,
            "time_unix_s": record.time_unix_s,
            "fault": record.fault,
            "subkind": record.subkind,
            "detail": record.detail,
            "values": record.values,
            "event_id": record.event_id,
        }
    }


def _journal_key(record: SampleRecord | EventRecord) -> object:
    if isinstance(record, SampleRecord):
        return (record.time_unix_s, record.seq)
    return record.event_id


def _from_journal(tags: ChannelTags, entry: object) -> SampleRecord | EventRecord:
    """A journaled record; ``ValueError`` when the entry is not one we wrote."""
    try:
        if isinstance(entry, dict) and "sample" in entry:
            t, test_t, v, i, q, step, cycle, seq, aux = entry["sample"]
            return SampleRecord(
                tags,
                time_unix_s=float(t),
                test_time_s=float(test_t),
                voltage_v=float(v),
                current_a=float(i),
                capacity_mah=float(q),
                step=int(step),
                cycle=int(cycle),
                seq=int(seq),
                source="recorded",
                aux=tuple((str(k), float(x)) for k, x in aux),
            )
        if isinstance(entry, dict) and "event" in entry:
            e = entry["event"]
            return EventRecord(
                tags,
                kind=e["kind"],
                time_unix_s=float(e["time_unix_s"]),
                fault=str(e["fault"]),
                subkind=str(e["subkind"]),
                detail=str(e["detail"]),
                values={str(k): float(x) for k, x in e["values"].items()},
                event_id=str(e["event_id"]),
            )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        msg = f"a journal entry of an unknown form ({err})"
        raise ValueError(msg) from err
    msg = "a journal entry of an unknown form"
    raise ValueError(msg)


@dataclass
class _Run:
    """A protocol in progress on the channel."""

    protocol: ScriptProtocol
    text: str | None
    machine: HostRun
    t0_s: float  # clock time of test time 0 (shifted on resume)
    due_s: float | None


_HostLink = tuple[Galvanostat, dict[str, AuxSource]]


class HostSupervisor(InstrumentGuard[_HostLink, str]):
    """Runs, measures and guards one host-driven channel (and its aux devices)."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], Galvanostat],
        spec: HostChannelSpec,
        queue: SampleQueue,
        publisher: Publisher,
        *,
        clock: Clock,
        aux: Mapping[str, Callable[[], AuxSource]] | None = None,
        state: StateStore | None = None,
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, queue, publisher, clock=clock, state=state)
        self.spec = spec
        self._connect = connect
        self._aux_factories = dict(aux or {})
        self._wall_s = wall_s
        self.tags = ChannelTags(name, spec.channel, "", spec.interphase, spec.cell_type)
        self.settings = spec.detector or DetectorSettings(cell=spec.cell_type)  # type: ignore[arg-type]
        self.detector: Detector = make_detector(self.settings)
        self.info: GalvanostatInfo | None = None
        self.samples = 0
        self.halt: Verdict | None = None
        self.halting: HaltProgress | None = None  # the halt under way (until confirmed)
        self.last_aux: dict[str, float] = {}
        self._run: _Run | None = None
        self.host = HostState()
        self._status = StatusPacer()
        if state is not None:
            saved = state.load_state(name, spec.channel)
            if saved is not None:
                self.host = HostState.from_saved(self.tags, *saved)
        if self.host.unsent:
            # Left by a daemon that stopped before its sink wrote them (kill -9, power):
            # handed over again first; the sinks keep each record once.
            log.warning(
                "%s %s: %d record(s) saved before a crash go to the sinks again",
                name,
                spec.channel,
                len(self.host.unsent),
            )
            self._outbox.keep(self.host.unsent)

    # ------------------------------------------------------------ public

    @property
    def state(self) -> str:
        return self.host.state

    @property
    def channels(self) -> dict[str, HostSupervisor]:
        """The one channel, keyed as commands name it (for the daemon's dispatch)."""
        return {self.spec.channel: self}

    def parse_channel(self, text: str) -> str:
        return text.strip()

    async def command(
        self, channel: str, action: str, protocol_text: str | None = None
    ) -> tuple[bool, str]:
        """An operator command (stop, start [with a protocol script], pause, resume)."""
        if channel != self.spec.channel:
            return False, f"{channel} is not a channel of {self.name} (it has {self.spec.channel})"
        if protocol_text is not None and action != "start":
            return False, "a protocol goes only with start"
        return await self._queue_command(channel, action, protocol_text)

    # ------------------------------------------------------------ the loop

    def records_stored(
        self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]
    ) -> None:
        """The sink has durably written (or spooled) these: out of the journal.

        Called by the sink writer after each write, with every instrument's records.
        A kill between the write and this call leaves them journaled: handed over
        again at the restart, kept once by the sinks (by time and seq, by event id).
        """
        if not self.host.unsent:
            return
        written: set[object] = {
            (s.time_unix_s, s.seq)
            for s in samples
            if s.tags.instrument == self.name and s.tags.channel == self.spec.channel
        }
        written.update(e.event_id for e in events if e.tags.instrument == self.name)
        keep = [r for r in self.host.unsent if _journal_key(r) not in written]
        if len(keep) != len(self.host.unsent):
            self.host.unsent = keep
            self._persist()

    async def run(self) -> None:
        """Supervise forever: (re)connect with capped backoff, run, judge, halt."""
        self._outbox.flush()  # what a crash left in the journal
        await super().run()

    def _new_link(self) -> _HostLink:
        aux = {name: factory() for name, factory in self._aux_factories.items()}
        return self._connect(), aux

    async def _open(self, link: _HostLink) -> None:
        gal, aux = link
        self.info = await gal.connect()
        for device in aux.values():
            await device.connect()

    async def _session(self, link: _HostLink) -> None:
        gal = link[0]
        try:
            await self._guard(link)
        except asyncio.CancelledError:
            # The daemon stops (SIGINT, SIGTERM): finish the output's business before
            # the link closes, whatever cancels us again meanwhile.
            await asyncio.shield(self._at_shutdown(gal))
            raise

    async def _close(self, link: _HostLink) -> None:
        # The run (if any) stays in memory: the instrument most likely went on sourcing
        # its set-point while the link was down, so the first reading after the
        # reconnect integrates the time away into the step.
        gal, aux = link
        with contextlib.suppress(Exception):
            await gal.close()
        for device in aux.values():
            with contextlib.suppress(Exception):
                await device.close()

    async def _guard(self, link: _HostLink) -> None:
        gal, aux = link
        state = self.host.state
        if state == "halting":
            await self._halt_attempt(gal)
        elif state in ("halted", "stopped", "finished"):
            # Whatever happened while we were away, a cell we stopped stays stopped.
            await self._output_off_confirmed(gal)
        elif state == "running" and self._run is not None:
            await self._rejoin(gal, aux, self._run)
        elif state in ("running", "unavailable") and self.host.position is not None:
            await self._resume(gal, aux)
        elif state == "idle" and self.spec.mode == "run" and self.spec.protocol is not None:
            ok, detail = await self._start(gal, aux, self.spec.protocol, None)
            if not ok:
                log.error("%s %s: not started: %s", self.name, self.spec.channel, detail)
        while True:
            if self.host.state == "halting":
                await self._halt_attempt(gal)
            await self._run_commands(link)
            self._working()
            await self._publish_status()
            run = self._run
            if run is None or run.due_s is None:
                self._outbox.flush()
                await self._idle(link, self.spec.command_interval_s)
                continue
            wait_s = run.due_s - self._clock.now_s()
            if wait_s > 0:
                # Commands run at once while we wait; queued ones every command_interval_s.
                await self._idle(link, min(wait_s, self.spec.command_interval_s))
                if self._run is not run or self._clock.now_s() < (run.due_s or 0.0):
                    continue  # a command stopped or replaced the run meanwhile
            await self._sample(gal, aux, run)

    # ------------------------------------------------------------ one sample

    async def _sample(self, gal: Galvanostat, aux: Mapping[str, AuxSource], run: _Run) -> None:
        reading = await gal.measure()
        t_s = self._clock.now_s() - run.t0_s
        values = await self._read_aux(aux)
        machine = run.machine
        self._record(t_s, reading, machine, values)
        verdict = self.detector.feed(t_s, reading.voltage_v, reading.current_a)
        if verdict.severity != "halt":
            verdict = self._aux_verdict(t_s, values) or verdict
        if verdict.severity == "halt":
            await self._halt(gal, verdict)
            return
        if verdict.severity == "warn":
            await self._emit(GuardEvent.of_verdict("warn", verdict))
        actions = machine.observe(t_s, reading.voltage_v, reading.current_a, values)
        await self._apply(gal, aux, actions)
        run.due_s = None if machine.finished is not None else self._due(run)
        if self._run is run and machine.finished is None:
            self.host.position = dict(machine.position())
            self._persist()

    def _record(
        self,
        t_s: float,
        reading: Measurement,
        machine: HostRun,
        values: Mapping[str, float],
    ) -> None:
        self.host.seq += 1
        self.host.test_time_s = t_s
        self.samples += 1
        self._status.sample_seen(self._clock.now_s())
        sample = SampleRecord(
            self.tags,
            time_unix_s=self.host.test_start_unix_s + t_s,
            test_time_s=t_s,
            voltage_v=reading.voltage_v,
            current_a=reading.current_a,
            capacity_mah=machine.step_capacity_mah,
            step=machine.step_number,
            cycle=machine.cycle,
            seq=self.host.seq,
            source="recorded",
            aux=tuple(sorted(values.items())),
        )
        self._outbox.put(sample)
        # Saved with the state once this sample is judged and acted on (one write per
        # sample; the halt path saves it first thing): judging never waits for JSON.
        self._journal(sample)
        self._outbox.flush()

    async def _publish_status(self) -> None:
        """The retained status, kept current at a bounded rate (see StatusPacer); the
        host is the channel's sequencer, so "workstatus" says whether a run is on."""
        run = self._run
        running = run is not None and run.machine.finished is None
        workstatus = "working" if running else "idle"
        cycle = run.machine.cycle if run is not None else 0
        now_s = self._clock.now_s()
        if self._status.due(now_s, self.host.state, workstatus, cycle):
            body = self._status.status(
                now_s,
                self.host.state,
                workstatus,
                cycle,
                test_time_s=self.host.test_time_s,
                time_unix_s=time.time(),
            )
            await self._publisher.publish_status(self.tags, body)

    async def _read_aux(self, aux: Mapping[str, AuxSource]) -> dict[str, float]:
        values: dict[str, float] = {}
        for device in aux.values():
            reading = await device.read()
            values.update(reading.values)
        self.last_aux = values
        return values

    def _aux_verdict(self, t_s: float, values: Mapping[str, float]) -> Verdict | None:
        for limit in self.spec.aux_limits:
            value = values.get(limit.name)
            if value is None:
                continue
            if not limit.low <= value <= limit.high:
                return Verdict(
                    "halt",
                    kind="limit",
                    index=self.samples - 1,
                    t_s=t_s,
                    criterion=f"{limit.name} in band",
                    measured=value,
                    threshold=limit.high if value > limit.high else limit.low,
                    unit=limit.name.rsplit("_", 1)[-1],
                    detail=f"{limit.name} = {value:g} left its band "
                    f"{limit.low:g} .. {limit.high:g}",
                    subkind="aux",
                )
        return None

    def _due(self, run: _Run) -> float | None:
        due = run.machine.next_sample_due_s()
        return None if due is None else run.t0_s + due

    async def _apply(
        self, gal: Galvanostat, aux: Mapping[str, AuxSource], actions: Sequence[Action]
    ) -> None:
        for action in actions:
            if isinstance(action, SourceCurrent):
                await gal.source_current(action.current_a, compliance_v=action.compliance_v)
            elif isinstance(action, SourceVoltage):
                await gal.source_voltage(action.voltage_v, compliance_a=action.compliance_a)
            elif isinstance(action, OutputOff):
                await asyncio.shield(gal.output_off())
            elif isinstance(action, SetAux):
                await self._set_aux(aux, action)
            elif isinstance(action, StepStarted):
                log.info(
                    "%s %s: step %d %s (cycle %d)",
                    self.name,
                    self.spec.channel,
                    action.step_number,
                    action.label,
                    action.cycle,
                )
            elif isinstance(action, Finished):
                await self._finished(gal, action)

    async def _set_aux(self, aux: Mapping[str, AuxSource], action: SetAux) -> None:
        for device in aux.values():
            try:
                await device.set(action.name, action.value)
            except (KeyError, ConfigError):
                continue
            return
        msg = f"no auxiliary device of {self.name} has a settable {action.name!r}"
        raise ConfigError(field=f"{self.name}.aux", problem=msg)

    async def _finished(self, gal: Galvanostat, action: Finished) -> None:
        if action.outcome in {"limit", "aux_timeout"}:
            verdict = Verdict(
                "halt",
                kind="limit",
                index=self.samples - 1,
                t_s=self.host.test_time_s,
                criterion=action.outcome,
                measured=math.nan if action.value is None else action.value,
                detail=action.detail,
                subkind=action.outcome,
            )
            await self._halt(gal, verdict)
            return
        self._run = None
        self.host.position = None
        self._set_state("finished", action.detail)
        await self._event("finish", detail=action.detail)

    # ------------------------------------------------------------ halting

    async def _halt(self, gal: Galvanostat, verdict: Verdict) -> None:
        self.halt = verdict
        self.halting = HaltProgress(verdict, self._clock.now_s())
        self._run = None
        self.host.position = None
        # Persisted before the output goes off: a kill between the two re-halts.
        self._set_state("halting", verdict.detail)
        await self._halt_attempt(gal)

    async def _halt_attempt(self, gal: Galvanostat) -> None:
        """Output off (shielded), read back; "halted" only once it reads off.

        Left on, the halt stays "halting" and is tried again on the guard's schedule,
        with a ``stop_failed`` alert each time; the link's loss propagates (the next
        session goes on with it)."""
        now_s = self._clock.now_s()
        if self.halting is None:
            self.halting = HaltProgress.restored(self.halt, self.host.detail, now_s)
        progress = self.halting
        if not progress.due(now_s):
            return
        running = await _output_off_once(gal, self.spec.channel, self._stops)
        where = f"{self.name} {self.spec.channel}"
        alert = progress.attempted(running, self._clock.now_s(), where)
        if alert is not None:
            await self._emit(alert)
            return
        self._set_state("halted", progress.verdict.detail)
        announce = progress.announce()
        if announce is not None:
            await self._emit(announce)

    async def _at_shutdown(self, gal: Galvanostat) -> None:
        """Switch the output off as the daemon stops, unless configured to keep it on;
        the log says which (a cell left sourcing unguarded must never be a surprise)."""
        where = f"{self.name} {self.spec.channel}"
        if self.spec.keep_output_on:
            log.warning(
                "%s: daemon stopping; output LEFT ON as configured (keep_output_on = true): "
                "the cell is not guarded until the daemon runs again",
                where,
            )
            return
        try:
            async with asyncio.timeout(SHUTDOWN_OFF_TIMEOUT_S):
                await _output_off_once(gal, self.spec.channel, self._stops)
        except (CellguardError, TimeoutError) as err:
            log.error("%s: daemon stopping; could not switch the output off: %s", where, err)  # noqa: TRY400
            return
        log.warning(
            "%s: daemon stopping; output switched OFF (set keep_output_on = true to leave "
            "it on); a restart resumes the protocol where it stood",
            where,
        )

    async def _output_off_confirmed(self, gal: Galvanostat) -> None:
        """Output off and read back, for a channel that is not halting (a stop, a
        restart on a stopped channel); ``InstrumentConnectionError`` if it stays on."""
        for _ in range(HALT_CONFIRM_TRIES):
            if not await _output_off_once(gal, self.spec.channel, self._stops):
                return
        msg = f"the output stayed on after {HALT_CONFIRM_TRIES} output-off commands"
        raise InstrumentConnectionError(msg)

    # ------------------------------------------------------------ start, resume, commands

    def _capability(self) -> InstrumentCapability | None:
        info = self.info
        if info is None:
            return None
        return InstrumentCapability(
            current_range_ma=info.current_range_a * 1000.0,
            voltage_range_v=info.voltage_range_v,
            min_record_interval_s=info.min_sample_interval_s,
            max_steps=1_000_000,
            name=f"{info.vendor} {info.model}".strip(),
        )

    async def _start(
        self,
        gal: Galvanostat,
        aux: Mapping[str, AuxSource],
        protocol: ScriptProtocol,
        text: str | None,
    ) -> tuple[bool, str]:
        if self.host.state in ("running", "halting"):
            return False, "the channel is already running; stop it first"
        try:
            protocol.validate(self._capability())
            machine = HostRun(protocol, self._capability())
        except CellguardError as err:
            return False, f"protocol refused, nothing started: {err}"
        self.detector = make_detector(self.settings)
        self.halt = None
        self.halting = None
        self.host = HostState(
            state=move(self.host.state, "running", channel=f"{self.name} {self.spec.channel}"),
            seq=0,
            test_start_unix_s=self._wall_s(),
            protocol_text=text,
        )
        t0_s = self._clock.now_s()
        run = _Run(protocol, text, machine, t0_s, None)
        self._run = run
        self.tags = ChannelTags(
            self.name,
            self.spec.channel,
            f"{self.name}-{self.spec.channel}-{int(self.host.test_start_unix_s)}",
            self.spec.interphase,
            self.spec.cell_type,
        )
        actions = machine.start(0.0)
        self.host.position = dict(machine.position())
        self._persist(f"started protocol {protocol.name!r}")
        await self._event("start", detail=f"started protocol {protocol.name!r}")
        await self._apply(gal, aux, actions)
        # The first reading one record interval on (a reading taken the instant the
        # set-point is written tells nothing of the cell).
        run.due_s = self._due(run)
        return True, f"started {protocol.name!r}"

    async def _resume(self, gal: Galvanostat, aux: Mapping[str, AuxSource]) -> None:
        host = self.host
        text = host.protocol_text
        protocol = parse_protocol_text(text) if text is not None else self.spec.protocol
        if protocol is None or host.position is None:
            self._set_state("idle", "nothing to resume")
            return
        # Test time goes on from where it stood; the time away is not counted.
        t0_s = self._clock.now_s() - host.test_time_s
        machine, actions = HostRun.resume(
            protocol, self._capability(), host.position, host.test_time_s
        )
        run = _Run(protocol, text, machine, t0_s, None)
        self._run = run
        # The detector relearns: where in the half cycle the stream stands is known, but
        # the profile was lost with the process.
        self.detector = make_detector(self.settings)
        self._set_state("running", "resumed after a restart")
        await self._apply(gal, aux, actions)
        run.due_s = self._due(run)

    async def _rejoin(self, gal: Galvanostat, aux: Mapping[str, AuxSource], run: _Run) -> None:
        """Back after a lost link within this process: the run goes on where it stands;
        if the instrument lost its set-point meanwhile (a power cycle, a front-panel
        off), it is applied again."""
        reading = await gal.measure()
        setpoint = run.machine.setpoint
        if not reading.output_on and setpoint is not None:
            log.warning(
                "%s %s: the output was off after the reconnect; applying the set-point again",
                self.name,
                self.spec.channel,
            )
            await self._apply(gal, aux, [setpoint])
        run.due_s = min(run.due_s or self._clock.now_s(), self._clock.now_s())

    async def _execute(self, link: _HostLink, command: Command[str]) -> tuple[bool, str]:
        gal, aux = link
        return await self._command(gal, aux, command.action, command.protocol_text)

    async def _command(
        self, gal: Galvanostat, aux: Mapping[str, AuxSource], action: str, text: str | None
    ) -> tuple[bool, str]:
        if action == "start":
            if text is not None:
                try:
                    protocol = parse_protocol_text(text)
                except CellguardError as err:
                    return False, f"protocol refused, nothing started: {err}"
                return await self._start(gal, aux, protocol, text)
            if self.spec.protocol is None:
                return False, "no protocol configured for this channel; send one with start"
            return await self._start(gal, aux, self.spec.protocol, None)
        if action == "stop":
            await self._output_off_confirmed(gal)
            self._run = None
            self.host.position = None
            self._set_state("stopped", "stopped by an operator")
            await self._event("stop", detail="stopped by an operator command")
            return True, "stopped"
        return False, f"{action} is not supported on a host-driven channel (stop, then start)"

    # ------------------------------------------------------------ records

    def _set_state(self, state: ChannelState, detail: str = "") -> None:
        self.host.state = move(self.host.state, state, channel=f"{self.name} {self.spec.channel}")
        self._persist(detail)

    def _persist(self, detail: str = "") -> None:
        if detail:
            self.host.detail = detail
        if self._state_store is not None:
            self._state_store.save_state(
                self.tags, self.host.state, self.host.seq, self.host.to_json()
            )

    async def _event(self, kind: EventKind, *, detail: str = "") -> None:
        await self._emit(GuardEvent(kind, detail=detail))

    async def _emit(self, event: GuardEvent) -> None:
        record = event.record(self.tags, self._wall_s())
        self.events.append(record)
        self._outbox.put(record)
        self._journal(record)
        self._persist()
        self._outbox.flush()
        if event.is_alert:
            await self._publisher.publish_event(record)

    def _journal(self, record: SampleRecord | EventRecord) -> None:
        # Kept until the sink has it, saved with the state: this host is its only source.
        if self._state_store is not None:
            self.host.unsent.append(record)


async def _output_off_once(
    gal: Galvanostat, channel: str, in_flight: set[asyncio.Task[object]]
) -> bool:
    """One output-off, shielded, read back: True if the output still reads on."""

    async def off(_: Collection[str]) -> None:
        await gal.output_off()

    async def on(channels: Collection[str]) -> list[str]:
        return list(channels) if (await gal.measure()).output_on else []

    return bool(await stop_once([channel], off, on, in_flight=in_flight))
