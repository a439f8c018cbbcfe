"""The daemon's one TOML configuration file, validated completely at start.

``load_config(path)`` reads the file, ``parse_config(text)`` validates text. Either
gives a frozen :class:`Config` or raises one :class:`ConfigError` whose message is a
single line naming the key path and what is allowed, e.g.::

    channels[2].cell.area_cm2: required: electrode area in cm² > 0 (a 10 mm disc is 0.785)
    influxdb.tokn: unknown key; did you mean 'token'?
    instruments[0].port: must be an integer 1..65535, got "502x"

Secrets (the InfluxDB token, the MQTT user name and password) are given inline, as
the name of an environment variable (``*_env``) or as a file (``*_file``, stripped of
surrounding whitespace). They are held in :class:`Secret`, whose ``repr``/``str`` is
``Secret('***')``, so neither the config objects nor a log line can show them.

Relative paths (``state_dir``, ``*_file``) are relative to the configuration file's
folder, so a service does not depend on its working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import hmac
import json
import math
import os
import re
import socket
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn, get_args

from cellguard.daemon.mqtt_acl import acl_mismatch
from cellguard.daemon.records import ChannelTags
from cellguard.daemon.redact import redact
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import DEFAULT_TIMEOUT_S, ChannelId
from cellguard.protocols import disc_area_cm2
from cellguard.protocols.cells import Cell
from cellguard.protocols.detectors import CellProfile, DetectorSettings
from cellguard.protocols.galvanostatic import GalvanostaticCycling, InstrumentLimits
from cellguard.protocols.script import Protocol as ScriptProtocol
from cellguard.protocols.script import (
    example_names,
    example_path,
    load_protocol_file,
    prestart_setpoints,
)
from cellguard.protocols.script import to_step_file as script_to_step_file

LogLevel = Literal["debug", "info", "warning", "error"]
ChannelMode = Literal["monitor", "run"]
ProtocolKind = Literal["galvanostatic"]

DEFAULT_LOG_LEVEL: LogLevel = "info"
DEFAULT_INFLUX_BATCH_SIZE = 5000
DEFAULT_INFLUX_FLUSH_INTERVAL_S = 1.0
DEFAULT_INFLUX_TIMEOUT_S = 10.0  # one write request; then the disk spool
MQTT_PORT = 1883
MQTT_TLS_PORT = 8883

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Characters an MQTT client id may safely hold on every broker.
_CLIENT_ID_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_BATCH_SIZE = 1_000_000
# Physical bounds of the instrument keys (a typo of units is refused, not obeyed): a
# poll faster than 10 ms is a busy loop on the instrument's server, one slower than
# 10 min leaves a cell unguarded for longer than a short takes to do its damage.
POLL_INTERVAL_BOUNDS_S = (0.01, 600.0)
# The recorded history is kept by the instrument, so a long interval loses nothing; a
# day bounds how late the stored series and a fault missed by the live polls may be.
DOWNLOAD_INTERVAL_BOUNDS_S = (0.01, 86_400.0)
TIMEOUT_BOUNDS_S = (0.01, 600.0)
# A Neware CT-4008 channel works within ±5 V (the driver speaks to CT-4008 units);
# its current ranges run from µA to amperes.
NEWARE_VOLTAGE_RANGE_BOUNDS_V = (0.001, 5.0)
NEWARE_CURRENT_RANGE_BOUNDS_MA = (0.001, 100_000.0)


# ------------------------------------------------------------------ secrets


class Secret:
    """A secret string that never shows itself: ``repr``/``str`` are ``Secret('***')``.

    ``reveal()`` gives the value to the one call that needs it (a client's
    ``password=``); ``origin`` says where it came from (``env CELLGUARD_MQTT_PASSWORD``,
    ``file /etc/...``, ``inline``) and is safe to log.
    """

    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str = "inline") -> None:
        self._value = value
        self.origin = origin

    def reveal(self) -> str:
        """The secret itself; pass it on, never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> Secret:
        return self  # immutable; and copying must not go through __reduce__

    def __deepcopy__(self, memo: object) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        # A pickled secret would end up in a file or a queue in clear text.
        msg = "a Secret cannot be pickled"
        raise TypeError(msg)


# ------------------------------------------------------------------ instruments


@dataclass(frozen=True, slots=True, kw_only=True)
class _Instrument:
    """What every ``[[instruments]]`` entry has, whatever its driver."""

    name: str  # unique; the ``instrument`` tag and MQTT topic level
    poll_interval_s: float
    timeout_s: float = DEFAULT_TIMEOUT_S  # per request

    @property
    def host_driven(self) -> bool:
        return isinstance(self, SmuSettings | ModbusSettings)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewareSettings(_Instrument):
    """``driver = "neware"``: a BTS server, polled for all its channels."""

    driver: Literal["neware"] = "neware"
    host: str
    port: int
    # Where run-mode step files are written: a folder the BTS server reads (on its own
    # disk). None: the daemon's choice, ``<state_dir>/steps``.
    step_file_dir: str | None = None
    # How often the recorded history is fetched (the live values come every poll): the
    # stored series is complete either way; this bounds how far it lags.
    download_interval_s: float = 30.0
    # What one channel can do (a CT-4008 channel: 10 mA, ±5 V): run-mode protocols are
    # checked against it when the config is read, and the channels again at connect.
    current_range_ma: float = 10.0
    voltage_range_v: float = 5.0
    # The IANA zone of the BTS PC's clock, which dates recorded samples without a zone
    # (e.g. "Europe/Berlin"); None: the zone of the PC the daemon runs on.
    timezone: str | None = None
    # The BTS API login; None: the BTS server's factory account (admin / neware).
    username: Secret | None = None
    password: Secret | None = None

    @property
    def where(self) -> str:
        """Where the instrument is reached, for messages."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SmuSettings(_Instrument):
    """``driver = "smu"``: a SCPI source-meter on a serial line, run by the host."""

    driver: Literal["smu"] = "smu"
    serial_port: str  # a device path or a pyserial URL
    baudrate: int = 9600
    # Leave the output on when the daemon stops (default: switched off, as nothing
    # guards the cell until the daemon runs again).
    keep_output_on: bool = False

    @property
    def where(self) -> str:
        return self.serial_port


@dataclass(frozen=True, slots=True, kw_only=True)
class _ModbusInstrument(_Instrument):
    """A Modbus device: TCP (host, port) or RTU (serial_port), and its register map."""

    host: str = ""
    port: int = 0
    serial_port: str | None = None
    baudrate: int = 9600
    device_id: int = 1  # the unit id
    register_map: str | None = None  # a built-in map ...
    registers: tuple[Mapping[str, Any], ...] = ()  # ... or the tables from the file

    @property
    def where(self) -> str:
        return self.serial_port if self.serial_port else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusSettings(_ModbusInstrument):
    """``driver = "modbus"``: a cycler or supply behind Modbus registers, run by the host."""

    driver: Literal["modbus"] = "modbus"
    current_range_a: float  # the supply's ranges (a SCPI source-meter tells its own)
    voltage_range_v: float
    keep_output_on: bool = False  # as SmuSettings.keep_output_on


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusAuxSettings(_ModbusInstrument):
    """``driver = "modbus-aux"``: sensors whose readings join a channel's samples."""

    driver: Literal["modbus-aux"] = "modbus-aux"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArbinSettings(_Instrument):
    """``driver = "arbin"``: an Arbin cycler behind MITS Pro's CTI server (TCP, 9031)."""

    driver: Literal["arbin"] = "arbin"
    host: str
    port: int = 9031
    # The CTI user registered in MITS Pro (required: MITS Pro has no default account).
    username: Secret
    password: Secret
    voltage_range_v: float = 5.0  # what the detectors take as the channel's range

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MaccorSettings(_Instrument):
    """``driver = "maccor"``: a Maccor tester's MacNet (JSON over TCP, 57570)."""

    driver: Literal["maccor"] = "maccor"
    host: str
    port: int = 57570  # MacNet_JSON_Port
    voltage_range_v: float = 5.0  # what the detectors take as the channel's range
    # Run mode: the tester's own current limit (6, 10), both ways; None: not programmed.
    current_limit_a: float | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


