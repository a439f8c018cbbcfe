"""The instrument side of cellguard: transports, sans-IO codecs, clients, simulators."""

from cellguard.drivers.clock import Clock, ScaledClock, VirtualClock, WallClock
from cellguard.drivers.errors import (
    CellguardError,
    CommandRefused,
    ConfigError,
    DriverError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)

__all__ = [
    "CellguardError",
    "Clock",
    "CommandRefused",
    "ConfigError",
    "DriverError",
    "InstrumentConnectionError",
    "InstrumentTimeout",
    "ProtocolViolation",
    "ScaledClock",
    "VirtualClock",
    "WallClock",
]
