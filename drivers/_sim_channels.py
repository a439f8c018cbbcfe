"""The channel models of a simulated cycler that hosts the Neware simulator's
:class:`SimChannel` (the Arbin and Maccor simulators): one model per channel, each
with the cell its slot holds (or none), seeded per channel so runs repeat."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import CellSlot, ChannelAddress, ChannelId, SimChannel
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
