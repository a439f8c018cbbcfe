"""A cycler or bidirectional supply behind Modbus registers, as a :class:`Galvanostat`.

The register map names the roles (see :data:`GALVANOSTAT_ROLES`); units come from the
map, so a device that stores mA is still driven in A. ``mode`` (when the device has
one) holds :data:`MODE_CURRENT` or :data:`MODE_VOLTAGE`; ``output`` (a coil, or a
register holding 1/0) switches the output.

The halt path, :meth:`ModbusGalvanostat.output_off`, runs in a task of its own:

- a cancellation of the caller, even repeated, does not stop it (the caller gets its
  ``CancelledError`` after the halt ended), and a task that is being cancelled can
  still issue one (on Python 3.11 a timeout inside such a task would surface as a
  second cancellation, not as a timeout);
- it queues behind a request already in flight (pymodbus serialises them) and, if
  that one is abandoned, never takes its late answer for its own;
- it reconnects once if the link was lost, writes the output off, reads it back, and
  repeats until the read-back says off or ``halt_timeout_s`` is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Final

from cellguard.drivers.clock import Clock, WallClock
from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    DriverError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)
from cellguard.drivers.galvanostat import GalvanostatInfo, Measurement
from cellguard.drivers.modbus._client import ModbusDevice

__all__ = [
    "GALVANOSTAT_OPTIONAL_ROLES",
    "GALVANOSTAT_ROLES",
    "MODE_CURRENT",
    "MODE_VOLTAGE",
    "ModbusGalvanostat",
]

log = logging.getLogger(__name__)

GALVANOSTAT_ROLES: Final = ("set_current_a", "output", "voltage_v", "current_a")
"""Registers every galvanostat map has."""
GALVANOSTAT_OPTIONAL_ROLES: Final = ("set_voltage_v", "mode", "compliance_v", "compliance_a")
"""Registers it may have: voltage sourcing needs ``set_voltage_v`` and ``mode``."""

MODE_CURRENT: Final = 1
"""``mode`` value: constant current (galvanostatic)."""
MODE_VOLTAGE: Final = 2
"""``mode`` value: constant voltage (potentiostatic)."""

_WRITTEN_ROLES = (
    "set_current_a",
    "output",
    "set_voltage_v",
    "mode",
    "compliance_v",
    "compliance_a",
)
# Pause between halt attempts, so a device that just dropped the link gets a moment.
_HALT_RETRY_PAUSE_S = 0.05


class ModbusGalvanostat:
    """One host-driven channel on a Modbus device; implements ``Galvanostat``.

    Modbus devices rarely identify themselves: ``GalvanostatInfo`` comes from the
    arguments (the ranges from the device's manual), completed by Read Device
    Identification (FC 43) when ``identify`` and the device answers it.
    ``Measurement.t_s`` is ``clock``'s time at the end of the read.
    """

    def __init__(
        self,
        device: ModbusDevice,
        *,
        current_range_a: float,
        voltage_range_v: float,
        min_sample_interval_s: float = 0.1,
        vendor: str = "",
        model: str = "",
        serial: str = "",
        firmware: str = "",
        identify: bool = True,
        clock: Clock | None = None,
        halt_timeout_s: float | None = None,
        path: str = "registers",
    ) -> None:
        regs = device.registers
        regs.require(GALVANOSTAT_ROLES, what="a galvanostat", path=path, writable=False)
        for role in _WRITTEN_ROLES:
            if role in regs:
                regs.require((role,), what="a galvanostat", path=path, writable=True)
        for field, value in (
            ("current_range_a", current_range_a),
            ("voltage_range_v", voltage_range_v),
            ("min_sample_interval_s", min_sample_interval_s),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(
                    field=field, problem=f"must be a finite number > 0, got {value!r}"
                )
        lo, hi = regs["set_current_a"].limits()
        if not (lo <= -current_range_a and current_range_a <= hi):
            raise ConfigError(
                field="current_range_a",
                problem=f"±{current_range_a:g} A does not fit set_current_a ({lo:g}..{hi:g} A)",
            )
        self.device = device
        self.current_range_a = current_range_a
        self.voltage_range_v = voltage_range_v
        self.min_sample_interval_s = min_sample_interval_s
        self._names = (vendor, model, serial, firmware)
        self._identify = identify
        self._clock: Clock = clock or WallClock()
        self.halt_timeout_s = halt_timeout_s or 3 * device.timeout_s

    async def connect(self) -> GalvanostatInfo:
        await self.device.connect()
        vendor, model, serial, firmware = self._names
        if self._identify:
            ident = await self.device.identify()
            vendor = vendor or ident.get("vendor", "")
            model = model or ident.get("product_name") or ident.get("product_code", "")
            firmware = firmware or ident.get("revision", "")
        return GalvanostatInfo(
            vendor=vendor or "unknown",
            model=model or "Modbus galvanostat",
            serial=serial or f"{self.device.link}/{self.device.device_id}",
            firmware=firmware,
            current_range_a=self.current_range_a,
            voltage_range_v=self.voltage_range_v,
            min_sample_interval_s=self.min_sample_interval_s,
        )

    async def close(self) -> None:
        await self.device.close()

    async def source_current(self, current_a: float, *, compliance_v: float) -> None:
        _check_range("current_a", current_a, self.current_range_a, "A")
        _check_compliance("compliance_v", compliance_v, self.voltage_range_v, "V")
        regs = self.device.registers
        values: dict[str, float] = {"set_current_a": current_a}
        self._compliance(values, "compliance_v", compliance_v, self.voltage_range_v, "V")
        if "mode" in regs:
            values["mode"] = MODE_CURRENT
        # The setpoint goes before the mode and the output, so the device never runs
        # with a stale setpoint.
        values["output"] = 1
        await self.device.write_many(values)

    async def source_voltage(self, voltage_v: float, *, compliance_a: float) -> None:
        regs = self.device.registers
        if "set_voltage_v" not in regs or "mode" not in regs:
            raise ConfigError(
                field="registers",
                problem="voltage sourcing needs registers named set_voltage_v and mode; "
                "this instrument sources current only",
            )
        _check_range("voltage_v", voltage_v, self.voltage_range_v, "V")
        _check_compliance("compliance_a", compliance_a, self.current_range_a, "A")
        values: dict[str, float] = {"set_voltage_v": voltage_v}
        self._compliance(values, "compliance_a", compliance_a, self.current_range_a, "A")
        values["mode"] = MODE_VOLTAGE
        values["output"] = 1
        await self.device.write_many(values)

    def _compliance(
        self, values: dict[str, float], name: str, limit: float, full_range: float, unit: str
    ) -> None:
        if name in self.device.registers:
            values[name] = limit
        elif limit < full_range:
            raise ConfigError(
                field=name,
                problem=f"this instrument has no {name} register: it limits at its range "
                f"({full_range:g} {unit}) only; ask for {full_range:g} {unit} or add the register",
            )

    async def measure(self) -> Measurement:
        values = await self.device.read(("voltage_v", "current_a", "output"))
        return Measurement(
            t_s=self._clock.now_s(),
            voltage_v=values["voltage_v"],
            current_a=values["current_a"],
            output_on=values["output"] != 0,
        )

    async def output_off(self) -> None:
        """Switch the output off and confirm it by reading back. The halt path."""
        halt = asyncio.create_task(self._switch_off(), name=f"output off {self.device}")
        halt.add_done_callback(_consume)
        try:
            await asyncio.shield(halt)
        except asyncio.CancelledError:
            # The caller is being cancelled; the halt still goes out, and the caller
            # waits for it (bounded by halt_timeout_s) before its cancellation proceeds.
            while not halt.done():
                # Cancelled again: still wait. The halt is bounded by halt_timeout_s,
                # and the caller's cancellation is re-raised below in any case.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([halt])
            if not halt.cancelled() and (err := halt.exception()) is not None:
                # Nobody else will see this error: the caller leaves with its cancellation.
                log.error("halt of %s failed while its caller was cancelled: %s", self.device, err)  # noqa: TRY400
            raise

    async def _switch_off(self) -> None:
        last: DriverError | None = None
        try:
            async with asyncio.timeout(self.halt_timeout_s):
                while True:
                    try:
                        if not self.device.connected:
                            await self.device.connect()
                        await self.device.write("output", 0)
                        if (await self.device.read(("output",)))["output"] == 0:
                            return
                        last = CommandRefused("output off", ["output"], "it still reads on")
                    except (InstrumentConnectionError, ProtocolViolation, CommandRefused) as err:
                        last = err
                    log.warning("%s: output off not confirmed yet: %s", self.device, last)
                    await asyncio.sleep(_HALT_RETRY_PAUSE_S)
        except TimeoutError:
            msg = (
                f"{self.device}: output off not confirmed within {self.halt_timeout_s:g} s"
                f" (last: {last})"
            )
            raise InstrumentTimeout(msg) from last


def _consume(task: asyncio.Task[None]) -> None:
    # If the caller is cancelled twice it stops waiting; the halt still ends within its
    # bound, and its error must not be reported as "never retrieved" by asyncio.
    if not task.cancelled():
        task.exception()


def _check_range(field: str, value: float, full_range: float, unit: str) -> None:
    if not (math.isfinite(value) and abs(value) <= full_range):
        raise ConfigError(
            field=field,
            problem=f"must be within ±{full_range:g} {unit} (the instrument's range), "
            f"got {value!r}",
        )


def _check_compliance(field: str, value: float, full_range: float, unit: str) -> None:
    if not (math.isfinite(value) and 0 < value <= full_range):
        raise ConfigError(
            field=field, problem=f"must be > 0 and <= {full_range:g} {unit}, got {value!r}"
        )
