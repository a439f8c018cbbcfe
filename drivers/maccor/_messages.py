"""MacNet messages, from Maccor's help ("Remote Control - MacNet"): functions, codes, readings.

A MacNet function is named by its class and number, ``(FClass, FNum)``; the same
pair comes back in the reply. Channels are 0-based on the wire (``Chan``), on the
JSON port as on the binary port. The help, of every frame: "This structure is the
same for messages sent to the Maccor program and well as the replies", "Chan Word
Test channel. 0-based.", "NOTE! Chan is 0 (zero) based, so to e.g. address test
channel number 4, Chan would be 3."; and of JSON: "the values in the JSON
implementation are the same as native implementation" (pymacnet's 1-based channels
are its own; tests/fixtures/maccor-macnet/README.md has the whole reading).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_JSON_PORT: Final = 57570
"""``MacNet_JSON_Port`` in the tester's System.ini, by default."""
DEFAULT_BIN_PORT: Final = 57560
"""``MacNet_TCP_Port``: the native (binary) MacNet over TCP, by default."""

SELECTED_CHANNELS: Final = 0xFFFF
"""``Chan`` of a start meaning "every selected channel"."""
MAX_STATUS_CHANNELS: Final = 128
"""Channels one (4, 1) status request may ask for."""

ECHO: Final = (0, 0)
SYSTEM_INFO: Final = (1, 1)
GENERAL_INFO: Final = (1, 2)
STATUS_MULTIPLE: Final = (4, 1)
VOLTAGES_MULTIPLE: Final = (4, 2)
CURRENTS_MULTIPLE: Final = (4, 3)
AUX_READINGS: Final = (4, 4)
STATUS_ONE: Final = (4, 7)
START_TEST: Final = (6, 2)
SUSPEND: Final = (6, 3)
RESUME: Final = (6, 4)
RESET: Final = (6, 5)
START_DIRECT: Final = (6, 7)
SET_DIRECT_OUTPUT: Final = (6, 8)
SET_VARIABLE: Final = (6, 9)
SET_SAFETY: Final = (6, 10)

FUNCTION_NAMES: Final[dict[tuple[int, int], str]] = {
    ECHO: "echo",
    SYSTEM_INFO: "version info",
    GENERAL_INFO: "general system information",
    STATUS_MULTIPLE: "channel status of multiple channels",
    VOLTAGES_MULTIPLE: "voltage readings of multiple channels",
    CURRENTS_MULTIPLE: "current readings of multiple channels",
    AUX_READINGS: "auxiliary input readings",
    STATUS_ONE: "all status and readings of one channel",
    START_TEST: "start test",
    SUSPEND: "suspend",
    RESUME: "resume",
    RESET: "reset",
    START_DIRECT: "start direct mode",
    SET_DIRECT_OUTPUT: "set direct mode output",
    SET_VARIABLE: "set variable",
    SET_SAFETY: "set safety",
}

STATUS_NAMES: Final[dict[int, str]] = {
    0: "Available",
    1: "Selected",
    2: "Active",
    3: "Suspended",
    4: "Completed",
    5: "Problem",
    6: "Not/Avl",
    7: "Reset",
    8: "Start",
    9: "PWR Fail",
    10: "No Cntllr",
    11: "ShutDown",
    12: "Starting",
    13: "Blocked",
    14: "Waiting",
    15: "FRA",
    16: "Rem Maint",
    17: "Not USED",
    18: "N/A",
}
"""``Stat``: the channel's state in MacTest32 (function (4, 1) of the help)."""

STAT_AVAILABLE: Final = 0
STAT_ACTIVE: Final = 2
STAT_SUSPENDED: Final = 3
STAT_COMPLETED: Final = 4
STAT_PROBLEM: Final = 5

RF1_AVAILABLE: Final = 0
RF1_CHARGE: Final = 1
RF1_DISCHARGE: Final = 2
RF1_REST: Final = 4
RF1_PROBLEM: Final = 29
RF1_SUSPENDED: Final = 30
RF1_COMPLETE: Final = 31
"""``RF1``: what the controller board is doing (a few of the help's codes)."""

RF2_NONE: Final = 128
RF2_SUSPENDED: Final = 192  # S (operator suspended or Pause step)
RF2_NORMAL_END: Final = 193  # O (normal end)
RF2_VOLTAGE_SAFETY: Final = 253  # P (V safety absolute)
RF2_CURRENT_SAFETY: Final = 254  # P (lost current control)

START_RESULTS: Final[dict[int, str]] = {
    0: "OK",
    10: "Cannot start regimes with more than one channel selected.",
    12: "Advanced start is not compatible with regimes.",
    14: "No test procedure was selected, please select a test procedure",
    15: "Channel not Active. Jump start impossible",
    16: "Channel not Selected. Advanced start impossible",
    17: "Channel not Suspended, Cannot Restart",
    18: "The maximum length of the data file name is 256 characters.",
    19: "Name is not a unique filename.",
    20: "Name is not a unique filename",
    21: "EV Chamber in use",
    22: "Invalid entry.",
    23: "Channel in use",
    24: "No Channels were selected to be started.",
    25: "EV Chamber in use.",
}
START_DIRECT_RESULTS: Final[dict[int, str]] = {
    0: "OK",
    1: "Illegal system type. This feature only works for type 0",
    2: "The channel is not available",
    3: "Failed creating the pseudo test procedure",
}
DIRECT_OUTPUT_RESULTS: Final[dict[int, str]] = {
    0: "OK",
    1: "Illegal system type. This feature only works for type 0",
    2: "The channel is not active",
    3: "Command sent too fast. There must be at least 100 ms (10 ticks) between commands.",
    4: "Direct mode is not active.",
    5: "Direct mode is not ready yet.",
}

CHARGE_MODES: Final = ("C", "D", "R")
"""``ChMode`` of direct mode: charge, discharge, rest (67, 68, 82 on the binary port)."""
CURRENT_RANGES: Final = (1, 2, 3, 4)
VARIABLE_NUMBERS: Final = range(1, 16)
"""``VarNum`` of (6, 9): the channel's VAR1..VAR15."""


def status_name(stat: int) -> str:
    return STATUS_NAMES.get(stat, f"Stat {stat}")


@dataclass(frozen=True, slots=True)
class ChannelState:
    """All status and readings of one channel: the reply to (4, 7)."""

    channel: int
    rf1: int
    rf2: int
    stat: int
    last_record: int
    cycle: int
    step: int
    test_time_s: float
    step_time_s: float
    capacity_ah: float
    energy_wh: float
    current_a: float
    voltage_v: float
    tester_time: str  # ISO 8601 on the JSON port (the binary port: Unix ms)

    @property
    def status(self) -> str:
        return status_name(self.stat)

    @property
    def running(self) -> bool:
        return self.stat == STAT_ACTIVE


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    """What (6, 10) sets and echoes: the channel's own safety limits."""

    voltage_max_v: float
    voltage_min_v: float
    charge_current_max_a: float
    discharge_current_max_a: float
    charge_power_max_w: float = 0.0
    discharge_power_max_w: float = 0.0


@dataclass(frozen=True, slots=True)
class DirectOutput:
    """A direct-mode set-point: (6, 7) starts with one, (6, 8) changes it.

    Current, voltage and power are mutually limiting; a value outside the channel's
    range is ignored by the tester (the help's words), resistance 0 is ignored.
    """

    current_a: float
    voltage_v: float
    power_w: float
    mode: str  # "C", "D" or "R"
    current_range: int = 4
    resistance_ohm: float = 0.0
