"""The retained status of a channel: current, at a bounded rate.

A dashboard or an operator who subscribes late reads the retained
``{prefix}/status/{instrument}/{channel}`` message only: it must say where the test
stands now (state, cycle, how old the newest sample is), not what it was when the
state last changed. Publishing it with every poll would cost one message per channel
per poll (2,048 a second on a large rack), so :class:`StatusPacer` decides:

- a change of state or instrument status: published at once (a halt, a start);
- a new cycle: published, but not more often than :data:`STATUS_MIN_INTERVAL_S`;
- otherwise: refreshed every :data:`STATUS_REFRESH_S`, so ``last_sample_age_s`` is
  never older than that plus one poll.

Pure: the caller passes its clock's time; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["STATUS_MIN_INTERVAL_S", "STATUS_REFRESH_S", "StatusPacer"]

STATUS_MIN_INTERVAL_S = 5.0
"""Shortest time (s) between two statuses of one channel, unless its state changed."""
STATUS_REFRESH_S = 60.0
"""Longest time (s) a channel's retained status goes without a refresh while polled."""


@dataclass
class StatusPacer:
    """When to publish one channel's status, and what it says (times in s)."""

    last_published_s: float = -math.inf
    last_key: tuple[str, str] | None = None
    last_cycle: int | None = None
    last_sample_s: float = math.nan  # clock time the newest sample arrived

    def sample_seen(self, now_s: float) -> None:
        """A sample of this channel arrived at ``now_s`` (clock time)."""
        self.last_sample_s = now_s

    def due(self, now_s: float, state: str, workstatus: str, cycle: int) -> bool:
        """Whether a status is to be published now (see the module doc)."""
        since_s = now_s - self.last_published_s
        if (state, workstatus) != self.last_key:
            return True
        if since_s < STATUS_MIN_INTERVAL_S:
            return False
        return cycle != self.last_cycle or since_s >= STATUS_REFRESH_S

    def status(
        self, now_s: float, state: str, workstatus: str, cycle: int, **extra: object
    ) -> dict[str, object]:
        """The body to publish now; records that it was published."""
        self.last_published_s = now_s
        self.last_key = (state, workstatus)
        self.last_cycle = cycle
        age_s = now_s - self.last_sample_s
        body: dict[str, object] = {
            "state": state,
            "workstatus": workstatus,
            "cycle": cycle,
            # None until a sample arrived: JSON has no NaN.
            "last_sample_age_s": round(age_s, 3) if math.isfinite(age_s) else None,
        }
        body.update(extra)
        return body