InstrumentSettings = (
    NewareSettings
    | SmuSettings
    | ModbusSettings
    | ModbusAuxSettings
    | ArbinSettings
    | MaccorSettings
)
"""One ``[[instruments]]`` entry: a union tagged by ``driver``."""


# ------------------------------------------------------------------ drivers


@dataclass(frozen=True, slots=True)
class DriverInfo:
    """What the configuration needs to know about one instrument driver."""

    description: str
    default_timeout_s: float
    parse_channel: Callable[[str], ChannelId | str]
    channel_form: str  # how users write a channel id, for error messages
    # Its ``[[instruments]]`` entry: the dataclass's fields are the keys it takes.
    settings: type[InstrumentSettings]


def _one_channel(text: str) -> ChannelId | str:
    """A host-driven instrument has one channel, called "1"."""
    if text.strip() != "1":
        raise ConfigError(
            field="channel", problem=f'must be "1" (the instrument has one channel), got {text!r}'
        )
    return "1"


def _arbin_channel(text: str) -> ChannelId | str:
    """An Arbin channel as MITS Pro numbers it: 1, 2, ... (0-based only on the wire)."""
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            field="channel",
            problem=f"must be a channel number 1, 2, ... as MITS Pro shows it, got {text!r}",
        )
    return str(int(value))


def _maccor_channel(text: str) -> ChannelId | str:
    """A Maccor channel as MacTest32 numbers it: 1, 2, ... (0-based only on the wire)."""
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            field="channel",
            problem=f"must be a channel number 1, 2, ... as MacTest32 shows it, got {text!r}",
        )
    return str(int(value))


def _no_channel(text: str) -> ChannelId | str:
    raise ConfigError(
        field="channel",
        problem="an auxiliary device has no channel of its own; name it in a channel's aux = [...]",
    )


DRIVERS: Mapping[str, DriverInfo] = MappingProxyType(
    {
        "neware": DriverInfo(
            description="Neware BTS 8 API (CT-4008 and every cycler on a BTS server)",
            default_timeout_s=DEFAULT_TIMEOUT_S,
            parse_channel=ChannelId.parse,
            channel_form="devid-subdevid-chlid, e.g. 21-1-3",
            settings=NewareSettings,
        ),
        "smu": DriverInfo(
            description="SCPI source-measure unit (Keithley 2400-style) on a serial line, "
            "driven by the host",
            default_timeout_s=2.0,
            parse_channel=_one_channel,
            channel_form='"1" (one channel)',
            settings=SmuSettings,
        ),
        "modbus": DriverInfo(
            description="cycler or bidirectional supply behind Modbus registers, "
            "driven by the host",
            default_timeout_s=2.0,
            parse_channel=_one_channel,
            channel_form='"1" (one channel)',
            settings=ModbusSettings,
        ),
        "modbus-aux": DriverInfo(
            description="auxiliary sensors behind Modbus registers (temperature chamber, "
            "stack pressure)",
            default_timeout_s=2.0,
            parse_channel=_no_channel,
            channel_form="none (list it in a channel's aux)",
            settings=ModbusAuxSettings,
        ),
        "arbin": DriverInfo(
            description="Arbin cycler (MITS Pro's CTI server, binary over TCP)",
            default_timeout_s=DEFAULT_TIMEOUT_S,
            parse_channel=_arbin_channel,
            channel_form="a channel number as MITS Pro shows it, e.g. 3",
            settings=ArbinSettings,
        ),
        "maccor": DriverInfo(
            description="Maccor tester (MacNet, JSON over TCP)",
            default_timeout_s=10.0,
            parse_channel=_maccor_channel,
            channel_form="a channel number as MacTest32 shows it, e.g. 3",
            settings=MaccorSettings,
        ),
    }
)
HOST_DRIVERS = ("smu", "modbus")
"""Drivers whose channel cellguard runs itself (no sequencer on the instrument)."""
BUILTIN_REGISTER_MAPS = ("cellguard-sim-cycler", "cellguard-sim-chamber", "cellguard-sim-pressure")
"""The instrument drivers a configuration may name, by ``driver = "..."``."""


# ------------------------------------------------------------------ the config


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """``[daemon]``: where state lives and how much to log."""

    state_dir: Path  # SQLite state, disk spool and the embedded sample store
    log_level: LogLevel = DEFAULT_LOG_LEVEL


@dataclass(frozen=True, slots=True)
class InfluxDBSettings:
    """``[influxdb]``: the v2 write API (InfluxDB 1.8+, 2.x, 3.x, VictoriaMetrics)."""

    url: str
    org: str
    bucket: str
    token: Secret | None = None  # None: no auth (VictoriaMetrics, InfluxDB 1.8 without auth)
    batch_size: int = DEFAULT_INFLUX_BATCH_SIZE  # points per write
    flush_interval_s: float = DEFAULT_INFLUX_FLUSH_INTERVAL_S
    # One write request's bound; then the points go to the disk spool.
    timeout_s: float = DEFAULT_INFLUX_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """``[mqtt]``: the broker that gets alerts and status and sends commands."""

    host: str
    topic_prefix: str  # e.g. "cellguard/lab1", no trailing "/" and no wildcards
    client_id: str
    port: int = MQTT_PORT
    username: Secret | None = None
    password: Secret | None = None
    tls: bool = False
    # CA certificate(s) (PEM) the broker's certificate must chain to; None: the system's.
    ca_file: Path | None = None
    # Without a broker user anyone who reaches the broker could stop cells, so commands
    # are refused then unless this says the lab accepts that.
    allow_anonymous_commands: bool = False

    @property
    def commands_refused(self) -> bool:
        """Whether operator commands are refused (anonymous login, not allowed)."""
        return self.username is None and not self.allow_anonymous_commands


@dataclass(frozen=True, slots=True)
class CellSettings:
    """``cell = {...}`` of a channel: what is in it, in µm and cm²."""

    type: CellProfile  # "symmetric" | "asymmetric" | "full"
    area_cm2: float
    thick_li_um: float | None = None  # Li source (counter); both electrodes if symmetric
    thin_li_um: float | None = None  # working electrode; equals thick_li_um if symmetric
    interphase: str | None = None

    def to_cell(self) -> Cell | None:
        """The Li|Li :class:`Cell` (protocols, step files); None for a full cell."""
        if self.type == "full" or self.thick_li_um is None or self.thin_li_um is None:
            return None
        return Cell(
            self.type,
            self.area_cm2,
            li_counter_um=self.thick_li_um,
            li_working_um=self.thin_li_um,
            interphase=self.interphase,
        )


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """One ``[[channels]]`` entry: a channel of an instrument, its cell and its judge."""

    instrument: str
    channel: ChannelId | str  # ChannelId on a Neware; "1" on a host-driven instrument
    mode: ChannelMode
    cell: CellSettings
    detector: DetectorSettings  # defaults for the cell type with the overrides applied
    protocol: GalvanostaticCycling | None = None  # mode == "run" on a Neware, or script
    # Mode "run": what the instrument starts, an Arbin's MITS Pro schedule (.sdx) or a
    # Maccor's test procedure (key "procedure").
    schedule: str | None = None
    # Host-driven channels (and Neware ones with protocol_file): the protocol script
    # cellguard runs (mode "run"); host-driven ones: the
    # modbus-aux instruments whose readings join the channel's samples, and the bands
    # those readings must stay in.
    protocol_file: Path | None = None
    script: ScriptProtocol | None = None
    aux: tuple[str, ...] = ()
    aux_limits: tuple[tuple[str, float, float], ...] = ()

    def tags(self, test_id: str = "") -> ChannelTags:
        """The channel's tags for samples, events and topics."""
        return ChannelTags(
            instrument=self.instrument,
            channel=str(self.channel),
            test_id=test_id,
            interphase=self.cell.interphase or "",
            cell_type=self.cell.type,
        )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    daemon: DaemonSettings
    instruments: tuple[InstrumentSettings, ...]
    channels: tuple[ChannelSettings, ...] = ()
    influxdb: InfluxDBSettings | None = None  # None: samples go to SQLite under state_dir
    mqtt: MqttSettings | None = None  # None: alerts go to the log
    source: str = "<config>"
    # Accepted but risky settings (world-readable secret files, inline passwords, a
    # prefix the shipped ACL drops), one line each naming the key; logged at start.
    warnings: tuple[str, ...] = ()

    def instrument(self, name: str) -> InstrumentSettings:
        """The instrument called ``name`` (a KeyError if there is none)."""
        for instrument in self.instruments:
            if instrument.name == name:
                return instrument
        raise KeyError(name)

    def channels_of(self, instrument: str) -> tuple[ChannelSettings, ...]:
        """The channels configured on ``instrument``, in file order."""
        return tuple(c for c in self.channels if c.instrument == instrument)

    def describe(self) -> str:
        """A short human summary for the start-up log; never shows a secret."""
        lines = [f"config {self.source}: state in {self.daemon.state_dir}"]
        if self.influxdb is None:
            lines.append("samples -> embedded SQLite store under state_dir")
        else:
            db = self.influxdb
            auth = f"token from {db.token.origin}" if db.token else "no token"
            lines.append(
                f"samples -> InfluxDB {redact(db.url)} org {db.org!r} bucket {db.bucket!r} ({auth})"
            )
        if self.mqtt is None:
            lines.append("alerts -> log only (no [mqtt])")
        else:
            mq = self.mqtt
            user = f"user from {mq.username.origin}" if mq.username else "anonymous"
            lines.append(
                f"alerts -> MQTT {mq.host}:{mq.port} prefix {mq.topic_prefix!r} "
                f"client {mq.client_id!r} ({user}, {'TLS' if mq.tls else 'no TLS'})"
            )
            if mq.commands_refused:
                lines.append(
                    "MQTT commands REFUSED: no broker user (set username/password with the "
                    "shipped ACL, or allow_anonymous_commands = true)"
                )
            elif mq.username is None:
                lines.append(
                    "MQTT commands ACCEPTED WITHOUT A BROKER LOGIN (allow_anonymous_commands "
                    "= true): anyone who reaches the broker can stop and start cells"
                )
        for inst in self.instruments:
            chans = self.channels_of(inst.name)
            lines.append(
                f"instrument {inst.name}: {inst.driver} at {inst.where}, "
                f"poll every {inst.poll_interval_s:g} s, {len(chans)} channel(s)"
            )
            lines.extend(f"  {_describe_channel(ch)}" for ch in chans)
        return "\n".join(lines)


