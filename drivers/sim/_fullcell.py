"""One simulated full cell (graphite|NMC-like), advanced in virtual time.

A deliberately simple equivalent circuit: an open-circuit voltage that depends on the
state of charge only, a series resistance ``r_ohm`` and one RC pair (``r1_ohm``,
``tau1_s``). Every quantity evolves in closed form over a call, so the charge moved is
exactly ``current × dt`` and the RC relaxation is an exact exponential.

:meth:`SimFullCell.current_for_voltage` answers what a potentiostat asks: which
current holds the terminal voltage at a set-point over the next interval. It is the
closed-form solution of the same circuit with the OCV linearised around the present
state of charge (no iteration), clamped to the instrument's ceiling.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from cellguard.drivers.errors import ConfigError

__all__ = ["SimFullCell", "SimFullCellSpec"]

_S_PER_H = 3600.0
# Shape of the OCV inside 0..100 % SOC: g(s) = s + c·sin(2πs)/(2π), so g' = 1 + c·cos(2πs)
# is steep at both ends and flatter in the middle (a graphite|NMC-like S curve);
# monotone for 0 <= c < 1.
_OCV_SHAPE = 0.6
# Outside 0..100 % the OCV runs away linearly, this many times steeper than at the ends
# (the electrodes are exhausted), so cut-off voltages are reached just past the ends.
_OCV_OUTSIDE_GAIN = 10.0


@dataclass(frozen=True)
class SimFullCellSpec:
    """What full cell to build: capacity, OCV end points, resistances, noise."""

    capacity_mah: float = 2.0
    """Capacity between 0 % and 100 % SOC (mAh); 1C is this many mA."""
    ocv_empty_v: float = 3.0
    """Open-circuit voltage at 0 % SOC (V)."""
    ocv_full_v: float = 4.2
    """Open-circuit voltage at 100 % SOC (V)."""
    r_ohm: float = 20.0
    """Series (ohmic) resistance (Ω)."""
    r1_ohm: float = 10.0
    """Resistance of the RC pair (charge transfer / diffusion) (Ω)."""
    tau1_s: float = 100.0
    """Time constant of the RC pair (s)."""
    soc0: float = 0.5
    """Initial state of charge (0..1)."""
    noise_v: float = 100e-6
    """Instrument noise, 1 sigma (V)."""

    def __post_init__(self) -> None:
        for field, value in (
            ("capacity_mah", self.capacity_mah),
            ("ocv_empty_v", self.ocv_empty_v),
            ("tau1_s", self.tau1_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    field=field, problem=f"must be a finite number > 0, got {value!r}"
                )
        if not (math.isfinite(self.ocv_full_v) and self.ocv_full_v > self.ocv_empty_v):
            raise ConfigError(
                field="ocv_full_v",
                problem=f"must be a finite number above ocv_empty_v, got {self.ocv_full_v!r}",
            )
        for field, value in (
            ("r_ohm", self.r_ohm),
            ("r1_ohm", self.r1_ohm),
            ("noise_v", self.noise_v),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(
                    field=field, problem=f"must be a finite number >= 0, got {value!r}"
                )
        if not 0.0 <= self.soc0 <= 1.0:
            raise ConfigError(field="soc0", problem=f"must be in [0, 1], got {self.soc0!r}")


class SimFullCell:
    """A full cell as OCV(SOC) + R + one RC pair; positive current charges.

    The same ``seed`` gives the same voltages (only the instrument noise is random).
    """

    __slots__ = (
        "_as_per_unit_soc",
        "_gauss",
        "_noise_v",
        "_soc",
        "_span_v",
        "_spec",
        "_t_s",
        "_v_rc",
    )

    def __init__(self, spec: SimFullCellSpec, seed: int) -> None:
        self._spec = spec
        self._gauss = random.Random(seed).gauss
        self._noise_v = spec.noise_v
        self._span_v = spec.ocv_full_v - spec.ocv_empty_v
        self._as_per_unit_soc = spec.capacity_mah * _S_PER_H / 1000.0  # A·s for 0 -> 100 %
        self._soc = spec.soc0
        self._v_rc = 0.0
        self._t_s = 0.0

    # -- read-only state ---------------------------------------------------------------

    @property
    def spec(self) -> SimFullCellSpec:
        """The spec this cell was built from."""
        return self._spec

    @property
    def soc(self) -> float:
        """State of charge (1.0 is 100 %); runs slightly past 0..1 when over-driven."""
        return self._soc

    @property
    def t_s(self) -> float:
        """Cell time (s) since construction."""
        return self._t_s

    @property
    def rc_voltage_v(self) -> float:
        """Present voltage across the RC pair (V)."""
        return self._v_rc

    def ocv(self, soc: float) -> float:
        """Open-circuit voltage (V) at ``soc``: smooth and strictly increasing."""
        spec = self._spec
        if soc < 0.0:
            return spec.ocv_empty_v + self._edge_slope_v() * soc
        if soc > 1.0:
            return spec.ocv_full_v + self._edge_slope_v() * (soc - 1.0)
        shape = soc + _OCV_SHAPE * math.sin(2.0 * math.pi * soc) / (2.0 * math.pi)
        return spec.ocv_empty_v + self._span_v * shape

    def ocv_slope(self, soc: float) -> float:
        """dOCV/dSOC (V per unit SOC) at ``soc``; always > 0."""
        if soc < 0.0 or soc > 1.0:
            return self._edge_slope_v()
        return self._span_v * (1.0 + _OCV_SHAPE * math.cos(2.0 * math.pi * soc))

    def _edge_slope_v(self) -> float:
        return _OCV_OUTSIDE_GAIN * self._span_v * (1.0 + _OCV_SHAPE)

    # -- the hot path ------------------------------------------------------------------

    def advance(self, dt_s: float, current_a: float) -> float:
        """Pass a constant current_a for dt_s seconds (positive charges); return the
        terminal voltage (V) at the end of the interval, with instrument noise."""
        if not dt_s > 0:
            raise ConfigError(field="dt_s", problem=f"must be > 0 s, got {dt_s!r}")
        spec = self._spec
        decay = math.exp(-dt_s / spec.tau1_s)
        self._v_rc = self._v_rc * decay + current_a * spec.r1_ohm * (1.0 - decay)
        self._soc += current_a * dt_s / self._as_per_unit_soc
        self._t_s += dt_s
        v = self.ocv(self._soc) + current_a * spec.r_ohm + self._v_rc
        noise_v = self._noise_v
        if noise_v > 0:
            v += self._gauss(0.0, noise_v)
        return v

    def current_for_voltage(self, voltage_v: float, dt_s: float, limit_a: float) -> float:
        """The constant current (A) that brings the terminal voltage (noise-free) to
        ``voltage_v`` at the end of the next ``dt_s``, clamped to ±``limit_a``.

        V(dt) = OCV(soc + k·I) + I·R + v_rc·e + I·R1·(1 − e), with k = dt / capacity and
        e = exp(−dt/τ1); the OCV is linearised around the present SOC, which makes it a
        closed form. Does not change the cell.
        """
        if not dt_s > 0:
            raise ConfigError(field="dt_s", problem=f"must be > 0 s, got {dt_s!r}")
        if not limit_a >= 0:
            raise ConfigError(field="limit_a", problem=f"must be >= 0 A, got {limit_a!r}")
        spec = self._spec
        decay = math.exp(-dt_s / spec.tau1_s)
        soc = self._soc
        k = dt_s / self._as_per_unit_soc
        gap_v = voltage_v - self.ocv(soc) - self._v_rc * decay
        ohm = spec.r_ohm + spec.r1_ohm * (1.0 - decay) + self.ocv_slope(soc) * k
        current_a = gap_v / ohm
        if current_a > limit_a:
            return limit_a
        if current_a < -limit_a:
            return -limit_a
        return current_a
