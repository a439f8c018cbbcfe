"""What a guard hands its records to, and the outbox that never loses one.

The guard never waits on a sink: records go into a bounded queue with ``put_nowait``,
and what does not fit waits, in order, in an :class:`Outbox` until the sinks catch up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord

Record = SampleRecord | EventRecord


class SampleQueue(Protocol):
    """Where samples and events go on their way to the sinks."""

    def put_nowait(self, item: Record) -> None:
        """Queue without waiting; raises ``asyncio.QueueFull`` when the sinks lag."""
        ...


class Publisher(Protocol):
    """Alerts and statuses (MQTT, or the log)."""

    async def publish_event(self, event: EventRecord) -> None: ...

    async def publish_status(self, tags: ChannelTags, status: dict[str, object]) -> None: ...


class StateStore(Protocol):
    """Durable per-channel state, so a restart neither re-starts nor re-halts."""

    def save_state(self, tags: ChannelTags, state: str, last_seq: int, detail: str) -> None: ...

    def load_state(self, instrument: str, channel: str) -> tuple[str, int, str] | None: ...


class Outbox:
    """Records that must all arrive, in order, without the guard ever waiting for a sink."""

    def __init__(self, queue: SampleQueue) -> None:
        self._queue = queue
        self._waiting: deque[Record] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, record: Record) -> None:
        """Hand ``record`` on now, or keep it (after what waits already)."""
        self._waiting.append(record)
        self.flush()

    def keep(self, records: Iterable[Record]) -> None:
        """Keep ``records`` to be handed on at the next :meth:`flush`."""
        self._waiting.extend(records)

    def flush(self) -> None:
        """Hand on what waits, oldest first, until the queue is full."""
        while self._waiting:
            try:
                self._queue.put_nowait(self._waiting[0])
            except asyncio.QueueFull:
                return
            self._waiting.popleft()
