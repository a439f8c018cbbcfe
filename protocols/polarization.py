"""Per-half-cycle polarization from recorded samples (pure; fed one sample at a time).

Polarization is the mean |V| over the middle third of a half cycle: the start holds
the zero crossing and the relaxation after a current reversal, the end the rise of a
stripping half cycle, and neither says how resistive the interphase is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HalfCycle:
    """One finished half cycle."""

    cycle: int
    step: int
    start_s: float
    end_s: float
    polarization_v: float  # mean |V| over the middle third
    current_a: float  # mean current (sign = direction)


class PolarizationTracker:
    """Groups samples into half cycles by (cycle, step) and summarises each one.

    Rest samples (no current) are ignored. A half cycle is summarised when the next
    one begins, or when :meth:`finish` is called at the end of a test.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._times: list[float] = []
        self._volts: list[float] = []
        self._amps: list[float] = []
        self.half_cycles: list[HalfCycle] = []

    def add(
        self, t_s: float, voltage_v: float, current_a: float, cycle: int, step: int
    ) -> HalfCycle | None:
        """Feed one sample; returns the half cycle this sample closed, if any."""
        if current_a == 0.0:
            return None
        key = (cycle, step)
        closed = None
        if key != self._key:
            closed = self._close()
            self._key = key
        self._times.append(t_s)
        self._volts.append(voltage_v)
        self._amps.append(current_a)
        return closed

    def finish(self) -> HalfCycle | None:
        """Summarise the half cycle in progress (end of test)."""
        return self._close()

    def _close(self) -> HalfCycle | None:
        if self._key is None or len(self._times) < 3:
            self._reset()
            return None
        start_s, end_s = self._times[0], self._times[-1]
        third = (end_s - start_s) / 3.0
        middle = [
            abs(v)
            for t, v in zip(self._times, self._volts, strict=True)
            if start_s + third <= t <= end_s - third
        ] or [abs(v) for v in self._volts]
        half = HalfCycle(
            cycle=self._key[0],
            step=self._key[1],
            start_s=start_s,
            end_s=end_s,
            polarization_v=sum(middle) / len(middle),
            current_a=sum(self._amps) / len(self._amps),
        )
        self.half_cycles.append(half)
        self._reset()
        return half

    def _reset(self) -> None:
        self._times.clear()
        self._volts.clear()
        self._amps.clear()

    @property
    def latest_polarization_v(self) -> float | None:
        return self.half_cycles[-1].polarization_v if self.half_cycles else None

    @property
    def max_polarization_v(self) -> float | None:
        return max((h.polarization_v for h in self.half_cycles), default=None)
