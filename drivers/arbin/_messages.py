"""Typed messages of Arbin's CTI (Console Third-party Interface), from Arbin's documents.

Sources: "ArbinCTI_Protocol v1.1" and "Arbin CTI Instructions v4.5" (the PDFs kept in
the BatteryDataAlliance/pyctiarbin repository). Every message is a little-endian C
struct packed to 1 byte: an 8-byte token, a 4-byte length, a 4-byte command code and
a 4-byte extension (always 0), the command's fields, and a 2-byte checksum. Text
fields are fixed-size: ``wchar_t`` fields are UTF-16-LE, ``BYTE`` fields 8-bit, both
padded with zeros.

Channels are 0-based on the wire (``dwIvChannelGlobalIndex``); MITS Pro and the
configuration show them 1-based.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

TOKEN = 0x11DDDDDDDDDDDDDD
"""The 8-byte prefix of every frame (``BYTE m_bPrefix[8]``: seven 0xDD, then 0x11)."""

DEFAULT_PORT = 9031
"""The TCP port MITS Pro's CTI server listens on."""

ALL_CHANNELS = -1
"""``OnlyChannel`` / ``SingleChnOnly`` that asks for every channel of the cycler."""


class Command(enum.IntEnum):
    """Command codes (``m_dwCmd``). A feedback's code swaps the nibbles of byte 2."""

    LOGIN = 0xEEAB0001
    LOGIN_FEEDBACK = 0xEEBA0001
    GET_CHANNELS_INFO = 0xEEAB0003
    CHANNELS_INFO_FEEDBACK = 0xEEBA0003
    ASSIGN_SCHEDULE = 0xBB210001
    ASSIGN_SCHEDULE_FEEDBACK = 0xBB120001
    START_SCHEDULE = 0xBB320004
    START_SCHEDULE_FEEDBACK = 0xBB230004
    STOP_SCHEDULE = 0xBB310001
    STOP_SCHEDULE_FEEDBACK = 0xBB130001
    SET_META_VARIABLE = 0xBB150001
    SET_META_VARIABLE_FEEDBACK = 0xBB510001


def feedback_code(request_code: int) -> int:
    """The feedback command code answering ``request_code`` (0xBB320004 -> 0xBB230004)."""
    byte2 = (request_code >> 16) & 0xFF
    swapped = ((byte2 & 0x0F) << 4) | (byte2 >> 4)
    return (request_code & 0xFF00FFFF) | (swapped << 16)


class ChannelStatus(enum.IntEnum):
    """``THIRD_PARTY_STATUS_INFOMATION.Status`` (the Monitor and Control window's)."""

    IDLE = 0x00
    TRANSITION = 0x01
    CHARGE = 0x02
    DISCHARGE = 0x03
    REST = 0x04
    WAIT = 0x05
    EXTERNAL_CHARGE = 0x06
    CALIBRATION = 0x07
    UNSAFE = 0x08
    PULSE = 0x09
    INTERNAL_RESISTANCE = 0x0A
    AC_IMPEDANCE = 0x0B
    ACI_CELL = 0x0C
    TEST_SETTINGS = 0x0D
    ERROR = 0x0E
    FINISHED = 0x0F
    VOLT_METER = 0x10
    WAITING_FOR_ACS = 0x11
    PAUSE = 0x12
    EMPTY = 0x13
    IDLE_FROM_MCU = 0x14
    START = 0x15
    RUNNING = 0x16
    STEP_TRANSFER = 0x17
    RESUME = 0x18
    GO_PAUSE = 0x19
    GO_STOP = 0x1A
    GO_NEXT_STEP = 0x1B
    ONLINE_UPDATE = 0x1C
    DAQ_MEMORY_UNSAFE = 0x1D
    ACR = 0x1E


def status_name(status: int) -> str:
    """``charge``, ``idle``, ... for a status code; an unknown code as ``status 0x2a``."""
    try:
        return ChannelStatus(status).name.lower()
    except ValueError:
        return f"status 0x{status:02x}"


