"""``cellguard check CONFIG [--connect]``: is this configuration ready to run?

Without ``--connect`` the file is validated exactly as ``cellguard run`` does before it
starts (the same loader, then the same guards built from it), and nothing is
started, created or contacted: no state_dir, no lock, no broker, no instrument.

``--connect`` then asks every instrument, at once, whether the configured channels
exist and can take the configured currents; it only reads (a Neware: the login,
``getdevinfo`` and ``getchlstatus``; a source-meter: ``*IDN?`` and the output state; a
Modbus device: its identity or its registers), never starts, stops or sources.

Exit codes (also in ``cellguard check --help``):

* 0: the configuration would run (and, with ``--connect``, every instrument answered
  and has every channel);
* 2: refused: one line per problem names the key (``channels[1].channel``) and what
  is wrong, as ``cellguard run`` would say it, or what the instrument said;
* 4: an instrument could not be reached (one line each, naming it): the file may
  be right and the instrument off, unplugged or its API disabled.

When both happen, 2: the file needs changing whatever the network does.

A Neware's current range is the configured ``current_range_ma`` (the BTS API does not
report one): a run-mode protocol is checked against it when the file is read, as
``run`` does; a source-meter reports its model, whose range the protocol must fit.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cellguard.daemon.config import (
    ArbinSettings,
    Config,
    InstrumentSettings,
    MaccorSettings,
    ModbusAuxSettings,
    ModbusSettings,
    NewareSettings,
    SmuSettings,
    check_state_dir,
    load_config,
)
from cellguard.daemon.guard.registry import (
    Wiring,
    arbin_connector,
    aux_connector,
    build_guards,
    galvanostat_connector,
    maccor_connector,
    neware_connector,
)
from cellguard.daemon.mqtt import LogPublisher
from cellguard.drivers.clock import WallClock
from cellguard.drivers.errors import (
    CellguardError,
    CommandRefused,
    ConfigError,
    InstrumentConnectionError,
)
from cellguard.drivers.galvanostat import GalvanostatInfo
from cellguard.drivers.neware import ChannelId
from cellguard.protocols.script import InstrumentCapability

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 4

# A whole instrument's answer may take a few requests; past this many of its own
# timeouts it counts as unreachable, so one silent device never hangs the check.
_REQUESTS_PER_CHECK = 4

Kind = Literal["ok", "refused", "unreachable"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: ``key: text``."""

    kind: Kind
    key: str
    text: str

    def __str__(self) -> str:
        return f"{self.key}: {self.text}"


def validate(path: Path) -> Config:
    """What ``cellguard run`` checks before it starts anything (a ConfigError if refused)."""
    config = load_config(path)
    check_state_dir(config.daemon.state_dir)  # as run: creatable and writable, not created
    # run builds one guard per instrument from the config next, which may refuse too;
    # built here unwired (no store, no broker), then dropped.
    build_guards(Wiring(config, asyncio.Queue(maxsize=1), LogPublisher(), WallClock(), None))
    return config


def run_check_cli(path: Path, *, connect: bool) -> int:
    """``cellguard check``: print the report, return the exit code (see the module doc)."""
    config = validate(path)  # ConfigError: exit 2 with its one line, in cli.main()
    channels = len(config.channels)
    print(
        f"{path}: ok as `cellguard run` reads it: {len(config.instruments)} instrument(s), "
        f"{channels} channel(s), state in {config.daemon.state_dir}"
    )
    # What run would log at start: where samples and alerts go, every channel's cell,
    # and what it would warn about (secrets written inline, ...).
    print(config.describe())
    for warning in config.warnings:
        print(f"warning: {warning}")
    if not connect:
        return EXIT_OK
    # pymodbus logs each failed connect itself; the finding below says it in one line.
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    findings = asyncio.run(check_instruments(config))
    for finding in findings:
        if finding.kind == "ok":
            print(finding)
        else:
            print(f"cellguard: error: {finding}", file=sys.stderr)
    kinds = {f.kind for f in findings}
    if "refused" in kinds:
        return EXIT_REFUSED
    return EXIT_UNREACHABLE if "unreachable" in kinds else EXIT_OK


