"""The protocol model: quantities with checked units, steps, the cell, the protocol.

Every quantity carries its unit, normalised to one canonical unit per family so that
``minutes(10) == seconds(600)`` and the text form and the Python API compile to equal
models. Conversions to absolute values (mA, mAh, s, V) happen only through a
:class:`CellSpec`, because areal units need the electrode area and C-rates the cell's
capacity. Mixing units wrongly is a :class:`ConfigError` naming the step, never a
silent conversion.

Sign convention (as in :mod:`cellguard.protocols.galvanostatic`): a **positive
current strips Li from the working electrode**. ``Strip`` and ``Charge`` run a
positive current, ``Plate`` and ``Discharge`` a negative one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.galvanostatic import InstrumentLimits
from cellguard.protocols.units import LI_MAH_CM2_PER_UM, disc_area_cm2

QuantityKind = Literal["current", "capacity", "time", "voltage", "temperature"]
CellType = Literal["symmetric", "asymmetric", "full"]

# Canonical unit -> family. "C" is a C-rate: a multiple of the cell's capacity per hour.
_KIND_OF_UNIT: dict[str, QuantityKind] = {
    "mA/cm2": "current",
    "mA": "current",
    "C": "current",
    "mAh/cm2": "capacity",
    "mAh": "capacity",
    "s": "time",
    "V": "voltage",
    "°C": "temperature",
}
ALLOWED_UNITS: dict[QuantityKind, str] = {
    "current": "a current (mA/cm2, mA, A or C-rate)",
    "capacity": "a capacity (mAh/cm2 or mAh)",
    "time": "a time (s, min or h)",
    "voltage": "a voltage (V or mV)",
    "temperature": "a temperature (°C, degC or C)",
}
_S_PER_H = 3600.0
_S_PER_MIN = 60.0
_ABSOLUTE_ZERO_C = -273.15


def _fmt(value: float) -> str:
    return f"{value:.6g}"


@dataclass(frozen=True)
class Quantity:
    """A number with its unit: one of mA/cm2, mA, C (C-rate), mAh/cm2, mAh, s, V, °C.

    Build it with the constructor functions (:func:`ma_cm2`, :func:`c_rate`,
    :func:`minutes`, ...) or :func:`~cellguard.protocols.script.parse_quantity`; they
    convert A, min, h and mV to the canonical unit.
    """

    value: float
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in _KIND_OF_UNIT:
            raise ConfigError(
                field="unit",
                problem=f"unknown unit {self.unit!r}; allowed: {', '.join(_KIND_OF_UNIT)}",
            )
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(field=self.unit, problem=f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(field=self.unit, problem=f"must be finite, got {value!r}")
        # Voltages may be zero or negative (a Li|Li cell sits near 0 V), and so may
        # temperatures (the papers' tests at -5 °C); the rest are magnitudes, the
        # direction comes from the step.
        if self.kind == "temperature" and not value >= _ABSOLUTE_ZERO_C:
            raise ConfigError(
                field=self.unit, problem=f"must be above absolute zero (-273.15 °C), got {value:g}"
            )
        if self.kind not in ("voltage", "temperature") and not value > 0:
            raise ConfigError(
                field=self.unit,
                problem=f"{self.kind} must be > 0 (the step gives the direction), got {value:g}",
            )
        object.__setattr__(self, "value", float(value))

    @property
    def kind(self) -> QuantityKind:
        """The family: ``current``, ``capacity``, ``time``, ``voltage`` or ``temperature``."""
        return _KIND_OF_UNIT[self.unit]

    @property
    def is_areal(self) -> bool:
        """Whether converting to an absolute value needs the electrode area."""
        return self.unit.endswith("/cm2")

    def __str__(self) -> str:
        if self.unit == "C":
            inverse = 1.0 / self.value
            if self.value < 1 and inverse.is_integer():
                return f"C/{inverse:g}"
            return f"{_fmt(self.value)}C"
        if self.unit == "s":
            return format_duration(self.value)
        return f"{_fmt(self.value)} {self.unit}"


def format_duration(seconds_: float) -> str:
    """``seconds_`` in the largest whole unit (``3600`` → ``1 h``, ``90`` → ``90 s``)."""
    if seconds_ >= _S_PER_H and (seconds_ / _S_PER_H).is_integer():
        return f"{seconds_ / _S_PER_H:g} h"
    if seconds_ >= _S_PER_MIN and (seconds_ / _S_PER_MIN).is_integer():
        return f"{seconds_ / _S_PER_MIN:g} min"
    return f"{_fmt(seconds_)} s"


# ---------------------------------------------------------------- constructors


def ma_cm2(value: float) -> Quantity:
    """A current density in mA cm⁻² (the standard protocol: ``ma_cm2(0.5)``)."""
    return Quantity(value, "mA/cm2")


def ma(value: float) -> Quantity:
    """An absolute current in mA."""
    return Quantity(value, "mA")


def amps(value: float) -> Quantity:
    """An absolute current in A (held as mA)."""
    return Quantity(value * 1000.0, "mA")


def c_rate(value: float) -> Quantity:
    """A C-rate: ``c_rate(0.5)`` is C/2; needs ``CellSpec.capacity_mah``."""
    return Quantity(value, "C")


def mah_cm2(value: float) -> Quantity:
    """An areal capacity in mAh cm⁻²."""
    return Quantity(value, "mAh/cm2")


def mah(value: float) -> Quantity:
    """An absolute capacity in mAh."""
    return Quantity(value, "mAh")


def seconds(value: float) -> Quantity:
    """A time in s."""
    return Quantity(value, "s")


def minutes(value: float) -> Quantity:
    """A time in min (held as s)."""
    return Quantity(value * _S_PER_MIN, "s")


def hours(value: float) -> Quantity:
    """A time in h (held as s)."""
    return Quantity(value * _S_PER_H, "s")


def volts(value: float) -> Quantity:
    """A voltage in V (may be negative: a Li|Li cell's sign follows the current)."""
    return Quantity(value, "V")


def millivolts(value: float) -> Quantity:
    """A voltage in mV (held as V)."""
    return Quantity(value / 1000.0, "V")


def celsius(value: float) -> Quantity:
    """A temperature in °C (a chamber setpoint, or the width of a band around one)."""
    return Quantity(value, "°C")


# ---------------------------------------------------------------- the cell


@dataclass(frozen=True)
class CellSpec:
    """The cell under test.

    Give exactly one of ``area_cm2`` or ``diameter_mm`` (a missing area is refused by
    :meth:`Protocol.validate`, since only some protocols need it). Li electrodes are
    given as a thickness in µm (0.205 mAh cm⁻² per µm) or an areal capacity in mAh cm⁻²,
    not both. For a symmetric cell give ``thick_li_*`` (both electrodes); for an
    asymmetric cell ``thin_li_*`` is the working electrode, stripped first.
    ``capacity_mah`` is the full-cell capacity that defines 1C.
    """

    cell_type: CellType
    area_cm2: float | None = None
    diameter_mm: float | None = None
    thick_li_um: float | None = None
    thin_li_um: float | None = None
    thick_li_mah_cm2: float | None = None
    thin_li_mah_cm2: float | None = None
    capacity_mah: float | None = None
    interphase: str | None = None

    def __post_init__(self) -> None:
        if self.cell_type not in get_args(CellType):
            raise ConfigError(
                field="cell.type",
                problem=f"must be 'symmetric', 'asymmetric' or 'full', got {self.cell_type!r}",
            )
        if self.area_cm2 is not None and self.diameter_mm is not None:
            raise ConfigError(
                field="cell.area_cm2",
                problem="give area_cm2 or diameter_mm, not both",
            )
        for name in (
            "area_cm2",
            "diameter_mm",
            "thick_li_um",
            "thin_li_um",
            "thick_li_mah_cm2",
            "thin_li_mah_cm2",
            "capacity_mah",
        ):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not value > 0
            ):
                raise ConfigError(
                    field=f"cell.{name}", problem=f"must be a finite number > 0, got {value!r}"
                )
        for side in ("thick", "thin"):
            if (
                getattr(self, f"{side}_li_um") is not None
                and getattr(self, f"{side}_li_mah_cm2") is not None
            ):
                raise ConfigError(
                    field=f"cell.{side}_li_um",
                    problem=f"give {side}_li_um or {side}_li_mah_cm2, not both",
                )
        if self.interphase is not None and not isinstance(self.interphase, str):
            raise ConfigError(
                field="cell.interphase", problem=f"must be a label, got {self.interphase!r}"
            )
        thick, thin = self.thick_li_capacity_mah_cm2, self.thin_li_capacity_mah_cm2
        if (
            self.cell_type == "symmetric"
            and thin is not None
            and thick is not None
            and not math.isclose(thin, thick)
        ):
            raise ConfigError(
                field="cell.thin_li_um",
                problem="a symmetric cell has two equal Li electrodes; use an asymmetric "
                "cell for a thin electrode",
            )
        if self.cell_type == "asymmetric":
            if thin is None:
                raise ConfigError(
                    field="cell.thin_li_um",
                    problem="required for an asymmetric cell: the thin working electrode "
                    "(thin_li_um in µm or thin_li_mah_cm2)",
                )
            if thick is not None and not thin < thick:
                raise ConfigError(
                    field="cell.thin_li_um",
                    problem="the thin electrode must be thinner than the thick Li source",
                )

    @property
    def electrode_area_cm2(self) -> float | None:
        """Electrode area in cm², from ``area_cm2`` or ``diameter_mm``; None if unknown."""
        if self.diameter_mm is not None:
            return disc_area_cm2(self.diameter_mm)
        return None if self.area_cm2 is None else float(self.area_cm2)

    @property
    def thick_li_capacity_mah_cm2(self) -> float | None:
        """Li in the thick (source) electrode, mAh cm⁻²; None if not given."""
        if self.thick_li_um is not None:
            return self.thick_li_um * LI_MAH_CM2_PER_UM
        return None if self.thick_li_mah_cm2 is None else float(self.thick_li_mah_cm2)

    @property
    def thin_li_capacity_mah_cm2(self) -> float | None:
        """Li in the thin electrode, mAh cm⁻²; None if not given."""
        if self.thin_li_um is not None:
            return self.thin_li_um * LI_MAH_CM2_PER_UM
        return None if self.thin_li_mah_cm2 is None else float(self.thin_li_mah_cm2)

    @property
    def working_li_mah_cm2(self) -> float | None:
        """Li in the working electrode (stripped first), mAh cm⁻²; None if not given."""
        if self.cell_type == "asymmetric":
            return self.thin_li_capacity_mah_cm2
        if self.cell_type == "symmetric":
            thin = self.thin_li_capacity_mah_cm2
            return thin if thin is not None else self.thick_li_capacity_mah_cm2
        return None

    def _area(self, what: str) -> float:
        area = self.electrode_area_cm2
        if area is None:
            raise ConfigError(
                field="cell.area_cm2",
                problem=f"required to convert {what} to an absolute value: give area_cm2 "
                "or diameter_mm (a 10 mm disc is 0.785 cm²)",
            )
        return area

    def current_ma(self, current: Quantity) -> float:
        """``current`` as an absolute magnitude in mA on this cell."""
        if current.unit == "mA/cm2":
            return current.value * self._area(str(current))
        if current.unit == "C":
            if self.capacity_mah is None:
                raise ConfigError(
                    field="cell.capacity_mah",
                    problem=f"required for the C-rate {current}: the full-cell capacity in mAh "
                    "that defines 1C",
                )
            return current.value * self.capacity_mah
        if current.unit == "mA":
            return current.value
        raise ConfigError(field="current", problem=f"{current} is a {current.kind}, not a current")

    def capacity_mah_of(self, capacity: Quantity) -> float:
        """``capacity`` as an absolute value in mAh on this cell."""
        if capacity.unit == "mAh/cm2":
            return capacity.value * self._area(str(capacity))
        if capacity.unit == "mAh":
            return capacity.value
        raise ConfigError(
            field="capacity", problem=f"{capacity} is a {capacity.kind}, not a capacity"
        )


