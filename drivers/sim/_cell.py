"""One simulated Li|solid electrolyte|Li cell, advanced in virtual time.

The cell is a handful of floats evolved by closed forms, so one :meth:`SimCell.advance`
costs a few microseconds whatever ``dt_s`` is, and the result does not depend on how a
run is cut into steps: the charge moved is exactly ``current × dt``, the Li loss is a
closed form of cell time, and every relaxation is an exact exponential over the step.
Only the instrument noise is drawn per call; the random events of a soft short come
from a separate stream, so they happen at the same cell times for any ``dt_s``.

A cell's time starts with its first current, not when the object is built: a simulator
builds every cell when it starts, possibly days before a test is started on a channel,
while a lab assembles a cell just before its test. Before that the cell is on the
shelf: open circuit, no interphase growth, no Li consumed (a 20 µm MII-2 electrode left
to age from the simulator's start was empty 100 h later, so the first stripping of a
test started then depleted it within minutes).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import get_args

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.sim._interphase import INTERPHASES, ShortKind, interphase

__all__ = [
    "LI_MAH_CM2_PER_UM",
    "ShortKind",
    "ShortSpec",
    "SimCell",
    "SimCellSpec",
    "simulate_square_wave",
]

LI_MAH_CM2_PER_UM = 0.205
"""Areal capacity of Li foil per µm of thickness (mAh cm⁻² µm⁻¹)."""

_S_PER_H = 3600.0
_S_PER_DAY = 86400.0
# A·s cm⁻² per mAh cm⁻²: j (A cm⁻²) × dt (s) / 3.6 is mAh cm⁻².
_AS_PER_MAH = 3.6

# Half-cycle shape. The electrolyte's ohmic drop appears the instant the current flows
# (so the sign follows the current at once); the interphase/concentration part builds up
# over ~1.5 min; voids left by stripping add a slight rise towards the end.
_OHMIC_FRACTION = 0.35
_RISE_TAU_S = 90.0
_VOID_GAIN_PER_MAH2_CM4 = 0.3  # +7.5 % after 0.5 mAh cm⁻²
_VOID_MAX = 0.5

# Once Li can be stripped again (current reversed, or Li plated back) the depletion
# shift is gone within seconds.
_RECOVERY_TAU_S = 3.0

# Shorts. A hard short is a Li filament of a fraction of an Ω cm² across the cell.
_HARD_SHORT_OHM_CM2 = 0.2
_SOFT_TO_HARD_S = 10.0 * _S_PER_H
_SOFT_RATE_START_PER_S = 1.0 / _S_PER_H
_SOFT_RATE_GROWTH = 20.0  # the drop rate grows 1/h -> 20/h over the soft phase
_SOFT_DROP_MIN_S, _SOFT_DROP_MAX_S = 30.0, 300.0
_SOFT_DEPTH_MIN, _SOFT_DEPTH_MAX = 0.4, 0.9
# The filament's flicker adds a little noise; the evidence of a soft short is its drops
# (science.md: "noisy, intermittent drops"; realworld.md: the overpotential drops by about
# half and stays down for minutes). A five-fold noise rise, as this model once had, is
# what a healthy channel with a loose contact also shows: the drops must stand out of it.
_SOFT_NOISE_GAIN = 1.5
# Micro short: the shunt conductance grows so that the plating voltage falls by e every 3 h.
_MICRO_TAU_S = 3.0 * _S_PER_H

_ONSET_JITTER = 0.10


@dataclass(frozen=True)
class ShortSpec:
    """A short circuit the cell will get.

    ``onset_h`` is the cell time (h) at which it begins: a hard short collapses the
    voltage at once; a soft short starts its intermittent drops and turns hard 10 h
    later; a micro short starts sliding the plating voltage towards zero.
    """

    kind: ShortKind
    onset_h: float

    def __post_init__(self) -> None:
        if self.kind not in get_args(ShortKind):
            raise ConfigError(field="short.kind", problem="must be one of hard, soft, micro")
        if not (self.onset_h >= 0 and math.isfinite(self.onset_h)):
            raise ConfigError(
                field="short.onset_h",
                problem=f"must be a finite number >= 0 h, got {self.onset_h!r}",
            )


@dataclass(frozen=True)
class SimCellSpec:
    """What cell to build: interphase preset, geometry (cm², µm of Li) and imperfections."""

    interphase: str = "SEI"
    area_cm2: float = 0.785
    li_counter_um: float = 100.0
    """Thick Li source electrode (µm)."""
    li_working_um: float = 100.0
    """Working electrode (µm): 100 gives a symmetric cell, 50 or 20 an asymmetric one."""
    short: ShortSpec | None = None
    """``None``: whatever the interphase preset makes emerge (possibly never)."""
    never_short: bool = False
    """``True``: no short at all, whatever the preset says."""
    noise_v: float = 50e-6
    """Instrument noise, 1 sigma (V)."""
    temperature_swing: float = 0.10
    """Day/night relative swing of the resistance (0.10 is ±10 %)."""

    def __post_init__(self) -> None:
        if self.interphase not in INTERPHASES:
            raise ConfigError(field="interphase", problem="must be one of MII-1, MII-2, MII-3, SEI")
        for field, value in (
            ("area_cm2", self.area_cm2),
            ("li_counter_um", self.li_counter_um),
            ("li_working_um", self.li_working_um),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(
                    field=field, problem=f"must be a finite number > 0, got {value!r}"
                )
        if not (self.noise_v >= 0 and math.isfinite(self.noise_v)):
            raise ConfigError(
                field="noise_v", problem=f"must be a finite number >= 0 V, got {self.noise_v!r}"
            )
        if not 0 <= self.temperature_swing < 1:
            raise ConfigError(
                field="temperature_swing",
                problem=f"must be in [0, 1), got {self.temperature_swing!r}",
            )
        if self.short is not None and not isinstance(self.short, ShortSpec):
            raise ConfigError(field="short", problem="must be a ShortSpec or None")
        if self.never_short and self.short is not None:
            raise ConfigError(field="short", problem="must be None when never_short is True")


class SimCell:
    """A Li|electrolyte|Li cell with a given interphase, advanced call by call.

    State: cell time, the Li inventory of each electrode (mAh cm⁻²), how long the
    current has had its present sign, the depletion shift (V) and the short's schedule.
    The same ``seed`` gives the same voltages; it also sets the ±10 % jitter of a
    preset's short onset (drawn first, so two cells with the same seed share it).
    """

    __slots__ = (
        "_dep_plateau_v",
        "_dep_tau_s",
        "_depleted",
        "_drop_end_s",
        "_drop_keep",
        "_events",
        "_gauss",
        "_hard_s",
        "_in_use",
        "_inv_area_cm2",
        "_li_c",
        "_li_w",
        "_loss",
        "_micro",
        "_model",
        "_next_drop_s",
        "_noise_v",
        "_q_since_rev",
        "_shift_v",
        "_short",
        "_short_s",
        "_sign",
        "_since_rev_s",
        "_soft",
        "_spec",
        "_swing",
        "_t_s",
    )

    def __init__(self, spec: SimCellSpec, seed: int) -> None:
        self._spec = spec
        model = interphase(spec.interphase)
        self._model = model
        rng = random.Random(seed)
        jitter = rng.uniform(1.0 - _ONSET_JITTER, 1.0 + _ONSET_JITTER)
        self._events = random.Random(rng.getrandbits(64))
        self._gauss = random.Random(rng.getrandbits(64)).gauss

        self._short: ShortSpec | None
        if spec.never_short:
            self._short = None
        elif spec.short is not None:
            self._short = spec.short
        elif model.short_kind is None:
            self._short = None
        else:
            thin = max(0.0, 1.0 - spec.li_working_um / spec.li_counter_um)
            onset_h = model.short_onset_h * (1.0 + model.asym_short_delay * thin) * jitter
            self._short = ShortSpec(model.short_kind, onset_h)

        self._inv_area_cm2 = 1.0 / spec.area_cm2
        self._noise_v = spec.noise_v
        self._swing = spec.temperature_swing
        self._dep_plateau_v = model.depletion_plateau_v
        self._dep_tau_s = model.depletion_tau_s

        self._t_s = 0.0
        self._in_use = False
        self._li_w = spec.li_working_um * LI_MAH_CM2_PER_UM
        self._li_c = spec.li_counter_um * LI_MAH_CM2_PER_UM
        self._loss = 0.0
        self._sign = 0
        self._since_rev_s = 0.0
        self._q_since_rev = 0.0
        self._shift_v = 0.0
        self._depleted = False

        inf = math.inf
        self._short_s = inf
        self._hard_s = inf
        self._soft = False
        self._micro = False
        self._next_drop_s = inf
        self._drop_end_s = -inf
        self._drop_keep = 1.0
        short = self._short
        if short is not None:
            self._short_s = short.onset_h * _S_PER_H
            if short.kind == "hard":
                self._hard_s = self._short_s
            elif short.kind == "soft":
                self._soft = True
                self._hard_s = self._short_s + _SOFT_TO_HARD_S
                self._next_drop_s = self._short_s + self._events.expovariate(_SOFT_RATE_START_PER_S)
            else:
                self._micro = True

    # -- read-only state ---------------------------------------------------------------

    @property
    def spec(self) -> SimCellSpec:
        """The spec this cell was built from."""
        return self._spec

    @property
    def t_s(self) -> float:
        """Cell time (s) since the first current (0 while the cell is on the shelf)."""
        return self._t_s

    @property
    def li_working_mah_cm2(self) -> float:
        """Li left on the working electrode (mAh cm⁻²), never below 0."""
        return self._li_w

    @property
    def li_counter_mah_cm2(self) -> float:
        """Li left on the counter electrode (mAh cm⁻²), never below 0."""
        return self._li_c

    @property
    def depleted(self) -> bool:
        """The working electrode is empty while Li is being stripped from it right now."""
        return self._depleted

    @property
    def shorted(self) -> bool:
        """A short (of any kind) has begun."""
        return self._t_s >= self._short_s

    @property
    def short(self) -> ShortSpec | None:
        """The short this cell will get or has, with the onset resolved; ``None`` if never."""
        return self._short

    @property
    def asr_ohm_cm2(self) -> float:
        """Present area-specific resistance (Ω cm²), with the temperature swing, without
        short or depletion effects."""
        t_s = self._t_s
        temperature = 1.0 + self._swing * math.sin(2.0 * math.pi * t_s / _S_PER_DAY)
        asr_ohm_cm2: float = self._model.asr_ohm_cm2(t_s / _S_PER_H)
        return asr_ohm_cm2 * temperature

    # -- the hot path ------------------------------------------------------------------

    def advance(self, dt_s: float, current_a: float) -> float:
        """Pass a constant current_a for dt_s seconds; return the terminal voltage (V) at
        the end of the interval.

        Positive current strips Li from the working electrode and plates it on the
        counter electrode; the voltage sign follows the current. current_a == 0 is rest
        (open circuit, V ~ 0 + noise for Li|Li). Not clamped: the instrument clamps to
        its range.

        An electrode stripped while empty (inventory floored at 0 mAh cm⁻²) shifts the
        voltage towards ±``depletion_plateau_v`` of the interphase, the working
        electrode upwards, the counter downwards; under a hard short no Li moves.
        """
        if not dt_s > 0:
            raise ConfigError(field="dt_s", problem=f"must be > 0 s, got {dt_s!r}")
        if not self._in_use:
            if current_a == 0.0:
                # On the shelf (see the module doc): the cell does not age yet.
                return self._gauss(0.0, self._noise_v) if self._noise_v > 0 else 0.0
            self._in_use = True
        model = self._model
        t0_s = self._t_s
        t1_s = t0_s + dt_s
        self._t_s = t1_s
        t1_h = t1_s / _S_PER_H

        loss = model.li_loss_mah_cm2(t1_h)
        dloss = loss - self._loss
        self._loss = loss

        j_a_cm2 = current_a * self._inv_area_cm2
        # A hard short carries the whole current through the filament: no Li moves.
        dq = 0.0 if t0_s >= self._hard_s else j_a_cm2 * dt_s / _AS_PER_MAH
        li_w0 = self._li_w
        li_c0 = self._li_c
        li_w = li_w0 - dq - dloss
        li_c = li_c0 + dq - dloss

        # The stripped electrode running empty inside this step: the rest of the step
        # its charge comes from electrolyte decomposition and the voltage shifts.
        depleted_s = 0.0
        plateau_v = 0.0
        if dq > 0 and li_w <= 0:
            drawn = li_w0 - li_w
            depleted_s = dt_s * (-li_w / drawn) if drawn > 0 else dt_s
            plateau_v = self._dep_plateau_v
        elif dq < 0 and li_c <= 0:
            drawn = li_c0 - li_c
            depleted_s = dt_s * (-li_c / drawn) if drawn > 0 else dt_s
            plateau_v = -self._dep_plateau_v
        self._li_w = li_w if li_w > 0 else 0.0
        self._li_c = li_c if li_c > 0 else 0.0
        self._depleted = dq > 0 and depleted_s > 0

        sign = (current_a > 0) - (current_a < 0)
        shift_v = self._shift_v
        if depleted_s > 0:
            if shift_v != 0.0 and depleted_s < dt_s:
                shift_v *= math.exp((depleted_s - dt_s) / _RECOVERY_TAU_S)
            shift_v = plateau_v + (shift_v - plateau_v) * math.exp(-depleted_s / self._dep_tau_s)
        elif shift_v != 0.0:
            if sign * shift_v < 0:
                # Reversed: Li plates onto the empty electrode at the normal overpotential
                # at once; letting the shift decay across zero would fake a short.
                shift_v = 0.0
            else:
                shift_v *= math.exp(-dt_s / _RECOVERY_TAU_S)
                if -1e-9 < shift_v < 1e-9:
                    shift_v = 0.0
        self._shift_v = shift_v

        if sign != self._sign:
            self._sign = sign
            self._since_rev_s = 0.0
            self._q_since_rev = 0.0
        since_s = self._since_rev_s + dt_s
        self._since_rev_s = since_s
        q = self._q_since_rev + abs(j_a_cm2) * dt_s / _AS_PER_MAH
        self._q_since_rev = q

        if sign == 0:
            v = shift_v
        else:
            temperature = 1.0 + self._swing * math.sin(2.0 * math.pi * t1_s / _S_PER_DAY)
            void = _VOID_GAIN_PER_MAH2_CM4 * q * q
            shape = (
                _OHMIC_FRACTION
                + (1.0 - _OHMIC_FRACTION) * (1.0 - math.exp(-since_s / _RISE_TAU_S))
                + (void if void < _VOID_MAX else _VOID_MAX)
            )
            v = j_a_cm2 * model.asr_ohm_cm2(t1_h) * temperature * shape + shift_v

        noise_v = self._noise_v
        if t1_s >= self._short_s:
            if t1_s >= self._hard_s:
                v = j_a_cm2 * _HARD_SHORT_OHM_CM2
            elif self._soft:
                noise_v *= _SOFT_NOISE_GAIN
                v *= self._soft_keep(t1_s)
            elif self._micro and sign < 0:
                v *= math.exp((self._short_s - t1_s) / _MICRO_TAU_S)
        if noise_v > 0:
            v += self._gauss(0.0, noise_v)
        return v

    def _soft_keep(self, t_s: float) -> float:
        """Fraction of the overpotential left at ``t_s`` by the soft short's drops."""
        events = self._events
        # Drops form a Poisson process whose rate grows 20-fold over the soft phase; the
        # schedule is drawn event by event, independent of the caller's dt.
        while self._next_drop_s <= t_s:
            start_s = self._next_drop_s
            self._drop_end_s = start_s + events.uniform(_SOFT_DROP_MIN_S, _SOFT_DROP_MAX_S)
            self._drop_keep = 1.0 - events.uniform(_SOFT_DEPTH_MIN, _SOFT_DEPTH_MAX)
            progress = (start_s - self._short_s) / _SOFT_TO_HARD_S
            rate_per_s = _SOFT_RATE_START_PER_S * math.pow(_SOFT_RATE_GROWTH, progress)
            self._next_drop_s = start_s + events.expovariate(rate_per_s)
        return self._drop_keep if t_s < self._drop_end_s else 1.0


