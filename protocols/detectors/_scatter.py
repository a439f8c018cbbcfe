"""How much the last samples scatter, whatever their level.

A healthy channel can turn noisy at an unchanged level (a loose contact, a noisy
instrument channel): its samples then stray both ways, several times further than the
noise learnt from the last half cycle, and two low ones in a row follow by chance. The
detector keeps the scatter of the recent samples beside the learnt noise and judges
falls against the larger. The scatter is read from successive differences, so a level
that moved (a soft short's drop, a slow fall) is no scatter; the largest differences
are left out, so that a few drops in and out of the window, or a glitch, move it little.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from statistics import NormalDist

__all__ = ["RecentScatter"]

_TRIMMED = 4  # the largest differences left out: two drops (or glitches), in and out


def _expected_abs_order(i: int, n: int) -> float:
    """Expected i-th smallest (0-based) of n |standard normal| samples (Blom's positions)."""
    return NormalDist().inv_cdf(0.5 + 0.5 * (i + 1 - 0.375) / (n + 0.25))


class RecentScatter:
    """σ of one sample (in the unit of ``add``) over the last ``size`` samples, at most
    one per ``spacing_s`` (a burst logged on change is one sample).

    ``add(t_s, excess)`` takes one sample's excess over its reference, positive where
    |V| is higher. ``sigma()`` is 0.0 (unknown) until the window is full. It is the
    root mean square of the successive differences less their median (the trend: a
    soft short's overpotential falling over minutes is no scatter), the ``_TRIMMED``
    largest left out (two drops, or two glitches, each in and out), scaled so that
    Gaussian noise of σ reads σ (within 2 % on average; one reading of 15 samples
    scatters by ~30 %).
    """

    __slots__ = ("_scale", "_spacing_s", "_t_last", "_values")

    def __init__(self, size: int = 15, spacing_s: float = 0.5) -> None:
        self._spacing_s = spacing_s
        self._values: deque[float] = deque(maxlen=size)
        self._t_last = -float("inf")
        # What σ = 1 reads as: the root mean square of the kept |differences| of
        # standard normal samples (each difference has σ = √2), from their expected
        # order statistics.
        n = size - 1
        kept = [_expected_abs_order(i, n) for i in range(n - _TRIMMED)]
        self._scale = math.sqrt(2.0 * sum(x * x for x in kept) / len(kept))

    def clear(self) -> None:
        self._values.clear()
        self._t_last = -float("inf")

    def add(self, t_s: float, excess: float) -> None:
        if t_s - self._t_last < self._spacing_s:
            return
        self._t_last = t_s
        self._values.append(excess)

    def sigma(self) -> float:
        values = self._values
        if len(values) < (values.maxlen or 0):
            return 0.0
        steps = sorted(b - a for a, b in itertools.pairwise(values))
        trend = steps[len(steps) // 2]
        diffs = sorted(abs(d - trend) for d in steps)
        kept = diffs[: len(diffs) - _TRIMMED]
        return math.sqrt(sum(d * d for d in kept) / len(kept)) / self._scale
