"""Typed messages of the Neware BTS 8 API: what requests say and what replies carry.

Units follow the wire (they are the instrument's), with the unit in every name:
``inquire`` reports volts, amperes, ampere-hours, watt-hours and seconds; ``download``
records report volts, amperes, ampere-hours, watt-hours, test time in milliseconds and
the local wall-clock time of the sample. (A 2025 server sends ``download`` in mA, mAh
and mWh; the client converts, and says so in :attr:`DownloadReply.units`.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from cellguard.drivers.errors import ConfigError

DEVTYPE_CT4008 = 27

_CHANNEL_RE = re.compile(r"^\s*(\d+)-(\d+)-(\d+)\s*$")

WorkStatus = Literal["working", "stop", "finish", "protect", "pause"]
WORK_STATUSES: tuple[str, ...] = ("working", "stop", "finish", "protect", "pause")


@dataclass(frozen=True, order=True, slots=True)
class ChannelId:
    """A channel as Neware users write it: ``devid-subdevid-chlid`` (e.g. ``21-1-3``)."""

    devid: int
    subdevid: int
    chlid: int

    @classmethod
    def parse(cls, text: str) -> ChannelId:
        """Parse ``"21-1-3"``; a :class:`ConfigError` says what the form must be."""
        match = _CHANNEL_RE.match(text)
        if match is None:
            raise ConfigError(
                field="channel",
                problem=f"{text!r} is not a Neware channel id; "
                "write devid-subdevid-chlid, e.g. 21-1-3",
            )
        devid, subdevid, chlid = (int(group) for group in match.groups())
        if subdevid < 1 or chlid < 1:
            raise ConfigError(field="channel", problem=f"{text!r}: subdevid and chlid start at 1")
        return cls(devid, subdevid, chlid)

    def __str__(self) -> str:
        return f"{self.devid}-{self.subdevid}-{self.chlid}"


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    """Everything a request needs to name one channel on a BTS server."""

    channel: ChannelId
    devtype: int = DEVTYPE_CT4008
    ip: str = "127.0.0.1"


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Connect:
    username: str = "admin"
    password: str = "neware"
    client_type: str = "bfgs"


@dataclass(frozen=True, slots=True)
class GetDevInfo:
    pass


@dataclass(frozen=True, slots=True)
class GetChlStatus:
    channels: tuple[ChannelAddress, ...]


@dataclass(frozen=True, slots=True)
class Inquire:
    channels: tuple[ChannelAddress, ...]


@dataclass(frozen=True, slots=True)
class InquireDf:
    channels: tuple[ChannelAddress, ...]


@dataclass(frozen=True, slots=True)
class StartItem:
    address: ChannelAddress
    barcode: str
    step_file_path: str  # a path on the BTS server's own disk


@dataclass(frozen=True, slots=True)
class Start:
    items: tuple[StartItem, ...]
    backup_dir: str = ""


@dataclass(frozen=True, slots=True)
class Stop:
    channels: tuple[ChannelAddress, ...]


@dataclass(frozen=True, slots=True)
class ClearFlag:
    channels: tuple[ChannelAddress, ...]


@dataclass(frozen=True, slots=True)
class Pause:
    """Pause running tests now (BTS ``setpause`` with cycle and step ids of -1)."""

    channels: tuple[ChannelAddress, ...]


@dataclass(frozen=True, slots=True)
class Continue:
    """Resume paused tests where they stopped (BTS ``continue``)."""

    channels: tuple[ChannelAddress, ...]


@dataclass(frozen=True, slots=True)
class Light:
    channels: tuple[ChannelAddress, ...]
    on: bool = True


@dataclass(frozen=True, slots=True)
class Download:
    """Recorded samples of one test by position: ``start_pos`` is the first seqid."""

    address: ChannelAddress
    start_pos: int
    count: int
    test_id: int = 0  # 0 = the channel's latest test
    aux_id: int = 0


@dataclass(frozen=True, slots=True)
class DownloadLog:
    address: ChannelAddress
    test_id: int = 0


@dataclass(frozen=True, slots=True)
class DownloadStepLayer:
    address: ChannelAddress
    test_id: int = 0


@dataclass(frozen=True, slots=True)
class OtherCommand:
    """Any command beyond the basics, known (``getpause``, ``goto``...) or not.

    ``channels`` are the addresses its ``<list>`` names (empty when it names none);
    a real server answers every such command, with ok, false or an error.
    """

    cmd: str
    channels: tuple[ChannelAddress, ...] = ()


# Commands a real BTS 8 server knows beyond those with their own message type.
EXTRA_COMMANDS: tuple[str, ...] = (
    "getpause",
    "cancelpause",
    "resetalarm",
    "goto",
    "broadcaststop",
    "chl_ctrl",
    "parallel",
    "getparallel",
    "reset",
)


Request = (
    Connect
    | GetDevInfo
    | GetChlStatus
    | Inquire
    | InquireDf
    | Start
    | Stop
    | ClearFlag
    | Light
    | Pause
    | Continue
    | Download
    | DownloadLog
    | DownloadStepLayer
    | OtherCommand
)

# ---------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class ConnectReply:
    ok: bool


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    address: ChannelAddress
    available: bool


@dataclass(frozen=True, slots=True)
class DevInfoReply:
    channels: tuple[ChannelInfo, ...]
    server_ip: str | None = None
    server_port: int | None = None


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    address: ChannelAddress
    status: str
    reserve_pause: int = 1


@dataclass(frozen=True, slots=True)
class StatusReply:
    items: tuple[ChannelStatus, ...]


@dataclass(frozen=True, slots=True)
class InquireRecord:
    """The newest value of one channel, as ``inquire`` reports it (4 decimals on the wire)."""

    address: ChannelAddress
    cycle_id: int
    step_id: int | None  # absent when no test runs
    step_type: str | None  # "cc", "dc", "rest", ...; None for "--"
    workstatus: str
    barcode: str
    current_a: float
    voltage_v: float
    capacity_ah: float
    energy_wh: float
    total_time_s: float
    relative_time_s: float
    open_or_close: int = 0
    log_code: int = 0
    aux: int = 0


@dataclass(frozen=True, slots=True)
class InquireReply:
    items: tuple[InquireRecord, ...]


@dataclass(frozen=True, slots=True)
class DataCount:
    address: ChannelAddress
    test_id: int
    count: int
    flag: bool


@dataclass(frozen=True, slots=True)
class InquireDfReply:
    items: tuple[DataCount, ...]


CommandName = Literal["start", "stop", "clearflag", "light", "setpause", "continue"]


@dataclass(frozen=True, slots=True)
class CommandResult:
    address: ChannelAddress
    ok: bool


@dataclass(frozen=True, slots=True)
class CommandReply:
    command: CommandName
    items: tuple[CommandResult, ...]


class DownloadRecord(NamedTuple):
    """One recorded sample: the instrument's own test time and wall-clock time.

    A named tuple, not a frozen dataclass: a download page holds a thousand of them
    and a tuple is built several times faster.
    """

    seq_id: int
    step_id: int
    cycle_id: int
    step_type: str
    test_time_ms: int
    wall_time: datetime
    voltage_v: float
    current_a: float
    capacity_ah: float
    energy_wh: float


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A ``<data>`` item of a download page that could not be read, and why.

    ``position`` is its place in the page (1 = first item); ``seq_id`` its seqid when
    that much was readable.
    """

    position: int
    seq_id: int | None
    reason: str


