"""The papers' protocols, ready to use, each with the detector settings that suit it.

Every function returns a :class:`LibraryProtocol`: a :class:`Protocol` already
validated against the instrument (default: a Neware CT-4008 channel, ±10 mA, ±5 V),
the :class:`DetectorSettings` to watch it with, and ``expected_end``, a sentence saying
how the test normally ends. Impossible requests raise
:class:`~cellguard.drivers.errors.ConfigError` before anything could start.

=============================  ====================================================
function                       protocol (numbers from the papers)
=============================  ====================================================
:func:`symmetric_cycling`      Li|Li strip/plate at j mA cm⁻² for q mAh cm⁻², N cycles;
                               ``temperature_c=60`` runs it in a chamber after a soak
:func:`asymmetric_cycling`     the same on an asymmetric cell, thin electrode first
:func:`critical_current_density`  one strip/plate pair per level at fixed 0.25 mAh
                               cm⁻², 0.25 → 20 mA cm⁻², ends at the first short
:func:`plating_to_failure`     anode-free: plate until a short or ~9 mAh cm⁻²
:func:`coulombic_efficiency`   plate 3.0 mAh cm⁻², strip to a voltage cut-off
:func:`full_cell_cccv`         CC-CV charge, CC discharge at a C-rate, N cycles
=============================  ====================================================

Tests that end at a short
-------------------------
A CCD test and plating to failure end *normally* at the first short: the short is the
measurement. Their detector settings are the ordinary Li|Li detector's (so the halt
comes at once and preserves the cell), and :attr:`LibraryProtocol.expected_halts` lists
``"short"``: whoever acts on the verdict (:meth:`LibraryProtocol.is_expected_end`)
records that halt as the test's result, not as an error. The detector itself has no
notion of "expected"; that belongs to the protocol.

Tests in a temperature chamber
------------------------------
``symmetric_cycling(..., temperature_c=60)`` (and the asymmetric one) starts with
``Set temperature to 60 °C and wait until within 1 °C`` and a soak rest
(``soak_min``), then cycles. Temperature setpoints for an auxiliary chamber run
host-driven (:class:`~cellguard.protocols.script.HostRun` emits the setpoint and waits
for the reading); on a Neware the setpoints before the first current step are the
daemon's pre-start actions (:func:`~cellguard.protocols.script.prestart_setpoints`),
since a BTS 8 step file carries no chamber step.

What cannot be expressed here
-----------------------------
- **Temperature changes in the middle of a Neware test**: a setpoint after the first
  current step runs host-driven only; for a Neware it is refused by name.
- **The papers' exact CCD step list**: the papers give the span (0.25 → 20 mA cm⁻²)
  and some levels where cells shorted (3, 10, 16 mA cm⁻²), not every step; the default
  list :data:`CCD_LEVELS_MA_CM2` contains those levels. Pass ``levels_ma_cm2`` or
  ``factor`` for another ladder.
- **Judging the first half cycles**: the Li|Li detector learns the first half cycle
  in each direction and judges only later ones (the ±range halts always). A short in
  the CCD's first strip/plate pair, or anywhere in a Coulombic-efficiency test (one
  plate, one strip), is not halted by a ratio criterion; plating to failure is split
  into segments for this reason.
- **CCD levels beyond the instrument's range**: on a 10 mm disc (0.785 cm²) 20 mA cm⁻²
  is 15.7 mA, beyond the CT-4008's ±10 mA; such a level is refused by name, with the
  highest level the instrument can run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.detectors._api import CellProfile, DetectorSettings, Verdict
from cellguard.protocols.galvanostatic import InstrumentLimits
from cellguard.protocols.script._model import (
    CellSpec,
    Charge,
    Discharge,
    HoldVoltage,
    InstrumentCapability,
    Plate,
    Protocol,
    Repeat,
    Rest,
    SetTemperature,
    Step,
    Strip,
    VoltageBetween,
    as_capability,
    celsius,
    ma_cm2,
    mah_cm2,
    minutes,
    seconds,
    volts,
)
from cellguard.protocols.script._model import c_rate as _c_rate

CCD_LEVELS_MA_CM2: tuple[float, ...] = (
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    6.0,
    8.0,
    10.0,
    12.0,
    14.0,
    16.0,
    18.0,
    20.0,
)
"""The default CCD ladder (mA cm⁻²), 0.25 → 20, holding the levels the papers name."""


@dataclass(frozen=True)
class LibraryProtocol:
    """A validated protocol, the detector settings that suit it, and how it should end.

    ``expected_halts`` are the detector verdict kinds that are the test's normal end
    (``("short",)`` for CCD and plating to failure): record them as the result.
    """

    protocol: Protocol
    detector: DetectorSettings
    expected_end: str
    expected_halts: tuple[str, ...] = field(default=())

    def is_expected_end(self, verdict: Verdict) -> bool:
        """Whether a halt ``verdict`` is this test's normal end rather than a fault."""
        return verdict.is_halt and verdict.kind in self.expected_halts


