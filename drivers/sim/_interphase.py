"""Interphase presets: how the Li|electrolyte interphase consumes Li and resists current.

The four presets are the four interphases of the main paper
(papers/asymmetric-cells-metal-incorporated-interphases.md, Fig. 2): metal-incorporated
interphases (MII) grown from LGPS-containing electrolytes, with a metal volume fraction
from very high (MII-1, pure LGPS) to below the percolation threshold (MII-3, LPSC:LGPS
16:1), and the metal-free SEI of plain LPSC as the reference.

The numbers are fitted, not measured: they make a simulated cell reproduce the paper's
orderings at its standard protocol (0.5 mA cm⁻², 0.5 mAh cm⁻² per half cycle, 0.785 cm²).
With that protocol the polarization is ``0.5e-3 A cm⁻² × ASR``, so 20 Ω cm² ≈ 10 mV.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from cellguard.drivers.errors import ConfigError

ShortKind = Literal["hard", "soft", "micro"]
"""How a short shows: ``hard`` collapses the voltage, ``soft`` drops it intermittently
and then turns hard, ``micro`` lets it slide towards zero while Li is plated."""


@dataclass(frozen=True)
class InterphaseModel:
    """Parameters of one interphase; times in hours of cell time unless named ``_s``.

    Li loss from each electrode (mAh cm⁻²) after ``t_h`` hours is
    ``A·t_h^p`` with ``A = li_loss_coeff_mah_cm2`` and ``p = li_loss_exponent`` for a
    mixed-conducting interphase, which keeps reducing the electrolyte and never stops;
    a finite ``li_loss_cap_mah_cm2`` makes it self-limiting, saturating smoothly at the
    cap with the same initial law.
    """

    name: str
    description: str
    asr0_ohm_cm2: float
    """Area-specific resistance of the fresh cell (Ω cm²)."""
    asr_growth_ohm_cm2_per_mah_cm2: float
    """ASR added per mAh cm⁻² of Li consumed: the consumed Li thickens the interphase."""
    li_loss_coeff_mah_cm2: float
    """``A`` of the loss law: Li lost from each electrode after 1 h (mAh cm⁻²)."""
    li_loss_exponent: float
    """``p`` of the loss law (dimensionless, 0 < p ≤ 1)."""
    li_loss_cap_mah_cm2: float
    """Saturation of a self-limiting interphase (mAh cm⁻²); ``math.inf`` if it never stops."""
    activation_onset_h: float
    """Cell time after which the ASR decreases ("activation"); ``math.inf`` for never."""
    activation_depth: float
    """Fraction of the ASR that activation removes in the end (0 ≤ depth < 1)."""
    activation_tau_h: float
    """Time constant of the activation (h)."""
    depletion_plateau_v: float
    """Voltage shift a stripped, empty electrode relaxes towards (V)."""
    depletion_tau_s: float
    """Time constant of that shift (s): short for a strongly electron-conducting MII."""
    short_kind: ShortKind | None
    """Kind of short this interphase ends in; ``None`` if it does not short."""
    short_onset_h: float
    """Nominal onset of the short in a symmetric cell (h), before the per-cell jitter."""
    asym_short_delay: float
    """Relative delay of the short in an asymmetric cell, scaled by how thin the working
    electrode is: ``onset × (1 + delay × (1 − working/counter))``. A thin working
    electrode feeds less Li into a growing filament."""

    def __post_init__(self) -> None:
        positive = {
            "asr0_ohm_cm2": self.asr0_ohm_cm2,
            "li_loss_cap_mah_cm2": self.li_loss_cap_mah_cm2,
            "activation_tau_h": self.activation_tau_h,
            "depletion_plateau_v": self.depletion_plateau_v,
            "depletion_tau_s": self.depletion_tau_s,
            "short_onset_h": self.short_onset_h,
        }
        for field, value in positive.items():
            if not value > 0:
                raise ConfigError(field=field, problem=f"must be > 0, got {value!r}")
        if not 0 < self.li_loss_exponent <= 1:
            raise ConfigError(
                field="li_loss_exponent",
                problem=f"must be in (0, 1], got {self.li_loss_exponent!r}",
            )
        if not 0 <= self.activation_depth < 1:
            raise ConfigError(
                field="activation_depth",
                problem=f"must be in [0, 1), got {self.activation_depth!r}",
            )
        non_negative = {
            "asr_growth_ohm_cm2_per_mah_cm2": self.asr_growth_ohm_cm2_per_mah_cm2,
            "li_loss_coeff_mah_cm2": self.li_loss_coeff_mah_cm2,
            "asym_short_delay": self.asym_short_delay,
        }
        for field, value in non_negative.items():
            if not value >= 0:
                raise ConfigError(field=field, problem=f"must be >= 0, got {value!r}")

    def li_loss_mah_cm2(self, t_h: float) -> float:
        """Li consumed by the interphase from each electrode after ``t_h`` hours (mAh cm⁻²)."""
        raw = self.li_loss_coeff_mah_cm2 * math.pow(t_h, self.li_loss_exponent)
        cap = self.li_loss_cap_mah_cm2
        if cap == math.inf:
            return raw
        # Same slope as the power law while small, so a self-limiting SEI starts like an
        # MII and then stops; exp keeps it smooth and below the cap.
        return cap * (1.0 - math.exp(-raw / cap))

    def asr_ohm_cm2(self, t_h: float) -> float:
        """ASR after ``t_h`` hours at the mean temperature (Ω cm²), before shorts/depletion."""
        asr = self.asr0_ohm_cm2 + self.asr_growth_ohm_cm2_per_mah_cm2 * self.li_loss_mah_cm2(t_h)
        if t_h > self.activation_onset_h:
            # The paper attributes the late polarization decrease of MII-2 to Li deposited
            # inside the interphase, which shortens the ionic path: a one-off relaxation.
            elapsed_h = t_h - self.activation_onset_h
            asr *= 1.0 - self.activation_depth * (
                1.0 - math.exp(-elapsed_h / self.activation_tau_h)
            )
        return asr


INTERPHASES: Mapping[str, InterphaseModel] = MappingProxyType(
    {
        "MII-1": InterphaseModel(
            name="MII-1",
            description="pure LGPS: very high metal fraction, strongly mixed conducting",
            # 40 mV fresh, ~165 mV after 500 h in a symmetric cell.
            asr0_ohm_cm2=80.0,
            asr_growth_ohm_cm2_per_mah_cm2=18.0,
            # A thin 20 µm electrode (4.1 mAh cm⁻²) empties after ~52 h, 50 µm after ~270 h,
            # 100 µm only after ~900 h: p = 0.6 is what keeps the symmetric cell alive past
            # 800 h while the 50 µm cell still dies before 300 h.
            li_loss_coeff_mah_cm2=0.336,
            li_loss_exponent=0.6,
            li_loss_cap_mah_cm2=math.inf,
            activation_onset_h=math.inf,
            activation_depth=0.0,
            activation_tau_h=1.0,
            depletion_plateau_v=6.5,
            depletion_tau_s=60.0,
            short_kind=None,
            short_onset_h=math.inf,
            asym_short_delay=0.0,
        ),
        "MII-2": InterphaseModel(
            name="MII-2",
            description="LPSC:LGPS 4:1: high metal fraction, mixed conducting",
            # ~21 mV fresh, peak ~26 mV around 55-60 h, then "activation" down to ~15 mV.
            asr0_ohm_cm2=42.0,
            asr_growth_ohm_cm2_per_mah_cm2=2.0,
            # 20 µm empties after ~80 h, 50 µm after ~280 h (before its short).
            li_loss_coeff_mah_cm2=0.108,
            li_loss_exponent=0.8,
            li_loss_cap_mah_cm2=math.inf,
            activation_onset_h=60.0,
            activation_depth=0.48,
            activation_tau_h=40.0,
            # Fast enough to cross 5 V within the ~7 min a late depletion episode lasts
            # (each episode is as long as the Li consumed since the last one).
            depletion_plateau_v=6.0,
            depletion_tau_s=150.0,
            short_kind="micro",
            # About 3× the life of the SEI symmetric cell (the paper's Fig. 2k).
            short_onset_h=325.0,
            asym_short_delay=0.15,
        ),
        "MII-3": InterphaseModel(
            name="MII-3",
            description="LPSC:LGPS 16:1: metal fraction below percolation, self-limiting",
            asr0_ohm_cm2=14.0,
            asr_growth_ohm_cm2_per_mah_cm2=8.0,
            li_loss_coeff_mah_cm2=0.03,
            li_loss_exponent=0.5,
            li_loss_cap_mah_cm2=0.15,
            activation_onset_h=math.inf,
            activation_depth=0.0,
            activation_tau_h=1.0,
            depletion_plateau_v=4.0,
            depletion_tau_s=300.0,
            short_kind="soft",
            short_onset_h=800.0,
            asym_short_delay=0.15,
        ),
        "SEI": InterphaseModel(
            name="SEI",
            description="plain LPSC: metal-free, electronically insulating, self-limiting",
            # ~11 mV fresh, ~12 mV once the SEI has stopped growing.
            asr0_ohm_cm2=21.0,
            asr_growth_ohm_cm2_per_mah_cm2=8.0,
            li_loss_coeff_mah_cm2=0.05,
            li_loss_exponent=0.5,
            li_loss_cap_mah_cm2=0.25,
            activation_onset_h=math.inf,
            activation_depth=0.0,
            activation_tau_h=1.0,
            depletion_plateau_v=3.0,
            depletion_tau_s=600.0,
            short_kind="soft",
            short_onset_h=106.0,
            asym_short_delay=0.15,
        ),
    }
)
"""The four presets of the main paper, by name."""


def interphase(name: str) -> InterphaseModel:
    """The preset called ``name``; raises :class:`ConfigError` for an unknown name."""
    try:
        return INTERPHASES[name]
    except KeyError:
        raise ConfigError(
            field="interphase", problem="must be one of MII-1, MII-2, MII-3, SEI"
        ) from None