# Statuses in which a test is on the channel (current may flow or is about to).
RUNNING_STATUSES = frozenset(
    {
        ChannelStatus.TRANSITION,
        ChannelStatus.CHARGE,
        ChannelStatus.DISCHARGE,
        ChannelStatus.REST,
        ChannelStatus.WAIT,
        ChannelStatus.EXTERNAL_CHARGE,
        ChannelStatus.PULSE,
        ChannelStatus.INTERNAL_RESISTANCE,
        ChannelStatus.AC_IMPEDANCE,
        ChannelStatus.ACI_CELL,
        ChannelStatus.PAUSE,
        ChannelStatus.START,
        ChannelStatus.RUNNING,
        ChannelStatus.STEP_TRANSFER,
        ChannelStatus.RESUME,
        ChannelStatus.GO_PAUSE,
        ChannelStatus.GO_NEXT_STEP,
        ChannelStatus.ACR,
    }
)

LOGIN_RESULTS = {1: "success", 2: "refused (user name or password)", 3: "already logged in"}

# btResult of the 128-byte feedbacks; 0 is success for all of them.
ASSIGN_RESULTS = {
    0x10: "channel does not exist",
    0x11: "monitor window in use",
    0x12: "schedule name empty",
    0x13: "schedule not found",
    0x14: "channel is running",
    0x15: "channel is downloading another schedule",
    0x16: "batch file is open",
    0x17: "assign failed",
    0x18: "save failed",
}
START_RESULTS = {
    0x10: "invalid channel index",
    0x11: "a user is controlling the monitor window",
    0x12: "channel is running or unsafe",
    0x13: "channel not connected to DAQ",
    0x14: "schedule not compatible with the system configuration",
    0x15: "no schedule assigned to the channel",
    0x16: "schedule version does not match MITS",
    0x19: "invalid step number",
    0x1B: "invalid auxiliary count in schedule",
    0x1C: "invalid built-in auxiliary count",
    0x1E: "check the Aux Test Setting tab",
    0x1F: "no selected channels",
    0x21: "DAQ still downloading the schedule",
    0x22: "error querying the database",
    0x23: "test name empty or already used",
    0x24: "invalid step number",
    0x25: "invalid parallel channel number",
    0x26: "schedule safety pre-check failed",
    0x28: "battery simulation error",
}
STOP_RESULTS = {
    0x10: "channel index does not exist",
    0x11: "someone else is controlling the monitor window",
    0x12: "channel not running",
    0x13: "channel not connected",
}
SET_MV_RESULTS = {
    0x10: "set MV failed",
    0x11: "MV meta code does not exist",
    0x12: "channel is not running",
    0x13: "meta code does not exist in MITS Pro 7",
    0x14: "updated too often (at most every 200 ms)",
}
UNKNOWN_COMMAND_RESULT = 0x11
"""What our simulator answers to a command it does not implement (the doc is silent)."""

META_CODES = (52, 53, 54, 55, *range(105, 117))
"""``MV_MetaCode`` of the user meta-variables MV_UD1 .. MV_UD16, in order."""

AUX_KINDS = (
    "voltage",
    "temperature",
    "pressure",
    "external",
    "flow",
    "ao",
    "di",
    "do",
    "humidity",
    "safety",
    "ph",
    "density",
)
"""The auxiliary channel kinds, in the order their counts and values come."""


# ------------------------------------------------------------------ requests


@dataclass(frozen=True)
class Login:
    """``THIRD_PARTY_USER_LOGIN_CMD``: must come first on every connection."""

    username: str
    password: str


@dataclass(frozen=True)
class GetChannelsInfo:
    """``THIRD_PARTY_GET_CHANNELS_INFO``: the live values of one channel or all (-1)."""

    channel: int = ALL_CHANNELS
    selection: int = 1  # 1 every channel, 2 running ones, 3 unsafe ones
    aux_options: int = 0  # 0x100 CAN BMS, 0x200 SMB, 0x400 auxiliary data


@dataclass(frozen=True)
class AssignSchedule:
    """``THIRD_PARTY_ASSIGN_SCHEDULE``: put a schedule (.sdx) on a channel."""

    channel: int
    schedule: str
    all_channels: bool = False
    capacity_ah: float = 0.0
    barcode: str = ""  # ``ItemId``
    meta_variables: tuple[float, ...] = (0.0,) * 16  # MV_UD1..16 (MITS 7 only)


@dataclass(frozen=True)
class StartSchedule:
    """``THIRD_PARTY_START_SCHEDULE``: start the assigned schedule on channels."""

    test_name: str
    channels: tuple[int, ...]


