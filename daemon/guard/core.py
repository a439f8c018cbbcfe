"""The parts of guarding a channel that do not depend on the instrument.

- :class:`Backoff`: the reconnect policy, which logs the first failure and the
  recovery, not every attempt (a link down for an hour is two lines, not 3,600).
- :class:`HaltProgress` and :func:`stop_once`: the halt path. "halting" is persisted
  before the stop goes out; the stop is shielded from cancellation (a shutdown or a
  lost task must not leave a failing cell running); the halt counts as done only
  when the instrument's status, read back, says the channel no longer runs. A stop
  answered but not carried out is retried on an escalating schedule, with a
  ``stop_failed`` alert at every retry, and never by sleeping in the loop that polls
  the other channels.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cellguard.daemon.guard.events import GuardEvent
from cellguard.drivers.clock import Clock
from cellguard.protocols.detectors import Verdict

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
# An unconfirmed stop is tried again after 1, 2, 4, ... s, at most this far apart.
STOP_RETRY_MIN_S = 1.0
STOP_RETRY_MAX_S = 60.0
STOP_FAILED = "stop failed — cell still running"

K = TypeVar("K")


class Backoff:
    """Capped exponential backoff of one instrument's link, logged on change only."""

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self.delay_s = BACKOFF_MIN_S
        self.failing_since_s: float | None = None
        self.failures = 0

    def failed(self, problem: str) -> float:
        """Note a failed session; the seconds to wait before the next attempt."""
        self.failures += 1
        if self.failing_since_s is None:
            self.failing_since_s = self._clock.now_s()
            log.error(
                "%s: %s (retrying with backoff, logged again on recovery)", self.name, problem
            )
        else:
            log.debug("%s: still failing: %s", self.name, problem)
        delay_s = self.delay_s
        self.delay_s = min(self.delay_s * 2, BACKOFF_MAX_S)
        return delay_s

    def recovered(self) -> None:
        """Note a working link; logs the recovery once after failures."""
        if self.failing_since_s is not None:
            log.warning(
                "%s: connection restored after %.0f s (%d failed attempt(s))",
                self.name,
                self._clock.now_s() - self.failing_since_s,
                self.failures,
            )
        self.failing_since_s = None
        self.failures = 0
        self.delay_s = BACKOFF_MIN_S


@dataclass
class HaltProgress:
    """A halt under way on one channel: what was judged, how its stop is going."""

    verdict: Verdict
    judged_at_s: float  # clock time of the verdict
    attempts: int = 0  # stops sent and read back
    next_try_s: float = -math.inf  # clock time of the next stop attempt
    confirmed: bool = False
    announced: bool = False  # the halt event is out (only once confirmed)

    @classmethod
    def restored(cls, verdict: Verdict | None, detail: str, now_s: float) -> HaltProgress:
        """A halt found "halting" (persisted by an earlier run, or left by a lost link):
        carried on with its verdict, or with the saved detail when the verdict is gone."""
        return cls(verdict or Verdict("halt", detail=detail or "halt carried over"), now_s)

    def due(self, now_s: float) -> bool:
        return not self.confirmed and now_s >= self.next_try_s

    def attempted(self, still_running: bool, now_s: float, where: str) -> GuardEvent | None:
        """Note a stop attempt read back; the ``stop_failed`` alert to send, or None
        when the instrument confirmed it (the halt is done: "halted" is next)."""
        self.attempts += 1
        if still_running:
            alert = self.not_confirmed(now_s)
            log.error("%s: %s", where, alert.detail)
            return alert
        self.confirmed = True
        log.warning("%s: HALTED — %s", where, self.verdict.detail)
        return None

    def announce(self) -> GuardEvent | None:
        """The halt event, once, after the instrument confirmed the stop."""
        if not self.confirmed or self.announced:
            return None
        self.announced = True
        return GuardEvent.of_verdict("halt", self.verdict)

    def not_confirmed(self, now_s: float) -> GuardEvent:
        """Note an attempt the instrument did not carry out; the alert to send.

        The alert repeats at every retry and escalates: the retries spread out
        (1, 2, 4 ... 60 s) while the time unconfirmed and the attempt count grow in it.
        """
        doublings = min(max(self.attempts - 1, 0), 16)  # 2**16 s is past the cap already
        self.next_try_s = now_s + min(STOP_RETRY_MIN_S * 2**doublings, STOP_RETRY_MAX_S)
        waited_s = now_s - self.judged_at_s
        return GuardEvent(
            "stop_failed",
            fault=self.verdict.kind,
            subkind=self.verdict.subkind,
            detail=(
                f"{STOP_FAILED}: the instrument did not stop the channel "
                f"(attempt {self.attempts}, {waited_s:.0f} s since the halt: "
                f"{self.verdict.detail}); stop it by hand"
            ),
            measured=self.verdict.measured,
            unit=self.verdict.unit or "V",
            test_time_s=self.verdict.t_s,
            attempt=self.attempts,
            unconfirmed_s=waited_s,
        )


async def stop_once(
    keys: Collection[K],
    stop: Callable[[Collection[K]], Coroutine[Any, Any, object]],
    still_running: Callable[[Collection[K]], Awaitable[Collection[K]]],
    *,
    in_flight: set[asyncio.Task[object]] | None = None,
) -> set[K]:
    """One attempt of the halt path: stop, shielded, then read back; the keys still running.

    The caller has persisted "halting" before this (a kill between the two re-halts on
    restart). The shield lets the stop reach the instrument even when the task that
    judged the fault is cancelled meanwhile (a shutdown, a lost sibling task); the
    stop's task is kept in ``in_flight`` so that the link is not closed under it.
    """
    task: asyncio.Task[object] = asyncio.ensure_future(stop(keys))
    if in_flight is not None:
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.shield(task)
    return set(await still_running(keys))


class _Halting(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def halt(self) -> Verdict | None: ...
    @property
    def detail(self) -> str: ...

    halting: HaltProgress | None


_R = TypeVar("_R", bound=_Halting)


def halts_due(runtimes: Iterable[_R], now_s: float) -> list[_R]:
    """The channels whose unconfirmed halt is due another stop: the link was lost as
    the stop went out, a restart found "halting", or the instrument did not carry the
    stop out. A halt is never forgotten; one found without its progress carries on
    from what was saved."""
    due = []
    for runtime in runtimes:
        if runtime.state != "halting":
            continue
        if runtime.halting is None:
            runtime.halting = HaltProgress.restored(runtime.halt, runtime.detail, now_s)
        if runtime.halting.due(now_s):
            due.append(runtime)
    return due
