"""Discharge capacity per cycle of a full cell, for ``cellguard plot --cell full``.

A full cell is judged by how much charge it gives back each cycle (capacity fade), not
by an overpotential. Discharge is negative current (Neware, BioLogic and the BDF
exports agree: the voltage falls while I < 0). The charge of a sample is
``|I_k| (t_k − t_{k−1})``, the current of a sample holding since the previous one, as
in :mod:`cellguard.protocols.analytics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellguard.drivers.files import FloatArray, IntArray

# A·s per mAh.
_AS_PER_MAH = 3.6


@dataclass(frozen=True)
class CycleCapacity:
    """``cycle[k]`` gave back ``discharge_mah[k]`` (cycles without discharge left out)."""

    cycle: IntArray
    discharge_mah: FloatArray


def cycle_numbers(current_a: FloatArray, rest_current_a: float = 1e-7) -> IntArray:
    """Cycle numbers from the current alone, for files without a cycle column: cycle 1
    from the start, a new one at each charge (I > 0) that follows a discharge (I < 0)."""
    sign = np.where(current_a > rest_current_a, 1, np.where(current_a < -rest_current_a, -1, 0))
    active = np.flatnonzero(sign)
    if active.size == 0:
        return np.ones(len(current_a), dtype=np.int64)
    # The sign of the last sample under current at or before each sample.
    held = sign[active][np.maximum(np.searchsorted(active, np.arange(len(sign)), "right") - 1, 0)]
    starts = np.zeros(len(sign), dtype=np.int64)
    starts[1:] = (held[1:] == 1) & (held[:-1] == -1)
    return 1 + np.cumsum(starts)


def discharge_capacity(
    t_s: FloatArray,
    current_a: FloatArray,
    cycle: IntArray | None,
    rest_current_a: float = 1e-7,
) -> CycleCapacity:
    """Discharge capacity (mAh) per cycle; ``cycle`` is the file's column or None."""
    if len(t_s) == 0:
        return CycleCapacity(np.zeros(0, dtype=np.int64), np.zeros(0))
    numbers = cycle_numbers(current_a, rest_current_a) if cycle is None else cycle
    dt_s = np.diff(t_s, prepend=t_s[0])
    charge_as = np.where(current_a < -rest_current_a, -current_a * dt_s, 0.0)
    found, where = np.unique(numbers, return_inverse=True)
    per_cycle_mah = np.bincount(where, weights=charge_as) / _AS_PER_MAH
    keep = per_cycle_mah > 0
    return CycleCapacity(found[keep].astype(np.int64), per_cycle_mah[keep])
