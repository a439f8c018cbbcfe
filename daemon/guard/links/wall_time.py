"""An instrument's zone-less local wall time, as UTC on a monotonic axis.

A BTS server dates each recorded sample (``atime``) with its PC's local wall-clock
time, to the second and without a zone. In the autumn DST change an hour of those
times repeats, in spring an hour is missing, and a clock may be stepped by hand or by
NTP at any time. Read naively, the repeated hour lands on the hour before it: samples
collide (an InfluxDB point with the same series and time overwrites the first) and
sort out of order.

:class:`RecordDating` turns them into UTC UNIX times that never go backwards along a
test's records. The instrument's zone gives one UTC time per wall time, or two in the
repeated hour (``fold`` 0 and 1); the test time (``testtime``, monotonic, ms) says
which: the candidate nearest to the previous record's UTC time plus the test time
elapsed since it. A wall time earlier than the previous record's (a clock stepped
back) is not believed: the sample is dated by the test time elapsed instead. Pure and
deterministic: the same records in the same order give the same times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

__all__ = ["RecordDating"]

_NAIVE_EPOCH = datetime(1970, 1, 1)


def _candidates_unix_s(wall: datetime, zone: tzinfo | None) -> tuple[float, float]:
    # fold=0 is the first pass of a repeated hour, fold=1 the second; outside one both
    # give the same time. A naive datetime's timestamp() reads it in the PC's local
    # zone (the C library's), fold included.
    if zone is None:
        return wall.replace(fold=0).timestamp(), wall.replace(fold=1).timestamp()
    return (
        wall.replace(tzinfo=zone, fold=0).timestamp(),
        wall.replace(tzinfo=zone, fold=1).timestamp(),
    )


@dataclass
class RecordDating:
    """Dates one test's recorded samples, in record order (one per channel and test):
    :meth:`date` a record, :meth:`keep` it once taken (a record not taken is dated
    again later, the same way).

    ``zone``: the instrument PC's zone; None for this PC's local zone.
    """

    zone: tzinfo | None = None
    last_unix_s: float = math.nan
    last_test_time_s: float = math.nan
    # The zone's two UTC offsets (s) in the local minute of the last record: a zone
    # look-up costs ~6 µs, a download page holds up to 1,000 records a few seconds
    # apart, and offsets change only at whole minutes (at DST changes).
    _minute: datetime | None = field(default=None, repr=False, compare=False)
    _offsets_s: tuple[float, float] = field(default=(0.0, 0.0), repr=False, compare=False)

    def reset(self) -> None:
        """A new test: forget the last record."""
        self.last_unix_s = math.nan
        self.last_test_time_s = math.nan

    def date(
        self, wall: datetime, test_time_ms: int, *, expected_unix_s: float = math.nan
    ) -> float:
        """The UTC UNIX time (s) of a record dated ``wall`` (local, to the second) at
        ``test_time_ms`` into its test, after the last one kept (see :meth:`keep`).

        The wall time's second is refined by the test time's milliseconds. With no
        record before, ``expected_unix_s`` (if known) picks the fold of a repeated
        hour, else the first pass is taken.
        """
        test_time_s = test_time_ms / 1000.0
        fraction_s = (test_time_ms % 1000) / 1000.0
        minute = wall.replace(second=0, microsecond=0)
        if minute != self._minute:
            base_s = (minute - _NAIVE_EPOCH).total_seconds()
            early, late = _candidates_unix_s(minute, self.zone)
            self._minute, self._offsets_s = minute, (early - base_s, late - base_s)
        naive_s = (wall - _NAIVE_EPOCH).total_seconds() + fraction_s
        early = naive_s + self._offsets_s[0]
        late = naive_s + self._offsets_s[1]
        last = self.last_unix_s
        if not math.isnan(last):
            expected_unix_s = last + max(test_time_s - self.last_test_time_s, 0.0)
        if math.isnan(expected_unix_s):
            chosen = min(early, late)
        else:
            chosen = min((early, late), key=lambda c: abs(c - expected_unix_s))
        if not math.isnan(last) and chosen < last:
            # The wall clock went back (stepped, or a wrong fold): the test time, which
            # only runs forward, dates the sample instead.
            chosen = expected_unix_s
        return chosen

    def keep(self, unix_s: float, test_time_ms: int) -> None:
        """The record dated ``unix_s`` is taken: the next ones are dated after it."""
        self.last_unix_s = unix_s
        self.last_test_time_s = test_time_ms / 1000.0
