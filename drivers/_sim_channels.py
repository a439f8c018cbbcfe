"""The channel models of a simulated cycler that hosts the Neware simulator's
:class:`SimChannel` (the Arbin and Maccor simulators): one model per channel, each
with the cell its slot holds (or none), seeded per channel so runs repeat."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import (
    CellSlot,
    ChannelAddress,
    ChannelId,
    SimChannel,
    Step,
    StepFile,
    StepType,
)
from cellguard.drivers.sim import SimCell, SimCellSpec


def channel_models(
    clock: Clock,
    cells: Mapping[int, CellSlot] | None,
    *,
    channels: int,
    seed: int,
    current_range_ma: float,
    voltage_range_v: float,
    not_on_instrument: Callable[[list[int]], str],
) -> list[SimChannel]:
    """The models of channels ``0..channels-1``; ``cells`` by 0-based index (None:
    every channel holds a default Li|Li cell, SEI interphase, 100|100 µm).

    Raises :class:`ConfigError` on ``cells`` naming a channel the instrument has not,
    with ``not_on_instrument``'s wording of the bad indexes.
    """
    if cells is None:
        cells = {i: CellSlot(SimCellSpec()) for i in range(channels)}
    unknown = sorted(i for i in cells if not 0 <= i < channels)
    if unknown:
        raise ConfigError(field="cells", problem=not_on_instrument(unknown))
    now_s = clock.now_s()
    models = []
    for index in range(channels):
        slot = cells.get(index)
        cell = SimCell(slot.spec, seed * 1_000_003 + index) if slot is not None else None
        models.append(
            SimChannel(
                ChannelAddress(ChannelId(1, 1, index + 1)),
                cell,
                current_range_ma=current_range_ma,
                voltage_range_v=voltage_range_v,
                now_s=now_s,
            )
        )
    return models


_HOURS = 3600.0
# Long enough never to end in a test or a demo (5000 h), short of the step-file bound.
_FOREVER_S = 5000 * _HOURS
# 0.4 mA on the default 0.785 cm² cell: 0.5 mA cm⁻², a typical Li|Li current density.
SIM_CURRENT_MA = 0.4


def builtin_programs() -> dict[str, StepFile]:
    """The programs a simulated Arbin or Maccor knows by name (its schedules or
    procedures), as the step programs the hosted :class:`SimChannel` runs."""
    return {
        # Plating in one direction until the Li runs out (or the cell shorts).
        "cellguard-plating": StepFile(
            steps=(
                Step(StepType.CC_CHARGE, current_ma=SIM_CURRENT_MA, time_s=_FOREVER_S),
                Step(StepType.END),
            ),
            record_interval_s=10.0,
        ),
        # Symmetric cycling, 1 h per half cycle (0.5 mAh cm⁻² each way).
        "cellguard-cycling": StepFile(
            steps=(
                Step(StepType.CC_CHARGE, current_ma=SIM_CURRENT_MA, time_s=_HOURS),
                Step(StepType.CC_DISCHARGE, current_ma=SIM_CURRENT_MA, time_s=_HOURS),
                Step(StepType.CYCLE, loop_start_step=1, cycle_count=5000),
                Step(StepType.END),
            ),
            record_interval_s=10.0,
        ),
        "rest": StepFile(steps=(Step(StepType.REST, time_s=_FOREVER_S), Step(StepType.END))),
    }
