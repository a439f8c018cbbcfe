"""One event schema for every guarded channel, whatever instrument drives it.

The two guards this replaced wrote the same halt with different keys (``measured_v``
on a Neware channel, ``measured`` on a source-meter). Every event is now made here,
from one dataclass, so an alert consumer reads the same keys from every instrument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cellguard.daemon.records import ChannelTags, EventKind, EventRecord, new_event
from cellguard.protocols.detectors import Verdict

# Event kinds that go out as alerts (MQTT), not only to the sinks.
ALERT_KINDS = frozenset(
    {"halt", "warn", "protect", "finish", "stop_failed", "unguarded", "skipped"}
)


def _unit_suffix(unit: str) -> str:
    # Detectors judge volts unless they say otherwise; an aux limit names its own unit.
    return "v" if unit in ("", "V") else unit.lower()


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """Something that happened to a channel, with its numbers (units in the keys)."""

    kind: EventKind
    fault: str = ""
    subkind: str = ""
    detail: str = ""
    measured: float = math.nan
    baseline: float = math.nan
    threshold: float = math.nan
    unit: str = "V"
    test_time_s: float = math.nan
    attempt: int = 0  # the stop attempt of a stop_failed alert
    unconfirmed_s: float = math.nan  # how long a stop has gone unconfirmed

    @classmethod
    def of_verdict(cls, kind: EventKind, verdict: Verdict) -> GuardEvent:
        """The halt or warn event of a detector's verdict."""
        return cls(
            kind,
            fault=verdict.kind,
            subkind=verdict.subkind,
            detail=verdict.detail,
            measured=verdict.measured,
            baseline=verdict.baseline,
            threshold=verdict.threshold,
            unit=verdict.unit or "V",
            test_time_s=verdict.t_s,
        )

    @property
    def is_alert(self) -> bool:
        return self.kind in ALERT_KINDS

    def values(self) -> dict[str, float]:
        """The numeric fields, NaN left out, the unit in every key."""
        suffix = _unit_suffix(self.unit)
        out = {
            f"measured_{suffix}": self.measured,
            f"baseline_{suffix}": self.baseline,
            f"threshold_{suffix}": self.threshold,
            "test_time_s": self.test_time_s,
            "unconfirmed_s": self.unconfirmed_s,
        }
        if self.attempt:
            out["attempt"] = float(self.attempt)
        return {k: v for k, v in out.items() if not math.isnan(v)}

    def record(self, tags: ChannelTags, time_unix_s: float) -> EventRecord:
        """The record the sinks and the broker get."""
        return new_event(
            tags,
            self.kind,
            time_unix_s,
            fault=self.fault,
            subkind=self.subkind,
            detail=self.detail,
            values=self.values(),
        )
