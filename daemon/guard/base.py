"""The loop every guarded instrument runs: connect, guard, and on any failure back off
and connect again. What a session does is the link's (Neware polling, a host-driven
protocol run); how the loop survives failures is here, once."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from cellguard.daemon.guard.core import Backoff
from cellguard.daemon.guard.ports import Outbox, Publisher, SampleQueue, StateStore
from cellguard.daemon.records import EventRecord
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CellguardError, InstrumentConnectionError

log = logging.getLogger(__name__)

L = TypeVar("L")  # the link: the driver objects of one session
K = TypeVar("K")  # how a channel is named on the instrument

ACTIONS = ("stop", "start", "pause", "resume")
# How long a closing session waits for a stop already sent off.
STOP_DRAIN_S = 10.0


@dataclass(frozen=True)
class Command(Generic[K]):
    """An operator command, run by the guard's loop between two polls or samples."""

    channel: K
    action: str  # one of ACTIONS
    protocol_text: str | None
    done: asyncio.Future[tuple[bool, str]]


class InstrumentGuard(ABC, Generic[L, K]):
    """One instrument's connection and the channels guarded over it."""

    def __init__(
        self,
        name: str,
        queue: SampleQueue,
        publisher: Publisher,
        *,
        clock: Clock,
        state: StateStore | None,
    ) -> None:
        self.name = name
        self._queue = queue
        self._publisher = publisher
        self._clock = clock
        self._state_store = state
        self._outbox = Outbox(queue)  # records that must all arrive, in order
        self.available = False
        self.events: list[EventRecord] = []
        self._commands: deque[Command[K]] = deque()
        # The link counts as recovered once a session has done its work (a poll, a
        # sample), not at connect: a session that fails at once backs off as well.
        self._backoff = Backoff(name, clock)
        # While the loop waits for its next poll or sample, commands run at once over
        # this link (an operator's stop must not wait a poll interval); _busy keeps
        # them and the loop's own work apart.
        self._idle_link: L | None = None
        self._busy = asyncio.Lock()
        # Stops under way (shielded): the link is closed only after them.
        self._stops: set[asyncio.Task[object]] = set()

    @abstractmethod
    def _new_link(self) -> L:
        """A fresh link (driver objects) for one session."""

    @abstractmethod
    async def _open(self, link: L) -> None:
        """Connect ``link``; the link errors of the drivers propagate."""

    @abstractmethod
    async def _session(self, link: L) -> None:
        """Guard over ``link`` until it fails (it never returns otherwise)."""

    @abstractmethod
    async def _close(self, link: L) -> None:
        """Close ``link``; never raises."""

    def _working(self) -> None:
        """A session did its work (called by the links): the recovery, logged once."""
        if self._backoff.failing_since_s is not None:
            self._backoff.recovered()

    def _lost(self) -> None:
        """The link failed: what the channels' states say about it."""

    async def _let_stops_finish(self) -> None:
        """Wait (bounded, shielded) for stops already sent off: a shutdown or a lost
        session must not close the link under a stop. Their outcome is read back by
        the next session ("halting" was persisted first)."""
        if self._stops:
            waiting = asyncio.ensure_future(asyncio.wait(set(self._stops), timeout=STOP_DRAIN_S))
            await asyncio.shield(waiting)

    @abstractmethod
    async def _execute(self, link: L, command: Command[K]) -> tuple[bool, str]:
        """Carry out one operator command over ``link``; ``(ok, detail)``."""

    async def _queue_command(
        self, channel: K, action: str, protocol_text: str | None
    ) -> tuple[bool, str]:
        """Queue a command for the guard's loop and wait for its outcome."""
        if action not in ACTIONS:
            return False, f"unknown action {action!r}"
        if not self.available:
            return False, f"{self.name} is unavailable (no link to the instrument)"
        done: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        command = Command(channel, action, protocol_text, done)
        if self._idle_link is not None:
            async with self._busy:
                link = self._idle_link
                if link is not None:  # still waiting between polls: run it now
                    await self._run_one(link, command)
                    return await done
        self._commands.append(command)
        return await done

    async def _run_commands(self, link: L) -> None:
        while self._commands:
            await self._run_one(link, self._commands.popleft())

    async def _run_one(self, link: L, command: Command[K]) -> None:
        try:
            result = await self._execute(link, command)
        except CellguardError as err:
            result = (False, str(err))
        if not command.done.done():
            command.done.set_result(result)

    async def _idle(self, link: L, duration_s: float) -> None:
        """Wait ``duration_s`` between polls or samples; a command arriving meanwhile
        runs at once, and the loop goes on only after it."""
        self._idle_link = link
        try:
            await self._clock.sleep(duration_s)
        finally:
            self._idle_link = None
        async with self._busy:
            pass  # a command that started while we waited has finished

    def _fail_commands(self) -> None:
        # Nobody waits forever on a command the lost link will never carry out.
        while self._commands:
            done = self._commands.popleft().done
            if not done.done():
                done.set_result((False, f"{self.name}: the link was lost"))

    async def run(self) -> None:
        """Guard forever: (re)connect with capped backoff, logged on change only."""
        backoff = self._backoff
        while True:
            link = self._new_link()
            try:
                await self._open(link)
                self.available = True
                await self._session(link)
            except InstrumentConnectionError as err:
                delay_s = backoff.failed(f"instrument unreachable: {err}")
                self._lost()
            except CellguardError as err:
                # A malformed reply, a refused command, a file that cannot be written:
                # drop the link and start over; never take the daemon (and the other
                # instruments) down.
                delay_s = backoff.failed(str(err))
                self._lost()
            except Exception as err:
                # A bug in the guard: logged with its traceback, and the instrument is
                # guarded again after the backoff rather than left unguarded for good.
                log.exception("%s: unexpected error, reconnecting", self.name)
                delay_s = backoff.failed(repr(err))
                self._lost()
            finally:
                self.available = False
                self._fail_commands()
                await self._let_stops_finish()
                await self._close(link)
            await self._clock.sleep(delay_s)
