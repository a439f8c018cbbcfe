"""One clock abstraction for the whole code base.

The simulator, the demo and the tests run on a :class:`VirtualClock`, far faster than
real time and deterministic; the service runs on :class:`WallClock`. A simulator
served to other programs runs on a :class:`ScaledClock` (wall time times a speed-up).
All times are seconds (``float``) on the clock's own monotonic axis.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol


class Clock(Protocol):
    """A source of monotonic time in seconds, and a way to wait on it."""

    def now_s(self) -> float:
        """Seconds on this clock's monotonic axis."""
        ...

    async def sleep(self, duration_s: float) -> None:
        """Wait until ``duration_s`` seconds have passed on this clock."""
        ...


class WallClock:
    """Real time: ``time.monotonic`` and ``asyncio.sleep``."""

    def now_s(self) -> float:
        return time.monotonic()

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s))


class ScaledClock:
    """Wall time multiplied by ``speed``: a 500 h test in 500 h / speed."""

    def __init__(self, speed: float, start_s: float = 0.0) -> None:
        if not speed > 0:
            msg = f"speed: must be > 0, got {speed!r}"
            raise ValueError(msg)
        self.speed = speed
        self._start_s = start_s
        self._wall0_s = time.monotonic()

    def now_s(self) -> float:
        return self._start_s + (time.monotonic() - self._wall0_s) * self.speed

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s) / self.speed)


class VirtualClock:
    """Time that moves only when told to: deterministic and as fast as the CPU.

    ``sleep`` waits until some other task calls :meth:`advance` far enough. Sleepers
    are woken in deadline order, each at exactly its deadline, and :meth:`advance`
    lets each woken task run until it sleeps again (or ends) before time moves on, so
    code that sleeps sees the same times on every run, whatever I/O it does between.
    """

    # How long (wall time) a woken task may take to reach its next sleep before
    # advance() moves on without it (it is then blocked on something else).
    SETTLE_WALL_S = 5.0

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None], asyncio.Task[Any] | None]] = []
        self._seq = 0

    def now_s(self) -> float:
        return self._now_s

    async def sleep(self, duration_s: float) -> None:
        if duration_s <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        task = asyncio.current_task()
        self._sleepers.append((self._now_s + duration_s, self._seq, fut, task))
        self._sleepers.sort(key=lambda s: (s[0], s[1]))
        try:
            await fut
        finally:
            self._sleepers = [s for s in self._sleepers if s[2] is not fut]

    def set(self, t_s: float) -> None:
        """Jump to ``t_s`` without waking sleepers in between (for simple scripts)."""
        if t_s < self._now_s:
            msg = f"t_s: a clock never goes back ({t_s} < {self._now_s})"
            raise ValueError(msg)
        self._now_s = t_s

    async def advance(self, duration_s: float) -> None:
        """Move time forward, waking every sleeper whose deadline passes, in order."""
        target_s = self._now_s + duration_s
        while self._sleepers and self._sleepers[0][0] <= target_s:
            deadline_s, _, fut, task = self._sleepers.pop(0)
            self._now_s = max(self._now_s, deadline_s)
            if not fut.done():
                fut.set_result(None)
            await self.wait_until_sleeping(task)
        self._now_s = max(self._now_s, target_s)

    async def wait_until_sleeping(self, task: asyncio.Task[Any] | None) -> None:
        """Let ``task`` run until it sleeps on this clock, ends, or stalls (bounded)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.SETTLE_WALL_S
        spins = 0
        while task is not None and not task.done():
            if any(s[3] is task for s in self._sleepers):
                return
            if loop.time() > give_up:
                return
            spins += 1
            # Yield to the loop; after a while also let real I/O (sockets) progress.
            await asyncio.sleep(0 if spins < 50 else 0.0005)
