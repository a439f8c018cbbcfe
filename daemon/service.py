"""The background service: one process that guards every configured channel.

Structure (STYLE.md): one task group; in it one supervisor per instrument, one sink
task draining a bounded queue into InfluxDB (with its disk spool) or the embedded
SQLite store, the spool's own drain loop, the publisher's connection loop (MQTT, or
the log), and one task taking operator commands from the broker. A halt never waits
on any of them (see :mod:`cellguard.daemon.guard`).

On stop (SIGTERM/SIGINT, or the ``stop`` event) the supervisors end first, then the
queue is flushed into the sink, so nothing read from an instrument is lost.

Storage is never on the halt path (:mod:`cellguard.daemon.recording`): every write of
the sink goes through a :class:`Recorder` that turns a failing store, spool or disk
into "not recording" with an alert and retries; a deleted store file is noticed and
created again; a damaged one is moved aside at start. One daemon per ``state_dir``
(:mod:`cellguard.daemon.instance_lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cellguard.daemon.analytics_tap import AnalyticsTap, CycleRow, tap_settings
from cellguard.daemon.config import Config
from cellguard.daemon.control import serve_control
from cellguard.daemon.guard import gc_policy, priority
from cellguard.daemon.guard.links.neware import InstrumentSupervisor, drain_queue
from cellguard.daemon.guard.registry import HostGuard, Wiring, build_guards
from cellguard.daemon.influx import InfluxSink
from cellguard.daemon.instance_lock import StateDirLock, state_dir_lock
from cellguard.daemon.mqtt import Command, LogPublisher, MqttPublisher, Outbox, Publisher
from cellguard.daemon.recording import Recorder
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.store import DamagedStoreError, Store
from cellguard.drivers.clock import Clock, WallClock
from cellguard.drivers.neware import ChannelId

log = logging.getLogger(__name__)

QUEUE_SIZE = 200_000
# Pending halts are applied to the analytics after one to two of these periods, in
# download intervals: by then the recorded samples up to the halt have been fetched.
ANALYTICS_SETTLE_DOWNLOADS = 2.0


@dataclass
class Daemon:
    """What a running daemon is made of (tests and ``cellguard demo`` look inside)."""

    config: Config
    store: Store
    publisher: Publisher
    supervisors: list[InstrumentSupervisor]
    queue: asyncio.Queue[SampleRecord | EventRecord]
    influx: InfluxSink | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    instrument_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    tap: AnalyticsTap = field(default_factory=AnalyticsTap)
    # Host-driven instruments (a SCPI source-meter, a Modbus supply: cellguard runs them)
    # and Arbin cyclers: the guards whose channels are named "1", "3" ...
    hosts: list[HostGuard] = field(default_factory=list)
    recorder: Recorder | None = None
    clock: Clock = field(default_factory=WallClock)
    lock: StateDirLock | None = None  # one daemon per state_dir
    control_ready: asyncio.Event = field(default_factory=asyncio.Event)  # local commands

    def __post_init__(self) -> None:
        if self.recorder is None:
            self.recorder = Recorder(
                self.publisher,
                self.clock,
                on_recovery=self.store.resave_states,
                repair=self._repair,
            )

    async def _repair(self, err: Exception) -> None:
        """A store found damaged while running is moved aside and started afresh."""
        if not (isinstance(err, DamagedStoreError) and str(self.store.path) in str(err)):
            return
        aside = await self.store.move_aside_and_reopen()
        detail = (
            f"the store {self.store.path} is damaged ({err}): moved to {aside}, "
            "started an empty one with the channel states this daemon holds"
        )
        log.error("STORE DAMAGED: %s", detail)
        await self.recording.alert("unavailable", detail, subkind="store_damaged")

    @property
    def recording(self) -> Recorder:
        """The recorder every write of the sink goes through."""
        assert self.recorder is not None
        return self.recorder

    def host(self, name: str) -> HostGuard:
        for sup in self.hosts:
            if sup.name == name:
                return sup
        raise KeyError(name)

    def supervisor(self, name: str) -> InstrumentSupervisor:
        for sup in self.supervisors:
            if sup.name == name:
                return sup
        raise KeyError(name)

    async def write(self, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        """The sink task's write: store the batch (retried until it is, see Recorder),
        then advance the stored positions and feed the analytics. Never raises."""
        if not await self.recording.attempt(
            "writing samples and events", lambda: self._store(samples, events)
        ):
            # Only at stop: the batch is not stored, the positions stay where they
            # were, and the next start fetches these samples again.
            log.error(
                "stopping without storing %d samples and %d events (recorded samples "
                "are fetched again at the next start)",
                len(samples),
                len(events),
            )
            return
        # Written: only now may a restart resume after these samples (kill -9 safe).
        for sup in self.supervisors:
            sup.samples_stored(samples)
        for host in self.hosts:
            host.records_stored(samples, events)
        try:
            earlier = await self._resume_analytics(samples)
            rows = self.tap.feed(earlier + samples, events)
        except Exception:  # analytics must never stop the samples reaching the sink
            log.exception("the analytics tap failed on a batch; its cycles are missing")
            return
        await self.store_cycles(rows)

    async def _resume_analytics(self, samples: list[SampleRecord]) -> list[SampleRecord]:
        """Tests the tap meets for the first time go on from their stored cycles: the
        cycle numbers and the capacity continue across a restart of the daemon.

        Returns the stored samples between the last stored cycle and this batch (the
        half cycle a restart cut), to be fed first. Only the SQLite store holds them:
        with InfluxDB as the sample sink that half cycle is booked from the samples
        after the restart, its charge counted from the last cycle's end.
        """
        earlier: list[SampleRecord] = []
        for tags in self.tap.tests_to_resume(samples):
            stored = await self.store.query_cycles(
                tags.instrument, tags.channel, test_id=tags.test_id, limit=1
            )
            if not stored:
                continue
            last = stored[-1]
            self.tap.resume(tags, last)
            if self.influx is not None:
                continue
            first_s = min(
                s.test_time_s for s in samples if s.tags == tags and s.source == "recorded"
            )
            earlier += [
                s
                for s in await self.store.query_samples(
                    tags.instrument, tags.channel, since_unix_s=last.time_unix_s
                )
                if s.source == "recorded"
                and s.tags.test_id == tags.test_id
                and last.test_time_s < s.test_time_s < first_s
            ]
        return earlier

    async def _store(self, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        if self.influx is not None:
            await self.influx.write(samples, events)
            if events:  # events are kept locally too: `cellguard status` reads them
                await self.store.write([], events)
        else:
            await self.store.write(samples, events)

    async def store_cycles(self, rows: list[CycleRow]) -> None:
        """:meth:`write_cycles` through the recorder (retried; never raises)."""
        if rows:
            await self.recording.attempt("writing cycle rows", lambda: self.write_cycles(rows))

    async def write_cycles(self, rows: list[CycleRow]) -> None:
        """Per-cycle rows of the analytics tap: InfluxDB when configured, and SQLite
        always (``cellguard status``). InfluxDB first: a local disk that fails does
        not keep the rows from the server (a retry may send them twice; the server
        keeps one point per series and time)."""
        if not rows:
            return
        if self.influx is not None:
            await self.influx.write_cycles(rows)
        await self.store.write_cycles(rows)


@contextlib.asynccontextmanager
async def open_daemon(config: Config, *, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    """Open the store, outbox and sinks of a daemon (not yet running)."""
    clock = clock or WallClock()
    state_dir = config.daemon.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        lock = stack.enter_context(state_dir_lock(state_dir))
        store = await stack.enter_async_context(Store(state_dir, move_aside_damaged=True))
        publisher: Publisher
        if config.mqtt is None:
            publisher = LogPublisher()
        else:
            mq = config.mqtt
            outbox = stack.enter_context(Outbox.in_state_dir(state_dir))
            publisher = MqttPublisher(
                mq.host,
                mq.port,
                mq.topic_prefix,
                username=mq.username.reveal() if mq.username else None,
                password=mq.password.reveal() if mq.password else None,
                tls=mq.tls,
                ca_file=mq.ca_file,
                client_id=mq.client_id,
                outbox=outbox,
                allow_anonymous_commands=mq.allow_anonymous_commands,
            )
        influx = None
        if config.influxdb is not None:
            db = config.influxdb
            influx = await stack.enter_async_context(
                InfluxSink(
                    url=db.url,
                    org=db.org,
                    bucket=db.bucket,
                    token=db.token.reveal() if db.token else "",
                    state_dir=state_dir,
                    batch_lines=db.batch_size,
                    timeout_s=db.timeout_s,
                )
            )
        queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=QUEUE_SIZE)
        supervisors, hosts = build_guards(Wiring(config, queue, publisher, clock, store))
        yield Daemon(
            config,
            store,
            publisher,
            supervisors,
            queue,
            influx,
            tap=AnalyticsTap(tap_settings(config.channels)),
            hosts=hosts,
            clock=clock,
            lock=lock,
        )


@contextlib.asynccontextmanager
async def started_daemon(config: Config, *, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    """A daemon running in the background for the block; stopped and flushed after it."""
    stop = asyncio.Event()
    async with open_daemon(config, clock=clock) as daemon:
        runner = asyncio.create_task(run_daemon(daemon, stop=stop), name="daemon")
        try:
            await daemon.started.wait()
            yield daemon
        finally:
            stop.set()
            # The sinks close after this block: the runner must have flushed first.
            await asyncio.shield(runner)


async def run_daemon(daemon: Daemon, *, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; then flush what is queued into the sink."""
    async with asyncio.TaskGroup() as tg:
        background = [
            tg.create_task(daemon.publisher.run(), name="publisher"),
            tg.create_task(drain_queue(daemon.queue, daemon.write), name="sink"),
        ]
        if daemon.influx is not None:
            background.append(tg.create_task(daemon.influx.run(), name="spool-drain"))
        background.append(
            tg.create_task(
                daemon.recording.watch_state_dir(
                    daemon.store,
                    after_recreate=daemon.lock.reacquire_if_gone if daemon.lock else None,
                ),
                name="state_dir",
            )
        )
        background.append(tg.create_task(_settle_analytics(daemon), name="analytics"))
        if daemon.store.moved_aside is not None:
            await daemon.recording.alert(
                "unavailable",
                f"the store {daemon.store.path} was damaged: moved to "
                f"{daemon.store.moved_aside}, started with an empty one",
                subkind="store_damaged",
            )
        front = [
            tg.create_task(sup.run(), name=f"instrument {sup.name}") for sup in daemon.supervisors
        ]
        front.extend(
            tg.create_task(host.run(), name=f"instrument {host.name}") for host in daemon.hosts
        )
        front.append(tg.create_task(_serve_commands(daemon), name="commands"))
        front.append(
            tg.create_task(
                serve_control(
                    daemon.config.daemon.state_dir,
                    lambda command: _execute(daemon, command),
                    ready=daemon.control_ready,
                ),
                name="local control",
            )
        )
        daemon.instrument_tasks = dict(
            zip(
                [s.name for s in daemon.supervisors] + [h.name for h in daemon.hosts],
                front,
                strict=False,
            )
        )
        daemon.started.set()
        await stop.wait()
        for task in front:
            task.cancel()
        await asyncio.gather(*front, return_exceptions=True)
        # Everything read from the instruments reaches the sink before we leave; a
        # sink that still fails is tried once per batch, not waited for.
        daemon.recording.stop()
        await daemon.queue.join()
        await daemon.store_cycles(daemon.tap.close())
        for task in background:
            task.cancel()


