"""The simulated 2400's error queue and IEEE 488.2 / SCPI status registers. Pure state.

What a host sees through ``*ESR?``, ``*STB?``, ``:STAT:...`` and ``:SYST:ERR?``:

* Every error pushed sets its class bit in the standard event status register, as
  IEEE 488.2 assigns them: -1xx command error (CME, bit 5), -2xx execution error
  (EXE, bit 4), -3xx and positive codes device-dependent (DDE, bit 3), -4xx query
  error (QYE, bit 2). ``*ESR?`` answers and clears it; at power-on PON (bit 7) is set.
* The status byte (``*STB?``) is computed, not stored: MSB (bit 0) for an enabled
  measurement event, EAV (bit 2) while the error queue is not empty, QSB (bit 3) for
  an enabled questionable event, ESB (bit 5) for an enabled standard event, MSS (bit 6)
  when any bit enabled by ``*SRE`` is set, OSB (bit 7) for an enabled operation event.
* The three SCPI registers (measurement, questionable, operation) have an event part
  that reading clears and an enable mask that ``:STAT:PRES`` zeroes.
* The queue holds ten entries; an eleventh replaces the last with ``-350,"Queue overflow"``.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from cellguard.drivers.smu._scpi import NO_ERROR, ErrorEntry

__all__ = [
    "BUFFER_FULL_BIT",
    "ERROR_QUEUE_LEN",
    "OPC_BIT",
    "StatusRegisters",
    "StatusSystem",
]

ERROR_QUEUE_LEN = 10
OPC_BIT = 1
"""Standard event bit 0: operation complete (set by ``*OPC``)."""
_QYE_BIT, _DDE_BIT, _EXE_BIT, _CME_BIT, _PON_BIT = 4, 8, 16, 32, 128
BUFFER_FULL_BIT = 512
"""Measurement event bit 9: the reading buffer is full."""

StatusSystem = Literal["MEAS", "QUES", "OPER"]


class StatusRegisters:
    """Error queue, standard event register and the SCPI event registers of one instrument."""

    def __init__(self) -> None:
        self._errors: deque[ErrorEntry] = deque()
        self.event_status = _PON_BIT
        self.event_enable = 0
        self.service_enable = 0
        self.events: dict[StatusSystem, int] = {"MEAS": 0, "QUES": 0, "OPER": 0}
        self.enables: dict[StatusSystem, int] = {"MEAS": 0, "QUES": 0, "OPER": 0}

    @property
    def errors(self) -> tuple[ErrorEntry, ...]:
        """The error queue, oldest first."""
        return tuple(self._errors)

    def push_error(self, entry: ErrorEntry) -> None:
        """Queue ``entry`` and set its class bit in the standard event register."""
        code = entry.code
        if -199 <= code <= -100:
            self.event_status |= _CME_BIT
        elif -299 <= code <= -200:
            self.event_status |= _EXE_BIT
        elif -499 <= code <= -400:
            self.event_status |= _QYE_BIT
        else:
            self.event_status |= _DDE_BIT
        if len(self._errors) >= ERROR_QUEUE_LEN:
            self._errors[-1] = ErrorEntry(-350, "Queue overflow")
            return
        self._errors.append(entry)

    def next_error(self) -> ErrorEntry:
        """The oldest entry, taken off the queue; ``0,"No error"`` when it is empty."""
        return self._errors.popleft() if self._errors else NO_ERROR

    def clear_errors(self) -> None:
        self._errors.clear()

    def clear(self) -> None:
        """``*CLS``: empty the queue and every event register (enable masks stay)."""
        self._errors.clear()
        self.event_status = 0
        for system in self.events:
            self.events[system] = 0

    def preset(self) -> None:
        """``:STAT:PRES``: zero the SCPI enable masks."""
        for system in self.enables:
            self.enables[system] = 0

    def read_event_status(self) -> int:
        """``*ESR?``: the standard event register, cleared by reading it."""
        value, self.event_status = self.event_status, 0
        return value

    def read_event(self, system: StatusSystem) -> int:
        """``:STAT:<system>?``: the event register, cleared by reading it."""
        value, self.events[system] = self.events[system], 0
        return value

    def status_byte(self) -> int:
        """``*STB?``: the summary bits, with MSS when a bit enabled by ``*SRE`` is set."""
        byte = 0
        if self.events["MEAS"] & self.enables["MEAS"]:
            byte |= 1
        if self._errors:
            byte |= 4
        if self.events["QUES"] & self.enables["QUES"]:
            byte |= 8
        if self.event_status & self.event_enable:
            byte |= 32
        if self.events["OPER"] & self.enables["OPER"]:
            byte |= 128
        if byte & self.service_enable & ~64:
            byte |= 64
        return byte
