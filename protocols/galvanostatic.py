"""Galvanostatic Li plating/stripping, and its BTS 8 step file.

Sign convention: a **positive current** (``CC_CHARGE``, always the first half cycle)
**strips Li from the working electrode** and plates it on the counter electrode; the
negative current (``CC_DISCHARGE``) moves it back. In an asymmetric cell the working
electrode is the thin one, so the cell is first asked to give up Li from the side whose
depletion is the failure criterion. Wire the working electrode to the channel's
positive lead.

The step file is ``[REST] → CC_CHARGE → CC_DISCHARGE → CYCLE(back to CC_CHARGE) → END``.
Each CC step ends on its time *or* its capacity, whichever comes first (they agree
for a healthy channel). CC steps carry no cut-off voltage: a cut-off would only move
a failing cell on to the next step, while the point is to stop it. Halting is the
detectors' job; the whole-test protection in the file is the instrument's own
backstop should cellguard lose the link.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware._stepfile import (
    Protection,
    Step,
    StepFile,
    StepType,
    render_step_file,
)
from cellguard.protocols import units
from cellguard.protocols.cells import Cell

CURRENT_PROTECTION_FACTOR = 1.1
"""Whole-test current protection, as a multiple of the set-point magnitude.

10 % above the set-point is outside a channel's regulation error yet catches a
channel that drives current it was never asked for. No lower current bound is set:
the current crosses zero at every reversal and rests, which are not faults.
"""

_MIN_HALF_CYCLE_S = 1.0


@dataclass(frozen=True)
class InstrumentLimits:
    """What one channel of the instrument can do (magnitudes, both directions)."""

    current_range_ma: float = 10.0
    voltage_range_v: float = 5.0
    name: str = "Neware CT-4008"

    def __post_init__(self) -> None:
        units._require_positive("limits.current_range_ma", self.current_range_ma)
        units._require_positive("limits.voltage_range_v", self.voltage_range_v)


@dataclass(frozen=True)
class GalvanostaticCycling:
    """Alternating constant-current plating/stripping at a fixed areal capacity.

    Defaults are the standard protocol: 0.5 mA cm⁻², 0.5 mAh cm⁻² per half cycle
    (1 h), 1000 cycles, recording every 60 s, protection at ±5 V.
    """

    cell: Cell
    current_density_ma_cm2: float = 0.5
    areal_capacity_mah_cm2: float = 0.5
    cycles: int = 1000
    record_interval_s: float = 60.0
    voltage_limit_v: float = 5.0
    rest_before_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.cell, Cell):
            raise ConfigError(field="cell", problem=f"required: a Cell, got {self.cell!r}")
        units._require_positive(
            "current_density_ma_cm2",
            self.current_density_ma_cm2,
            "must be a current density in mA cm⁻² > 0 (standard: 0.5)",
        )
        units._require_positive(
            "areal_capacity_mah_cm2",
            self.areal_capacity_mah_cm2,
            "must be an areal capacity per half cycle in mAh cm⁻² > 0 (standard: 0.5)",
        )
        if isinstance(self.cycles, bool) or not isinstance(self.cycles, int) or self.cycles < 1:
            raise ConfigError(
                field="cycles",
                problem=f"must be a whole number of cycles >= 1, got {self.cycles!r}",
            )
        units._require_positive(
            "record_interval_s", self.record_interval_s, "must be a time in s > 0 (e.g. 60)"
        )
        units._require_positive(
            "voltage_limit_v", self.voltage_limit_v, "must be a voltage magnitude in V > 0"
        )
        rest = self.rest_before_s
        if (
            isinstance(rest, bool)
            or not isinstance(rest, int | float)
            or not math.isfinite(rest)
            or rest < 0
        ):
            raise ConfigError(
                field="rest_before_s",
                problem=f"must be a time in s >= 0 (0 for no rest), got {rest!r}",
            )
        if self.half_cycle_s < _MIN_HALF_CYCLE_S:
            raise ConfigError(
                field="areal_capacity_mah_cm2",
                problem=f"{self.areal_capacity_mah_cm2:g} mAh cm⁻² at "
                f"{self.current_density_ma_cm2:g} mA cm⁻² is a {self.half_cycle_s:.3g} s half "
                f"cycle; at least {_MIN_HALF_CYCLE_S:g} s is allowed",
            )
        working_mah_cm2 = self.cell.li_working_mah_cm2
        if self.areal_capacity_mah_cm2 >= working_mah_cm2:
            # The first half cycle would strip the whole working electrode: the cell
            # depletes by construction and the test measures nothing.
            raise ConfigError(
                field="areal_capacity_mah_cm2",
                problem=f"{self.areal_capacity_mah_cm2:g} mAh cm⁻² per half cycle strips all of "
                f"the {self.cell.li_working_um:g} µm working electrode "
                f"({working_mah_cm2:.4g} mAh cm⁻²); must be less than that",
            )

    @property
    def current_a(self) -> float:
        """Set-point current magnitude in A."""
        return units.current_a(self.current_density_ma_cm2, self.cell.area_cm2)

    @property
    def current_ma(self) -> float:
        """Set-point current magnitude in mA (0.3927 mA at 0.5 mA cm⁻² on 0.785 cm²)."""
        return self.current_density_ma_cm2 * self.cell.area_cm2

    @property
    def half_cycle_s(self) -> float:
        """Duration of one half cycle (plating or stripping) in s."""
        return units.half_cycle_s(self.areal_capacity_mah_cm2, self.current_density_ma_cm2)

    @property
    def capacity_per_half_mah(self) -> float:
        """Charge moved in one half cycle, in mAh."""
        return self.areal_capacity_mah_cm2 * self.cell.area_cm2

    def check_limits(self, limits: InstrumentLimits) -> None:
        """Raise :class:`ConfigError` if ``limits`` cannot run this protocol."""
        if self.current_ma > limits.current_range_ma:
            raise ConfigError(
                field="current_density_ma_cm2",
                problem=f"{self.current_density_ma_cm2:g} mA cm⁻² on {self.cell.area_cm2:.3f} cm² "
                f"is {self.current_ma:.3f} mA; the {limits.name} allows at most "
                f"{limits.current_range_ma:g} mA",
            )
        if self.voltage_limit_v > limits.voltage_range_v:
            raise ConfigError(
                field="voltage_limit_v",
                problem=f"±{self.voltage_limit_v:g} V is beyond the {limits.name}'s range; "
                f"at most {limits.voltage_range_v:g} V is allowed",
            )

    def to_step_file(self, limits: InstrumentLimits = InstrumentLimits()) -> StepFile:
        """The BTS 8 step file running this protocol on an instrument with ``limits``.

        Raises :class:`ConfigError` naming the field if the instrument cannot run it.
        """
        self.check_limits(limits)
        steps: list[Step] = []
        if self.rest_before_s > 0:
            steps.append(Step(StepType.REST, time_s=float(self.rest_before_s)))
        loop_start = len(steps) + 1  # 1-based id of the CC_CHARGE step
        for step_type in (StepType.CC_CHARGE, StepType.CC_DISCHARGE):
            steps.append(
                Step(
                    step_type,
                    current_ma=self.current_ma,
                    time_s=self.half_cycle_s,
                    capacity_mah=self.capacity_per_half_mah,
                )
            )
        steps.append(Step(StepType.CYCLE, loop_start_step=loop_start, cycle_count=self.cycles))
        steps.append(Step(StepType.END))
        cell = self.cell
        return StepFile(
            steps=tuple(steps),
            protection=Protection(
                voltage_upper_v=float(self.voltage_limit_v),
                voltage_lower_v=-float(self.voltage_limit_v),
                # Signed, as BTS reads it: the lower bound guards the discharge.
                current_upper_ma=CURRENT_PROTECTION_FACTOR * self.current_ma,
                current_lower_ma=-CURRENT_PROTECTION_FACTOR * self.current_ma,
            ),
            record_interval_s=float(self.record_interval_s),
            remark=(
                f"galvanostatic {self.current_density_ma_cm2:g} mA/cm2, "
                f"{self.areal_capacity_mah_cm2:g} mAh/cm2 per half cycle, {self.cycles} cycles; "
                f"{cell.cell_type} cell {cell.area_cm2:.4g} cm2, "
                f"Li {cell.li_working_um:g}um working / {cell.li_counter_um:g}um counter"
            ),
        )


STEP_FILE_MODE = 0o644
"""Mode of a written step file: the BTS service reads it under its own account."""


def write_step_file(path: str | os.PathLike[str], step_file: StepFile) -> Path:
    """Write ``step_file`` as BTS 8 XML (UTF-8) to ``path`` atomically; return the path.

    The file gets a fresh ``Guid`` (a UUID, as BTS gives every file) and today's
    ``date`` (local time, as the BTS PC writes it), and mode 0644. The text goes to a
    temporary file in the same directory, then replaces ``path`` in one step, so the
    BTS server never reads a half-written file.
    Raises :class:`ConfigError` (field ``path``) if the file cannot be written.
    """
    target = Path(path)
    text = render_step_file(
        step_file, date=datetime.now().strftime("%Y%m%d%H%M%S"), guid=str(uuid.uuid4())
    )
    data = text.encode("utf-8")
    tmp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            # A temporary file is created 0600: the BTS service, running under
            # another account, could not read it.
            os.chmod(tmp_name, STEP_FILE_MODE)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except OSError as err:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        raise ConfigError(
            field="path",
            problem=f"cannot write the step file to {str(target)!r}: {err.strerror or err}",
        ) from err
    return target
