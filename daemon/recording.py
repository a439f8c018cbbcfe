"""Recording is never on the halt path: a failing store, spool or disk degrades the
daemon to "not recording", never stops it.

The sink task hands each write (samples and events to the store or InfluxDB, cycle
rows) to :meth:`Recorder.attempt`. A write that fails for any reason (disk full, a
read-only or deleted directory, a damaged file, InfluxDB down *and* the spool
unwritable) is logged and alerted once as ``unavailable``/``recording`` on
``cellguard/recording`` naming what failed, then tried again with capped backoff;
the first write that succeeds raises ``available``/``recording`` ("recording
again"). Nothing escapes into the daemon's task group, so the supervisors keep
polling, judging and halting.

While a batch is retried the sink takes nothing new from the queue. The queue fills;
live values are then dropped and recorded samples are left on the instrument (the
supervisor's ``next_seq`` is not advanced past a sample it could not queue) and
fetched again by position. The position a restart resumes from (``stored_seq``)
advances only after a write succeeded, so nothing not stored is ever skipped.

On stop, :meth:`Recorder.stop` makes each remaining write a single try: the daemon
exits in bounded time, and what was not stored is fetched again at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from cellguard.daemon.records import ChannelTags, EventKind, EventRecord, new_event
from cellguard.drivers.clock import Clock

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
# How often the daemon checks that its store file still exists (state_dir deleted).
STATE_DIR_CHECK_S = 10.0
# The alert topic of the daemon's own recording: {prefix}/alerts/cellguard/recording.
RECORDING_TAGS = ChannelTags("cellguard", "recording")


class AlertSink(Protocol):
    """Where the recorder's alerts go (the daemon's publisher)."""

    async def publish_event(self, event: EventRecord) -> None: ...


class StoreFile(Protocol):
    """The part of the store the state_dir watch needs."""

    @property
    def path(self) -> object: ...

    def exists(self) -> bool: ...

    async def reopen(self) -> None: ...

    async def resave_states(self) -> None: ...


def describe(err: BaseException) -> str:
    """``OSError: [Errno 28] No space left on device`` (type and message, no traceback)."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class Recorder:
    """Retries the sink's writes until they succeed; alerts on the way down and up."""

    def __init__(
        self,
        publisher: AlertSink,
        clock: Clock,
        *,
        on_recovery: Callable[[], Awaitable[None]] | None = None,
        repair: Callable[[Exception], Awaitable[None]] | None = None,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self._publisher = publisher
        self._clock = clock
        self._on_recovery = on_recovery
        self._repair = repair
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stopping = asyncio.Event()
        self.recording = True
        self.failures = 0  # failed attempts since recording stopped
        self.outages = 0  # times recording stopped
        self.last_error = ""
        self._down_since_s = 0.0
        # Retries sleeping out their backoff on the clock now (the sink's, and the
        # state_dir watch's when it re-creates the store): see _backoff.
        self._backoffs = 0

    @property
    def waiting_to_retry(self) -> bool:
        """A failed write waits out its backoff: only the clock moves the sink on now.

        Everything else the sink does (a write on the store's thread) takes wall time,
        which a virtual clock does not wait for: code driving one (the fault suite) waits
        until the queue is written or this is true before moving time on.
        """
        return self._backoffs > 0

    def stop(self) -> None:
        """The daemon stops: from now on a failed write is tried once, not retried."""
        self._stopping.set()

    async def attempt(self, what: str, write: Callable[[], Awaitable[None]]) -> bool:
        """Run ``write`` until it succeeds (True), or once more failed after stop() (False).

        Never raises but CancelledError: any error of a sink (StoreError, OSError,
        OutboxError, a bug in a sink) means "not recorded now", never "stop guarding".
        """
        delay_s = self._backoff_initial_s
        while True:
            try:
                await write()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                await self._failed(what, err)
                if self._repair is not None:
                    await self._try_repair(err)
                if self._stopping.is_set():
                    return False
                await self._pause(delay_s)
                delay_s = min(delay_s * 2, self._backoff_max_s)
                continue
            if not self.recording:
                await self._recovered(what)
            return True

    async def alert(self, kind: EventKind, detail: str, *, subkind: str = "recording") -> None:
        """Publish an alert about recording; a publisher that fails too is only logged."""
        event = new_event(RECORDING_TAGS, kind, time.time(), subkind=subkind, detail=detail)
        try:
            await self._publisher.publish_event(event)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.error("the recording alert could not be published either: %s", describe(err))  # noqa: TRY400

    async def watch_state_dir(
        self,
        store: StoreFile,
        interval_s: float = STATE_DIR_CHECK_S,
        *,
        after_recreate: Callable[[], None] | None = None,
    ) -> None:
        """Notice a deleted store file (state_dir deleted), alert, and create it again.

        SQLite goes on writing into a deleted file without an error, so only looking
        finds it: everything written until now would be gone at the next start.
        """
        while True:
            await self._clock.sleep(interval_s)
            if store.exists():
                continue
            detail = (
                f"the store {store.path} was deleted while running (state_dir removed?); "
                "creating it again with the channel states this daemon holds; samples "
                "stored before now are gone with it"
            )
            log.error("STATE DIR DELETED: %s", detail)
            await self.alert("unavailable", detail, subkind="state_dir")
            if await self.attempt(f"re-creating {store.path}", store.reopen):
                await self.alert("available", f"{store.path} created again", subkind="state_dir")
            if after_recreate is not None:
                try:
                    after_recreate()  # the state_dir lock, taken again on a new file
                except Exception as err:  # a second daemon got in meanwhile: say so
                    log.error("after re-creating %s: %s", store.path, describe(err))  # noqa: TRY400
                    await self.alert("unavailable", describe(err), subkind="state_dir")

    async def _failed(self, what: str, err: BaseException) -> None:
        self.failures += 1
        self.last_error = describe(err)
        if not self.recording:
            log.debug("%s still failing (%d attempts): %s", what, self.failures, self.last_error)
            return
        self.recording = False
        self.outages += 1
        self._down_since_s = self._clock.now_s()
        detail = (
            f"NOT RECORDING: {what} failed: {self.last_error}; halting goes on, samples "
            f"wait on the instruments and are fetched again; retrying every "
            f"≤{self._backoff_max_s:g} s"
        )
        log.error("%s", detail)
        await self.alert("unavailable", detail)

    async def _recovered(self, what: str) -> None:
        down_s = self._clock.now_s() - self._down_since_s
        detail = (
            f"recording again: {what} succeeded after {self.failures} failed attempt(s) "
            f"over {down_s:.0f} s (last error: {self.last_error})"
        )
        self.recording = True
        self.failures = 0
        log.warning("%s", detail)
        if self._on_recovery is not None:
            # What failed to save meanwhile (channel positions) is written now.
            await self.attempt("saving the channel states", self._on_recovery)
        await self.alert("available", detail)

    async def _try_repair(self, err: Exception) -> None:
        """Let the daemon repair what it can (a damaged store is moved aside); a
        repair that fails is logged, and the write is simply tried again later."""
        assert self._repair is not None
        try:
            await self._repair(err)
        except asyncio.CancelledError:
            raise
        except Exception as repair_err:
            log.error("repair after %s failed: %s", describe(err), describe(repair_err))  # noqa: TRY400

    async def _pause(self, delay_s: float) -> None:
        """Wait ``delay_s`` on the daemon's clock, or until stop() (whichever is first)."""
        sleeper = asyncio.ensure_future(self._backoff(delay_s))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    async def _backoff(self, delay_s: float) -> None:
        # Flagged in the very step in which the clock takes the sleep (a virtual clock
        # registers it before its first await), and cleared as the clock wakes it: never
        # true while the sleep is not yet known to the clock, or already over.
        self._backoffs += 1
        try:
            await self._clock.sleep(delay_s)
        finally:
            self._backoffs -= 1
