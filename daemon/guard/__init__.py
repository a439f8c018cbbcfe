"""The channel guard: one state machine, halt path, event schema and backoff for every
instrument; the instrument-specific parts are link adapters under it."""

from cellguard.daemon.guard.core import Backoff, HaltProgress, halts_due, stop_once
from cellguard.daemon.guard.events import GuardEvent
from cellguard.daemon.guard.state import (
    STATES,
    TRANSITIONS,
    ChannelState,
    IllegalTransition,
    move,
    parse_state,
)

__all__ = [
    "STATES",
    "TRANSITIONS",
    "Backoff",
    "ChannelState",
    "GuardEvent",
    "HaltProgress",
    "IllegalTransition",
    "halts_due",
    "move",
    "parse_state",
    "stop_once",
]