def _describe_channel(ch: ChannelSettings) -> str:
    cell = ch.cell
    parts = [str(ch.channel), ch.mode, cell.type, f"{cell.area_cm2:g} cm²"]
    if cell.thick_li_um is not None and cell.thin_li_um is not None:
        parts.append(f"Li {cell.thick_li_um:g}|{cell.thin_li_um:g} µm")
    if cell.interphase:
        parts.append(cell.interphase)
    if ch.script is not None:
        parts.append(f"protocol {ch.script.name!r}")
    if ch.aux:
        parts.append(f"aux {', '.join(ch.aux)}")
    if ch.schedule is not None:
        parts.append(f"schedule {ch.schedule!r}")
    if ch.protocol is not None:
        p = ch.protocol
        parts.append(
            f"galvanostatic {p.current_density_ma_cm2:g} mA cm⁻² "
            f"{p.areal_capacity_mah_cm2:g} mAh cm⁻² x{p.cycles}"
        )
    if ch.detector.overrides:
        parts.append(
            "detector " + ", ".join(f"{k}={v:g}" for k, v in ch.detector.overrides.items())
        )
    return " ".join(parts)


def default_config(
    state_dir: str | os.PathLike[str],
    *,
    instruments: Sequence[InstrumentSettings] = (),
    channels: Sequence[ChannelSettings] = (),
) -> Config:
    """The embedded defaults: state under ``state_dir``, no InfluxDB, no MQTT.

    The demo passes its simulated instrument and channels; the same cross-checks as for
    a file apply (unique names, known instruments, no channel twice).
    """
    instruments = tuple(instruments)
    channels = tuple(channels)
    _check_links(instruments, channels)
    return Config(
        daemon=DaemonSettings(state_dir=Path(state_dir)),
        instruments=instruments,
        channels=channels,
        source="<defaults>",
    )


# ------------------------------------------------------------------ entry points


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None, secrets: bool = True
) -> Config:
    """Read and validate the TOML file at ``path`` (a :class:`ConfigError` if refused).

    ``secrets=False`` checks where each secret would come from but reads none (an empty
    :class:`Secret`): for commands that never connect, such as ``cellguard status``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            field=str(path),
            problem=f"cannot read the configuration file: {err.strerror or err}",
        ) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            field=str(path), problem=f"must be UTF-8 text (byte {err.start} is not)"
        ) from err
    return parse_config(
        text, source=str(path), env=env, base_dir=path.resolve().parent, secrets=secrets
    )


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    secrets: bool = True,
) -> Config:
    """Validate configuration ``text``; ``source`` names it in errors and ``describe()``.

    ``env`` holds the environment variables ``*_env`` keys name (default: the process
    environment); ``base_dir`` is where relative paths start (default: the working
    directory).
    """
    # Notepad on older Windows writes a byte order mark, which TOML does not allow.
    text = text.removeprefix("\ufeff")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(field=source, problem=f"not valid TOML: {err}") from err
    reader = _Reader(os.environ if env is None else env, base_dir or Path.cwd(), secrets=secrets)
    return reader.config(data, source)


def check_state_dir(state_dir: Path) -> None:
    """Refuse, naming ``daemon.state_dir``, a folder the daemon cannot create or write.

    Called by ``cellguard run`` before anything starts (``cellguard status`` only reads
    it). Nothing is created here. A path under a regular file is refused for every user;
    write permission is asked of the OS for the effective user (``os.access``), which
    for root ignores permission bits but not a read-only file system.
    """
    field = "daemon.state_dir"
    existing = state_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent  # where the missing folders would be made
    if not existing.is_dir():
        where = "" if existing == state_dir else f"{state_dir} cannot be created: "
        _fail(field, f"{where}{existing} is a file, not a folder; give a folder")
    effective = os.access in os.supports_effective_ids
    if not os.access(existing, os.W_OK | os.X_OK, effective_ids=effective):
        _fail(
            field,
            f"{existing} is not writable by this user; give a folder the daemon may "
            "write (state, spool and the embedded store), or change its owner",
        )


# ------------------------------------------------------------------ validation


def _fail(path: str, problem: str) -> NoReturn:
    raise ConfigError(field=path, problem=problem)


def _show(value: object) -> str:
    """A value as it would be written in TOML, for "got ..." in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _kind(value: object) -> str:
    """What a value is, without showing it (for secrets)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return _show(value)


def _suggest(key: str, allowed: Sequence[str]) -> list[str]:
    """The allowed key ``key`` most likely misspells; also tried without its unit suffix."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return close
    stems = {name.rsplit("_", 1)[0]: name for name in allowed if "_" in name}
    return [stems[s] for s in difflib.get_close_matches(key, stems, n=1, cutoff=0.6)]


