"""Pre-flight of a protocol: will the cell last the protocol, is the length sane?

``cellguard protocol check`` runs this before any current flows. It walks the
protocol's steps in the order the instrument runs them (repeats unrolled, gotos assumed
not to fire) and keeps a Li balance of the working electrode: a strip takes its charge,
a plate gives back ``CE ×`` its charge (every mAh cm⁻² plated loses ``1 − CE`` of
itself to the interphase, as :mod:`cellguard.protocols.analytics` defines the average
Coulombic efficiency of an asymmetric cell). The electrode is exhausted in the first
strip that finds less Li than it takes. CE is an assumption the user states
(``--ce``); the figure it gives is a forecast, not a measurement.

All lengths come out in one unit family, hours (and days beside them from two days on),
so a protocol's length and its exhaustion can be compared at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.script._model import (
    HoldVoltage,
    Plate,
    Protocol,
    Repeat,
    Rest,
    Strip,
)

__all__ = ["DEFAULT_CE", "Preflight", "format_hours", "preflight"]

DEFAULT_CE = 0.99
"""Li Coulombic efficiency assumed when none is stated: a good Li|sulfide interphase."""
ABSURD_LENGTH_S = 365 * 86400.0
"""Longer than a year: no Li-metal test in the papers runs half as long (a typo'd repeat)."""
_S_PER_H = 3600.0
_H_PER_D = 24.0
# The Li balance gives up after this many steps run (~0.3 s): 100,000 cycles of two steps.
_MAX_STEPS_RUN = 200_000


def format_hours(seconds_: float) -> str:
    """A length in h, with days beside it from two days on: ``1000 h (41.7 d)``."""
    hours = seconds_ / _S_PER_H
    text = f"{_number(hours)} h"
    if hours >= 2 * _H_PER_D:
        text += f" ({_number(hours / _H_PER_D)} d)"
    return text


def _number(value: float) -> str:
    # Plain digits, never 4e+06: an absurd length must read as absurd.
    return f"{value:.4g}" if value < 1e4 else f"{value:,.0f}"


@dataclass(frozen=True)
class Preflight:
    """What the pre-flight found (charges in mAh cm⁻², times in s of test time).

    ``exhausted_s``/``exhausted_cycle``: when and in which cycle the working electrode
    runs out (None if it lasts the protocol, or when it cannot be said: then
    ``unknown`` names why). ``warnings``: one line each, for the user.
    """

    ce: float
    length_s: float
    working_li_mah_cm2: float | None
    exhausted_s: float | None
    exhausted_cycle: int | None
    unknown: str
    warnings: tuple[str, ...]

    def lines(self) -> list[str]:
        """The report, as ``protocol check`` prints it."""
        out: list[str] = []
        li = self.working_li_mah_cm2
        if li is not None:
            head = f"pre-flight at an assumed Li CE of {self.ce * 100:.4g} % (--ce): "
            if self.unknown:
                out.append(f"{head}cannot forecast the thin electrode ({self.unknown})")
            elif self.exhausted_s is None:
                out.append(f"{head}the thin electrode's {li:.4g} mAh/cm2 of Li lasts the protocol")
            else:
                out.append(
                    f"{head}the thin electrode's {li:.4g} mAh/cm2 of Li runs out in "
                    f"cycle {self.exhausted_cycle}, at {format_hours(self.exhausted_s)}"
                )
        out.extend(f"WARNING: {w}" for w in self.warnings)
        return out


def preflight(protocol: Protocol, ce: float = DEFAULT_CE) -> Preflight:
    """The pre-flight of ``protocol`` (validated already) at Li Coulombic efficiency ``ce``."""
    if not (0.0 < ce <= 1.0):
        raise ConfigError(field="--ce", problem=f"must be a fraction in (0, 1], got {ce!r}")
    cell = protocol.cell
    li = cell.working_li_mah_cm2 if cell.cell_type == "asymmetric" else None
    walk = _Walk(protocol, ce, li)
    walk.run()
    warnings: list[str] = []
    if li is not None and walk.exhausted_s is not None:
        warnings.append(
            f"the thin electrode ({li:.4g} mAh/cm2) runs out in cycle {walk.exhausted_cycle} "
            f"at {format_hours(walk.exhausted_s)}, before the protocol's end at "
            f"{format_hours(walk.length_s)} ({protocol.expected_cycles()} cycles): the test "
            "will end in a depletion; fewer cycles or a thicker electrode if that is not "
            "the point"
        )
    if walk.length_s > ABSURD_LENGTH_S:
        warnings.append(
            f"the protocol runs {format_hours(walk.length_s)}, longer than a year: "
            "check the repeat counts and the step lengths"
        )
    return Preflight(
        ce=ce,
        length_s=walk.length_s,
        working_li_mah_cm2=li,
        exhausted_s=walk.exhausted_s,
        exhausted_cycle=walk.exhausted_cycle,
        unknown=(walk.unknown or walk.cut_short) if li is not None else "",
        warnings=tuple(warnings),
    )


class _Walk:
    """Runs the steps in order with the Li balance (see the module doc)."""

    def __init__(self, protocol: Protocol, ce: float, li_mah_cm2: float | None) -> None:
        self.protocol = protocol
        self.ce = ce
        self.li_mah_cm2 = li_mah_cm2
        self.length_s = 0.0
        self.cycle = 1
        self.exhausted_s: float | None = None
        self.exhausted_cycle: int | None = None
        self.unknown = ""
        self.cut_short = ""
        self.t_s = 0.0

    def run(self) -> None:
        steps = self.protocol.steps
        # The length from how often each step runs (exact, however many repeats); the
        # Li balance below needs the steps in order, so it stops once it knows.
        self.length_s = sum(
            self._step_s(step) * self.protocol._multiplicity(number)
            for number, step in enumerate(steps, start=1)
        )
        counts: dict[int, int] = {}
        index = 0
        runs = 0
        self.t_s = 0.0
        while index < len(steps) and self.exhausted_s is None and self.li_mah_cm2 is not None:
            runs += 1
            if runs > _MAX_STEPS_RUN:
                self.cut_short = f"it lasts beyond cycle {self.cycle - 1}"
                return
            step = steps[index]
            if isinstance(step, Repeat):
                done = counts.get(index, 0) + 1
                if done < step.times:
                    counts[index] = done
                    # Repeats inside this one start counting afresh on the way round.
                    for inner in range(step.first_step - 1, index):
                        counts.pop(inner, None)
                    self.cycle += 1
                    index = step.first_step - 1
                    continue
                counts.pop(index, None)
            else:
                self._run_step(step)
            index += 1

    def _step_s(self, step: object) -> float:
        """How long ``step`` runs (s); 0 for what the walk cannot say or takes no time."""
        if isinstance(step, Rest):
            return step.duration.value
        if isinstance(step, HoldVoltage):
            return 0.0 if step.duration is None else step.duration.value
        if not isinstance(step, Strip | Plate):
            return 0.0
        cell = self.protocol.cell
        current_ma = cell.current_ma(step.current)
        ends_s = []
        if step.duration is not None:
            ends_s.append(step.duration.value)
        if step.capacity is not None:
            ends_s.append(cell.capacity_mah_of(step.capacity) / current_ma * _S_PER_H)
        if not ends_s:
            self.unknown = self.unknown or "a step ends only at a voltage"
            return 0.0
        return min(ends_s)

    def _run_step(self, step: object) -> None:
        step_s = self._step_s(step)
        if isinstance(step, HoldVoltage):
            self.unknown = self.unknown or "a voltage hold moves an unknown charge"
        area_cm2 = self.protocol.cell.electrode_area_cm2
        li = self.li_mah_cm2
        if isinstance(step, Strip | Plate) and li is not None and area_cm2 is not None:
            current_ma = self.protocol.cell.current_ma(step.current)
            charge_mah_cm2 = current_ma * step_s / _S_PER_H / area_cm2
            if isinstance(step, Strip):
                if charge_mah_cm2 > li and not self.unknown:
                    self.exhausted_s = self.t_s + step_s * li / charge_mah_cm2
                    self.exhausted_cycle = self.cycle
                self.li_mah_cm2 = max(0.0, li - charge_mah_cm2)
            else:
                self.li_mah_cm2 = li + self.ce * charge_mah_cm2
        self.t_s += step_s
