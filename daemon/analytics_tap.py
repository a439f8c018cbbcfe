"""The analytics tap: per-cycle records computed live from the daemon's sample stream.

``Daemon.write`` hands every batch on its way to the sink to :meth:`AnalyticsTap.feed`
as well; the tap keeps one :class:`~cellguard.protocols.analytics.CycleAnalyzer` per
channel and test and returns the cycles the batch closed, which the daemon stores
beside the samples (SQLite table ``cycles``, InfluxDB measurement ``cellguard_cycles``).

It runs in the sink task, never in the supervisor: a halt never waits for it. It is
plain CPU work of a few microseconds per sample and holds one half cycle of samples
per channel.

Only *recorded* samples are analysed: they are the complete, ordered series (live
values repeat the same moments and may be dropped when the sink lags). A halt event
usually arrives before the recorded samples that lead up to it (the halt comes from a
live value; the history is downloaded later), so it is kept pending and applied at
the first recorded sample at or after the halt's test time, or when the tap closes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.protocols.analytics import (
    PAPER_AREA_CM2,
    AnalyticsSettings,
    CycleAnalyzer,
    CycleRecord,
    coulombic_efficiency,
)

_S_PER_H = 3600.0


@dataclass(frozen=True, slots=True)
class CycleRow:
    """One cycle of one channel, as stored and sent (units in every name).

    ``time_unix_s`` is the wall-clock time of the cycle's last sample; ``test_time_s``
    its test time. ``complete`` is False for a cycle that the test's end or a failure
    cut short. ``failure`` names the fault on the row that closed a failed test ("" on
    every other row); ``coulombic_efficiency`` is set on that row for a depleted
    asymmetric cell with a known thin electrode (NaN otherwise).
    """

    tags: ChannelTags
    cycle: int
    time_unix_s: float
    test_time_s: float
    polarization_v: float
    max_polarization_v: float
    capacity_mah_cm2: float
    complete: bool = True
    failure: str = ""
    coulombic_efficiency: float = math.nan

    @property
    def hours(self) -> float:
        """Test time at the end of the cycle, h."""
        return self.test_time_s / _S_PER_H

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, in mV, mAh cm⁻² and h (NaN becomes None)."""
        ce = self.coulombic_efficiency
        return {
            "instrument": self.tags.instrument,
            "channel": self.tags.channel,
            "test_id": self.tags.test_id,
            "cycle": self.cycle,
            "polarization_mv": self.polarization_v * 1e3,
            "max_polarization_mv": self.max_polarization_v * 1e3,
            "capacity_mah_cm2": self.capacity_mah_cm2,
            "hours": self.hours,
            "complete": self.complete,
            "failure": self.failure or None,
            "average_coulombic_efficiency": None if math.isnan(ce) else ce,
        }


ChannelKey = tuple[str, str]  # (instrument, channel)
_TestKey = tuple[str, str, str]  # (instrument, channel, test_id)


@dataclass
class _Pending:
    kind: str
    subkind: str
    t_s: float
    detail: str
    seen_by_settle: bool = False  # settle() applies it at its next call


@dataclass
class _Channel:
    tags: ChannelTags
    analyzer: CycleAnalyzer
    unix_offset_s: float = 0.0  # time_unix_s − test_time_s of the latest sample
    pending: _Pending | None = None
    booked_until_s: float = -math.inf  # test time analysed before a restart