def simulate_square_wave(
    cell: SimCell, current_a: float, half_cycle_s: float, duration_s: float, dt_s: float
) -> Iterator[tuple[float, float, float]]:
    """Galvanostatic square wave (first half cycle positive), yields (t_s, current_a,
    voltage_v) every dt_s. For tests and benchmarks.

    ``t_s`` is the cell's time at the end of each step, ``current_a`` the current that
    flowed at that moment. A step that straddles a current reversal is split at the
    reversal, so the charge per half cycle is exact for any ``dt_s``.
    """
    if not half_cycle_s > 0:
        raise ConfigError(field="half_cycle_s", problem=f"must be > 0 s, got {half_cycle_s!r}")
    if not dt_s > 0:
        raise ConfigError(field="dt_s", problem=f"must be > 0 s, got {dt_s!r}")
    t0_s = cell.t_s
    steps = math.ceil(duration_s / dt_s - 1e-9)
    elapsed_s = 0.0
    for k in range(1, steps + 1):
        end_s = min(k * dt_s, duration_s)
        while True:
            half = int(elapsed_s // half_cycle_s)
            boundary_s = (half + 1) * half_cycle_s
            i_a = current_a if half % 2 == 0 else -current_a
            if end_s <= boundary_s + 1e-9:
                break
            cell.advance(boundary_s - elapsed_s, i_a)
            elapsed_s = boundary_s
        v = cell.advance(end_s - elapsed_s, i_a)
        elapsed_s = end_s
        yield t0_s + elapsed_s, i_a, v