class _Table:
    """One TOML table being read: typed getters, and unknown keys refused at the end."""

    def __init__(self, data: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        self.data = data
        self.path = path
        unknown = [key for key in data if key not in allowed]
        if unknown:
            key = unknown[0]
            close = _suggest(key, allowed)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"allowed keys are {', '.join(allowed)}"
            )
            _fail(self.key(key), f"unknown key; {hint}")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def required(self, name: str, allowed: str) -> object:
        if name not in self.data:
            _fail(self.key(name), f"required: {allowed}")
        return self.data[name]

    def string(self, name: str, allowed: str, *, default: str | None = None) -> str:
        if name not in self.data and default is not None:
            return default
        value = self.required(name, allowed)
        if not isinstance(value, str) or not value.strip():
            _fail(self.key(name), f"must be {allowed}, got {_show(value)}")
        return value.strip()

    def optional_string(self, name: str, allowed: str) -> str | None:
        if name not in self.data:
            return None
        return self.string(name, allowed)

    def choice(self, name: str, choices: Sequence[str], *, default: str | None = None) -> str:
        allowed = "one of " + ", ".join(choices)
        value = self.string(name, allowed, default=default)
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            _fail(self.key(name), f"must be {allowed}, got {_show(value)}{hint}")
        return value

    def integer(
        self, name: str, low: int, high: int, what: str, *, default: int | None = None
    ) -> int:
        if name not in self.data and default is not None:
            return default
        allowed = f"an integer {low}..{high}{what}"
        value = self.required(name, allowed)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _fail(self.key(name), f"must be {allowed}, got {_show(value)}")
        return value

    def positive(self, name: str, allowed: str, *, default: float | None = None) -> float:
        if name not in self.data and default is not None:
            return default
        value = self.required(name, allowed)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not value > 0
        ):
            _fail(self.key(name), f"must be {allowed}, got {_show(value)}")
        return float(value)

    def between(
        self,
        name: str,
        bounds: tuple[float, float],
        what: str,
        *,
        hint: str = "",
        default: float | None = None,
    ) -> float:
        """A number within ``bounds`` (inclusive); ``what`` says what, in which unit."""
        if name not in self.data and default is not None:
            return default
        low, high = bounds
        allowed = f"{what} from {low:g} to {high:g}{hint}"
        value = self.required(name, allowed)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            _fail(self.key(name), f"must be {allowed}, got {_show(value)}")
        return float(value)

    def boolean(self, name: str, *, default: bool) -> bool:
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, bool):
            _fail(self.key(name), f"must be true or false, got {_show(value)}")
        return value

    def table(self, name: str, allowed_keys: Sequence[str], what: str) -> _Table | None:
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            _fail(self.key(name), f"must be a table ({what}), got {_show(value)}")
        return _Table(value, self.key(name), allowed_keys)


_TOP_KEYS = ("daemon", "influxdb", "mqtt", "instruments", "channels")
_DAEMON_KEYS = ("state_dir", "log_level")
_INFLUX_KEYS = (
    "url",
    "org",
    "bucket",
    "token",
    "token_env",
    "token_file",
    "batch_size",
    "flush_interval_s",
    "timeout_s",
)
_MQTT_KEYS = (
    "host",
    "port",
    "topic_prefix",
    "username",
    "username_env",
    "username_file",
    "password",
    "password_env",
    "password_file",
    "tls",
    "ca_file",
    "client_id",
    "allow_anonymous_commands",
)
DEFAULT_DOWNLOAD_INTERVAL_S = 30.0

_INSTRUMENT_KEYS = (
    "name",
    "driver",
    "host",
    "port",
    "poll_interval_s",
    "timeout_s",
    "step_file_dir",
    "download_interval_s",
    "username",
    "username_env",
    "username_file",
    "password",
    "password_env",
    "password_file",
    "serial_port",
    "baudrate",
    "device_id",
    "register_map",
    "registers",
    "current_range_a",
    "current_range_ma",
    "voltage_range_v",
    "current_limit_a",
    "keep_output_on",
    "timezone",
)
# Keys the per-driver parsers refuse with their own message (see _host_instrument).
_OWN_MESSAGE_KEYS = ("host", "port")


def _driver_keys(driver: str) -> frozenset[str]:
    """The keys ``driver`` takes: the fields of its settings dataclass."""
    return frozenset(f.name for f in dataclasses.fields(DRIVERS[driver].settings))


def _drivers_taking(key: str) -> tuple[str, ...]:
    return tuple(d for d in DRIVERS if key in _driver_keys(d))


_CHANNEL_KEYS = (
    "instrument",
    "channel",
    "mode",
    "cell",
    "protocol",
    "protocol_file",
    "aux",
    "aux_limits",
    "detector",
    "schedule",
    "procedure",
)
_CELL_KEYS = ("type", "area_cm2", "diameter_mm", "thick_li_um", "thin_li_um", "interphase")
_PROTOCOL_KEYS = (
    "kind",
    "current_density_ma_cm2",
    "areal_capacity_mah_cm2",
    "cycles",
    "record_interval_s",
    "voltage_limit_v",
    "rest_before_s",
)
# Every DetectorSettings field but the profile (from cell.type) and its bookkeeping.
_DETECTOR_KEYS = tuple(
    f.name for f in dataclasses.fields(DetectorSettings) if f.name not in ("cell", "overrides")
)
_LI_UM = "a Li foil thickness in µm > 0 (e.g. 100, 50 or 20)"
# Secret keys whose inline value or world-readable file is warned about (a user name
# is an identity, not a secret).
_SECRET_NAMES = frozenset({"password", "token"})