@dataclass(frozen=True)
class StopSchedule:
    """``THIRD_PARTY_STOP_SCHEDULE``: stop the test on a channel (or all)."""

    channel: int
    all_channels: bool = False


@dataclass(frozen=True)
class SetMetaVariable:
    """``THIRD_PARTY_SET_MV_VALUE``: set a user meta-variable of a running test."""

    channel: int
    meta_code: int
    value: float
    mv_type: int = 1  # CTI allows only 1
    value_type: int = 1  # CTI allows only 1


@dataclass(frozen=True)
class UnknownRequest:
    """A well-framed request whose command code we do not implement."""

    command_code: int
    payload: bytes


Request = (
    Login
    | GetChannelsInfo
    | AssignSchedule
    | StartSchedule
    | StopSchedule
    | SetMetaVariable
    | UnknownRequest
)


# ------------------------------------------------------------------ feedbacks


@dataclass(frozen=True)
class LoginFeedback:
    """``THIRD_PARTY_USER_LOGIN_FEEDBACK``: the cycler's identity and channel count."""

    result: int  # see LOGIN_RESULTS
    ip_address: bytes = b"\0\0\0\0"
    serial_number: str = ""
    note: str = ""
    nickname: str = ""
    location: str = ""
    emergency_contact: str = ""
    other_comments: str = ""
    email: str = ""
    call: str = ""
    itac: int = 0
    version: int = 0
    allow_control: int = 1
    channel_count: int = 0
    user_type: int = 0
    picture: bytes = b""

    @property
    def ok(self) -> bool:
        return self.result in (1, 3)


@dataclass(frozen=True)
class BmsValue:
    index: int
    value: float
    unit: bytes = b""


@dataclass(frozen=True)
class SmbValue:
    index: int
    kind: int  # 0: a number (value), 1: text
    value: float = 0.0
    text: bytes = b""
    unit: bytes = b""


@dataclass(frozen=True)
class ChannelReading:
    """One channel of a ``GET_CHANNELS_INFO`` feedback (``THIRD_PARTY_CHANNEL``)."""

    channel: int  # 0-based
    status: int  # see ChannelStatus (an unknown code is kept as it came)
    comm_failure: int = 0
    schedule: str = ""
    test_name: str = ""
    exit_condition: str = ""
    step_and_cycle: str = ""
    barcode: str = ""
    can_config: str = ""
    smb_config: str = ""
    master_channel: int = 0
    test_time_s: float = 0.0
    step_time_s: float = 0.0
    voltage_v: float = 0.0
    current_a: float = 0.0
    power_w: float = 0.0
    charge_capacity_ah: float = 0.0
    discharge_capacity_ah: float = 0.0
    charge_energy_wh: float = 0.0
    discharge_energy_wh: float = 0.0
    internal_resistance_ohm: float = 0.0
    dvdt_v_per_s: float = 0.0
    acr_ohm: float = 0.0
    aci_ohm: float = 0.0
    aci_phase_deg: float = 0.0
    # Per kind of AUX_KINDS, in order: (value, d/dt value) of each aux channel.
    aux: tuple[tuple[tuple[float, float], ...], ...] = ((),) * len(AUX_KINDS)
    bms: tuple[BmsValue, ...] = ()
    smb: tuple[SmbValue, ...] = ()

    @property
    def running(self) -> bool:
        """A test is on the channel (``status`` one of :data:`RUNNING_STATUSES`)."""
        return self.status in RUNNING_STATUSES

    @property
    def status_name(self) -> str:
        return status_name(self.status)


@dataclass(frozen=True)
class ChannelsInfoFeedback:
    """``THIRD_PARTY_GET_CHANNELS_INFO_FEEDBACK``."""

    channels: tuple[ChannelReading, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CommandFeedback:
    """The 128-byte feedback of assign, start, stop and set-MV (and unknown) commands.

    ``channel`` is the channel the feedback is about; after a start, -1 also means
    success for the requested channel (ArbinCTI_Protocol v1.1).
    """

    command_code: int
    channel: int
    result: int  # 0 = success; see the *_RESULTS tables

    @property
    def ok(self) -> bool:
        return self.result == 0


Feedback = LoginFeedback | ChannelsInfoFeedback | CommandFeedback