# ---------------------------------------------------------------- steps


def _require(where: str, what: str, q: object, kinds: tuple[QuantityKind, ...]) -> None:
    """Refuse ``q`` unless it is a Quantity of one of ``kinds``; ``what`` names its role."""
    allowed = " or ".join(ALLOWED_UNITS[k] for k in kinds)
    if not isinstance(q, Quantity):
        raise ConfigError(field=where, problem=f"{what} must be {allowed}, got {q!r}")
    if q.kind not in kinds:
        raise ConfigError(field=where, problem=f"{q} is a {q.kind}; {what} needs {allowed}".strip())


ConditionKind = Literal[
    "voltage above", "voltage below", "current below", "time reached", "capacity reached"
]
_CONDITION_QUANTITY: dict[str, QuantityKind] = {
    "voltage above": "voltage",
    "voltage below": "voltage",
    "current below": "current",
    "time reached": "time",
    "capacity reached": "capacity",
}


@dataclass(frozen=True)
class Condition:
    """What a goto tests on its step's last sample, when the step ends.

    ``voltage above``/``voltage below`` compare the voltage (inclusive, so a step that
    ended at its own cut-off takes a goto on the same voltage); ``current below``
    compares |current| (a CV hold's tail); ``time reached``/``capacity reached`` compare
    the step's own elapsed time and passed capacity (|I| integrated).
    """

    kind: ConditionKind
    threshold: Quantity

    def check(self, where: str) -> None:
        """Refuse an unknown condition or a threshold of the wrong unit."""
        if self.kind not in _CONDITION_QUANTITY:
            raise ConfigError(
                field=where,
                problem=f"unknown goto condition {self.kind!r}; allowed: "
                + ", ".join(f"'{k} <{v}>'" for k, v in _CONDITION_QUANTITY.items()),
            )
        _require(where, f"'if {self.kind}'", self.threshold, (_CONDITION_QUANTITY[self.kind],))

    @property
    def consumes_progress(self) -> bool:
        """Whether the condition can only hold after the step passed time or capacity."""
        return self.kind in ("time reached", "capacity reached")

    def __str__(self) -> str:
        return f"{self.kind} {self.threshold}"


