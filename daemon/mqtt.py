"""MQTT: alerts, retained channel statuses, daemon availability, operator commands.

Everything the daemon wants to say goes first into the :class:`Outbox`, a small SQLite
file under ``state_dir``, and only then to the broker. The connection loop of
:class:`MqttPublisher` drains the outbox oldest first whenever it (re)connects and
whenever something new is added, and deletes a row only after the broker acknowledged
it (QoS 1). So an alert raised while the broker is down, or while the daemon restarts,
is published when both are back: at least once, with a unique id for deduplication.

Topics, for ``topic_prefix = "cellguard/lab1"``::

    cellguard/lab1/alerts/{instrument}/{channel}          halts and warns, QoS 1
    cellguard/lab1/status/{instrument}/{channel}          retained, QoS 1, latest wins
    cellguard/lab1/daemon                                 retained "online" / "offline"
    cellguard/lab1/command/{instrument}/{channel}         operator -> daemon
    cellguard/lab1/command_result/{instrument}/{channel}  daemon -> operator

Commands are trusted because of the broker, not because of anything in the message:
the shipped ACL (``deploy/mosquitto/acl``) lets only the ``operator`` user write to the
command topics and only the daemon's user read them. So a daemon that logs in without a
user name refuses every command unless ``allow_anonymous_commands`` says otherwise. This
module checks that a command is well formed and new (a ``request_id`` is executed once,
also across restarts: seen ids are kept, bounded, in the outbox file); whether the
channel exists and may do it is the supervisor's call. Refusals are answered on
``command_result`` and logged at a bounded rate, so spamming the topic floods neither
the log nor the outbox.

Without an ``[mqtt]`` section, :class:`LogPublisher` has the same interface and writes
alerts and statuses to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self, get_args

import aiomqtt

from cellguard.daemon.records import ChannelTags, EventRecord
from cellguard.daemon.store import move_aside
from cellguard.drivers.errors import CellguardError, ConfigError

__all__ = [
    "Command",
    "CommandAction",
    "CommandRejected",
    "LogPublisher",
    "MqttPublisher",
    "Outbox",
    "OutboxError",
    "OutboxMessage",
    "Publisher",
    "check_topic_level",
    "parse_command",
]

log = logging.getLogger(__name__)

CommandAction = Literal["stop", "pause", "resume", "start"]
COMMAND_ACTIONS: Final[frozenset[str]] = frozenset(get_args(CommandAction))

OUTBOX_FILENAME: Final = "outbox.sqlite"
DEFAULT_PUBLISH_TIMEOUT_S: Final = 10.0
DEFAULT_BACKOFF_INITIAL_S: Final = 0.5
DEFAULT_BACKOFF_MAX_S: Final = 30.0
DEFAULT_COMMAND_QUEUE_SIZE: Final = 64
# How long a clean stop may spend telling the broker "offline" before disconnecting.
GOODBYE_TIMEOUT_S: Final = 2.0
_DRAIN_BATCH: Final = 100
_MAX_COMMAND_BYTES: Final = 64 * 1024  # room for a protocol script
_MAX_REQUEST_ID_CHARS: Final = 128
_RECENT_REQUEST_IDS: Final = 256
# Seen request ids on disk: enough for years of operator commands, small enough to
# look up at once; an id older than the age bound may be executed again.
SEEN_REQUESTS_MAX: Final = 10_000
SEEN_REQUESTS_MAX_AGE_S: Final = 30 * 24 * 3600.0
# Refused commands: the first of a burst logged in full, the rest counted and summed
# up once per interval; at most this many answered on command_result per interval.
DEFAULT_REFUSAL_LOG_INTERVAL_S: Final = 60.0
REFUSAL_ANSWERS_PER_INTERVAL: Final = 20
ANONYMOUS_REFUSAL: Final = (
    "refused: the daemon logs in to the broker without a user, so anyone who can reach "
    "the broker could send this; give [mqtt] username/password (with the shipped ACL) "
    "or set allow_anonymous_commands = true"
)
# Alerts kept in memory while the outbox cannot be written (a full disk).
_UNSAVED_MAX: Final = 10_000
_ONLINE: Final = b"online"
_OFFLINE: Final = b"offline"


class OutboxError(CellguardError):
    """The MQTT outbox file could not be opened, read or written."""


def check_topic_level(value: str, field: str) -> str:
    """Return ``value`` if it can be one level of an MQTT topic, else raise ConfigError.

    Instrument and channel names become topic levels, so config validation should call
    this at start-up rather than let a publish fail later.
    """
    if not value or any(c in value for c in "/+#\x00"):
        raise ConfigError(
            field=field, problem=f"{value!r} cannot be an MQTT topic level: use no '/', '+', '#'"
        )
    return value


def _check_prefix(prefix: str) -> str:
    levels = prefix.split("/")
    if not prefix or prefix.startswith("$") or not all(levels):
        raise ConfigError(
            field="mqtt.topic_prefix",
            problem=f"{prefix!r} is not allowed: use levels separated by single '/', "
            "with no leading or trailing '/', e.g. 'cellguard/lab1'",
        )
    for level in levels:
        check_topic_level(level, "mqtt.topic_prefix")
    return prefix


# ---------------------------------------------------------------------------------------
# Outbox


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message waiting in the outbox."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_unix_s: float


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_unix_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_topic ON outbox (topic);
CREATE TABLE IF NOT EXISTS seen_requests (
    request_id TEXT PRIMARY KEY,
    seen_unix_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_requests_time ON seen_requests (seen_unix_s);
"""