class AnalyticsTap:
    """Per-channel streaming analytics; ``settings`` by ``(instrument, channel)``.

    A channel without settings is analysed as its tags' cell type on the papers'
    10 mm disc (0.785 cm²), without a thin electrode (so without a CE).
    """

    def __init__(self, settings: Mapping[ChannelKey, AnalyticsSettings] | None = None) -> None:
        self._settings = dict(settings or {})
        self._channels: dict[_TestKey, _Channel] = {}
        self._asked: set[_TestKey] = set()

    def channel(self, tags: ChannelTags) -> CycleAnalyzer | None:
        """The analyzer of a channel's test, if it has seen samples."""
        ch = self._channels.get((tags.instrument, tags.channel, tags.test_id))
        return None if ch is None else ch.analyzer

    def tests_to_resume(self, samples: Sequence[SampleRecord]) -> list[ChannelTags]:
        """The tests of ``samples`` this tap has not seen in this process yet, each named
        once: their stored cycles (a daemon before a restart analysed them) are to be
        handed to :meth:`resume` before the batch is fed."""
        out: list[ChannelTags] = []
        for sample in samples:
            tags = sample.tags
            key = (tags.instrument, tags.channel, tags.test_id)
            if sample.source != "recorded" or not tags.test_id or key in self._asked:
                continue
            self._asked.add(key)
            if key not in self._channels:
                out.append(tags)
        return out

    def resume(self, tags: ChannelTags, last: CycleRow) -> None:
        """Number on from ``last``, the newest stored cycle of the test of ``tags``:
        a restart must not begin again at cycle 1 with nothing cycled. A test whose
        stored rows already carry its failure gets no more rows."""
        ch = self._get(tags)
        ch.unix_offset_s = last.time_unix_s - last.test_time_s
        complete = last.cycle if last.complete else last.cycle - 1
        ch.analyzer.resume(max(complete, 0), last.capacity_mah_cm2, last.test_time_s)
        ch.booked_until_s = last.test_time_s
        if last.failure:
            ch.analyzer.fail(last.failure, last.test_time_s)

    def feed(
        self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]
    ) -> list[CycleRow]:
        """One batch, as it goes to the sink; the cycles it closed, in order."""
        out: list[CycleRow] = []
        for sample in samples:
            if sample.source != "recorded" or not math.isfinite(sample.test_time_s):
                continue
            ch = self._get(sample.tags)
            ch.unix_offset_s = sample.time_unix_s - sample.test_time_s
            # A sample fetched again after a restart, inside cycles already stored.
            if ch.analyzer.failed or sample.test_time_s <= ch.booked_until_s:
                continue
            closed = ch.analyzer.feed(
                sample.test_time_s, sample.voltage_v, sample.current_a, sample.step
            )
            out += self._rows(ch, closed)
            if ch.pending is not None and sample.test_time_s >= ch.pending.t_s:
                out += self._apply(ch)
        for event in events:
            if event.kind != "halt":
                continue
            ch = self._get(event.tags)
            if ch.analyzer.failed:
                continue
            t_s = event.values.get("test_time_s", math.nan)
            ch.pending = _Pending(event.fault or "halt", event.subkind, t_s, event.detail)
            if not math.isfinite(t_s):  # no test time to wait for: the halt is now
                out += self._apply(ch)
        return out

    def settle(self) -> list[CycleRow]:
        """Apply the halts that were already pending at the previous call.

        The daemon calls this every few download intervals: by then the recorded
        samples up to a halt have arrived, and a stopped channel records nothing at
        or after the halt's test time that would apply it. Without this the row that
        carries the failure would wait for a clean shutdown (lost on kill -9).
        """
        out: list[CycleRow] = []
        for ch in self._channels.values():
            if ch.pending is None or ch.analyzer.failed:
                continue
            if ch.pending.seen_by_settle:
                out += self._apply(ch)
            else:
                ch.pending.seen_by_settle = True
        return out

    def close(self) -> list[CycleRow]:
        """Apply the halts still pending (the daemon stops); the cycles that closes."""
        out: list[CycleRow] = []
        for ch in self._channels.values():
            if ch.pending is not None and not ch.analyzer.failed:
                out += self._apply(ch)
        return out

    def _get(self, tags: ChannelTags) -> _Channel:
        key = (tags.instrument, tags.channel, tags.test_id)
        ch = self._channels.get(key)
        if ch is None:
            settings = self._settings.get((tags.instrument, tags.channel))
            if settings is None:
                cell = tags.cell_type if tags.cell_type in ("symmetric", "full") else "asymmetric"
                settings = AnalyticsSettings(cell=cell, area_cm2=PAPER_AREA_CM2)  # type: ignore[arg-type]
            ch = _Channel(tags, CycleAnalyzer(settings))
            self._channels[key] = ch
        return ch

    def _apply(self, ch: _Channel) -> list[CycleRow]:
        pending, ch.pending = ch.pending, None
        assert pending is not None
        t_s = pending.t_s
        if not math.isfinite(t_s):
            halves = ch.analyzer.analysis.half_cycles
            t_s = halves[-1].end_s if halves else 0.0
        closed = ch.analyzer.fail(pending.kind, t_s, subkind=pending.subkind, detail=pending.detail)
        failure = ch.analyzer.analysis.failure
        assert failure is not None
        ce = coulombic_efficiency(ch.analyzer.settings, failure)
        rows = self._rows(ch, closed)
        if rows:
            rows[-1] = dataclasses.replace(
                rows[-1], failure=failure.kind, coulombic_efficiency=math.nan if ce is None else ce
            )
        else:
            # Failed right at a cycle boundary: one row that carries the failure alone.
            last = ch.analyzer.analysis.cycles[-1] if ch.analyzer.analysis.cycles else None
            rows = [
                CycleRow(
                    tags=ch.tags,
                    cycle=last.cycle if last else 0,
                    time_unix_s=ch.unix_offset_s + t_s,
                    test_time_s=t_s,
                    polarization_v=last.polarization_v if last else math.nan,
                    max_polarization_v=last.max_polarization_v if last else math.nan,
                    capacity_mah_cm2=failure.capacity_mah_cm2,
                    complete=last.complete if last else False,
                    failure=failure.kind,
                    coulombic_efficiency=math.nan if ce is None else ce,
                )
            ]
        return rows

    def _rows(self, ch: _Channel, closed: Sequence[CycleRecord]) -> list[CycleRow]:
        return [
            CycleRow(
                tags=ch.tags,
                cycle=c.cycle,
                time_unix_s=ch.unix_offset_s + c.end_s,
                test_time_s=c.end_s,
                polarization_v=c.polarization_v,
                max_polarization_v=c.max_polarization_v,
                capacity_mah_cm2=c.capacity_mah_cm2,
                complete=c.complete,
            )
            for c in closed
        ]


def tap_settings(channels: Sequence[Any]) -> dict[ChannelKey, AnalyticsSettings]:
    """Analytics settings from the config's channels (``ChannelSettings``)."""
    out: dict[ChannelKey, AnalyticsSettings] = {}
    for ch in channels:
        cell = ch.cell
        thin = cell.thin_li_um if cell.type == "asymmetric" else None
        out[(ch.instrument, str(ch.channel))] = AnalyticsSettings(
            cell=cell.type, area_cm2=cell.area_cm2, thin_li_um=thin
        )
    return out
