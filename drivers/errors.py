"""The one exception root of cellguard and the driver-level errors.

Every error cellguard raises on purpose derives from :class:`CellguardError`, so a
caller can catch "anything cellguard refused" in one place. Foreign errors (OSError,
XML parse errors, ...) are translated at the boundary and chained with ``from``.
"""

from __future__ import annotations


class CellguardError(Exception):
    """Root of every error cellguard raises on purpose."""


class ConfigError(CellguardError, ValueError):
    """A value given by the user is not allowed.

    The message names the field and what is allowed, so the user can fix it.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class DriverError(CellguardError):
    """Something went wrong talking to an instrument."""


class InstrumentConnectionError(DriverError):
    """The instrument could not be reached, or the link to it was lost.

    Drivers raise this one type for every kind of lost link; reconnecting is the
    supervisor's policy, and the client object can be reused after ``connect()``.
    """


class InstrumentTimeout(InstrumentConnectionError):
    """The instrument did not answer within the timeout."""


class ProtocolViolation(DriverError):
    """The instrument sent bytes that do not follow its wire protocol.

    Raised for malformed frames, unparseable XML, missing attributes, numbers that are
    not numbers, and replies to a different command than the one sent.
    """


class CommandRefused(DriverError):
    """The instrument understood the command and answered that it will not do it."""

    def __init__(self, command: str, targets: list[str], detail: str = "") -> None:
        self.command = command
        self.targets = targets
        what = ", ".join(targets) if targets else "the instrument"
        msg = f"the instrument refused {command!r} for {what}"
        super().__init__(f"{msg}: {detail}" if detail else msg)