@dataclass(frozen=True)
class Goto:
    """Jump to step ``to_step`` (1-based, or ``"end"``) if ``condition`` holds when the
    step carrying it ends; otherwise the protocol goes on with the next step.

    Runs host-driven only (:class:`~cellguard.protocols.script.HostRun`): a BTS step
    file has no conditional jump, so :func:`~cellguard.protocols.script.to_step_file`
    refuses it. Jumps into a Repeat are allowed only to its first step (the loop starts
    afresh, as when arriving in order); a jump out of a Repeat ends that loop (its count
    starts afresh next time); a backward jump starts a new cycle.
    """

    to_step: int | Literal["end"]
    condition: Condition

    def check(self, where: str) -> None:
        """Refuse a target that is not a step number or ``"end"``."""
        target = self.to_step
        if target != "end" and (isinstance(target, bool) or not isinstance(target, int)):
            raise ConfigError(
                field=where, problem=f"goto needs a step number or 'end', got {target!r}"
            )
        if not isinstance(self.condition, Condition):
            raise ConfigError(
                field=where, problem=f"goto needs a Condition, got {self.condition!r}"
            )
        self.condition.check(where)

    def __str__(self) -> str:
        target = "end" if self.to_step == "end" else f"step {self.to_step}"
        return f"then goto {target} if {self.condition}"


def _extras_text(
    limits: tuple[Limit, ...], goto: Goto | None, record_every: Quantity | None = None
) -> str:
    """Per-step limits, record interval and goto as protocol text (empty without)."""
    text = "".join(f" {limit.as_step_window()}" for limit in limits)
    if record_every is not None:
        text += f" record every {record_every}"
    return text + (f", {goto}" if goto is not None else "")


