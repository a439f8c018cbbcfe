"""A guarded channel's state machine: every state and every legal move, in one table.

Both kinds of instrument (a Neware channel, a host-driven source-meter or supply)
move through the same states; the state is persisted, so a restart resumes without
re-starting a test or halting twice. A move the table does not allow is a bug in the
guard, not a condition of the instrument: it raises :class:`IllegalTransition`
instead of silently leaving a channel in a state nobody planned for (the two guards
this replaced had drifted exactly there).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

ChannelState = Literal[
    "idle",  # configured, no test of ours or the instrument's seen yet
    "running",  # a test runs and is guarded
    "halting",  # a fault was judged; the stop is out but not confirmed yet
    "halted",  # the instrument confirmed the stop of a fault (never re-started by us)
    "stopped",  # stopped by an operator or on the instrument, not by a fault
    "protected",  # the instrument's own protection ended the test (a limit tripped)
    "finished",  # the test ran to its end
    "unavailable",  # the link is down while the channel was running
]

STATES: Final[tuple[ChannelState, ...]] = get_args(ChannelState)

_ENDED: Final = ("stopped", "protected", "finished")

# From each state, the states it may move to (staying put is always allowed).
# - Anything that runs may be judged and halted; a monitor channel may be judged on
#   its first live value, before its status said "running" (hence idle -> halting).
# - "halting" leaves only by a confirmed stop: never forgotten across link losses,
#   restarts or operator commands.
# - An ended or halted channel runs again only by a new test (an operator start, or
#   a new test id on the instrument), never by a reconnect.
TRANSITIONS: Final[dict[ChannelState, frozenset[ChannelState]]] = {
    "idle": frozenset({"running", "halting", "unavailable", *_ENDED}),
    "running": frozenset({"halting", "unavailable", "idle", *_ENDED}),
    "halting": frozenset({"halted"}),
    # A halted cell seen running again (resumed at the instrument) and failing is
    # halted again: safety before bookkeeping.
    "halted": frozenset({"idle", "running", "halting"}),
    "stopped": frozenset({"idle", "running", "halting", "protected", "finished"}),
    "protected": frozenset({"idle", "running", "halting", "stopped", "finished"}),
    "finished": frozenset({"idle", "running", "halting", "stopped", "protected"}),
    "unavailable": frozenset({"running", "halting", "idle", *_ENDED}),
}


class IllegalTransition(RuntimeError):
    """A move the state table does not allow (a bug in the guard)."""


def parse_state(text: str, *, where: str) -> ChannelState:
    """A persisted state read back; an unknown one names ``where`` it came from."""
    for state in STATES:
        if state == text:
            return state
    msg = f"{where}: unknown channel state {text!r} (one of {', '.join(STATES)})"
    raise ValueError(msg)


def move(current: str, new: ChannelState, *, channel: str = "") -> ChannelState:
    """``new`` if the table allows ``current -> new``; else :class:`IllegalTransition`."""
    if current == new:
        return new
    allowed = TRANSITIONS.get(current)  # type: ignore[call-overload]
    if allowed is None or new not in allowed:
        who = f"{channel}: " if channel else ""
        msg = f"{who}illegal channel state transition {current} -> {new}"
        raise IllegalTransition(msg)
    return new
