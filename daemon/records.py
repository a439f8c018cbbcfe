"""What flows from the supervisor to the sinks and the broker: samples and events.

Both are plain, immutable records with units in every name, so that the InfluxDB
sink, the SQLite store, the disk spool and the MQTT outbox all speak the same thing.
Times are wall-clock UNIX seconds derived from the instrument's own test start and
test time, never from when the daemon happened to read the sample.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SampleSource = Literal["live", "recorded"]
EventKind = Literal[
    "halt",
    "warn",
    "start",
    "stop",
    "finish",
    "protect",
    "unavailable",
    "available",
    "stop_failed",  # a stop was answered but the cell still runs (repeated, escalating)
    "unguarded",  # a channel the guard cannot watch, and why
    "skipped",  # a record that could not be judged or stored (quarantined), and why
    "pause",
    "resume",
]


@dataclass(frozen=True, slots=True)
class ChannelTags:
    """What identifies a channel's series everywhere (InfluxDB tags, MQTT topics)."""

    instrument: str
    channel: str  # "21-1-3"
    test_id: str = ""  # the instrument's test id (or barcode) of the running test
    interphase: str = ""
    cell_type: str = ""  # "symmetric" | "asymmetric" | "full" | ""


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One sample of one channel."""

    tags: ChannelTags
    time_unix_s: float
    test_time_s: float
    voltage_v: float
    current_a: float
    capacity_mah: float = 0.0
    energy_mwh: float = 0.0
    step: int = 0
    cycle: int = 0
    seq: int = 0  # the instrument's record sequence id (0 for live values)
    source: SampleSource = "recorded"
    # Auxiliary readings taken with this sample (host-driven channels), units in the
    # names: (("chamber_temperature_c", 25.1), ("stack_pressure_mpa", 5.0)).
    aux: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened to a channel: a halt, a warn, a start, a stop, ..."""

    tags: ChannelTags
    kind: EventKind
    time_unix_s: float
    fault: str = ""  # "depletion" | "short" | "voltage_shift" | "limit" | ""
    subkind: str = ""
    detail: str = ""
    values: dict[str, float] = field(default_factory=dict)  # measured, baseline, threshold ...
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        """The alert payload: one JSON object with a unique id."""
        body: dict[str, Any] = asdict(self)
        body["id"] = body.pop("event_id")
        body["cell"] = {
            "interphase": self.tags.interphase or None,
            "type": self.tags.cell_type or None,
        }
        body["instrument"] = self.tags.instrument
        body["channel"] = self.tags.channel
        body["test_id"] = self.tags.test_id
        del body["tags"]
        return json.dumps(body, sort_keys=True, allow_nan=False, default=str)


def new_event(
    tags: ChannelTags,
    kind: EventKind,
    time_unix_s: float,
    *,
    fault: str = "",
    subkind: str = "",
    detail: str = "",
    values: dict[str, float] | None = None,
) -> EventRecord:
    """An event with the NaN values left out (a baseline a verdict did not have)."""
    clean = {k: v for k, v in (values or {}).items() if not math.isnan(v)}
    return EventRecord(tags, kind, time_unix_s, fault, subkind, detail, clean)