def _check_record_every(where: str, record_every: Quantity | None) -> None:
    if record_every is not None:
        _require(where, "'record every'", record_every, ("time",))


def _check_extras(
    where: str, limits: tuple[Limit, ...], goto: Goto | None, inside: Quantity | None = None
) -> tuple[Limit, ...]:
    """Check per-step limits and the goto; ``inside`` must lie strictly inside every
    voltage window (a cut-off or hold on the edge would trip the step's own limit)."""
    if isinstance(limits, VoltageBetween | CurrentBelow):
        limits = (limits,)  # one limit given bare: accept it as the one-element window
    if not isinstance(limits, tuple | list):
        raise ConfigError(
            field=where, problem=f"limits must be a sequence of limits, got {limits!r}"
        )
    limits = tuple(limits)
    for limit in limits:
        if not isinstance(limit, VoltageBetween | CurrentBelow):
            raise ConfigError(
                field=where,
                problem=f"a step limit must be VoltageBetween or CurrentBelow, got {limit!r}",
            )
        limit.check(where)
        if (
            isinstance(limit, VoltageBetween)
            and inside is not None
            and not limit.low.value < inside.value < limit.high.value
        ):
            raise ConfigError(
                field=where,
                problem=f"{inside} is not inside the step's window {limit.low} to "
                f"{limit.high}: the step would trip its own limit before it ends; "
                "widen the window or move the voltage inside it",
            )
    if goto is not None:
        if not isinstance(goto, Goto):
            raise ConfigError(field=where, problem=f"goto must be a Goto, got {goto!r}")
        goto.check(where)
    return limits


@dataclass(frozen=True)
class _CurrentStep:
    """A constant-current step, ending at the first of its time, capacity or voltage."""

    current: Quantity
    duration: Quantity | None = None
    capacity: Quantity | None = None
    until: Quantity | None = None
    """Cut-off voltage: the step ends when the cell reaches it."""
    source: str | None = field(default=None, compare=False, repr=False)
    """The text this step was parsed from (for messages); not part of the model."""
    limits: tuple[Limit, ...] = field(default=(), kw_only=True)
    """The step's own safety window, judged on every sample of this step only."""
    goto: Goto | None = field(default=None, kw_only=True)
    """Where to jump, on a condition, when the step ends (host-driven only)."""
    record_every: Quantity | None = field(default=None, kw_only=True)
    """This step's own record interval (else the protocol's ``record_every``)."""

    verb: ClassVar[str] = ""
    positive: ClassVar[bool] = True
    li_li: ClassVar[bool] = True
    """True for Strip/Plate (Li|Li cells), False for Charge/Discharge (full cells)."""

    @property
    def text(self) -> str:
        """The step as it would be written in a protocol file."""
        if self.source is not None:
            return self.source
        ends = [f"for {q}" for q in (self.duration, self.capacity) if q is not None]
        if self.until is not None:
            ends.append(f"until {self.until}")
        text = f"{self.verb} at {self.current} " + " or ".join(ends)
        return text + _extras_text(self.limits, self.goto, self.record_every)

    def check(self, where: str) -> None:
        """Refuse wrong units or a missing end condition; ``where`` names the step."""
        noun = self.verb.lower()
        _require(where, f"a {noun}", self.current, ("current",))
        if self.duration is not None:
            _require(where, "'for'", self.duration, ("time",))
        if self.capacity is not None:
            _require(where, "'for'", self.capacity, ("capacity",))
        if self.until is not None:
            _require(where, "'until'", self.until, ("voltage",))
        if self.duration is None and self.capacity is None and self.until is None:
            raise ConfigError(
                field=where,
                problem=f"a {noun} needs an end: 'for <time or capacity>' and/or 'until <voltage>'",
            )
        limits = _check_extras(where, self.limits, self.goto, self.until)
        object.__setattr__(self, "limits", limits)
        _check_record_every(where, self.record_every)


@dataclass(frozen=True)
class Strip(_CurrentStep):
    """Strip Li from the working electrode (positive current) — Li|Li cells."""

    verb: ClassVar[str] = "Strip"
    positive: ClassVar[bool] = True
    li_li: ClassVar[bool] = True


@dataclass(frozen=True)
class Plate(_CurrentStep):
    """Plate Li back on the working electrode (negative current) — Li|Li cells."""

    verb: ClassVar[str] = "Plate"
    positive: ClassVar[bool] = False
    li_li: ClassVar[bool] = True


@dataclass(frozen=True)
class Charge(_CurrentStep):
    """Constant-current charge (positive current) — full cells."""

    verb: ClassVar[str] = "Charge"
    positive: ClassVar[bool] = True
    li_li: ClassVar[bool] = False


@dataclass(frozen=True)
class Discharge(_CurrentStep):
    """Constant-current discharge (negative current) — full cells."""

    verb: ClassVar[str] = "Discharge"
    positive: ClassVar[bool] = False
    li_li: ClassVar[bool] = False