def _settle_interval_s(config: Config) -> float:
    downloads = [
        max(i.download_interval_s, i.poll_interval_s)
        for i in config.instruments
        if i.driver == "neware"
    ]
    return ANALYTICS_SETTLE_DOWNLOADS * max([*downloads, 1.0])


async def _settle_analytics(daemon: Daemon) -> None:
    """Write the analytics row of a halt soon after it (AnalyticsTap.settle)."""
    interval_s = _settle_interval_s(daemon.config)
    while True:
        await daemon.clock.sleep(interval_s)
        if daemon.recording.recording:  # else the tap has not seen the samples yet
            await daemon.store_cycles(daemon.tap.settle())


async def _serve_commands(daemon: Daemon) -> None:
    async for command in daemon.publisher.commands():
        ok, detail = await _execute(daemon, command)
        await daemon.publisher.reply(command, ok, detail)


async def _execute(daemon: Daemon, command: Command) -> tuple[bool, str]:
    with contextlib.suppress(KeyError):
        host = daemon.host(command.instrument)
        return await host.command(command.channel.strip(), command.action, command.protocol)
    try:
        sup = daemon.supervisor(command.instrument)
        channel = ChannelId.parse(command.channel)
    except (KeyError, ValueError):
        return False, f"{command.instrument} {command.channel} is not watched by this daemon"
    if channel not in sup.channels:
        return False, f"{command.channel} is not watched on {command.instrument}"
    return await sup.command(channel, command.action, command.protocol)


async def serve(config: Config, *, stop: asyncio.Event, clock: Clock | None = None) -> None:
    """``cellguard run``: open and run the daemon until ``stop``."""
    # A long-running service: the collector's routine work after the polls, not in the
    # halt path (daemon/guard/gc_policy.py).
    gc_policy.apply_service_policy()
    running_at = priority.raise_priority()
    async with open_daemon(config, clock=clock) as daemon:
        # After the state_dir lock: a second copy says one line, why it cannot run.
        log.warning("cellguard starting (%s)\n%s", running_at, config.describe())
        for warning in config.warnings:
            log.warning("config %s: %s", config.source, warning)
        await run_daemon(daemon, stop=stop)
    log.warning("cellguard stopped")