class Outbox:
    """A durable FIFO of MQTT messages in its own SQLite file (WAL).

    A row is deleted only when :meth:`mark_sent` is called, i.e. after the broker
    acknowledged it, so nothing is lost across broker outages or daemon restarts.
    The methods block on disk I/O (a commit is an fsync); async callers run them in a
    thread, which is why one connection is shared under a lock.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._connect()
            except sqlite3.DatabaseError as err:
                if isinstance(err, sqlite3.OperationalError):  # locked, I/O: not damage
                    raise
                # Damaged: moved aside, not refused (a daemon that does not start
                # guards nothing); the alerts it held are in the moved file.
                aside = move_aside(self.path)
                log.error("OUTBOX DAMAGED: %s: %s; moved to %s", self.path, err, aside)  # noqa: TRY400
                self._db = self._connect()
        except (OSError, sqlite3.Error) as err:
            msg = (
                f"cannot open the MQTT outbox {self.path}: {err}; "
                "check that daemon.state_dir exists and is writable"
            )
            raise OutboxError(msg) from err

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: an alert acknowledged by add() survives a power cut, not only a crash.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def in_state_dir(cls, state_dir: Path | str) -> Self:
        """The outbox at ``{state_dir}/outbox.sqlite``."""
        return cls(Path(state_dir) / OUTBOX_FILENAME)

    @contextmanager
    def _locked(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as err:
                msg = f"cannot {what} the MQTT outbox {self.path}: {err}"
                raise OutboxError(msg) from err

    def add(
        self, topic: str, payload: bytes | str, qos: int, retain: bool, *, replace: bool = False
    ) -> int:
        """Store a message for publishing and return its id (ids grow with time).

        ``replace=True`` drops older pending messages on the same topic first (latest
        wins), for retained statuses.
        """
        body = payload.encode() if isinstance(payload, str) else payload
        with self._locked("write to") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    db.execute("DELETE FROM outbox WHERE topic = ?", (topic,))
                cursor = db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created_unix_s)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (topic, body, qos, int(retain), time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on a full disk; a second ROLLBACK would
                # raise and hide why the write failed.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def pending(self, limit: int = _DRAIN_BATCH) -> list[OutboxMessage]:
        """The oldest ``limit`` messages not yet acknowledged by the broker."""
        with self._locked("read") as db:
            rows = db.execute(
                "SELECT id, topic, payload, qos, retain, created_unix_s FROM outbox"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            OutboxMessage(
                id=r[0], topic=r[1], payload=r[2], qos=r[3], retain=bool(r[4]), created_unix_s=r[5]
            )
            for r in rows
        ]

    def mark_sent(self, message_id: int) -> None:
        """Forget a message the broker acknowledged (no-op if already gone)."""
        with self._locked("write to") as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))

    def first_time(
        self,
        request_id: str,
        now_unix_s: float | None = None,
        *,
        max_ids: int = SEEN_REQUESTS_MAX,
        max_age_s: float = SEEN_REQUESTS_MAX_AGE_S,
    ) -> bool:
        """Record a command's ``request_id``; False if it was recorded before.

        Kept bounded: ids older than ``max_age_s`` and all but the newest ``max_ids``
        are forgotten in the same transaction.
        """
        now_unix_s = time.time() if now_unix_s is None else now_unix_s
        with self._locked("write to") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "DELETE FROM seen_requests WHERE seen_unix_s < ?", (now_unix_s - max_age_s,)
                )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO seen_requests (request_id, seen_unix_s) VALUES (?, ?)",
                    (request_id, now_unix_s),
                )
                new = cursor.rowcount == 1
                if new:
                    db.execute(
                        "DELETE FROM seen_requests WHERE request_id IN (SELECT request_id"
                        " FROM seen_requests ORDER BY seen_unix_s DESC, rowid DESC"
                        " LIMIT -1 OFFSET ?)",
                        (max_ids,),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return new

    def seen_count(self) -> int:
        """How many request ids are remembered."""
        with self._locked("read") as db:
            (n,) = db.execute("SELECT COUNT(*) FROM seen_requests").fetchone()
        return int(n)

    def count(self) -> int:
        """How many messages wait for the broker."""
        with self._locked("read") as db:
            (n,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(n)

    def close(self) -> None:
        """Close the file; pending messages stay on disk for the next start."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# Commands (sans-IO)