@dataclass(frozen=True)
class HoldVoltage:
    """Constant-voltage hold, ending when the current falls to ``until_current`` or
    after ``duration``, whichever comes first."""

    voltage: Quantity
    until_current: Quantity | None = None
    duration: Quantity | None = None
    source: str | None = field(default=None, compare=False, repr=False)
    limits: tuple[Limit, ...] = field(default=(), kw_only=True)
    """The step's own safety window, judged on every sample of this step only."""
    goto: Goto | None = field(default=None, kw_only=True)
    """Where to jump, on a condition, when the step ends (host-driven only)."""
    record_every: Quantity | None = field(default=None, kw_only=True)
    """This step's own record interval (else the protocol's ``record_every``)."""

    @property
    def text(self) -> str:
        """The step as it would be written in a protocol file."""
        if self.source is not None:
            return self.source
        ends = []
        if self.until_current is not None:
            ends.append(f"until {self.until_current}")
        if self.duration is not None:
            ends.append(f"for {self.duration}")
        extras = _extras_text(self.limits, self.goto, self.record_every)
        return f"Hold at {self.voltage} " + " or ".join(ends) + extras

    def check(self, where: str) -> None:
        """Refuse wrong units or a missing end condition."""
        _require(where, "a hold", self.voltage, ("voltage",))
        if self.until_current is not None:
            _require(where, "'until'", self.until_current, ("current",))
        if self.duration is not None:
            _require(where, "'for'", self.duration, ("time",))
        if self.until_current is None and self.duration is None:
            raise ConfigError(
                field=where, problem="a hold needs an end: 'until <current>' and/or 'for <time>'"
            )
        limits = _check_extras(where, self.limits, self.goto, self.voltage)
        object.__setattr__(self, "limits", limits)
        _check_record_every(where, self.record_every)


@dataclass(frozen=True)
class Rest:
    """No current for ``duration``."""

    duration: Quantity
    source: str | None = field(default=None, compare=False, repr=False)
    limits: tuple[Limit, ...] = field(default=(), kw_only=True)
    """The step's own safety window (e.g. a short seen at open circuit)."""
    goto: Goto | None = field(default=None, kw_only=True)
    """Where to jump, on a condition, when the rest ends (host-driven only)."""
    record_every: Quantity | None = field(default=None, kw_only=True)
    """This step's own record interval (else the protocol's ``record_every``)."""

    @property
    def text(self) -> str:
        """The step as it would be written in a protocol file."""
        if self.source is not None:
            return self.source
        return f"Rest for {self.duration}" + _extras_text(self.limits, self.goto, self.record_every)

    def check(self, where: str) -> None:
        """Refuse a rest that is not a time."""
        _require(where, "a rest", self.duration, ("time",))
        object.__setattr__(self, "limits", _check_extras(where, self.limits, self.goto))
        _check_record_every(where, self.record_every)


DEFAULT_SOAK_TIMEOUT_S = 4 * 3600.0
"""How long a temperature step waits for the chamber by default before it fails."""


@dataclass(frozen=True)
class SetTemperature:
    """Set an auxiliary chamber to ``temperature`` (°C); with ``within``, wait until the
    chamber's reading is within ± ``within`` of it, and fail after ``timeout``
    (default :data:`DEFAULT_SOAK_TIMEOUT_S`).

    Host-driven runs emit the setpoint and judge the reading; for a Neware step file,
    setpoints before the first current step become pre-start actions of the daemon
    (:func:`~cellguard.protocols.script.prestart_setpoints`) and any other is refused.
    No current flows while it waits (a soak).
    """

    temperature: Quantity
    within: Quantity | None = None
    timeout: Quantity | None = None
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """The step as it would be written in a protocol file."""
        if self.source is not None:
            return self.source
        text = f"Set temperature to {self.temperature}"
        if self.within is not None:
            text += f" and wait until within {self.within}"
            if self.timeout is not None:
                text += f" for at most {self.timeout}"
        return text

    @property
    def setpoint_c(self) -> float:
        """The setpoint in °C."""
        return self.temperature.value

    @property
    def band_c(self) -> float | None:
        """Half-width of the band to wait for, °C; None: do not wait."""
        return None if self.within is None else self.within.value

    @property
    def timeout_s(self) -> float | None:
        """How long to wait for the band at most, s; None when not waiting."""
        if self.within is None:
            return None
        return DEFAULT_SOAK_TIMEOUT_S if self.timeout is None else self.timeout.value

    def check(self, where: str) -> None:
        """Refuse non-temperatures, a band of zero width and a timeout without a wait."""
        _require(where, "a setpoint", self.temperature, ("temperature",))
        if self.within is not None:
            _require(where, "'within'", self.within, ("temperature",))
            if not self.within.value > 0:
                raise ConfigError(
                    field=where, problem=f"the band 'within {self.within}' must be > 0 °C wide"
                )
        if self.timeout is not None:
            _require(where, "'for at most'", self.timeout, ("time",))
            if self.within is None:
                raise ConfigError(
                    field=where,
                    problem="a timeout needs a wait: 'and wait until within <°C> for at most "
                    "<time>'",
                )


@dataclass(frozen=True)
class Repeat:
    """Run steps ``first_step``..``last_step`` (1-based) ``times`` times in total.

    It must directly follow ``last_step``; repeats nest when one range holds another.
    """

    first_step: int
    last_step: int
    times: int
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """The step as it would be written in a protocol file."""
        if self.source is not None:
            return self.source
        return f"Repeat steps {self.first_step}-{self.last_step} {self.times} times"

    def check(self, where: str) -> None:
        """Refuse counts that are not whole numbers >= 1."""
        for name in ("first_step", "last_step", "times"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    field=where, problem=f"{name} must be a whole number >= 1, got {value!r}"
                )


