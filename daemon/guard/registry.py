"""The driver registry: from an ``[[instruments]]`` entry to its guard.

One entry per driver: how its link is built from the config and which guard runs it.
A new instrument kind is one more entry here (and its link under ``links/``); the
service wires whatever the registry builds, without knowing any driver by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cellguard.daemon.config import (
    ArbinSettings,
    Config,
    InstrumentSettings,
    MaccorSettings,
    ModbusAuxSettings,
    ModbusSettings,
    NewareSettings,
    SmuSettings,
)
from cellguard.daemon.guard.links.arbin import ArbinChannelSpec, ArbinSupervisor
from cellguard.daemon.guard.links.host import AuxLimit, AuxSource, HostChannelSpec, HostSupervisor
from cellguard.daemon.guard.links.maccor import MaccorChannelSpec, MaccorSupervisor
from cellguard.daemon.guard.links.neware import ChannelSpec, InstrumentSupervisor
from cellguard.daemon.guard.ports import Publisher, SampleQueue, StateStore
from cellguard.drivers.arbin import ArbinClient
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.galvanostat import Galvanostat
from cellguard.drivers.maccor import MaccorClient
from cellguard.drivers.neware import ChannelId, NewareClient

if TYPE_CHECKING:
    from cellguard.drivers.modbus import ModbusDevice


@dataclass(frozen=True)
class Wiring:
    """What every guard is wired to."""

    config: Config
    queue: SampleQueue
    publisher: Publisher
    clock: Clock
    state: StateStore | None


HostGuard = HostSupervisor | ArbinSupervisor | MaccorSupervisor
"""Guards the service commands by a channel name ("1", "3") rather than a Neware id."""


@dataclass(frozen=True)
class DriverEntry:
    """One driver: the guard it gets (None: no guard of its own, e.g. an aux device
    read by the host-driven channels that list it)."""

    driver: str
    build: Callable[[InstrumentSettings, Wiring], InstrumentSupervisor | HostGuard] | None


# ---------------------------------------------------------------- neware


def _neware_specs(config: Config, instrument: str) -> list[ChannelSpec]:
    return [
        ChannelSpec(
            channel=ch.channel,
            cell_type=ch.cell.type,
            interphase=ch.cell.interphase or "",
            mode=ch.mode,
            protocol=ch.protocol,
            detector=ch.detector,
            script=ch.script,
        )
        for ch in config.channels_of(instrument)
        if isinstance(ch.channel, ChannelId)  # a Neware channel id (host-driven: "1")
    ]


def neware_connector(inst: NewareSettings) -> Callable[[], NewareClient]:
    """A factory of fresh clients for a BTS server, logged in as the config says."""
    login: dict[str, str] = {}
    if inst.username is not None and inst.password is not None:
        login = {"username": inst.username.reveal(), "password": inst.password.reveal()}
    return lambda: NewareClient(inst.host, inst.port, timeout_s=inst.timeout_s, **login)


def _neware(inst: InstrumentSettings, wiring: Wiring) -> InstrumentSupervisor:
    assert isinstance(inst, NewareSettings)  # the registry's entry for "neware"
    state_dir = wiring.config.daemon.state_dir
    return InstrumentSupervisor(
        inst.name,
        neware_connector(inst),
        _neware_specs(wiring.config, inst.name),
        wiring.queue,
        wiring.publisher,
        clock=wiring.clock,
        poll_interval_s=inst.poll_interval_s,
        download_interval_s=max(inst.download_interval_s, inst.poll_interval_s),
        state=wiring.state,
        step_file_dir=Path(inst.step_file_dir) if inst.step_file_dir else state_dir / "steps",
        voltage_range_v=inst.voltage_range_v,
        current_range_ma=inst.current_range_ma,
        timezone=ZoneInfo(inst.timezone) if inst.timezone else None,
    )


# ---------------------------------------------------------------- host-driven


def _modbus_device(inst: ModbusSettings | ModbusAuxSettings) -> ModbusDevice:
    from cellguard.drivers.modbus import (  # noqa: PLC0415 (Modbus only where configured)
        CHAMBER_MAP,
        CYCLER_MAP,
        PRESSURE_MAP,
        ModbusDevice,
        RegisterMap,
        SerialLink,
        TcpLink,
    )

    builtin = {
        "cellguard-sim-cycler": CYCLER_MAP,
        "cellguard-sim-chamber": CHAMBER_MAP,
        "cellguard-sim-pressure": PRESSURE_MAP,
    }
    if inst.register_map is not None:
        registers = builtin[inst.register_map]
    else:
        registers = RegisterMap.from_config(list(inst.registers), path=f"{inst.name}.registers")
    link: TcpLink | SerialLink = (
        SerialLink(inst.serial_port, baudrate=inst.baudrate)
        if inst.serial_port
        else TcpLink(inst.host, inst.port)
    )
    return ModbusDevice(link, registers, device_id=inst.device_id, timeout_s=inst.timeout_s)


def galvanostat_connector(
    inst: SmuSettings | ModbusSettings, clock: Clock
) -> Callable[[], Galvanostat]:
    """A factory of fresh driver objects for a host-driven instrument (one per session)."""
    if isinstance(inst, SmuSettings):
        from cellguard.drivers.smu import SmuClient  # noqa: PLC0415

        smu = inst
        return lambda: SmuClient(smu.serial_port, baudrate=smu.baudrate, timeout_s=smu.timeout_s)
    from cellguard.drivers.modbus import ModbusGalvanostat  # noqa: PLC0415

    supply = inst
    return lambda: ModbusGalvanostat(
        _modbus_device(supply),
        current_range_a=supply.current_range_a,
        voltage_range_v=supply.voltage_range_v,
        clock=clock,
        path=f"instruments.{supply.name}.registers",
    )


def aux_connector(inst: InstrumentSettings, clock: Clock) -> Callable[[], AuxSource]:
    from cellguard.drivers.modbus import AuxDevice  # noqa: PLC0415

    if not isinstance(inst, ModbusAuxSettings):
        raise ConfigError(
            field=f"instruments.{inst.name}.driver", problem="an aux device must be modbus-aux"
        )
    device = inst
    return lambda: AuxDevice(_modbus_device(device), clock=clock)


def _host(inst: InstrumentSettings, wiring: Wiring) -> HostSupervisor:
    assert isinstance(inst, SmuSettings | ModbusSettings)  # the registry's host entries
    config, clock = wiring.config, wiring.clock
    channels = config.channels_of(inst.name)
    ch = channels[0] if channels else None
    spec = HostChannelSpec(
        channel="1",
        cell_type=ch.cell.type if ch else "symmetric",
        interphase=(ch.cell.interphase or "") if ch else "",
        mode=ch.mode if ch else "monitor",
        protocol=ch.script if ch else None,
        detector=ch.detector if ch else None,
        aux_limits=tuple(AuxLimit(*limit) for limit in ch.aux_limits) if ch else (),
        command_interval_s=inst.poll_interval_s,
        keep_output_on=inst.keep_output_on,
    )
    aux = {name: aux_connector(config.instrument(name), clock) for name in (ch.aux if ch else ())}
    return HostSupervisor(
        inst.name,
        galvanostat_connector(inst, clock),
        spec,
        wiring.queue,
        wiring.publisher,
        clock=clock,
        aux=aux,
        state=wiring.state,
    )


# ---------------------------------------------------------------- arbin


def arbin_connector(inst: ArbinSettings) -> Callable[[], ArbinClient]:
    """A factory of fresh CTI clients for an Arbin cycler, logged in as the config says."""
    return lambda: ArbinClient(
        inst.host,
        inst.port,
        username=inst.username.reveal(),
        password=inst.password.reveal(),
        timeout_s=inst.timeout_s,
    )


def _arbin(inst: InstrumentSettings, wiring: Wiring) -> ArbinSupervisor:
    assert isinstance(inst, ArbinSettings)  # the registry's entry for "arbin"
    specs = [
        ArbinChannelSpec(
            channel=int(str(ch.channel)),  # "3": validated by the config
            cell_type=ch.cell.type,
            interphase=ch.cell.interphase or "",
            mode=ch.mode,
            schedule=ch.schedule,
            detector=ch.detector,
        )
        for ch in wiring.config.channels_of(inst.name)
    ]
    return ArbinSupervisor(
        inst.name,
        arbin_connector(inst),
        specs,
        wiring.queue,
        wiring.publisher,
        clock=wiring.clock,
        poll_interval_s=inst.poll_interval_s,
        state=wiring.state,
        voltage_range_v=inst.voltage_range_v,
    )


# ---------------------------------------------------------------- maccor


def maccor_connector(inst: MaccorSettings) -> Callable[[], MaccorClient]:
    """A factory of fresh MacNet (JSON) clients for a Maccor tester."""
    return lambda: MaccorClient(inst.host, inst.port, timeout_s=inst.timeout_s)


def _maccor(inst: InstrumentSettings, wiring: Wiring) -> MaccorSupervisor:
    assert isinstance(inst, MaccorSettings)  # the registry's entry for "maccor"
    specs = [
        MaccorChannelSpec(
            channel=int(str(ch.channel)),  # "3": validated by the config
            cell_type=ch.cell.type,
            interphase=ch.cell.interphase or "",
            mode=ch.mode,
            procedure=ch.schedule,
            detector=ch.detector,
        )
        for ch in wiring.config.channels_of(inst.name)
    ]
    return MaccorSupervisor(
        inst.name,
        maccor_connector(inst),
        specs,
        wiring.queue,
        wiring.publisher,
        clock=wiring.clock,
        poll_interval_s=inst.poll_interval_s,
        state=wiring.state,
        voltage_range_v=inst.voltage_range_v,
        current_limit_a=inst.current_limit_a,
    )


# ---------------------------------------------------------------- the registry

REGISTRY: dict[str, DriverEntry] = {
    "neware": DriverEntry("neware", _neware),
    "smu": DriverEntry("smu", _host),
    "modbus": DriverEntry("modbus", _host),
    "modbus-aux": DriverEntry("modbus-aux", None),
    "arbin": DriverEntry("arbin", _arbin),
    "maccor": DriverEntry("maccor", _maccor),
}


def build_guards(wiring: Wiring) -> tuple[list[InstrumentSupervisor], list[HostGuard]]:
    """One guard per instrument of the config that has one, in the config's order:
    (Neware guards, guards whose channels are named by a plain name: host-driven, Arbin)."""
    neware: list[InstrumentSupervisor] = []
    hosts: list[HostGuard] = []
    for inst in wiring.config.instruments:
        entry = REGISTRY.get(inst.driver)
        if entry is None:
            raise ConfigError(
                field=f"instruments.{inst.name}.driver",
                problem=f"{inst.driver!r} has no guard; known: {', '.join(REGISTRY)}",
            )
        if entry.build is None:
            continue
        guard = entry.build(inst, wiring)
        if isinstance(guard, InstrumentSupervisor):
            neware.append(guard)
        else:
            hosts.append(guard)
    return neware, hosts
