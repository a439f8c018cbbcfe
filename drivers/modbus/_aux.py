"""Auxiliary sensors behind Modbus: a temperature chamber, a stack-pressure cell, ...

An :class:`AuxDevice` reads every value of its register map (or a chosen few) in as
few requests as the map allows and hands them out with the time of the read, keyed by
register name, so the units are in the keys (``chamber_temperature_c``,
``stack_pressure_mpa``). Setpoints (registers with ``access = "rw"``) are written by
name with :meth:`AuxDevice.set`. These readings join a channel's sample stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Self

from cellguard.drivers.clock import Clock, WallClock
from cellguard.drivers.modbus._client import ModbusDevice

__all__ = ["AuxDevice", "AuxReading"]


@dataclass(frozen=True, slots=True)
class AuxReading:
    """Values read together; ``t_s`` is the clock's time at the end of the read."""

    t_s: float
    values: Mapping[str, float]


class AuxDevice:
    """Named readings and setpoints of one Modbus device."""

    def __init__(
        self,
        device: ModbusDevice,
        *,
        names: Iterable[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        chosen = tuple(names) if names is not None else device.registers.names
        for name in chosen:
            device.registers[name]
        self.device = device
        self.names = chosen
        self._clock: Clock = clock or WallClock()

    async def connect(self) -> None:
        await self.device.connect()

    async def close(self) -> None:
        await self.device.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def read(self) -> AuxReading:
        """Read every chosen value now."""
        values = await self.device.read(self.names)
        return AuxReading(t_s=self._clock.now_s(), values=MappingProxyType(values))

    async def set(self, name: str, value: float) -> None:
        """Write a setpoint, in the unit its name declares (checked: access and range)."""
        await self.device.write(name, value)