Step = Strip | Plate | Charge | Discharge | HoldVoltage | Rest | Repeat | SetTemperature
"""Any protocol step."""

_STEP_TYPES = (Strip, Plate, Charge, Discharge, HoldVoltage, Rest, Repeat, SetTemperature)


# ---------------------------------------------------------------- whole-test limits


@dataclass(frozen=True)
class VoltageBetween:
    """Whole-test limit: the instrument trips if the voltage leaves [low, high]."""

    low: Quantity
    high: Quantity

    def check(self, where: str) -> None:
        """Refuse non-voltages and an empty window."""
        for q in (self.low, self.high):
            if not isinstance(q, Quantity) or q.kind != "voltage":
                raise ConfigError(
                    field=where,
                    problem=f"{q} is not a voltage; allowed: {ALLOWED_UNITS['voltage']}",
                )
        if not self.low.value < self.high.value:
            raise ConfigError(
                field=where,
                problem=f"the lower voltage {self.low} must be below the upper {self.high}",
            )

    def __str__(self) -> str:
        return f"Voltage between {self.low} and {self.high}"

    def as_step_window(self) -> str:
        """The limit as a step's window: ``within -1 V and 1 V``."""
        return f"within {self.low} and {self.high}"


@dataclass(frozen=True)
class CurrentBelow:
    """Whole-test limit: the instrument trips if |current| exceeds ``current``."""

    current: Quantity

    def check(self, where: str) -> None:
        """Refuse a non-current."""
        if not isinstance(self.current, Quantity) or self.current.kind != "current":
            raise ConfigError(
                field=where,
                problem=f"{self.current} is not a current; allowed: {ALLOWED_UNITS['current']}",
            )

    def __str__(self) -> str:
        return f"Current below {self.current}"

    def as_step_window(self) -> str:
        """The limit as a step's window: ``within 2 mA`` (|current| at most that)."""
        return f"within {self.current}"


Limit = VoltageBetween | CurrentBelow
"""Any whole-test limit."""


# ---------------------------------------------------------------- instrument


@dataclass(frozen=True)
class InstrumentCapability:
    """What a channel can run: ranges (magnitudes), fastest recording, longest program.

    Defaults are a Neware CT-4008 channel under BTS 8.
    """

    current_range_ma: float = 10.0
    voltage_range_v: float = 5.0
    min_record_interval_s: float = 1.0
    max_steps: int = 254
    name: str = "Neware CT-4008"

    @classmethod
    def from_limits(cls, limits: InstrumentLimits) -> InstrumentCapability:
        """The capability of an instrument described by galvanostatic's limits."""
        return cls(
            current_range_ma=limits.current_range_ma,
            voltage_range_v=limits.voltage_range_v,
            name=limits.name,
        )


def as_capability(limits: InstrumentLimits | InstrumentCapability) -> InstrumentCapability:
    """Either description of an instrument, as an :class:`InstrumentCapability`."""
    if isinstance(limits, InstrumentLimits):
        return InstrumentCapability.from_limits(limits)
    return limits


# ---------------------------------------------------------------- the protocol


def step_label(number: int, step: Step) -> str:
    """How messages name a step: ``step 2 'Strip at 0.5 mA/cm2 for 1 h'``."""
    return f"step {number} {step.text!r}"


