"""Moved to :mod:`cellguard.daemon.guard.links.host` (kept for older imports)."""

from cellguard.daemon.guard.links.host import (
    AuxLimit,
    AuxSource,
    HostChannelSpec,
    HostState,
    HostSupervisor,
)

__all__ = ["AuxLimit", "AuxSource", "HostChannelSpec", "HostState", "HostSupervisor"]
