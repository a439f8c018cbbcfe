"""Moved to :mod:`cellguard.daemon.guard.links.neware` (kept for older imports)."""

from cellguard.daemon.guard.links.neware import ChannelSpec, InstrumentSupervisor
from cellguard.daemon.guard.ports import Publisher, SampleQueue, StateStore, drain_queue

__all__ = [
    "ChannelSpec",
    "InstrumentSupervisor",
    "Publisher",
    "SampleQueue",
    "StateStore",
    "drain_queue",
]
