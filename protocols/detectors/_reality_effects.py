"""What fresh cells, liquid cells, real soft shorts and EC-Lab's spikes add to a trace.

Each function returns a new array (or a factor to multiply by) and draws only from
the generator it is given, so a case is deterministic and its healthy twin can share
every draw but the fault's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cellguard.protocols.detectors._reality_sim import BURST_OFFSETS_S, BURST_SHAPE

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_S_PER_H = 3600.0


def nucleation(
    t_s: FloatArray,
    v: FloatArray,
    first: npt.NDArray[np.bool_],
    *,
    start_s: float,
    height: float,
    peak_s: float,
) -> FloatArray:
    """The first plating's nucleation peak: on the samples of ``first`` (the first
    half cycle), ``|V|`` rises by ``height`` × its own plateau, peaking ``peak_s``
    after the start, then falls back: ``ΔV = height·V_plateau·(x·e^(1−x))``, x = t/peak."""
    out = v.copy()
    idx = np.flatnonzero(first)
    if idx.size == 0:
        return out
    plateau_v = float(np.median(v[idx[len(idx) // 2 :]]))
    x = (t_s[idx] - start_s) / peak_s
    out[idx] += height * plateau_v * x * np.exp(1.0 - x)
    return out


def activation(t_s: FloatArray, *, end_factor: float, over_h: float) -> FloatArray:
    """Fresh-cell activation (wetting, contact forming under pressure): a factor on the
    overpotential falling smoothly from 1 to ``end_factor`` (95 % of the way by
    ``over_h`` hours), the half-cycle shape untouched."""
    tau_h = over_h / 3.0
    factor: FloatArray = end_factor + (1.0 - end_factor) * np.exp(-t_s / (tau_h * _S_PER_H))
    return factor


def liquid_noise(t_s: FloatArray, noise_v: float, *, gain: float, tau_h: float) -> FloatArray:
    """Per-sample noise sigma (V) of a liquid cell: ``gain``× louder at first, settling
    with time constant ``tau_h``."""
    sigma: FloatArray = noise_v * (1.0 + gain * np.exp(-t_s / (tau_h * _S_PER_H)))
    return sigma


def liquid_spikes(
    t_s: FloatArray,
    i: FloatArray,
    rng: np.random.Generator,
    *,
    rate_per_h: float,
    tau_h: float,
) -> FloatArray:
    """Factor on |V| for the early spikes of a liquid cell: upward excursions of
    +20…100 % on one or two samples under current, ever rarer with time."""
    factor = np.ones(len(t_s))
    dt_s = np.diff(t_s, prepend=0.0)
    p = rate_per_h * dt_s / _S_PER_H * np.exp(-t_s / (tau_h * _S_PER_H))
    hits = np.flatnonzero((rng.random(len(t_s)) < p) & (i != 0.0))
    for k in hits.tolist():
        rise = rng.uniform(0.2, 1.0)
        factor[k] += rise
        if k + 1 < len(t_s) and rng.random() < 0.5 and i[k + 1] == i[k]:
            factor[k + 1] += 0.5 * rise
    return factor


def soft_short_keep(t_s: FloatArray, onset_s: float, rng: np.random.Generator) -> FloatArray:
    """Fraction of the overpotential a real soft short leaves (Menkin et al. 2023):
    down by about half within minutes, held there for a while, then a telegraph
    between that level and a lower one for hours, and maybe a partial recovery."""
    drop_s = rng.uniform(60.0, 300.0)
    level = rng.uniform(0.40, 0.55)
    low = level * rng.uniform(0.4, 0.7)
    dwell_s = rng.uniform(5.0, 30.0) * 60.0
    telegraph_start_s = onset_s + drop_s + rng.uniform(0.5, 2.0) * _S_PER_H
    telegraph_end_s = telegraph_start_s + rng.uniform(3.0, 8.0) * _S_PER_H
    recover = rng.uniform(0.65, 0.85) if rng.random() < 0.5 else level
    # Piecewise-constant levels after the ramp: (start time, level) in order.
    changes: list[tuple[float, float]] = [(onset_s + drop_s, level)]
    now_s = telegraph_start_s
    at_low = True
    while now_s < telegraph_end_s:
        changes.append((now_s, low if at_low else level))
        at_low = not at_low
        now_s += rng.exponential(dwell_s)
    changes.append((telegraph_end_s, recover))
    starts = np.asarray([c[0] for c in changes])
    levels = np.asarray([c[1] for c in changes])
    keep = np.ones(len(t_s))
    ramp = (t_s >= onset_s) & (t_s < onset_s + drop_s)
    keep[ramp] = 1.0 - (1.0 - level) * (t_s[ramp] - onset_s) / drop_s
    after = t_s >= onset_s + drop_s
    keep[after] = levels[np.searchsorted(starts, t_s[after], side="right") - 1]
    return keep


def burst_times(
    t_s: FloatArray, i: FloatArray, rng: np.random.Generator, count: int
) -> list[float]:
    """Start times of ``count`` spikes, under current, away from every sample time and
    from each other (at least an hour apart, after the first half hour)."""
    out: list[float] = []
    flowing = np.flatnonzero(i != 0.0)
    tries = 0
    while len(out) < count and tries < 100 * count:
        tries += 1
        k = int(flowing[rng.integers(0, len(flowing))])
        if k == 0 or t_s[k] < 0.5 * _S_PER_H or i[k - 1] != i[k]:
            continue
        start_s = float(t_s[k - 1]) + rng.uniform(0.2, 0.8) * float(t_s[k] - t_s[k - 1])
        if float(t_s[k]) - start_s <= BURST_OFFSETS_S[-1] + 1e-3:
            continue
        if all(abs(start_s - s) > _S_PER_H for s in out):
            out.append(start_s)
    return sorted(out)


def insert_bursts(
    arrays: dict[str, npt.NDArray[np.generic]],
    starts_s: list[float],
    heights_v: list[float],
) -> tuple[dict[str, npt.NDArray[np.generic]], tuple[int, ...]]:
    """Insert each spike as EC-Lab records it: samples < 1 ms apart up to the peak and
    back, the current and step of the sample they fall before. Returns the new arrays
    and the indices of the inserted samples."""
    t_s = arrays["t_s"]
    rows: list[tuple[float, int, float]] = []  # (time, index of the next sample, V)
    for start_s, height_v in zip(starts_s, heights_v, strict=True):
        k = int(np.searchsorted(t_s, start_s))
        prev_v = float(arrays["voltage_v"][k - 1])
        next_v = float(arrays["voltage_v"][k])
        for off_s, shape in zip(BURST_OFFSETS_S, BURST_SHAPE, strict=True):
            frac = (start_s + off_s - float(t_s[k - 1])) / float(t_s[k] - t_s[k - 1])
            base_v = prev_v + frac * (next_v - prev_v)
            rows.append((start_s + off_s, k, base_v + height_v * shape))
    before = np.asarray([r[1] for r in rows], dtype=np.intp)
    out: dict[str, npt.NDArray[np.generic]] = {}
    for name, values in arrays.items():
        if name == "t_s":
            new = np.asarray([r[0] for r in rows])
        elif name == "voltage_v":
            new = np.asarray([r[2] for r in rows])
        else:
            new = values[before]
        out[name] = np.insert(values, before, new)
    inserted = before + np.arange(len(rows))
    return out, tuple(int(x) for x in inserted)