@dataclass(frozen=True, slots=True)
class Command:
    """An operator's request for one channel, delivered by :meth:`MqttPublisher.commands`."""

    instrument: str
    channel: str
    action: CommandAction
    request_id: str
    # With "start": a protocol script (the TOML text of `cellguard protocol check`) to
    # run on the channel instead of its configured one.
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """Why a message on a command topic is not a command (answered on command_result)."""

    instrument: str
    channel: str
    reason: str
    request_id: str | None = None
    action: str | None = None  # as sent, when it was a string


def parse_command(
    prefix: str, topic: str, payload: bytes, *, retained: bool = False
) -> Command | CommandRejected | None:
    """Turn a message from ``{prefix}/command/+/+`` into a command or a rejection.

    Returns None for a topic that is not a command topic of this prefix (nothing to
    answer). Pure: no I/O, so it can be tested and fuzzed without a broker.
    """
    head = f"{prefix}/command/"
    if not topic.startswith(head):
        return None
    levels = topic[len(head) :].split("/")
    if len(levels) != 2 or not all(levels):
        return None
    instrument, channel = levels

    action_sent: str | None = None

    def reject(reason: str, request_id: str | None = None) -> CommandRejected:
        return CommandRejected(instrument, channel, reason, request_id, action_sent)

    if len(payload) > _MAX_COMMAND_BYTES:
        return reject(f"payload is {len(payload)} bytes; at most {_MAX_COMMAND_BYTES} allowed")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return reject('payload is not JSON; send {"action": "stop", "request_id": "..."}')
    if not isinstance(body, dict):
        return reject('payload must be a JSON object like {"action": "stop", "request_id": "..."}')
    raw_action = body.get("action")
    action_sent = raw_action[:32] if isinstance(raw_action, str) else None
    raw_id = body.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) else None
    if request_id is None or not 0 < len(request_id) <= _MAX_REQUEST_ID_CHARS:
        return reject(f"request_id must be a string of 1 to {_MAX_REQUEST_ID_CHARS} characters")
    unknown = sorted(set(body) - {"action", "request_id", "protocol"})
    if unknown:
        return reject(
            f"unknown key(s) {unknown}; allowed: action, request_id, protocol", request_id
        )
    action = body.get("action")
    if action not in COMMAND_ACTIONS:
        allowed = ", ".join(sorted(COMMAND_ACTIONS))
        return reject(f"action {action!r} is not one of: {allowed}", request_id)
    protocol = body.get("protocol")
    if protocol is not None and (action != "start" or not isinstance(protocol, str)):
        return reject("protocol (a TOML text) goes only with action 'start'", request_id)
    if retained:
        # A retained command would be replayed at every reconnect of the daemon.
        return reject("retained commands are refused: publish with retain=false", request_id)
    return Command(instrument, channel, action, request_id, protocol)