@dataclass(frozen=True)
class Protocol:
    """A named sequence of steps on a cell, with whole-test limits and a record interval.

    Construction refuses what can never make sense (wrong units, repeat ranges out of
    order); :meth:`validate` refuses what this cell or instrument cannot run.
    """

    name: str
    cell: CellSpec
    steps: Sequence[Step]
    limits: Sequence[Limit] = ()
    record_every: Quantity = field(default_factory=lambda: seconds(60))

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "limits", tuple(self.limits))
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(field="protocol.name", problem="required: a non-empty name")
        if not isinstance(self.cell, CellSpec):
            raise ConfigError(field="cell", problem=f"required: a CellSpec, got {self.cell!r}")
        if not self.steps:
            raise ConfigError(field="protocol.steps", problem="a protocol needs at least one step")
        for number, step in enumerate(self.steps, start=1):
            if not isinstance(step, _STEP_TYPES):
                raise ConfigError(
                    field=f"step {number}",
                    problem="must be Strip, Plate, Charge, Discharge, HoldVoltage, Rest, "
                    f"Repeat or SetTemperature, got {step!r}",
                )
            step.check(step_label(number, step))
        self._check_repeats()
        self._check_gotos()
        for index, limit in enumerate(self.limits, start=1):
            if not isinstance(limit, VoltageBetween | CurrentBelow):
                raise ConfigError(
                    field=f"protocol.limits[{index}]",
                    problem=f"must be VoltageBetween or CurrentBelow, got {limit!r}",
                )
            limit.check(f"protocol.limits[{index}] {str(limit)!r}")
        if not isinstance(self.record_every, Quantity) or self.record_every.kind != "time":
            raise ConfigError(
                field="protocol.record_every",
                problem=f"{self.record_every} is not a time; allowed: {ALLOWED_UNITS['time']}",
            )

    def _check_repeats(self) -> None:
        open_ranges: list[tuple[int, int]] = []
        for number, step in enumerate(self.steps, start=1):
            if not isinstance(step, Repeat):
                continue
            where = step_label(number, step)
            first, last = step.first_step, step.last_step
            if first > last:
                raise ConfigError(
                    field=where,
                    problem=f"steps {first}-{last} are out of order; write the first step "
                    "first (e.g. 'Repeat steps 2-3 10 times')",
                )
            if last != number - 1:
                raise ConfigError(
                    field=where,
                    problem=f"a repeat must directly follow the last step it repeats: "
                    f"step {number} can repeat steps up to {number - 1}, not {last}",
                )
            for other_first, other_last in open_ranges:
                # Ranges nest or are disjoint; a partial overlap has no loop structure.
                if other_first < first <= other_last:
                    raise ConfigError(
                        field=where,
                        problem=f"steps {first}-{last} partly overlap the repeated steps "
                        f"{other_first}-{other_last}; repeats must nest or be separate",
                    )
            open_ranges.append((first, number))

    def repeat_ranges(self) -> list[tuple[int, int, int]]:
        """Every Repeat as (first step, last step, the Repeat's own step number)."""
        return [
            (step.first_step, step.last_step, number)
            for number, step in enumerate(self.steps, start=1)
            if isinstance(step, Repeat)
        ]

    def _check_gotos(self) -> None:
        count = len(self.steps)
        for number, step in enumerate(self.steps, start=1):
            goto = getattr(step, "goto", None)
            if goto is None or goto.to_step == "end":
                continue
            where = step_label(number, step)
            target = goto.to_step
            if not 1 <= target <= count:
                raise ConfigError(
                    field=where,
                    problem=f"goto step {target} does not exist; the protocol has steps 1-{count} "
                    "(or write 'goto end')",
                )
            if isinstance(self.steps[target - 1], Repeat):
                raise ConfigError(
                    field=where,
                    problem=f"goto step {target} targets a Repeat, which only loops back; "
                    "goto the first step of its loop or the step after it",
                )
            for first, last, _ in self.repeat_ranges():
                # Entering a loop anywhere but its top would leave its count undefined.
                if first < target <= last and not first <= number <= last:
                    raise ConfigError(
                        field=where,
                        problem=f"goto step {target} jumps into the middle of the repeated "
                        f"steps {first}-{last} from outside; goto step {first} (the start "
                        "of the loop) instead",
                    )
        self._check_goto_loops()

    def _check_goto_loops(self) -> None:
        """Refuse a goto that can loop forever without any step passing time or capacity.

        The graph is the steps' flow without Repeat loop-backs (they are bounded by their
        count); a cycle in it that avoids every step with a fixed time or capacity end,
        and every goto whose condition needs time or capacity, could spin once per
        sample forever.
        """
        count = len(self.steps)

        def progress(step: Step) -> bool:
            if isinstance(step, Rest):
                return True
            if isinstance(step, _CurrentStep):
                return step.duration is not None or step.capacity is not None
            if isinstance(step, HoldVoltage):
                return step.duration is not None
            return False

        edges: dict[int, list[int]] = {n: [] for n in range(1, count + 1)}
        for number, step in enumerate(self.steps, start=1):
            if progress(step):
                continue
            if number < count:
                edges[number].append(number + 1)
            goto = getattr(step, "goto", None)
            if goto is not None and goto.to_step != "end" and not goto.condition.consumes_progress:
                edges[number].append(goto.to_step)
        state: dict[int, int] = {}  # 1: on the DFS stack, 2: done

        def visit(node: int, path: list[int]) -> list[int] | None:
            state[node] = 1
            path.append(node)
            for nxt in edges[node]:
                if state.get(nxt) == 1:
                    return path[path.index(nxt) :]
                if nxt not in state:
                    found = visit(nxt, path)
                    if found is not None:
                        return found
            path.pop()
            state[node] = 2
            return None

        for start in range(1, count + 1):
            if start in state:
                continue
            cycle = visit(start, [])
            if cycle is not None:
                source = max(cycle)
                jumper = next(
                    n for n in cycle if getattr(self.steps[n - 1], "goto", None) is not None
                )
                raise ConfigError(
                    field=step_label(jumper, self.steps[jumper - 1]),
                    problem=f"its goto can loop over steps {min(cycle)}-{source} forever "
                    "without passing any time or capacity (none of them has a fixed "
                    "'for <time or capacity>'); give one of them a 'for', or make the "
                    "condition 'time reached' or 'capacity reached'",
                )

    def validate(self, limits: InstrumentLimits | InstrumentCapability | None = None) -> None:
        """Refuse, before any current flows, what this cell or instrument cannot run.

        Raises :class:`ConfigError` naming the step or field: a missing area or
        capacity, currents or voltages beyond the instrument's range, a record interval
        too short, too many steps, Strip/Plate on a full cell (or Charge/Discharge on a
        Li|Li cell), a working electrode with less Li than one strip takes.
        """
        cap = as_capability(limits if limits is not None else InstrumentCapability())
        cell = self.cell
        if cell.cell_type != "full" and cell.electrode_area_cm2 is None:
            raise ConfigError(
                field="cell.area_cm2",
                problem="required for a Li|Li cell: give area_cm2 or diameter_mm "
                "(a 10 mm disc is 0.785 cm²)",
            )
        compiled_steps = len(self.steps) + 1  # one BTS step per script step, and END
        if compiled_steps > cap.max_steps:
            raise ConfigError(
                field="protocol.steps",
                problem=f"{len(self.steps)} steps compile to {compiled_steps} (with END); the "
                f"{cap.name} allows at most {cap.max_steps}; use Repeat for loops",
            )
        record_s = self.record_every.value
        if record_s < cap.min_record_interval_s:
            raise ConfigError(
                field="protocol.record_every",
                problem=f"{self.record_every} is shorter than the {cap.name}'s fastest "
                f"recording; at least {format_duration(cap.min_record_interval_s)} is allowed",
            )
        for index, limit in enumerate(self.limits, start=1):
            where = f"protocol.limits[{index}] {str(limit)!r}"
            if isinstance(limit, VoltageBetween):
                for q in (limit.low, limit.high):
                    _check_voltage(q, cap, where)
            else:
                _check_current(cell, limit.current, cap, where)
        for number, step in enumerate(self.steps, start=1):
            where = step_label(number, step)
            if isinstance(step, _CurrentStep):
                self._validate_current_step(step, cap, where)
            elif isinstance(step, HoldVoltage):
                _check_voltage(step.voltage, cap, where)
                if step.until_current is not None:
                    _check_current(cell, step.until_current, cap, where)
            if isinstance(step, _CurrentStep | HoldVoltage | Rest):
                self._validate_extras(step, cap, where)

    def _validate_extras(
        self, step: _CurrentStep | HoldVoltage | Rest, cap: InstrumentCapability, where: str
    ) -> None:
        """Per-step windows and goto thresholds must be reachable on this instrument, and
        a step's own record interval no faster than it records."""
        if step.record_every is not None and step.record_every.value < cap.min_record_interval_s:
            raise ConfigError(
                field=where,
                problem=f"record every {step.record_every} is shorter than the {cap.name}'s "
                f"fastest recording; at least {format_duration(cap.min_record_interval_s)} "
                "is allowed",
            )
        for limit in step.limits:
            if isinstance(limit, VoltageBetween):
                for q in (limit.low, limit.high):
                    _check_voltage(q, cap, where)
            else:
                _check_current(self.cell, limit.current, cap, where)
        if step.goto is None:
            return
        threshold = step.goto.condition.threshold
        match threshold.kind:
            case "voltage":
                _check_voltage(threshold, cap, where)
            case "current":
                self.cell.current_ma(threshold)
            case "capacity":
                self.cell.capacity_mah_of(threshold)
            case _:
                pass

    def _validate_current_step(
        self, step: _CurrentStep, cap: InstrumentCapability, where: str
    ) -> None:
        cell = self.cell
        if step.li_li and cell.cell_type == "full":
            raise ConfigError(
                field=where,
                problem=f"{step.verb} is for Li|Li cells; on a full cell use Charge or Discharge",
            )
        if not step.li_li and cell.cell_type != "full":
            raise ConfigError(
                field=where,
                problem=f"{step.verb} is for full cells; on a {cell.cell_type} Li|Li cell use "
                "Strip (positive current) or Plate",
            )
        current_ma = _check_current(cell, step.current, cap, where)
        if step.until is not None:
            _check_voltage(step.until, cap, where)
        if step.capacity is not None:
            cell.capacity_mah_of(step.capacity)  # refuses a missing area, naming the cell
        working = cell.working_li_mah_cm2
        area = cell.electrode_area_cm2
        if isinstance(step, Strip) and working is not None and area is not None:
            stripped: list[float] = []
            if step.capacity is not None:
                stripped.append(cell.capacity_mah_of(step.capacity) / area)
            if step.duration is not None:
                stripped.append(current_ma * step.duration.value / _S_PER_H / area)
            if stripped and min(stripped) >= working:
                electrode = "thin" if cell.cell_type == "asymmetric" else "working"
                raise ConfigError(
                    field=where,
                    problem=f"one strip takes {min(stripped):.4g} mAh/cm2, all of the "
                    f"{electrode} electrode's {working:.4g} mAh/cm2 of Li; the cell would "
                    "deplete by construction; strip less than that",
                )

    def expected_cycles(self) -> int:
        """How many cycles the instrument counts: 1 + every loop back of every Repeat."""
        return 1 + sum(
            (step.times - 1) * self._multiplicity(number)
            for number, step in enumerate(self.steps, start=1)
            if isinstance(step, Repeat)
        )

    def _multiplicity(self, number: int) -> int:
        """How many times step ``number`` runs, from the repeats enclosing it."""
        runs = 1
        for repeat_number, step in enumerate(self.steps, start=1):
            if isinstance(step, Repeat) and step.first_step <= number < repeat_number:
                runs *= step.times
        return runs


def _check_current(
    cell: CellSpec, current: Quantity, cap: InstrumentCapability, where: str
) -> float:
    current_ma = cell.current_ma(current)
    if current_ma > cap.current_range_ma:
        area = cell.electrode_area_cm2
        on = f" on {area:.4g} cm²" if current.is_areal and area is not None else ""
        raise ConfigError(
            field=where,
            problem=f"{current}{on} is {current_ma:.4g} mA; the {cap.name} allows at most "
            f"{cap.current_range_ma:g} mA",
        )
    return current_ma


def _check_voltage(voltage: Quantity, cap: InstrumentCapability, where: str) -> None:
    if abs(voltage.value) > cap.voltage_range_v:
        raise ConfigError(
            field=where,
            problem=f"{voltage} is beyond the {cap.name}'s range; allowed: "
            f"-{cap.voltage_range_v:g} V to {cap.voltage_range_v:g} V",
        )