Instrument = InstrumentLimits | InstrumentCapability


def _require_type(cell: CellSpec, allowed: tuple[str, ...], what: str) -> None:
    if cell.cell_type not in allowed:
        raise ConfigError(
            field="cell.type",
            problem=f"{what} needs a {' or '.join(allowed)} cell, got {cell.cell_type!r}",
        )


def _positive(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ConfigError(field=name, problem=f"must be a finite number > 0, got {value!r}")
    return float(value)


def _whole(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field=name, problem=f"must be a whole number >= 1, got {value!r}")
    return value


def _range_limit(cap: InstrumentCapability) -> VoltageBetween:
    return VoltageBetween(volts(-cap.voltage_range_v), volts(cap.voltage_range_v))


def _li_detector(cell: CellSpec, cap: InstrumentCapability) -> DetectorSettings:
    profile: CellProfile = "asymmetric" if cell.cell_type == "asymmetric" else "symmetric"
    return DetectorSettings(cell=profile, voltage_range_v=cap.voltage_range_v)


@dataclass(frozen=True)
class _Chamber:
    """A chamber setpoint, the band to wait for, and the soak rest after it."""

    temperature_c: float
    band_c: float
    soak_min: float
    timeout_h: float

    @classmethod
    def of(
        cls, temperature_c: float | None, band_c: float, soak_min: float, timeout_h: float
    ) -> _Chamber | None:
        if temperature_c is None:
            return None
        if isinstance(temperature_c, bool) or not isinstance(temperature_c, int | float):
            raise ConfigError(field="temperature_c", problem=f"must be °C, got {temperature_c!r}")
        celsius(temperature_c)  # refuses below absolute zero and non-finite values
        if not math.isfinite(temperature_c):
            raise ConfigError(field="temperature_c", problem="must be finite")
        return cls(
            float(temperature_c),
            _positive("temperature_band_c", band_c),
            _positive("soak_min", soak_min),
            _positive("temperature_timeout_h", timeout_h),
        )

    def steps(self) -> list[Step]:
        return [
            SetTemperature(
                celsius(self.temperature_c),
                within=celsius(self.band_c),
                timeout=minutes(self.timeout_h * 60),
            ),
            # The chamber's air reaches the band before the cell does: soak.
            Rest(minutes(self.soak_min)),
        ]


def _cycling(
    cell: CellSpec,
    current_density_ma_cm2: float,
    areal_capacity_mah_cm2: float,
    cycles: int,
    record_every_s: float,
    initial_rest_min: float,
    instrument: Instrument | None,
    chamber: _Chamber | None = None,
) -> LibraryProtocol:
    cap = as_capability(instrument if instrument is not None else InstrumentCapability())
    j = _positive("current_density_ma_cm2", current_density_ma_cm2)
    q = _positive("areal_capacity_mah_cm2", areal_capacity_mah_cm2)
    n = _whole("cycles", cycles)
    steps: list[Step] = []
    name_suffix = ""
    if chamber is not None:
        steps += chamber.steps()
        name_suffix = f" at {chamber.temperature_c:g} °C"
    if initial_rest_min > 0:
        steps.append(Rest(minutes(initial_rest_min)))
    first = len(steps) + 1
    steps += [
        Strip(ma_cm2(j), capacity=mah_cm2(q)),
        Plate(ma_cm2(j), capacity=mah_cm2(q)),
        Repeat(first, first + 1, times=n),
    ]
    protocol = Protocol(
        f"{cell.cell_type} cycling {j:g} mA/cm2 / {q:g} mAh/cm2 × {n}{name_suffix}",
        cell=cell,
        steps=steps,
        limits=[_range_limit(cap)],
        record_every=seconds(record_every_s),
    )
    protocol.validate(cap)
    if cell.cell_type == "asymmetric":
        end = (
            f"completes {n} cycles; a depletion of the thin electrode (voltage shift) "
            "halts earlier, which is the asymmetric cell's failure criterion"
        )
    else:
        end = f"completes {n} cycles; a short halts earlier (a fault)"
    return LibraryProtocol(protocol, _li_detector(cell, cap), end)


def symmetric_cycling(
    cell: CellSpec,
    current_density_ma_cm2: float = 0.5,
    areal_capacity_mah_cm2: float = 0.5,
    cycles: int = 500,
    record_every_s: float = 60.0,
    *,
    initial_rest_min: float = 0.0,
    instrument: Instrument | None = None,
    temperature_c: float | None = None,
    temperature_band_c: float = 1.0,
    soak_min: float = 60.0,
    temperature_timeout_h: float = 4.0,
) -> LibraryProtocol:
    """Galvanostatic strip/plate cycling of a symmetric Li|Li cell (standard: 0.5/0.5).

    One cycle is a strip then a plate of ``areal_capacity_mah_cm2`` at
    ``current_density_ma_cm2``; ``initial_rest_min`` > 0 adds an open-circuit rest first.
    ``temperature_c`` first sets the chamber, waits until it reads within
    ``temperature_band_c`` (failing after ``temperature_timeout_h``) and soaks the cell
    at rest for ``soak_min``.
    """
    _require_type(cell, ("symmetric",), "symmetric cycling")
    return _cycling(
        cell,
        current_density_ma_cm2,
        areal_capacity_mah_cm2,
        cycles,
        record_every_s,
        initial_rest_min,
        instrument,
        _Chamber.of(temperature_c, temperature_band_c, soak_min, temperature_timeout_h),
    )


def asymmetric_cycling(
    cell: CellSpec,
    current_density_ma_cm2: float = 0.5,
    areal_capacity_mah_cm2: float = 0.5,
    cycles: int = 500,
    record_every_s: float = 60.0,
    *,
    initial_rest_min: float = 0.0,
    instrument: Instrument | None = None,
    temperature_c: float | None = None,
    temperature_band_c: float = 1.0,
    soak_min: float = 60.0,
    temperature_timeout_h: float = 4.0,
) -> LibraryProtocol:
    """Cycling of an asymmetric cell: each cycle first strips the thin electrode.

    Validation refuses a half cycle that would take all of the thin electrode's Li.
    ``temperature_c`` and the rest: as for :func:`symmetric_cycling`.
    """
    _require_type(cell, ("asymmetric",), "asymmetric cycling")
    return _cycling(
        cell,
        current_density_ma_cm2,
        areal_capacity_mah_cm2,
        cycles,
        record_every_s,
        initial_rest_min,
        instrument,
        _Chamber.of(temperature_c, temperature_band_c, soak_min, temperature_timeout_h),
    )


def ccd_levels(
    start_ma_cm2: float = 0.25,
    stop_ma_cm2: float = 20.0,
    *,
    factor: float | None = None,
    levels_ma_cm2: Sequence[float] | None = None,
) -> tuple[float, ...]:
    """The CCD current densities (mA cm⁻²), rising, from ``start`` to ``stop``.

    ``levels_ma_cm2`` is used as given (it must rise); else ``factor`` > 1 gives the
    geometric ladder start, start·factor, ... with ``stop`` as the last level; else the
    default :data:`CCD_LEVELS_MA_CM2` within [start, stop].
    """
    start = _positive("start_ma_cm2", start_ma_cm2)
    stop = _positive("stop_ma_cm2", stop_ma_cm2)
    if levels_ma_cm2 is not None and factor is not None:
        raise ConfigError(field="factor", problem="give factor or levels_ma_cm2, not both")
    if levels_ma_cm2 is not None:
        levels = tuple(
            _positive(f"levels_ma_cm2[{i}]", v) for i, v in enumerate(levels_ma_cm2, start=1)
        )
        if not levels:
            raise ConfigError(field="levels_ma_cm2", problem="needs at least one level")
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise ConfigError(
                field="levels_ma_cm2", problem=f"levels must rise strictly, got {list(levels)}"
            )
        return levels
    if not start <= stop:
        raise ConfigError(
            field="stop_ma_cm2", problem=f"must be >= start_ma_cm2 ({start:g}), got {stop:g}"
        )
    if factor is not None:
        if not (_positive("factor", factor) > 1):
            raise ConfigError(field="factor", problem=f"must be > 1, got {factor!r}")
        out = [start]
        while out[-1] * factor < stop * (1 - 1e-9):
            out.append(round(out[-1] * factor, 9))
        if not math.isclose(out[-1], stop):
            out.append(stop)
        return tuple(out)
    inside = [v for v in CCD_LEVELS_MA_CM2 if start - 1e-12 <= v <= stop + 1e-12]
    if not inside or not math.isclose(inside[0], start):
        inside.insert(0, start)
    if not math.isclose(inside[-1], stop):
        inside.append(stop)
    return tuple(inside)


def critical_current_density(
    cell: CellSpec,
    start_ma_cm2: float = 0.25,
    stop_ma_cm2: float = 20.0,
    areal_capacity_mah_cm2: float = 0.25,
    *,
    factor: float | None = None,
    levels_ma_cm2: Sequence[float] | None = None,
    record_every_s: float = 1.0,
    instrument: Instrument | None = None,
) -> LibraryProtocol:
    """Critical current density: one strip/plate pair per level at fixed areal capacity.

    As in the papers: 0.25 → 20 mA cm⁻² at 0.25 mAh cm⁻². The test ends normally at the
    first short (the detector halts; that halt, at its level, *is* the CCD). A level
    beyond the instrument's current range is refused, naming the level.
    """
    _require_type(cell, ("symmetric", "asymmetric"), "a CCD test")
    cap = as_capability(instrument if instrument is not None else InstrumentCapability())
    q = _positive("areal_capacity_mah_cm2", areal_capacity_mah_cm2)
    levels = ccd_levels(start_ma_cm2, stop_ma_cm2, factor=factor, levels_ma_cm2=levels_ma_cm2)
    area = cell.electrode_area_cm2
    if area is not None:
        top = cap.current_range_ma / area
        for level in levels:
            if level * area > cap.current_range_ma * (1 + 1e-12):
                raise ConfigError(
                    field="critical_current_density",
                    problem=f"level {level:g} mA/cm2 on {area:.4g} cm² is "
                    f"{level * area:.4g} mA, beyond the {cap.name}'s "
                    f"{cap.current_range_ma:g} mA range; the highest level it can run "
                    f"is {top:.4g} mA/cm2 (set stop_ma_cm2 or levels_ma_cm2 below that)",
                )
    steps: list[Step] = []
    for level in levels:
        steps += [
            Strip(ma_cm2(level), capacity=mah_cm2(q)),
            Plate(ma_cm2(level), capacity=mah_cm2(q)),
        ]
    protocol = Protocol(
        f"CCD {levels[0]:g}-{levels[-1]:g} mA/cm2 at {q:g} mAh/cm2",
        cell=cell,
        steps=steps,
        limits=[_range_limit(cap)],
        record_every=seconds(record_every_s),
    )
    protocol.validate(cap)
    end = (
        "ends at the first short (recorded, not an error): the detector halts with kind "
        f"'short' and the level then running is the CCD; a cell that survives all "
        f"{len(levels)} levels completes them (CCD ≥ {levels[-1]:g} mA/cm2)"
    )
    return LibraryProtocol(protocol, _li_detector(cell, cap), end, expected_halts=("short",))


def plating_to_failure(
    cell: CellSpec,
    current_density_ma_cm2: float,
    max_areal_capacity_mah_cm2: float = 9.0,
    *,
    segment_mah_cm2: float | None = 0.25,
    segment_rest_s: float = 60.0,
    record_every_s: float = 60.0,
    instrument: Instrument | None = None,
) -> LibraryProtocol:
    """Anode-free plating to failure: plate until a short or the capacity cap.

    The collector is the working electrode (the cell is given as a Li|Li cell; its
    thick electrode is the Li counter, which must hold more than the cap). The Li|Li
    detector judges a half cycle only against an earlier one in the same direction, so
    one long plating step would be watched by the range backstop alone. Plating is
    therefore split into ``segment_mah_cm2`` segments with a ``segment_rest_s`` rest
    between them: each segment is judged against the one before. ``segment_mah_cm2=None``
    plates in one step (then only the ±range halts).
    """
    _require_type(cell, ("symmetric", "asymmetric"), "plating to failure")
    cap = as_capability(instrument if instrument is not None else InstrumentCapability())
    j = _positive("current_density_ma_cm2", current_density_ma_cm2)
    total = _positive("max_areal_capacity_mah_cm2", max_areal_capacity_mah_cm2)
    counter = cell.thick_li_capacity_mah_cm2
    if counter is not None and total >= counter:
        raise ConfigError(
            field="max_areal_capacity_mah_cm2",
            problem=f"{total:g} mAh/cm2 is all of the Li counter electrode's "
            f"{counter:.4g} mAh/cm2; plate less, or use a thicker counter electrode",
        )
    steps: list[Step]
    if segment_mah_cm2 is None:
        steps = [Plate(ma_cm2(j), capacity=mah_cm2(total))]
    else:
        seg = _positive("segment_mah_cm2", segment_mah_cm2)
        count = math.ceil(total / seg - 1e-9)
        if not math.isclose(count * seg, total):
            raise ConfigError(
                field="segment_mah_cm2",
                problem=f"{seg:g} mAh/cm2 does not divide the cap {total:g} mAh/cm2 "
                "into whole segments",
            )
        steps = [
            Plate(ma_cm2(j), capacity=mah_cm2(seg)),
            Rest(seconds(_positive("segment_rest_s", segment_rest_s))),
            Repeat(1, 2, times=count),
        ]
    protocol = Protocol(
        f"plating to failure {j:g} mA/cm2 up to {total:g} mAh/cm2",
        cell=cell,
        steps=steps,
        limits=[_range_limit(cap)],
        record_every=seconds(record_every_s),
    )
    protocol.validate(cap)
    end = (
        "ends at the first short (recorded, not an error: the plated capacity then is the "
        f"result), or completes at the cap of {total:g} mAh/cm2"
    )
    return LibraryProtocol(protocol, _li_detector(cell, cap), end, expected_halts=("short",))


def coulombic_efficiency(
    cell: CellSpec,
    current_density_ma_cm2: float = 0.5,
    plated_mah_cm2: float = 3.0,
    strip_cutoff_v: float = 1.0,
    *,
    record_every_s: float = 60.0,
    instrument: Instrument | None = None,
) -> LibraryProtocol:
    """Coulombic efficiency: plate a capacity, then strip until a voltage cut-off.

    CE = stripped capacity (the strip step's capacity) / ``plated_mah_cm2``. The plated
    Li comes from the thick counter electrode: a capacity beyond it is refused.
    """
    _require_type(cell, ("symmetric", "asymmetric"), "a Coulombic-efficiency test")
    cap = as_capability(instrument if instrument is not None else InstrumentCapability())
    j = _positive("current_density_ma_cm2", current_density_ma_cm2)
    plated = _positive("plated_mah_cm2", plated_mah_cm2)
    cutoff = _positive("strip_cutoff_v", strip_cutoff_v)
    counter = cell.thick_li_capacity_mah_cm2
    if counter is not None and plated >= counter:
        raise ConfigError(
            field="plated_mah_cm2",
            problem=f"{plated:g} mAh/cm2 is beyond the Li available in the counter "
            f"electrode ({counter:.4g} mAh/cm2); plate less",
        )
    if cutoff >= cap.voltage_range_v:
        raise ConfigError(
            field="strip_cutoff_v",
            problem=f"{cutoff:g} V is not inside the {cap.name}'s ±{cap.voltage_range_v:g} V "
            "range; the cut-off must be reachable before the protection trips",
        )
    protocol = Protocol(
        f"Coulombic efficiency: plate {plated:g} mAh/cm2 at {j:g} mA/cm2, strip to {cutoff:g} V",
        cell=cell,
        steps=[
            Plate(ma_cm2(j), capacity=mah_cm2(plated)),
            Strip(ma_cm2(j), until=volts(cutoff)),
        ],
        limits=[_range_limit(cap)],
        record_every=seconds(record_every_s),
    )
    protocol.validate(cap)
    end = (
        f"completes when the strip reaches {cutoff:g} V (the plated Li is used up); "
        f"CE = stripped capacity / {plated:g} mAh/cm2"
    )
    return LibraryProtocol(protocol, _li_detector(cell, cap), end)


def full_cell_cccv(
    cell: CellSpec,
    c_rate: float = 0.5,
    upper_v: float = 4.2,
    lower_v: float = 2.5,
    cv_cutoff_c: float = 0.05,
    cycles: int = 100,
    *,
    record_every_s: float = 60.0,
    instrument: Instrument | None = None,
) -> LibraryProtocol:
    """Full-cell cycling: CC charge to ``upper_v``, CV hold until ``cv_cutoff_c``, CC
    discharge to ``lower_v``, at ``c_rate`` (1C = ``cell.capacity_mah``).

    Runs on a real CT-4008 and on the simulated one with a simulated full cell.
    """
    _require_type(cell, ("full",), "CC-CV cycling")
    cap = as_capability(instrument if instrument is not None else InstrumentCapability())
    if cell.capacity_mah is None:
        raise ConfigError(
            field="cell.capacity_mah",
            problem="required for C-rates: the full-cell capacity in mAh that defines 1C",
        )
    rate = _positive("c_rate", c_rate)
    cutoff = _positive("cv_cutoff_c", cv_cutoff_c)
    n = _whole("cycles", cycles)
    if not 0 < lower_v < upper_v:
        raise ConfigError(
            field="lower_v", problem=f"need 0 < lower_v < upper_v, got {lower_v!r}, {upper_v!r}"
        )
    if not cutoff < rate:
        raise ConfigError(
            field="cv_cutoff_c", problem=f"must be below the C-rate {rate:g}C, got {cutoff:g}C"
        )
    # Protection a little outside the cut-offs, so that reaching a cut-off ends a step
    # and does not trip the test.
    low = max(lower_v - 0.5, 0.0)
    high = min(upper_v + 0.1, cap.voltage_range_v)
    protocol = Protocol(
        f"full cell CC-CV {rate:g}C {lower_v:g}-{upper_v:g} V × {n}",
        cell=cell,
        steps=[
            Charge(_c_rate(rate), until=volts(upper_v)),
            HoldVoltage(volts(upper_v), until_current=_c_rate(cutoff)),
            Discharge(_c_rate(rate), until=volts(lower_v)),
            Repeat(1, 3, times=n),
        ],
        limits=[VoltageBetween(volts(low), volts(high))],
        record_every=seconds(record_every_s),
    )
    protocol.validate(cap)
    # The detector's window is the protocol's own cut-offs (it allows the instrument's
    # few mV of overshoot, and judges each edge in the direction the current drives).
    detector = DetectorSettings(
        cell="full",
        voltage_range_v=cap.voltage_range_v,
        full_v_min_v=lower_v,
        full_v_max_v=upper_v,
    )
    end = f"completes {n} cycles"
    return LibraryProtocol(protocol, detector, end)


__all__ = [
    "CCD_LEVELS_MA_CM2",
    "LibraryProtocol",
    "asymmetric_cycling",
    "ccd_levels",
    "coulombic_efficiency",
    "critical_current_density",
    "full_cell_cccv",
    "plating_to_failure",
    "symmetric_cycling",
]