class RefusalLog:
    """Logs refused commands at a bounded rate: anyone may spam a command topic.

    The first refusal of a burst is logged in full; later ones within ``interval_s``
    are only counted, and the count is logged once the interval is over (by
    :meth:`tick`, which the publisher calls periodically, or by :meth:`flush` on stop).
    So a flood gives at most two lines per interval. :meth:`refused` also says whether
    the refusal may be answered on command_result, at most ``answers_per_interval``
    times per interval, so a flood does not fill the outbox ahead of alerts either.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = DEFAULT_REFUSAL_LOG_INTERVAL_S,
        answers_per_interval: int = REFUSAL_ANSWERS_PER_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._answers_per_interval = answers_per_interval
        self._clock = clock
        self._window_start_s: float | None = None
        self._answered = 0
        self._counted = 0  # refusals in this window not logged one by one
        self._latest = ""
        self.total = 0  # refusals since start, logged or not

    def refused(self, what: str) -> bool:
        """Note one refusal (``what`` names command and reason); True: answer it."""
        self.total += 1
        self.tick()
        if self._window_start_s is None:
            self._window_start_s = self._clock()
            self._answered = 1
            self._log.warning(
                "MQTT command refused: %s (further refusals in the next %g s are counted, "
                "not logged one by one)",
                what,
                self.interval_s,
            )
            return True
        self._counted += 1
        self._latest = what
        if self._answered < self._answers_per_interval:
            self._answered += 1
            return True
        return False

    def tick(self) -> None:
        """End the interval if it is over: log how many refusals it counted."""
        start_s = self._window_start_s
        if start_s is not None and self._clock() - start_s >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Log the count of this interval now (if any) and start afresh."""
        start_s = self._window_start_s
        if self._counted and start_s is not None:
            self._log.warning(
                "MQTT: %d more command(s) refused in %.0f s (latest: %s)",
                self._counted,
                self._clock() - start_s,
                self._latest,
            )
        self._window_start_s = None
        self._counted = 0
        self._answered = 0


class _CommandStream:
    """The async iterator behind ``commands()``: never ends, cancel the consumer."""

    def __init__(self, queue: asyncio.Queue[Command]) -> None:
        self._queue = queue

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Command:
        return await self._queue.get()


class _NoCommands:
    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Command:
        raise StopAsyncIteration


# ---------------------------------------------------------------------------------------
# Publishers


class Publisher(Protocol):
    """What the supervisor needs from an alert publisher (MQTT or log)."""

    async def run(self, *, ready: asyncio.Event | None = None) -> None: ...
    async def publish_event(self, event: EventRecord) -> None: ...
    async def publish_status(self, tags: ChannelTags, status: dict[str, Any]) -> None: ...
    def commands(self) -> AsyncIterator[Command]: ...
    async def reply(self, command: Command, ok: bool, detail: str = "") -> None: ...


def _status_payload(tags: ChannelTags, status: dict[str, Any]) -> str:
    body = {"instrument": tags.instrument, "channel": tags.channel, "test_id": tags.test_id}
    body.update(status)
    return json.dumps(body, sort_keys=True, allow_nan=False, default=str)


def _result_payload(action: str | None, request_id: str | None, ok: bool, detail: str) -> str:
    body = {
        "request_id": request_id,
        "action": action,
        "ok": ok,
        "detail": detail,
        "time_unix_s": time.time(),
    }
    return json.dumps(body, sort_keys=True)