async def check_instruments(config: Config) -> list[Finding]:
    """Ask every instrument at once; the findings in the config's order."""
    checks = [_check_one(config, index, inst) for index, inst in enumerate(config.instruments)]
    results = await asyncio.gather(*checks)
    return [finding for found in results for finding in found]


async def _check_one(config: Config, index: int, inst: InstrumentSettings) -> list[Finding]:
    key = f"instruments[{index}]"
    check: Callable[[], Awaitable[list[Finding]]]
    if isinstance(inst, NewareSettings):
        check = lambda: _check_neware(config, inst)  # noqa: E731
    elif isinstance(inst, ModbusAuxSettings):
        check = lambda: _check_aux(inst)  # noqa: E731
    elif isinstance(inst, ArbinSettings):
        check = lambda: _check_arbin(config, inst)  # noqa: E731
    elif isinstance(inst, MaccorSettings):
        check = lambda: _check_maccor(config, inst)  # noqa: E731
    else:
        check = lambda: _check_galvanostat(config, inst)  # noqa: E731
    where = f"{inst.name} ({inst.driver} at {inst.where})"
    try:
        async with asyncio.timeout(inst.timeout_s * _REQUESTS_PER_CHECK):
            return await check()
    except TimeoutError:
        return [Finding("unreachable", key, f"{where} did not answer within {inst.timeout_s:g} s")]
    except InstrumentConnectionError as err:  # its message says where it tried
        return [Finding("unreachable", key, f"{inst.name} cannot be reached: {err}")]
    except OSError as err:  # a serial device that is not there, refused, ...
        reason = err.strerror or str(err)
        return [Finding("unreachable", key, f"{where} cannot be reached: {reason}")]
    except CommandRefused as err:
        return [Finding("refused", key, f"{where} refused: {err}")]
    except CellguardError as err:
        return [Finding("refused", key, f"{where}: {err}")]


def _channel_index(config: Config, instrument: str, channel: object) -> int:
    for index, ch in enumerate(config.channels):
        if ch.instrument == instrument and ch.channel == channel:
            return index
    raise KeyError(channel)  # pragma: no cover - the channels come from the config


async def _check_neware(config: Config, inst: NewareSettings) -> list[Finding]:
    client = neware_connector(inst)()
    try:
        await client.connect()  # the login, then getdevinfo: the server's channels
        listed = {info.address.channel: info for info in client.channels}
        mine = [c.channel for c in config.channels_of(inst.name)]
        present = [c for c in mine if isinstance(c, ChannelId) and c in listed]
        status = await client.get_status(present) if present else {}
    finally:
        await client.aclose()
    have = sorted(listed, key=lambda c: (c.devid, c.subdevid, c.chlid))
    span = f"{have[0]} .. {have[-1]}" if have else "none"
    found = [
        Finding(
            "ok",
            inst.name,
            f"BTS server at {inst.where} answered: {len(listed)} channel(s) ({span}); "
            f"range {inst.current_range_ma:g} mA, {inst.voltage_range_v:g} V as configured",
        )
    ]
    for channel in mine:
        key = f"channels[{_channel_index(config, inst.name, channel)}].channel"
        if channel not in status:
            text = f"{inst.name} has no channel {channel} (it has {span})"
            found.append(Finding("refused", key, text))
        elif not listed[channel].available:
            text = f"{inst.name} {channel} is not available on the server (offline unit?)"
            found.append(Finding("refused", key, text))
        else:
            found.append(Finding("ok", key, f"{inst.name} {channel}: present, {status[channel]}"))
    return found