class _Reader:
    def __init__(self, env: Mapping[str, str], base_dir: Path, *, secrets: bool = True) -> None:
        self.env = env
        self.base_dir = base_dir
        self.warnings: list[str] = []
        self.secrets = secrets  # False: where a secret comes from is checked, not read

    def path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def protocol_path(self, text: str) -> Path:
        """A file next to the config, else a shipped example named without a path (so
        a config copied alone onto a lab PC still finds ``symmetric-60C-soak``)."""
        path = self.path(text)
        if path.exists():
            return path
        return example_path(text) or path

    def config(self, data: Mapping[str, Any], source: str) -> Config:
        top = _Table(data, "", _TOP_KEYS)
        daemon_table = top.table("daemon", _DAEMON_KEYS, "state_dir and log_level")
        if daemon_table is None:
            _fail("daemon", 'required: a [daemon] table with state_dir = "/var/lib/cellguard"')
        daemon = self.daemon(daemon_table)
        influx_table = top.table("influxdb", _INFLUX_KEYS, "where samples are written")
        mqtt_table = top.table("mqtt", _MQTT_KEYS, "the broker for alerts and commands")
        instruments = tuple(
            self.instrument(t) for t in self.array(top, "instruments", _INSTRUMENT_KEYS)
        )
        if not instruments:
            _fail(
                "instruments",
                "required: at least one [[instruments]] table (name, driver, host, port, "
                "poll_interval_s)",
            )
        _check_instruments(instruments)
        drivers = {inst.name: DRIVERS[inst.driver] for inst in instruments}
        kinds = {inst.name: inst.driver for inst in instruments}
        channels = tuple(
            self.channel(t, drivers, kinds) for t in self.array(top, "channels", _CHANNEL_KEYS)
        )
        _check_links(instruments, channels)
        return Config(
            daemon=daemon,
            influxdb=None if influx_table is None else self.influxdb(influx_table),
            mqtt=None if mqtt_table is None else self.mqtt(mqtt_table, daemon.state_dir),
            instruments=instruments,
            channels=channels,
            source=source,
            warnings=tuple(self.warnings),
        )

    def array(self, top: _Table, name: str, keys: Sequence[str]) -> list[_Table]:
        if not top.has(name):
            return []
        value = top.data[name]
        if not isinstance(value, list):
            _fail(name, f"must be an array of tables: write [[{name}]], got {_show(value)}")
        tables = []
        for index, item in enumerate(value):
            path = f"{name}[{index}]"
            if not isinstance(item, dict):
                _fail(path, f"must be a table: write [[{name}]], got {_show(item)}")
            tables.append(_Table(item, path, keys))
        return tables

    def daemon(self, t: _Table) -> DaemonSettings:
        state_dir = t.string("state_dir", "a folder for state, spool and the embedded store")
        level = t.choice("log_level", get_args(LogLevel), default=DEFAULT_LOG_LEVEL)
        return DaemonSettings(state_dir=self.path(state_dir), log_level=level)  # type: ignore[arg-type]

    def secret(self, t: _Table, name: str, *, what: str) -> Secret | None:
        """``name``, ``name_env`` or ``name_file``: at most one, resolved."""
        given = [key for key in (name, f"{name}_env", f"{name}_file") if t.has(key)]
        if not given:
            return None
        if len(given) > 1:
            _fail(
                t.key(given[1]),
                f"{given[0]} is given too; give only one of {name}, {name}_env, {name}_file",
            )
        key = given[0]
        value = t.data[key]
        if not isinstance(value, str) or not value.strip():
            allowed = {
                name: f"the {what} as a non-empty string",
                f"{name}_env": f"the name of an environment variable holding the {what}",
                f"{name}_file": f"the path of a file holding the {what}",
            }[key]
            _fail(t.key(key), f"must be {allowed}, got {_kind(value)}")
        if key == name:
            if name in _SECRET_NAMES:
                # Config files get copied, mailed and committed; the secret with them.
                self.warnings.append(
                    f"{t.key(key)}: the {what} is written inline in the configuration; "
                    f"use {name}_env or {name}_file (chmod 600) instead"
                )
            return Secret(value, "inline")
        if not self.secrets:
            return Secret("", f"{key} {value.strip()} (not read)")
        if key.endswith("_env"):
            variable = value.strip()
            found = self.env.get(variable)
            if found is None:
                _fail(
                    t.key(key),
                    f"environment variable {variable} is not set; set it to the {what} "
                    "(systemd: EnvironmentFile=/etc/cellguard/secrets.env)",
                )
            if not found.strip():
                _fail(t.key(key), f"environment variable {variable} is empty; set it to the {what}")
            return Secret(found.strip(), f"env {variable}")
        path = self.path(value.strip())
        try:
            content = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            _fail(t.key(key), f"cannot read {path}: {reason}; it must hold the {what}")
        if not content:
            _fail(t.key(key), f"{path} is empty; it must hold the {what}")
        if mode & 0o004 and name in _SECRET_NAMES:
            self.warnings.append(
                f"{t.key(key)}: {path} holds the {what} and is readable by every user "
                f"(mode {mode & 0o777:o}); run chmod o-r {path}"
            )
        return Secret(content, f"file {path}")

    def influxdb(self, t: _Table) -> InfluxDBSettings:
        url = t.string("url", 'the server URL, e.g. "http://127.0.0.1:8086"')
        if not re.match(r"^https?://[^/\s:]+", url):
            _fail(
                t.key("url"),
                'must be an http:// or https:// URL, e.g. "http://127.0.0.1:8086", '
                f"got {_show(redact(url))}",
            )
        return InfluxDBSettings(
            url=url.rstrip("/"),
            org=t.string("org", 'the organisation, e.g. "lab" (any name for InfluxDB 1.8)'),
            bucket=t.string("bucket", 'the bucket, e.g. "cycling" ("db/rp" for InfluxDB 1.8)'),
            token=self.secret(t, "token", what="InfluxDB API token"),
            batch_size=t.integer(
                "batch_size",
                1,
                _MAX_BATCH_SIZE,
                " (points per write)",
                default=DEFAULT_INFLUX_BATCH_SIZE,
            ),
            flush_interval_s=t.positive(
                "flush_interval_s",
                "a time in s > 0 (e.g. 1.0)",
                default=DEFAULT_INFLUX_FLUSH_INTERVAL_S,
            ),
            timeout_s=t.positive(
                "timeout_s",
                "a time in s > 0 (e.g. 10.0)",
                default=DEFAULT_INFLUX_TIMEOUT_S,
            ),
        )

    def mqtt(self, t: _Table, state_dir: Path) -> MqttSettings:
        host = _host(t, "host", "the broker host name or IP address")
        prefix = t.string("topic_prefix", 'a topic prefix such as "cellguard/lab1"')
        if any(ch in prefix for ch in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
            _fail(
                t.key("topic_prefix"),
                'must be topic levels without wildcards (+, #) or a leading or trailing "/", '
                f'e.g. "cellguard/lab1", got {_show(prefix)}',
            )
        tls = t.boolean("tls", default=False)
        port = t.integer("port", 1, 65535, "", default=MQTT_TLS_PORT if tls else MQTT_PORT)
        username = self.secret(t, "username", what="MQTT user name")
        password = self.secret(t, "password", what="MQTT password")
        if password is not None and username is None:
            # MQTT 3.1.1 (3.1.2.9) allows a password only together with a user name.
            _fail(
                t.key("password"),
                "a password needs a user name: give username, username_env or username_file",
            )
        client_id = t.optional_string("client_id", "an MQTT client id") or _client_id(
            prefix, state_dir
        )
        ca_file: Path | None = None
        if t.has("ca_file"):
            if not tls:
                _fail(t.key("ca_file"), "only with tls = true (the CA that signed the broker)")
            ca_file = self.path(t.string("ca_file", "the path of a PEM file of CA certificates"))
            if not ca_file.is_file():
                _fail(t.key("ca_file"), f"{ca_file} is not a readable file of PEM CA certificates")
        mismatch = acl_mismatch(prefix)
        if mismatch is not None:
            self.warnings.append(f"{t.key('topic_prefix')}: {mismatch}")
        return MqttSettings(
            host=host,
            port=port,
            topic_prefix=prefix,
            client_id=client_id,
            username=username,
            password=password,
            tls=tls,
            ca_file=ca_file,
            allow_anonymous_commands=t.boolean("allow_anonymous_commands", default=False),
        )

    def instrument(self, t: _Table) -> InstrumentSettings:
        name = t.string("name", 'a unique instrument name, e.g. "ct4008-a"')
        if not _NAME_RE.match(name):
            _fail(
                t.key("name"),
                f"must be letters, digits, '-', '_' or '.' (it becomes a tag and a topic "
                f"level), got {_show(name)}",
            )
        driver = t.choice("driver", tuple(DRIVERS))
        info = DRIVERS[driver]
        step_dir = t.optional_string(
            "step_file_dir", "a folder the instrument's server reads step files from"
        )
        api = "CTI" if driver == "arbin" else "BTS API"
        api_user = self.secret(t, "username", what=f"{api} user name")
        api_password = self.secret(t, "password", what=f"{api} password")
        if (api_user is None) != (api_password is None):
            missing = "password" if api_password is None else "username"
            _fail(
                t.key(missing),
                "the CTI login needs both username and password (as registered in MITS Pro)"
                if driver == "arbin"
                else "the BTS API login needs both username and password (or neither: "
                "admin/neware)",
            )
        mine = _driver_keys(driver)
        for key in _INSTRUMENT_KEYS:
            base = key.removesuffix("_env").removesuffix("_file")
            if t.has(key) and base not in mine and base not in _OWN_MESSAGE_KEYS:
                drivers_ok = _drivers_taking(base)
                _fail(t.key(key), f"only for driver {' or '.join(drivers_ok)}, not {driver!r}")
        if driver == "neware":
            return self._neware(t, name, info, step_dir, api_user, api_password)
        if driver == "arbin":
            return self._arbin(t, name, info, api_user, api_password)
        if driver == "maccor":
            return self._maccor(t, name, info)
        return self._host_instrument(t, name, driver, info)

    def _host_instrument(
        self, t: _Table, name: str, driver: str, info: DriverInfo
    ) -> InstrumentSettings:
        serial_port = t.optional_string(
            "serial_port", 'a serial device ("/dev/ttyUSB0", "COM3") or a pyserial URL'
        )
        has_tcp = t.has("host") or t.has("port")
        if driver == "smu":
            if serial_port is None:
                _fail(
                    t.key("serial_port"),
                    'required for driver "smu": a serial device or pyserial URL',
                )
            if has_tcp:
                _fail(
                    t.key("host" if t.has("host") else "port"),
                    'not for driver "smu": it speaks on serial_port',
                )
        elif serial_port is None and not has_tcp:
            _fail(
                t.key("host"),
                f"required for driver {driver!r}: host and port (TCP), or serial_port (RTU)",
            )
        elif serial_port is not None and has_tcp:
            _fail(
                t.key("serial_port"),
                "give either host and port (TCP) or serial_port (RTU), not both",
            )
        host, port = "", 0
        if serial_port is None and driver != "smu":
            host = _host(t, "host", "the device's host name or IP address")
            port = t.integer("port", 1, 65535, "")
        register_map: str | None = None
        registers: tuple[Mapping[str, Any], ...] = ()
        if driver in ("modbus", "modbus-aux"):
            register_map, registers = self._registers(t, driver)
        current_range_a = voltage_range_v = 0.0
        if driver == "modbus":
            current_range_a = t.positive(
                "current_range_a", "the supply's current range in A > 0 (e.g. 0.01)"
            )
            voltage_range_v = t.positive(
                "voltage_range_v", "the supply's voltage range in V > 0 (e.g. 5)"
            )
        poll_interval_s = t.between(
            "poll_interval_s",
            POLL_INTERVAL_BOUNDS_S,
            "a time in s",
            hint=" (how often operator commands are looked at)",
            default=1.0,
        )
        timeout_s = t.between(
            "timeout_s",
            TIMEOUT_BOUNDS_S,
            "a time in s",
            hint=" (e.g. 2.0)",
            default=info.default_timeout_s,
        )
        baudrate = t.integer("baudrate", 300, 4_000_000, " (bit/s)", default=9600)
        if driver == "smu":
            assert serial_port is not None  # refused above
            return SmuSettings(
                name=name,
                poll_interval_s=poll_interval_s,
                timeout_s=timeout_s,
                serial_port=serial_port,
                baudrate=baudrate,
                keep_output_on=t.boolean("keep_output_on", default=False),
            )
        modbus: dict[str, Any] = {
            "name": name,
            "poll_interval_s": poll_interval_s,
            "timeout_s": timeout_s,
            "host": host,
            "port": port,
            "serial_port": serial_port,
            "baudrate": baudrate,
            "device_id": t.integer("device_id", 0, 247, " (the Modbus unit id)", default=1),
            "register_map": register_map,
            "registers": registers,
        }
        if driver == "modbus":
            return ModbusSettings(
                **modbus,
                current_range_a=current_range_a,
                voltage_range_v=voltage_range_v,
                keep_output_on=t.boolean("keep_output_on", default=False),
            )
        return ModbusAuxSettings(**modbus)

    def _registers(
        self, t: _Table, driver: str
    ) -> tuple[str | None, tuple[Mapping[str, Any], ...]]:
        # The map is checked here, at load time, so a typo never reaches the device.
        from cellguard.drivers.modbus import RegisterMap  # noqa: PLC0415 (only Modbus needs it)

        if t.has("register_map") == t.has("registers"):
            _fail(
                t.key("register_map"),
                "give exactly one of register_map (a built-in map: "
                + ", ".join(BUILTIN_REGISTER_MAPS)
                + ") or registers = [{ name, address, table, type, scale, unit, access }, ...]",
            )
        if t.has("register_map"):
            return t.choice("register_map", BUILTIN_REGISTER_MAPS), ()
        raw = t.data["registers"]
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            _fail(t.key("registers"), f"must be an array of tables, got {_show(raw)}")
        RegisterMap.from_config(raw, path=t.key("registers"))
        return None, tuple(raw)

    def _neware(
        self,
        t: _Table,
        name: str,
        info: DriverInfo,
        step_dir: str | None,
        api_user: Secret | None,
        api_password: Secret | None,
    ) -> InstrumentSettings:
        return NewareSettings(
            name=name,
            host=_host(t, "host", "the instrument server's host name or IP address"),
            port=t.integer("port", 1, 65535, ""),
            poll_interval_s=t.between(
                "poll_interval_s", POLL_INTERVAL_BOUNDS_S, "a time in s", hint=" (e.g. 1.0)"
            ),
            timeout_s=t.between(
                "timeout_s",
                TIMEOUT_BOUNDS_S,
                "a time in s",
                hint=" (e.g. 10.0)",
                default=info.default_timeout_s,
            ),
            step_file_dir=step_dir,
            download_interval_s=t.between(
                "download_interval_s",
                DOWNLOAD_INTERVAL_BOUNDS_S,
                "a time in s",
                hint=" (how often the recorded history is fetched)",
                default=DEFAULT_DOWNLOAD_INTERVAL_S,
            ),
            current_range_ma=t.between(
                "current_range_ma",
                NEWARE_CURRENT_RANGE_BOUNDS_MA,
                "a channel's current range in mA",
                hint=" (a CT-4008-5V10mA: 10)",
                default=10.0,
            ),
            voltage_range_v=t.between(
                "voltage_range_v",
                NEWARE_VOLTAGE_RANGE_BOUNDS_V,
                "a channel's voltage range in V",
                hint=" (a CT-4008: 5)",
                default=5.0,
            ),
            timezone=_timezone(t),
            username=api_user,
            password=api_password,
        )

    def _arbin(
        self,
        t: _Table,
        name: str,
        info: DriverInfo,
        api_user: Secret | None,
        api_password: Secret | None,
    ) -> InstrumentSettings:
        if api_user is None or api_password is None:
            _fail(
                t.key("username"),
                'required for driver "arbin": the CTI user and password registered in MITS Pro',
            )
        return ArbinSettings(
            name=name,
            host=_host(t, "host", "the MITS Pro PC's host name or IP address"),
            port=t.integer("port", 1, 65535, "", default=9031),
            poll_interval_s=t.positive("poll_interval_s", "a time in s > 0 (e.g. 1.0)"),
            timeout_s=t.positive(
                "timeout_s", "a time in s > 0 (e.g. 10.0)", default=info.default_timeout_s
            ),
            voltage_range_v=t.positive(
                "voltage_range_v", "a channel's voltage range in V > 0", default=5.0
            ),
            username=api_user,
            password=api_password,
        )

    def _maccor(self, t: _Table, name: str, info: DriverInfo) -> InstrumentSettings:
        limit_a = (
            t.positive("current_limit_a", "a current in A > 0 (the tester's own limit)")
            if t.has("current_limit_a")
            else None
        )
        return MaccorSettings(
            name=name,
            host=_host(t, "host", "the Maccor tester PC's host name or IP address"),
            port=t.integer("port", 1, 65535, "", default=57570),
            poll_interval_s=t.positive("poll_interval_s", "a time in s > 0 (e.g. 1.0)"),
            timeout_s=t.positive(
                "timeout_s", "a time in s > 0 (e.g. 10.0)", default=info.default_timeout_s
            ),
            voltage_range_v=t.positive(
                "voltage_range_v", "a channel's voltage range in V > 0", default=5.0
            ),
            current_limit_a=limit_a,
        )

    def channel(
        self,
        t: _Table,
        drivers: Mapping[str, DriverInfo],
        kinds: Mapping[str, str] | None = None,
    ) -> ChannelSettings:
        instrument = t.string("instrument", "the name of one of the [[instruments]]")
        if instrument not in drivers:
            names = ", ".join(drivers)
            _fail(
                t.key("instrument"),
                f"{instrument!r} is not one of the [[instruments]] names ({names})",
            )
        info = drivers[instrument]
        text = t.string("channel", f"a channel id: {info.channel_form}")
        try:
            channel = info.parse_channel(text)
        except ConfigError as err:
            raise ConfigError(field=t.key("channel"), problem=err.problem) from err
        mode = t.choice("mode", get_args(ChannelMode))
        cell_table = t.table("cell", _CELL_KEYS, "type, area_cm2, thick_li_um, thin_li_um")
        if cell_table is None:
            _fail(
                t.key("cell"),
                'required: cell = { type = "symmetric" | "asymmetric" | "full", area_cm2 = ... }',
            )
        cell = self.cell(cell_table)
        driver = (kinds or {}).get(instrument, "neware")
        if t.has("schedule") and driver != "arbin":
            _fail(t.key("schedule"), 'only for driver "arbin" (the MITS Pro schedule to start)')
        if t.has("procedure") and driver != "maccor":
            _fail(t.key("procedure"), 'only for driver "maccor" (the test procedure to start)')
        if driver == "arbin":
            return self._arbin_channel(t, instrument, channel, mode, cell)
        if driver == "maccor":
            return self._maccor_channel(t, instrument, channel, mode, cell)
        if driver in HOST_DRIVERS:
            return self._host_channel(t, instrument, channel, mode, cell, kinds or {})
        for key in ("aux", "aux_limits"):
            if t.has(key):
                _fail(t.key(key), f"only for host-driven instruments ({', '.join(HOST_DRIVERS)})")
        protocol_table = t.table("protocol", _PROTOCOL_KEYS, "what cellguard runs")
        protocol: GalvanostaticCycling | None = None
        # A Neware channel runs either the built-in galvanostatic protocol or a protocol
        # script, compiled to a BTS step file when the daemon starts it.
        protocol_file, script = self._neware_script(t, mode, protocol_table is not None)
        if mode == "run" and script is None:
            if protocol_table is None:
                _fail(
                    t.key("protocol"),
                    'required for mode = "run": protocol = { kind = "galvanostatic", '
                    "current_density_ma_cm2 = ..., areal_capacity_mah_cm2 = ..., cycles = ... }"
                    ' or protocol_file = "run.toml" (a protocol script)',
                )
            protocol = self.protocol(protocol_table, cell)
        elif mode != "run" and protocol_table is not None:
            _fail(
                t.key("protocol"),
                'only for mode = "run"; in mode = "monitor" the cycler runs its own step file',
            )
        detector_table = t.table("detector", _DETECTOR_KEYS, "DetectorSettings overrides")
        detector = self.detector(detector_table, cell.type, t.key("detector"))
        return ChannelSettings(
            instrument=instrument,
            channel=channel,
            mode=mode,  # type: ignore[arg-type]
            cell=cell,
            detector=detector,
            protocol=protocol,
            protocol_file=protocol_file,
            script=script,
        )

    def _neware_script(
        self, t: _Table, mode: str, has_protocol: bool
    ) -> tuple[Path | None, ScriptProtocol | None]:
        """``protocol_file`` of a Neware channel: the script, loaded and checked."""
        if not t.has("protocol_file"):
            return None, None
        if mode != "run":
            _fail(t.key("protocol_file"), 'only for mode = "run"')
        if has_protocol:
            _fail(t.key("protocol_file"), "give protocol or protocol_file, not both")
        return self.script_file(t)

    def script_file(self, t: _Table) -> tuple[Path, ScriptProtocol]:
        """The channel's ``protocol_file``: a file, or a shipped example's name."""
        protocol_file = self.protocol_path(
            t.string("protocol_file", "a protocol script (TOML) or a shipped example's name")
        )
        if not protocol_file.exists():
            _fail(
                t.key("protocol_file"),
                f"no file {protocol_file} (a path is relative to the config's folder); "
                f"or name a shipped example: {', '.join(example_names())}",
            )
        try:
            return protocol_file, load_protocol_file(protocol_file)
        except ConfigError as err:
            raise ConfigError(field=t.key("protocol_file"), problem=str(err)) from err

    def _arbin_channel(
        self, t: _Table, instrument: str, channel: ChannelId | str, mode: str, cell: CellSettings
    ) -> ChannelSettings:
        for key in ("protocol", "protocol_file", "aux", "aux_limits"):
            if t.has(key):
                _fail(t.key(key), 'not for driver "arbin": MITS Pro runs a schedule (schedule)')
        schedule = t.optional_string("schedule", "the name of a MITS Pro schedule, e.g. x.sdx")
        if mode == "run" and schedule is None:
            _fail(t.key("schedule"), 'required for mode = "run": the MITS Pro schedule to start')
        if mode == "monitor" and schedule is not None:
            _fail(t.key("schedule"), 'only for mode = "run"; in "monitor" MITS Pro runs its own')
        detector_table = t.table("detector", _DETECTOR_KEYS, "DetectorSettings overrides")
        return ChannelSettings(
            instrument=instrument,
            channel=channel,
            mode=mode,  # type: ignore[arg-type]
            cell=cell,
            detector=self.detector(detector_table, cell.type, t.key("detector")),
            schedule=schedule,
        )

    def _maccor_channel(
        self, t: _Table, instrument: str, channel: ChannelId | str, mode: str, cell: CellSettings
    ) -> ChannelSettings:
        for key in ("protocol", "protocol_file", "aux", "aux_limits"):
            if t.has(key):
                _fail(t.key(key), 'not for driver "maccor": MacTest32 runs a procedure')
        procedure = t.optional_string(
            "procedure", "a test procedure in C:\\Maccor\\Procedure, without .000"
        )
        if mode == "run" and procedure is None:
            _fail(t.key("procedure"), 'required for mode = "run": the test procedure to start')
        if mode == "monitor" and procedure is not None:
            _fail(t.key("procedure"), 'only for mode = "run"; in "monitor" MacTest32 runs its own')
        detector_table = t.table("detector", _DETECTOR_KEYS, "DetectorSettings overrides")
        return ChannelSettings(
            instrument=instrument,
            channel=channel,
            mode=mode,  # type: ignore[arg-type]
            cell=cell,
            detector=self.detector(detector_table, cell.type, t.key("detector")),
            schedule=procedure,  # the same slot as an Arbin's schedule: what the tester runs
        )

    def _host_channel(
        self,
        t: _Table,
        instrument: str,
        channel: ChannelId | str,
        mode: str,
        cell: CellSettings,
        kinds: Mapping[str, str],
    ) -> ChannelSettings:
        if t.has("protocol"):
            _fail(
                t.key("protocol"),
                'a host-driven channel runs a protocol script: protocol_file = "run.toml"',
            )
        protocol_file: Path | None = None
        script: ScriptProtocol | None = None
        if t.has("protocol_file"):
            protocol_file, script = self.script_file(t)
        if mode == "run" and script is None:
            _fail(t.key("protocol_file"), 'required for mode = "run": the protocol script to run')
        aux: list[str] = []
        if t.has("aux"):
            raw = t.data["aux"]
            if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
                _fail(t.key("aux"), f"must be a list of instrument names, got {_show(raw)}")
            for name in raw:
                if kinds.get(name) != "modbus-aux":
                    aux_names = [n for n, k in kinds.items() if k == "modbus-aux"]
                    _fail(
                        t.key("aux"),
                        f"{name!r} is not a modbus-aux instrument "
                        f"({', '.join(aux_names) or 'none configured'})",
                    )
            aux = list(raw)
        limits: list[tuple[str, float, float]] = []
        if t.has("aux_limits"):
            raw_limits = t.data["aux_limits"]
            if not isinstance(raw_limits, list):
                _fail(t.key("aux_limits"), f"must be a list of tables, got {_show(raw_limits)}")
            for index, item in enumerate(raw_limits):
                path = f"{t.key('aux_limits')}[{index}]"
                if not isinstance(item, dict):
                    _fail(path, "must be a table { name = ..., low = ..., high = ... }")
                lt = _Table(item, path, ("name", "low", "high"))
                name = lt.string("name", 'an aux reading, e.g. "chamber_temperature_c"')
                low = lt.required("low", "a number")
                high = lt.required("high", "a number")
                for key, value in (("low", low), ("high", high)):
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        _fail(lt.key(key), f"must be a number, got {_show(value)}")
                if not float(low) < float(high):  # type: ignore[arg-type]
                    _fail(lt.key("high"), f"must be > low ({low}), got {high}")
                limits.append((name, float(low), float(high)))  # type: ignore[arg-type]
            if not aux:
                _fail(t.key("aux_limits"), "needs aux = [...]: the devices the readings come from")
        detector_table = t.table("detector", _DETECTOR_KEYS, "DetectorSettings overrides")
        detector = self.detector(detector_table, cell.type, t.key("detector"))
        return ChannelSettings(
            instrument=instrument,
            channel=channel,
            mode=mode,  # type: ignore[arg-type]
            cell=cell,
            detector=detector,
            protocol_file=protocol_file,
            script=script,
            aux=tuple(aux),
            aux_limits=tuple(limits),
        )

    def cell(self, t: _Table) -> CellSettings:
        cell_type = t.choice("type", get_args(CellProfile))
        area = self.area(t)
        interphase = t.optional_string("interphase", 'a label such as "LPSC:LGPS 4:1"')
        thick = t.positive("thick_li_um", _LI_UM) if t.has("thick_li_um") else None
        thin = t.positive("thin_li_um", _LI_UM) if t.has("thin_li_um") else None
        if cell_type == "full":
            for key in ("thick_li_um", "thin_li_um"):
                if t.has(key):
                    _fail(t.key(key), "a full cell has no Li foil thicknesses; remove this key")
        elif cell_type == "asymmetric":
            if thick is None:
                _fail(
                    t.key("thick_li_um"),
                    f"required for an asymmetric cell: the Li source, {_LI_UM}",
                )
            if thin is None:
                _fail(
                    t.key("thin_li_um"),
                    f"required for an asymmetric cell: the thin working electrode, {_LI_UM}",
                )
            if not thin < thick:
                _fail(
                    t.key("thin_li_um"),
                    f"must be thinner than thick_li_um ({thick:g} µm) in an asymmetric cell, "
                    f"got {thin:g}",
                )
        else:
            if thick is None and thin is None:
                _fail(
                    t.key("thick_li_um"),
                    f"required for a symmetric cell: {_LI_UM} (both electrodes)",
                )
            if thick is not None and thin is not None and thick != thin:
                _fail(
                    t.key("thin_li_um"),
                    f"a symmetric cell has two equal Li electrodes: must equal thick_li_um "
                    f'({thick:g} µm), got {thin:g}; use type = "asymmetric" for a thin one',
                )
            thick = thin = thick if thick is not None else thin
        return CellSettings(
            type=cell_type,  # type: ignore[arg-type]
            area_cm2=area,
            thick_li_um=thick,
            thin_li_um=thin,
            interphase=interphase,
        )

    def area(self, t: _Table) -> float:
        """``area_cm2``, or ``diameter_mm`` of a disc as protocol files give it."""
        if t.has("area_cm2") and t.has("diameter_mm"):
            _fail(t.key("diameter_mm"), "give area_cm2 or diameter_mm, not both")
        if t.has("diameter_mm"):
            return disc_area_cm2(t.positive("diameter_mm", "a disc electrode's diameter in mm > 0"))
        return t.positive("area_cm2", "electrode area in cm² > 0 (a 10 mm disc is 0.785)")

    def protocol(self, t: _Table, cell: CellSettings) -> GalvanostaticCycling:
        t.choice("kind", get_args(ProtocolKind))
        li_cell = cell.to_cell()
        if li_cell is None:
            _fail(
                t.key("kind"),
                "galvanostatic Li plating/stripping needs a symmetric or asymmetric cell, "
                f"not a {cell.type} cell",
            )
        values: dict[str, Any] = {
            "current_density_ma_cm2": t.positive(
                "current_density_ma_cm2", "a current density in mA cm⁻² > 0 (standard: 0.5)"
            ),
            "areal_capacity_mah_cm2": t.positive(
                "areal_capacity_mah_cm2",
                "an areal capacity per half cycle in mAh cm⁻² > 0 (standard: 0.5)",
            ),
            # A Neware step file repeats at most 65,535 times (15 years of 1 h half cycles).
            "cycles": t.integer("cycles", 1, 65_535, " (whole cycles)"),
        }
        for key, allowed in (
            ("record_interval_s", "a time in s > 0 (e.g. 60)"),
            ("voltage_limit_v", "a voltage magnitude in V > 0 (e.g. 5.0)"),
        ):
            if t.has(key):
                values[key] = t.positive(key, allowed)
        if t.has("rest_before_s"):
            rest = t.data["rest_before_s"]
            if (
                isinstance(rest, bool)
                or not isinstance(rest, int | float)
                or not math.isfinite(rest)
                or rest < 0
            ):
                _fail(
                    t.key("rest_before_s"),
                    f"must be a time in s >= 0 (0 for no rest), got {_show(rest)}",
                )
            values["rest_before_s"] = float(rest)
        try:
            return GalvanostaticCycling(cell=li_cell, **values)
        except ConfigError as err:
            raise ConfigError(field=t.key(err.field), problem=err.problem) from err

    def detector(self, t: _Table | None, cell_type: CellProfile, path: str) -> DetectorSettings:
        base = DetectorSettings(cell=cell_type)
        if t is None:
            return base
        overrides: dict[str, float] = {}
        for key, value in t.data.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                _fail(t.key(key), f"must be a number, got {_show(value)}")
            overrides[key] = float(value)
        try:
            changes: dict[str, Any] = dict(overrides)
            return dataclasses.replace(base, **changes, overrides=overrides)
        except ConfigError as err:
            raise ConfigError(field=f"{path}.{err.field}", problem=err.problem) from err


def _timezone(t: _Table) -> str | None:
    name = t.optional_string("timezone", 'an IANA time zone name, e.g. "Europe/Berlin"')
    if name is None:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        _fail(
            t.key("timezone"),
            'must be an IANA time zone name such as "Europe/Berlin" or "UTC" (the zone of '
            f"the BTS PC's clock), got {_show(name)}",
        )
    return name


def _host(t: _Table, name: str, allowed: str) -> str:
    host = t.string(name, allowed)
    if "@" in host:
        # mqtt://user:password@broker: the error message must not repeat the password.
        shown = _show("***@" + host.rpartition("@")[2])
        _fail(
            t.key(name),
            f"must be {allowed} without credentials, got {shown}; give the login as "
            "username/password (or their _env/_file forms)",
        )
    if "://" in host or any(ch.isspace() for ch in host) or "/" in host:
        _fail(t.key(name), f"must be {allowed} (no scheme, path or spaces), got {_show(host)}")
    return host


def _client_id(topic_prefix: str, state_dir: Path) -> str:
    """``cellguard/lab1`` → ``cellguard-lab1-<host>-<8 hex of state_dir>``.

    The broker drops an older connection with the same id, so two daemons sharing a
    prefix (a copy started by accident, a second PC with the same config) would knock
    each other off forever; host and state_dir make the id unique, and stable across
    restarts of the same daemon (one daemon per state_dir: the state_dir lock).
    """
    stem = _CLIENT_ID_UNSAFE_RE.sub("-", topic_prefix).strip("-")
    stem = stem if stem.startswith("cellguard") else f"cellguard-{stem}"
    host = _CLIENT_ID_UNSAFE_RE.sub("-", socket.gethostname()).strip("-") or "host"
    where = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return f"{stem}-{host}-{where}"


def _check_instruments(instruments: Sequence[InstrumentSettings]) -> None:
    seen: dict[str, int] = {}
    for index, inst in enumerate(instruments):
        if inst.name in seen:
            _fail(
                f"instruments[{index}].name",
                f"{inst.name!r} is already instruments[{seen[inst.name]}]; names must be unique",
            )
        seen[inst.name] = index


def _check_links(
    instruments: Sequence[InstrumentSettings], channels: Sequence[ChannelSettings]
) -> None:
    """Unique instrument names; each channel on a known instrument, and only once."""
    _check_instruments(instruments)
    names = [inst.name for inst in instruments]
    seen: dict[tuple[str, ChannelId | str], int] = {}
    for index, ch in enumerate(channels):
        if ch.instrument not in names:
            _fail(
                f"channels[{index}].instrument",
                f"{ch.instrument!r} is not one of the [[instruments]] names ({', '.join(names)})",
            )
        key = (ch.instrument, ch.channel)
        if key in seen:
            _fail(
                f"channels[{index}].channel",
                f"{ch.channel} on {ch.instrument} is already channels[{seen[key]}]; "
                "a channel can be configured only once",
            )
        seen[key] = index
    _check_ranges(instruments, channels)


def _check_ranges(
    instruments: Sequence[InstrumentSettings], channels: Sequence[ChannelSettings]
) -> None:
    """A run-mode protocol the instrument's channel cannot run is refused here, at start,
    naming the key: not accepted and then left unguarded in a reconnect loop."""
    by_name = {inst.name: inst for inst in instruments}
    for index, ch in enumerate(channels):
        inst = by_name[ch.instrument]
        if not isinstance(inst, NewareSettings):
            continue
        limits = InstrumentLimits(
            current_range_ma=inst.current_range_ma,
            voltage_range_v=inst.voltage_range_v,
            name=f"instrument {inst.name!r} (current_range_ma = {inst.current_range_ma:g})",
        )
        if ch.script is not None:
            _check_neware_script(ch.script, limits, f"channels[{index}].protocol_file")
        if ch.protocol is None:
            continue
        try:
            ch.protocol.check_limits(limits)
        except ConfigError as err:
            raise ConfigError(
                field=f"channels[{index}].protocol.{err.field}", problem=err.problem
            ) from err


def _check_neware_script(script: ScriptProtocol, limits: InstrumentLimits, key: str) -> None:
    """A script on a Neware channel compiles to a step file for its instrument."""
    if prestart_setpoints(script):
        _fail(key, "it sets a chamber before it starts; a Neware channel has no chamber")
    try:
        script_to_step_file(script, limits)
    except ConfigError as err:
        raise ConfigError(field=key, problem=str(err)) from err