class MqttPublisher:
    """Publishes alerts and statuses through the :class:`Outbox`, receives commands.

    :meth:`run` is the connection loop and must run as a supervised task for the
    daemon's lifetime; the other methods may be called whether or not it is connected.

    ``client_id`` must be unique per daemon: the broker disconnects an older
    connection with the same id. Sessions are clean on purpose, so commands sent while
    the daemon is offline are dropped by the broker rather than replayed later.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_prefix: str,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: Path | None = None,
        client_id: str,
        outbox: Outbox,
        publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S,
        backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        keepalive_s: int = 30,
        command_queue_size: int = DEFAULT_COMMAND_QUEUE_SIZE,
        allow_anonymous_commands: bool = False,
        refusal_log_interval_s: float = DEFAULT_REFUSAL_LOG_INTERVAL_S,
    ) -> None:
        self.host = host
        self.port = port
        self.prefix = _check_prefix(topic_prefix)
        self.client_id = client_id
        self._username = username
        self._password = password
        # ca_file: a lab's own CA (self-signed brokers); hostname checks stay on.
        self._tls_context = ssl.create_default_context(cafile=ca_file) if tls else None
        self._outbox = outbox
        self._publish_timeout_s = publish_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._keepalive_s = keepalive_s
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._commands: asyncio.Queue[Command] = asyncio.Queue(maxsize=command_queue_size)
        # Only the ACL authenticates a command; without a user name there is none.
        self.commands_refused = username is None and not allow_anonymous_commands
        # A cache in front of the outbox's seen_requests, and the record while the
        # outbox cannot be written.
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        self.refusals = RefusalLog(log, interval_s=refusal_log_interval_s)
        # Messages the outbox could not store (disk full, state_dir gone): kept in
        # memory, newest last, and published before the outbox's (lost on kill -9).
        self._unsaved: deque[tuple[str, str, bool]] = deque(maxlen=_UNSAVED_MAX)
        self._outbox_failing = False
        self.kept_in_memory = 0  # messages that went through memory, not the outbox

    # -- topics ---------------------------------------------------------------------------

    @property
    def availability_topic(self) -> str:
        """Retained "online" while connected; "offline" by last will or clean stop."""
        return f"{self.prefix}/daemon"

    def alert_topic(self, tags: ChannelTags) -> str:
        return self._channel_topic("alerts", tags.instrument, tags.channel)

    def status_topic(self, tags: ChannelTags) -> str:
        return self._channel_topic("status", tags.instrument, tags.channel)

    def command_result_topic(self, instrument: str, channel: str) -> str:
        return self._channel_topic("command_result", instrument, channel)

    def _channel_topic(self, kind: str, instrument: str, channel: str) -> str:
        check_topic_level(instrument, "instrument")
        check_topic_level(channel, "channel")
        return f"{self.prefix}/{kind}/{instrument}/{channel}"

    # -- what the supervisor calls ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a session with the broker is up right now."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once a session is up (the caller bounds the wait)."""
        await self._connected.wait()

    async def publish_event(self, event: EventRecord) -> None:
        """Queue an alert (QoS 1) on ``{prefix}/alerts/{instrument}/{channel}``.

        Returns once the alert is on disk, not when the broker has it.
        """
        await self._enqueue(self.alert_topic(event.tags), event.to_json(), retain=False)

    async def publish_status(self, tags: ChannelTags, status: dict[str, Any]) -> None:
        """Queue the channel's retained status; older pending statuses are dropped."""
        payload = _status_payload(tags, status)
        await self._enqueue(self.status_topic(tags), payload, retain=True, replace=True)

    def commands(self) -> AsyncIterator[Command]:
        """Valid commands, in arrival order; the iterator ends only by cancellation."""
        return _CommandStream(self._commands)

    @property
    def commands_waiting(self) -> int:
        """Accepted commands not yet taken from :meth:`commands`."""
        return self._commands.qsize()

    async def reply(self, command: Command, ok: bool, detail: str = "") -> None:
        """Answer a command on ``{prefix}/command_result/{instrument}/{channel}``."""
        topic = self.command_result_topic(command.instrument, command.channel)
        payload = _result_payload(command.action, command.request_id, ok, detail)
        await self._enqueue(topic, payload, retain=False)

    async def _enqueue(
        self, topic: str, payload: str, *, retain: bool, replace: bool = False
    ) -> None:
        try:
            await asyncio.to_thread(self._outbox.add, topic, payload, 1, retain, replace=replace)
        except OutboxError as err:
            # An alert must go out even when the disk cannot keep it: a full disk
            # never stops the halt path, and is itself alerted on.
            if not self._outbox_failing:
                log.error(  # noqa: TRY400 - the cause is in the message
                    "%s; alerts are kept in memory until it can be written", err
                )
            self._outbox_failing = True
            self.kept_in_memory += 1
            if replace:
                self._unsaved = deque(
                    (m for m in self._unsaved if m[0] != topic), maxlen=_UNSAVED_MAX
                )
            self._unsaved.append((topic, payload, retain))
        else:
            if self._outbox_failing:
                log.warning("the MQTT outbox %s can be written again", self._outbox.path)
            self._outbox_failing = False
        self._wake.set()

    @property
    def unsaved(self) -> int:
        """Messages waiting in memory because the outbox could not store them."""
        return len(self._unsaved)

    # -- the connection loop ---------------------------------------------------------------

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Connect, drain the outbox, receive commands; reconnect forever with backoff.

        ``ready`` is set after the first successful connection (online published,
        commands subscribed). Do not make halts wait for it: alerts queue in the
        outbox meanwhile. Returns only by cancellation, after a clean stop has
        published "offline" (a clean disconnect does not fire the last will).
        """
        try:
            await self._run(ready)
        finally:
            self.refusals.flush()  # a burst's count is not lost on stop

    async def _run(self, ready: asyncio.Event | None) -> None:
        delay_s = self._backoff_initial_s
        failures = 0
        stopping = False
        while True:
            client = aiomqtt.Client(
                self.host,
                self.port,
                username=self._username,
                password=self._password,
                identifier=self.client_id,
                clean_session=True,
                keepalive=self._keepalive_s,
                timeout=self._publish_timeout_s,
                tls_context=self._tls_context,
                will=aiomqtt.Will(self.availability_topic, _OFFLINE, qos=1, retain=True),
            )
            try:
                async with client:
                    _reraise_swallowed_cancel()
                    if failures:
                        log.warning(
                            "MQTT broker %s:%d reachable again after %d failed attempt(s); "
                            "%d message(s) waiting in the outbox",
                            self.host,
                            self.port,
                            failures,
                            self._outbox.count(),
                        )
                    else:
                        log.info("MQTT connected to %s:%d", self.host, self.port)
                    failures = 0
                    delay_s = self._backoff_initial_s
                    try:
                        await self._session(client, ready)
                    except asyncio.CancelledError:
                        stopping = True
                        raise
            except (aiomqtt.MqttError, OSError) as err:  # OSError covers TimeoutError
                if stopping:
                    # The DISCONNECT after our goodbye failed; we are still stopping.
                    raise asyncio.CancelledError from err
                if failures == 0:
                    log.warning(
                        "MQTT broker %s:%d unavailable (%s); alerts are kept in %s and "
                        "published when it returns; retrying every ≤%.1f s",
                        self.host,
                        self.port,
                        _describe(err),
                        self._outbox.path,
                        self._backoff_max_s,
                    )
                failures += 1
            finally:
                self._connected.clear()
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self._backoff_max_s)

    async def _session(self, client: aiomqtt.Client, ready: asyncio.Event | None) -> None:
        """One connection: announce, subscribe, then drain and read until it breaks."""
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                await client.publish(
                    self.availability_topic, _ONLINE, qos=1, retain=True, timeout=math.inf
                )
                granted = await client.subscribe(
                    f"{self.prefix}/command/+/+", qos=1, timeout=math.inf
                )
            if any(_refused(code) for code in granted):
                log.error(
                    "MQTT broker refused the subscription to %s/command/+/+: commands "
                    "will not arrive; check the broker's ACL for user %r",
                    self.prefix,
                    self._username,
                )
            self._connected.set()
            if ready is not None:
                ready.set()
            self._wake.set()  # drain whatever waited for this connection
            await _until_first_fails(
                self._read_commands(client), self._drain(client), self._tick_refusals()
            )
        except asyncio.CancelledError:
            await asyncio.shield(self._goodbye(client))
            raise

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Clean stop: say "offline" ourselves, briefly, before the DISCONNECT."""
        self._connected.clear()
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await client.publish(
                    self.availability_topic, _OFFLINE, qos=1, retain=True, timeout=math.inf
                )
        except (aiomqtt.MqttError, OSError, TimeoutError) as err:
            log.info("MQTT could not publish 'offline' on stop (%s)", _describe(err))

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            while self._unsaved:
                unsaved = self._unsaved[0]
                topic, payload, retain = unsaved
                async with asyncio.timeout(self._publish_timeout_s):
                    await client.publish(topic, payload, qos=1, retain=retain, timeout=math.inf)
                # Removed by value, not popleft(): a newer status may have replaced it
                # (and rebuilt the deque) while it was in flight, and popleft() would
                # then drop the next message unsent, an alert perhaps.
                with contextlib.suppress(ValueError):
                    self._unsaved.remove(unsaved)
            batch = await asyncio.to_thread(self._outbox.pending, _DRAIN_BATCH)
            for message in batch:
                async with asyncio.timeout(self._publish_timeout_s):
                    await client.publish(
                        message.topic,
                        message.payload,
                        qos=message.qos,
                        retain=message.retain,
                        timeout=math.inf,
                    )
                await asyncio.to_thread(self._outbox.mark_sent, message.id)
            if len(batch) < _DRAIN_BATCH:
                await self._wake.wait()

    async def _tick_refusals(self) -> None:
        """Log a burst's refusal count when its interval ends, even if the burst did."""
        while True:
            await asyncio.sleep(self.refusals.interval_s / 4)
            self.refusals.tick()

    async def _read_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parsed = parse_command(
                self.prefix, message.topic.value, message.payload, retained=message.retain
            )
            if parsed is None:
                continue
            if isinstance(parsed, Command):
                reason = await self._screen(parsed)
                if reason is not None:
                    parsed = CommandRejected(
                        parsed.instrument,
                        parsed.channel,
                        reason,
                        parsed.request_id,
                        parsed.action,
                    )
            if isinstance(parsed, CommandRejected):
                await self._refuse(parsed)
                continue
            # This loop is the queue's only producer: not full above, not full now.
            self._commands.put_nowait(parsed)
            log.info(
                "MQTT command %s for %s/%s (request %s)",
                parsed.action,
                parsed.instrument,
                parsed.channel,
                parsed.request_id,
            )

    async def _screen(self, command: Command) -> str | None:
        """Why a well-formed command is refused, or None to execute it.

        The request id is recorded last, so a command refused as anonymous or busy
        may be sent again with the same id.
        """
        if self.commands_refused:
            return ANONYMOUS_REFUSAL
        if self._commands.full():
            return "busy: too many pending commands; send it again later"
        if not await self._first_time(command.request_id):
            return (
                f"duplicate: request_id {command.request_id!r} was received before and is "
                "not executed again; send a new request_id to repeat the command"
            )
        return None

    async def _first_time(self, request_id: str) -> bool:
        """Record ``request_id``; False if it was seen, by this or an earlier run."""
        if request_id in self._recent_ids:
            return False
        self._recent_ids[request_id] = None
        if len(self._recent_ids) > _RECENT_REQUEST_IDS:
            self._recent_ids.popitem(last=False)
        try:
            return await asyncio.to_thread(self._outbox.first_time, request_id)
        except OutboxError as err:
            # A full disk must not block a stop command: the memory cache decides.
            log.error("%s; duplicate commands are only recognised since start", err)  # noqa: TRY400
            return True

    async def _refuse(self, rejected: CommandRejected) -> None:
        what = (
            f"{rejected.action or '?'} for {rejected.instrument}/{rejected.channel} "
            f"(request {rejected.request_id}): {rejected.reason}"
        )
        if not self.refusals.refused(what):
            return
        topic = self.command_result_topic(rejected.instrument, rejected.channel)
        payload = _result_payload(rejected.action, rejected.request_id, False, rejected.reason)
        await self._enqueue(topic, payload, retain=False)


