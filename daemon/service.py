"""The background service: one process that guards every configured channel.

Structure (STYLE.md): one task group; in it one supervisor per instrument, one sink
task draining a bounded queue into InfluxDB (with its disk spool) or the embedded
SQLite store, the spool's own drain loop, the publisher's connection loop (MQTT, or
the log), and one task taking operator commands from the broker. A halt never waits
on any of them (see :mod:`cellguard.daemon.supervisor`).

On stop (SIGTERM/SIGINT, or the ``stop`` event) the supervisors end first, then the
queue is flushed into the sink, so nothing read from an instrument is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cellguard.daemon.config import Config, InstrumentSettings
from cellguard.daemon.influx import InfluxSink
from cellguard.daemon.mqtt import Command, LogPublisher, MqttPublisher, Outbox, Publisher
from cellguard.daemon.records import EventRecord, SampleRecord
from cellguard.daemon.store import Store
from cellguard.daemon.supervisor import ChannelSpec, InstrumentSupervisor, drain_queue
from cellguard.drivers.clock import Clock, WallClock
from cellguard.drivers.neware import ChannelId, NewareClient

log = logging.getLogger(__name__)

QUEUE_SIZE = 200_000


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

    def supervisor(self, name: str) -> InstrumentSupervisor:
        for sup in self.supervisors:
            if sup.name == name:
                return sup
        raise KeyError(name)

    async def write(self, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        if self.influx is not None:
            await self.influx.write(samples, events)
            if events:  # events are kept locally too: `cellguard status` reads them
                await self.store.write([], events)
        else:
            await self.store.write(samples, events)


def _specs(config: Config, instrument: str) -> list[ChannelSpec]:
    return [
        ChannelSpec(
            channel=ch.channel,
            cell_type=ch.cell.type,
            interphase=ch.cell.interphase or "",
            mode=ch.mode,
            protocol=ch.protocol,
            detector=ch.detector,
        )
        for ch in config.channels_of(instrument)
    ]


def _step_dir(inst: InstrumentSettings, state_dir: Path) -> Path:
    return Path(inst.step_file_dir) if inst.step_file_dir else state_dir / "steps"


def _connector(inst: InstrumentSettings) -> Callable[[], NewareClient]:
    return lambda: NewareClient(inst.host, inst.port, timeout_s=inst.timeout_s)


@contextlib.asynccontextmanager
async def open_daemon(config: Config, *, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    """Open the store, outbox and sinks of a daemon (not yet running)."""
    clock = clock or WallClock()
    state_dir = config.daemon.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store(state_dir))
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
                client_id=mq.client_id,
                outbox=outbox,
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
                )
            )
        queue: asyncio.Queue[SampleRecord | EventRecord] = asyncio.Queue(maxsize=QUEUE_SIZE)
        supervisors = [
            InstrumentSupervisor(
                inst.name,
                _connector(inst),
                _specs(config, inst.name),
                queue,
                publisher,
                clock=clock,
                poll_interval_s=inst.poll_interval_s,
                download_interval_s=max(inst.download_interval_s, inst.poll_interval_s),
                state=store,
                step_file_dir=Path(inst.step_file_dir)
                if inst.step_file_dir
                else state_dir / "steps",
            )
            for inst in config.instruments
        ]
        yield Daemon(config, store, publisher, supervisors, queue, influx)


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
        front = [
            tg.create_task(sup.run(), name=f"instrument {sup.name}") for sup in daemon.supervisors
        ]
        front.append(tg.create_task(_serve_commands(daemon), name="commands"))
        daemon.instrument_tasks = dict(
            zip((s.name for s in daemon.supervisors), front, strict=False)
        )
        daemon.started.set()
        await stop.wait()
        for task in front:
            task.cancel()
        await asyncio.gather(*front, return_exceptions=True)
        # Everything read from the instruments reaches the sink before we leave.
        await daemon.queue.join()
        for task in background:
            task.cancel()


async def _serve_commands(daemon: Daemon) -> None:
    async for command in daemon.publisher.commands():
        ok, detail = await _execute(daemon, command)
        await daemon.publisher.reply(command, ok, detail)


async def _execute(daemon: Daemon, command: Command) -> tuple[bool, str]:
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
    log.warning("cellguard starting\n%s", config.describe())
    async with open_daemon(config, clock=clock) as daemon:
        await run_daemon(daemon, stop=stop)
    log.warning("cellguard stopped")


def status_rows(states: Sequence[object]) -> list[tuple[str, ...]]:
    """Rows for ``cellguard status`` (instrument, channel, state, last seq, detail)."""
    rows: list[tuple[str, ...]] = []
    for s in states:
        rows.append(
            (
                str(getattr(s, "instrument", "")),
                str(getattr(s, "channel", "")),
                str(getattr(s, "state", "")),
                str(getattr(s, "test_id", "")),
                str(getattr(s, "last_seq", "")),
                str(getattr(s, "detail", ""))[:80],
            )
        )
    return rows
