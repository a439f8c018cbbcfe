"""Which unit a server's ``download`` is in: A/Ah/Wh or mA/mAh/mWh, and the conversion.

The recorded fixtures report ``download`` current, capacity and energy in A, Ah and Wh;
a 2025 server reports mA, mAh and mWh. Nothing in the reply says which, so the unit is
judged against a current known to be in amperes: the live ``inquire`` current (always
in A) or the current the step file programs. Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import cast

from cellguard.drivers.neware._messages import DownloadRecord, DownloadUnits

_new_record = cast(
    "Callable[[tuple[object, ...]], DownloadRecord]", partial(tuple.__new__, DownloadRecord)
)
# The two candidate units are 1000× apart; their geometric middle (√1000 ≈ 31.6) is the
# boundary. A ratio beyond 30× either side of both is neither: no judgement.
_BOUNDARY = math.sqrt(1000.0)
_LOWEST_RATIO = 1.0 / 30.0
_HIGHEST_RATIO = 1000.0 * 30.0


def judge_units(
    recorded_currents: Iterable[float], reference_current_a: float | None
) -> DownloadUnits | None:
    """``"A"`` or ``"mA"`` for a page whose currents are ``recorded_currents``.

    ``reference_current_a`` is a current of the same test known to be in amperes (the
    live ``inquire`` current, or the programmed one). ``None`` when the page or the
    reference has no current to compare (a rest, an idle channel) or the ratio fits
    neither unit.
    """
    magnitudes = [abs(c) for c in recorded_currents if c != 0.0 and math.isfinite(c)]
    if not magnitudes or reference_current_a is None:
        return None
    reference = abs(reference_current_a)
    if not reference > 0.0 or not math.isfinite(reference):
        return None
    ratio = statistics.median(magnitudes) / reference
    if not _LOWEST_RATIO <= ratio <= _HIGHEST_RATIO:
        return None
    return "A" if ratio < _BOUNDARY else "mA"


def beyond_range(recorded_currents: Iterable[float], current_range_a: float) -> bool:
    """True if read as amperes the page would exceed the channel's current range.

    A value no channel can source must be in mA; the converse proves nothing (1 mA
    read as 1 µA is still in range).
    """
    return any(abs(c) > 1.01 * current_range_a for c in recorded_currents if math.isfinite(c))


def to_amperes(
    records: Sequence[DownloadRecord], units: DownloadUnits
) -> tuple[DownloadRecord, ...]:
    """The records in A, Ah and Wh (voltage and times are the same in both)."""
    if units == "A":
        return tuple(records)
    # Built as plain tuples (NamedTuple._replace costs ~5x more): a page is 1000 records.
    return tuple(
        _new_record((seq, step, cycle, kind, ms, wall, volt, curr / 1e3, cap / 1e3, eng / 1e3))
        for seq, step, cycle, kind, ms, wall, volt, curr, cap, eng in records
    )