def _reraise_swallowed_cancel() -> None:
    """Raise CancelledError if this task was asked to stop and the request got lost.

    aiomqtt waits with ``asyncio.wait_for``, which on Python 3.11 returns the result
    instead of raising when a cancel arrives just as the operation completes (CONNACK,
    DISCONNECT); the task still counts the request. Our own waits pass
    ``timeout=math.inf`` (a plain await) and bound themselves with ``asyncio.timeout``.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _until_first_fails(*loops: Coroutine[Any, Any, None]) -> None:
    """Run endless loops side by side until one raises; cancel the rest; re-raise.

    A hand-made TaskGroup: Python 3.11's TaskGroup leaves the parent task marked as
    cancelling after a child fails, which makes a lost connection look like a stop.
    """
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()  # the loop's error: the connection is gone


def _refused(code: object) -> bool:
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class LogPublisher:
    """The publisher when no ``[mqtt]`` is configured: alerts and statuses go to the log.

    Halts are logged at WARNING, everything else at INFO; ``commands()`` yields nothing.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(f"{__name__}.alerts")

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Nothing to connect: set ``ready`` and wait until cancelled."""
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()

    async def publish_event(self, event: EventRecord) -> None:
        level = logging.WARNING if event.kind == "halt" else logging.INFO
        self._log.log(
            level,
            "%s %s/%s %s: %s %s",
            event.kind.upper(),
            event.tags.instrument,
            event.tags.channel,
            event.fault or event.subkind or "-",
            event.detail,
            event.to_json(),
        )

    async def publish_status(self, tags: ChannelTags, status: dict[str, Any]) -> None:
        self._log.debug(
            "status %s/%s: %s", tags.instrument, tags.channel, _status_payload(tags, status)
        )

    def commands(self) -> AsyncIterator[Command]:
        """No command source without a broker: the iterator ends at once."""
        return _NoCommands()

    async def reply(self, command: Command, ok: bool, detail: str = "") -> None:
        self._log.info("command %s %s: %s", command.request_id, "ok" if ok else "failed", detail)