async def _check_arbin(config: Config, inst: ArbinSettings) -> list[Finding]:
    """An Arbin: the CTI login (its channel count), then each channel's status; read only."""
    client = arbin_connector(inst)()
    try:
        login = await client.connect()
        readings = await client.channels_info()
    finally:
        await client.aclose()
    count = login.channel_count
    found = [
        Finding(
            "ok",
            inst.name,
            f"Arbin CTI at {inst.where} answered: serial {login.serial_number or '?'}, "
            f"{count} channel(s) (1..{count})",
        )
    ]
    for ch in config.channels_of(inst.name):
        key = f"channels[{_channel_index(config, inst.name, ch.channel)}].channel"
        reading = readings.get(int(str(ch.channel)) - 1)
        if reading is None:
            text = f"{inst.name} has no channel {ch.channel} (it has 1..{count})"
            found.append(Finding("refused", key, text))
        else:
            text = f"{inst.name} {ch.channel}: present, {reading.status_name}"
            found.append(Finding("ok", key, text))
    return found


async def _check_maccor(config: Config, inst: MaccorSettings) -> list[Finding]:
    """A Maccor: MacNet's general information (its channel count), then each channel's
    status (4, 7); read only."""
    client = maccor_connector(inst)()
    try:
        await client.connect()
        count = client.channel_count
        found = [
            Finding(
                "ok",
                inst.name,
                f"Maccor MacNet at {inst.where} answered: "
                f"{client.general_info.get('SystemID', '?')}, {count} channel(s) (1..{count})",
            )
        ]
        for ch in config.channels_of(inst.name):
            key = f"channels[{_channel_index(config, inst.name, ch.channel)}].channel"
            number = int(str(ch.channel))
            if not 1 <= number <= count:
                text = f"{inst.name} has no channel {ch.channel} (it has 1..{count})"
                found.append(Finding("refused", key, text))
                continue
            state = await client.state(number - 1)
            found.append(Finding("ok", key, f"{inst.name} {ch.channel}: present, {state.status}"))
    finally:
        await client.aclose()
    return found


async def _check_galvanostat(config: Config, inst: SmuSettings | ModbusSettings) -> list[Finding]:
    gal = galvanostat_connector(inst, WallClock())()
    try:
        info = await gal.connect()
        if isinstance(inst, ModbusSettings):
            # Opening a Modbus TCP link proves only the gateway: one read proves the
            # device behind this unit id answers. (Never on a SCPI source-meter, where
            # :MEAS? would switch the output on.)
            await gal.measure()
    finally:
        await gal.close()
    found = [
        Finding(
            "ok",
            inst.name,
            f"{info.vendor} {info.model} (serial {info.serial or '?'}) at {inst.where}: "
            f"range {info.current_range_a * 1e3:g} mA, {info.voltage_range_v:g} V",
        )
    ]
    capability = _capability(info)
    for ch in config.channels_of(inst.name):
        index = _channel_index(config, inst.name, ch.channel)
        if ch.script is None:
            found.append(Finding("ok", f"channels[{index}].channel", f"{inst.name} 1: present"))
            continue
        key = f"channels[{index}].protocol_file"
        try:
            ch.script.validate(capability)
        except ConfigError as err:
            found.append(Finding("refused", key, f"{info.model} cannot run it: {err}"))
        else:
            text = f"{ch.script.name!r} fits {info.vendor} {info.model}".strip()
            found.append(Finding("ok", key, text))
    return found


def _capability(info: GalvanostatInfo) -> InstrumentCapability:
    """What the daemon checks a protocol against when it starts it (links/host.py)."""
    return InstrumentCapability(
        current_range_ma=info.current_range_a * 1000.0,
        voltage_range_v=info.voltage_range_v,
        min_record_interval_s=info.min_sample_interval_s,
        max_steps=1_000_000,
        name=f"{info.vendor} {info.model}".strip(),
    )


async def _check_aux(inst: ModbusAuxSettings) -> list[Finding]:
    device = aux_connector(inst, WallClock())()
    try:
        await device.connect()
        reading = await device.read()
    finally:
        await device.close()
    values = ", ".join(f"{name} = {value:g}" for name, value in reading.values.items())
    return [Finding("ok", inst.name, f"Modbus device {inst.device_id} at {inst.where}: {values}")]
