"""What a host-driven instrument offers: one channel the host sets and reads.

The Neware path runs a step file on the cycler's own sequencer; instruments without
one (a SCPI source-measure unit on a serial line, a bidirectional supply or a cycler
behind Modbus registers) are driven by the host: cellguard decides the setpoint at
every sample from the protocol and the measurement. Every such driver implements
:class:`Galvanostat`, so the host-side runner, the supervision and the halt path are
written once.

Sign convention, as on the Neware path: positive current charges the cell (strips Li
from the working electrode of a Li|Li cell), negative current discharges it.

Halting is the one operation that must work when everything else fails: drivers make
:meth:`Galvanostat.output_off` idempotent, bounded by their timeout, and safe to call
from a task that is being cancelled (the caller shields it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

SourceMode = Literal["off", "current", "voltage"]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading of the channel, in SI units.

    ``t_s`` is the instrument's own time when it has one, else the host clock's at the
    moment of the reading; either way monotonic within one connection.
    """

    t_s: float
    voltage_v: float
    current_a: float
    output_on: bool


@dataclass(frozen=True, slots=True)
class GalvanostatInfo:
    """Who answered and what it can do: checked against a protocol before any current."""

    vendor: str
    model: str
    serial: str
    firmware: str
    current_range_a: float  # largest |current| it can source
    voltage_range_v: float  # largest |voltage| it can source or measure
    min_sample_interval_s: float  # fastest useful measurement cadence


@runtime_checkable
class Galvanostat(Protocol):
    """One host-driven channel. All methods raise :class:`~cellguard.drivers.errors.DriverError`
    subclasses only: ``InstrumentConnectionError``/``InstrumentTimeout`` for a lost link,
    ``ProtocolViolation`` for a malformed reply, ``CommandRefused`` for a refusal."""

    async def connect(self) -> GalvanostatInfo:
        """Open the link and identify the instrument; reusable after a lost link."""
        ...

    async def close(self) -> None:
        """Close the link; never raises. Does not touch the output."""
        ...

    async def source_current(self, current_a: float, *, compliance_v: float) -> None:
        """Output on, sourcing ``current_a``; the voltage never exceeds ``compliance_v``."""
        ...

    async def source_voltage(self, voltage_v: float, *, compliance_a: float) -> None:
        """Output on, holding ``voltage_v``; |current| never exceeds ``compliance_a``."""
        ...

    async def output_off(self) -> None:
        """Output off (no current flows). Idempotent; the halt path."""
        ...

    async def measure(self) -> Measurement:
        """Read voltage, current and output state now."""
        ...