DownloadUnits = Literal["A", "mA"]


@dataclass(frozen=True, slots=True)
class DownloadReply:
    """A page of recorded samples.

    ``units`` says what the server's ``curr``/``cap``/``eng`` were in: ``"A"`` (A, Ah,
    Wh: the recorded fixtures) or ``"mA"`` (mA, mAh, mWh: a 2025 server). The client
    converts the records to A/Ah/Wh and says here which unit it found. ``skipped``
    lists the items that could not be decoded (the others are in ``records``).
    """

    address: ChannelAddress
    test_id: int
    start_pos: int
    count: int
    records: tuple[DownloadRecord, ...]
    skipped: tuple[SkippedRecord, ...] = ()
    units: DownloadUnits = "A"


@dataclass(frozen=True, slots=True)
class LogRecord:
    seq_id: int
    log_code: int
    wall_time: datetime


@dataclass(frozen=True, slots=True)
class DownloadLogReply:
    address: ChannelAddress
    test_id: int
    records: tuple[LogRecord, ...]


@dataclass(frozen=True, slots=True)
class StepLayerRecord:
    start_seq_id: int
    end_seq_id: int
    step_index: int
    step_id: int
    cycle_id: int
    step_type: str
    step_time_ms: int
    end_wall_time: datetime
    start_voltage_v: float
    end_voltage_v: float
    start_current_a: float
    end_current_a: float
    capacity_ah: float
    energy_wh: float


@dataclass(frozen=True, slots=True)
class StepLayerReply:
    address: ChannelAddress
    test_id: int
    records: tuple[StepLayerRecord, ...]


@dataclass(frozen=True, slots=True)
class OtherReply:
    """The reply to an :class:`OtherCommand`: per-channel results, or one result.

    ``result`` is ``"ok"``, ``"false"`` or ``"error"`` when the reply has no list;
    ``error`` says why, when the server says.
    """

    cmd: str
    items: tuple[CommandResult, ...] = ()
    result: str | None = None
    error: str | None = None


Reply = (
    ConnectReply
    | DevInfoReply
    | StatusReply
    | InquireReply
    | InquireDfReply
    | CommandReply
    | DownloadReply
    | DownloadLogReply
    | StepLayerReply
    | OtherReply
)
