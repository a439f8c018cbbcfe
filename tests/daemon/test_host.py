"""End to end, host-driven: cellguard runs a protocol on a SCPI source-meter over a real
pty and on a Modbus supply over real Modbus TCP, stores every sample, halts a fault with
the output off and confirmed, alerts through a real Mosquitto, and joins auxiliary
readings (a Modbus chamber and pressure cell) to the samples, where a band can halt.

The instruments' physics and the daemon share one virtual clock, advanced in steps; the
bytes go over real transports.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import PASSWORDS, PREFIX, Broker, running_mosquitto
from test_influx import export

from cellguard.daemon.config import parse_config
from cellguard.daemon.mqtt import Command
from cellguard.daemon.service import _execute, started_daemon
from cellguard.daemon.store import Store
from cellguard.drivers import VirtualClock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.modbus import lab_simulator
from cellguard.drivers.sim import ShortSpec, SimCell, SimCellSpec
from cellguard.drivers.smu import SmuSimulator

STEP_S = 60.0
WAIT_S = 20.0

PROTOCOL = """
[cell]
type = "symmetric"
diameter_mm = 10
thick_li_um = 100
thin_li_um = 100

[protocol]
name = "symmetric 0.5/0.5"
record_every = "60 s"
limits = ["Voltage between -5 V and 5 V"]
steps = [
  "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Plate at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Repeat steps 1-2 100 times",
]
"""

CELL = (
    'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, thin_li_um = 100, '
    'interphase = "SEI" }'
)


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


def _mqtt(port: int) -> str:
    return (
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_prefix = "{PREFIX}"\n'
        f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n'
    )


async def _drive(clock: VirtualClock, hours: float, until: object = None) -> None:
    for _ in range(round(hours * 3600 / STEP_S)):
        await clock.advance(STEP_S)
        if callable(until) and until():
            return


async def test_a_protocol_runs_on_a_serial_source_meter_and_a_short_is_halted(
    tmp_path: Path, pty_pair: tuple[str, str], mosquitto: Broker
) -> None:
    host_end, instrument_end = pty_pair
    clock = VirtualClock()
    cell = SimCell(SimCellSpec("SEI", short=ShortSpec("hard", 5.2)), seed=3)
    smu = SmuSimulator(clock, cell=cell, seed=3)
    protocol = tmp_path / "run.toml"
    protocol.write_text(PROTOCOL)
    config = parse_config(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        + _mqtt(mosquitto.port)
        + f'[[instruments]]\nname = "smu-a"\ndriver = "smu"\nserial_port = "{host_end}"\n'
        f'[[channels]]\ninstrument = "smu-a"\nchannel = "1"\nmode = "run"\n{CELL}\n'
        f'protocol_file = "{protocol}"\n'
    )
    async with (
        smu.serve(instrument_end),
        aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as operator,
    ):
        await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
        async with started_daemon(config, clock=clock) as daemon:
            host = daemon.host("smu-a")
            await clock.wait_until_sleeping(daemon.instrument_tasks["smu-a"])
            await _drive(clock, 8.0, until=lambda: host.state == "halted")

            # Halted on the short, the output off at the instrument, no earlier halt.
            assert host.state == "halted"
            assert host.halt is not None
            assert host.halt.kind == "short"
            assert host.halt.t_s >= 5.2 * 3600
            assert smu.output_on is False
            samples_taken = host.samples
            assert samples_taken > 5 * 60  # one a minute for 5 h of healthy cycling

            async with asyncio.timeout(WAIT_S):
                while True:
                    message = await anext(aiter(operator.messages))
                    alert = json.loads(message.payload)  # type: ignore[arg-type]
                    if alert["kind"] == "halt":
                        break
            assert str(message.topic) == f"{PREFIX}/alerts/smu-a/1"
            assert alert["fault"] == "short"

            # A halted channel stays off: time passes, nothing is sourced or sampled.
            await _drive(clock, 1.0)
            assert smu.output_on is False
            assert host.samples == samples_taken

    async with Store(tmp_path / "state") as store:
        stored = await store.query_samples("smu-a", "1")
        events = await store.query_events(instrument="smu-a")
        states = await store.load_channel_states()
    assert [s.seq for s in stored] == list(range(1, samples_taken + 1))
    # The protocol ran: strip then plate, alternating, each half cycle ~0.5 mAh cm⁻².
    currents = {round(s.current_a * 1e3, 3) for s in stored}
    assert currents == {round(0.5 * 0.785, 3), -round(0.5 * 0.785, 3)}
    assert [e.kind for e in events if e.kind in ("start", "halt")] == ["start", "halt"]
    assert states[("smu-a", "1")].state == "halted"


async def test_a_restart_resumes_the_half_cycle_where_it_stood(
    tmp_path: Path, pty_pair: tuple[str, str]
) -> None:
    """The run's position is persisted with every sample: a new daemon continues the
    same half cycle (neither repeated nor skipped) and never starts the test again."""
    host_end, instrument_end = pty_pair
    clock = VirtualClock()
    smu = SmuSimulator(clock, cell=SimCell(SimCellSpec("SEI", never_short=True), seed=1))
    protocol = tmp_path / "run.toml"
    protocol.write_text(PROTOCOL)
    config = parse_config(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[instruments]]\nname = "smu-b"\ndriver = "smu"\nserial_port = "{host_end}"\n'
        f'[[channels]]\ninstrument = "smu-b"\nchannel = "1"\nmode = "run"\n{CELL}\n'
        f'protocol_file = "{protocol}"\n'
    )
    async with smu.serve(instrument_end):
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks["smu-b"])
            await _drive(clock, 1.5)  # into the first plating half cycle
            first = daemon.host("smu-b")
            before = (first.host.seq, first.host.position)
        assert before[1] is not None
        assert before[1]["step"] == 2
        async with started_daemon(config, clock=clock) as daemon:
            second = daemon.host("smu-b")
            await clock.wait_until_sleeping(daemon.instrument_tasks["smu-b"])
            await _drive(clock, 1.0)
            assert second.state == "running"
            assert second.events == [] or all(e.kind != "start" for e in second.events)
    async with Store(tmp_path / "state") as store:
        stored = await store.query_samples("smu-b", "1")
        starts = await store.query_events(instrument="smu-b", kind="start")
    seqs = [s.seq for s in stored]
    assert seqs == list(range(1, len(seqs) + 1))  # one series, no restart from 1
    assert len(starts) == 1
    # Test time runs on across the restart; the plating half cycle finished once.
    times = [s.test_time_s for s in stored]
    assert times == sorted(times)
    plating = [s for s in stored if s.step == 2 and s.cycle == 1]
    capacity_mah = max(s.capacity_mah for s in plating)
    assert capacity_mah == pytest.approx(0.5 * 0.785, rel=0.05)


async def test_modbus_supply_runs_with_aux_readings_stored_and_a_chamber_band_halts(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    lab = lab_simulator(clock, seed=4, cell=SimCellSpec("SEI", never_short=True))
    protocol = tmp_path / "run.toml"
    protocol.write_text(PROTOCOL)
    async with lab.serve_tcp() as (_, port):
        config = parse_config(
            f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
            f'[[instruments]]\nname = "supply"\ndriver = "modbus"\nhost = "127.0.0.1"\n'
            f'port = {port}\ndevice_id = 1\nregister_map = "cellguard-sim-cycler"\n'
            "current_range_a = 0.01\nvoltage_range_v = 5.0\n"
            f'[[instruments]]\nname = "chamber"\ndriver = "modbus-aux"\nhost = "127.0.0.1"\n'
            f'port = {port}\ndevice_id = 2\nregister_map = "cellguard-sim-chamber"\n'
            f'[[instruments]]\nname = "press"\ndriver = "modbus-aux"\nhost = "127.0.0.1"\n'
            f'port = {port}\ndevice_id = 3\nregister_map = "cellguard-sim-pressure"\n'
            f'[[channels]]\ninstrument = "supply"\nchannel = "1"\nmode = "run"\n{CELL}\n'
            f'protocol_file = "{protocol}"\naux = ["chamber", "press"]\n'
            'aux_limits = [{ name = "chamber_temperature_c", low = 15, high = 35 }]\n'
        )
        async with started_daemon(config, clock=clock) as daemon:
            host = daemon.host("supply")
            await clock.wait_until_sleeping(daemon.instrument_tasks["supply"])
            await _drive(clock, 2.0)
            assert host.state == "running"
            assert 15 < host.last_aux["chamber_temperature_c"] < 35
            # Someone sets the chamber to 60 °C: the reading leaves the band, and the
            # channel halts on it with the output off.
            chamber = lab.device(2)
            chamber.set_value("chamber_setpoint_c", 60.0)
            await _drive(clock, 2.0, until=lambda: host.state == "halted")
            assert host.state == "halted"
            assert host.halt is not None
            assert (host.halt.kind, host.halt.subkind) == ("limit", "aux")
            assert host.halt.measured > 35
            assert lab.device(1).value("output") == 0
    async with Store(tmp_path / "state") as store:
        stored = await store.query_samples("supply", "1")
    assert len(stored) == host.samples > 2 * 60
    aux = dict(stored[-1].aux)
    assert set(aux) >= {"chamber_temperature_c", "chamber_setpoint_c", "stack_pressure_mpa"}
    assert aux["stack_pressure_mpa"] == pytest.approx(5.0, abs=0.5)


def test_host_driven_config_refusals_name_the_key(tmp_path: Path) -> None:
    base = f'[daemon]\nstate_dir = "{tmp_path}"\n'
    cases = [
        (
            '[[instruments]]\nname = "s"\ndriver = "smu"\n',
            "instruments[0].serial_port: required",
        ),
        (
            '[[instruments]]\nname = "s"\ndriver = "smu"\nserial_port = "/dev/x"\nport = 5\n',
            "instruments[0].port: not for driver",
        ),
        (
            '[[instruments]]\nname = "m"\ndriver = "modbus"\nhost = "h"\nport = 5\n'
            "current_range_a = 0.01\nvoltage_range_v = 5\n",
            "instruments[0].register_map: give exactly one of",
        ),
        (
            '[[instruments]]\nname = "m"\ndriver = "modbus-aux"\nhost = "h"\nport = 5\n'
            'registers = [{ name = "t_c", address = 0, table = "holding", type = "int16" }]\n',
            "instruments[0].registers",
        ),
        (
            '[[instruments]]\nname = "n"\ndriver = "neware"\nhost = "h"\nport = 5\n'
            'poll_interval_s = 1\nserial_port = "/dev/x"\n',
            "instruments[0].serial_port: only for driver",
        ),
        (
            '[[instruments]]\nname = "s"\ndriver = "smu"\nserial_port = "/dev/x"\n'
            f'[[channels]]\ninstrument = "s"\nchannel = "2"\nmode = "monitor"\n{CELL}\n',
            'channels[0].channel: must be "1"',
        ),
        (
            '[[instruments]]\nname = "s"\ndriver = "smu"\nserial_port = "/dev/x"\n'
            f'[[channels]]\ninstrument = "s"\nchannel = "1"\nmode = "run"\n{CELL}\n',
            "channels[0].protocol_file: required",
        ),
        (
            '[[instruments]]\nname = "s"\ndriver = "smu"\nserial_port = "/dev/x"\n'
            f'[[channels]]\ninstrument = "s"\nchannel = "1"\nmode = "monitor"\n{CELL}\n'
            'aux = ["nope"]\n',
            "channels[0].aux: 'nope' is not a modbus-aux instrument",
        ),
    ]
    for text, expected in cases:
        with pytest.raises(ConfigError) as info:
            parse_config(base + text)
        assert str(info.value).startswith(expected), (expected, str(info.value))


async def test_operator_commands_start_a_script_and_stop_a_host_driven_channel(
    tmp_path: Path, pty_pair: tuple[str, str]
) -> None:
    """The MQTT command path (the daemon's dispatch): start with a protocol script, an
    impossible script refused with nothing started, stop with the output off."""
    host_end, instrument_end = pty_pair
    clock = VirtualClock()
    smu = SmuSimulator(clock, cell=SimCell(SimCellSpec("SEI", never_short=True), seed=2))
    config = parse_config(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[instruments]]\nname = "smu-c"\ndriver = "smu"\nserial_port = "{host_end}"\n'
        f'[[channels]]\ninstrument = "smu-c"\nchannel = "1"\nmode = "monitor"\n{CELL}\n'
    )
    async with smu.serve(instrument_end), started_daemon(config, clock=clock) as daemon:
        host = daemon.host("smu-c")
        await clock.wait_until_sleeping(daemon.instrument_tasks["smu-c"])
        assert host.state == "idle"
        assert smu.output_on is False

        async def send(action: str, protocol: str | None = None) -> tuple[bool, str]:
            command = Command("smu-c", "1", action, "r", protocol)  # type: ignore[arg-type]
            task = asyncio.create_task(_execute(daemon, command))
            while not task.done():  # commands run between samples: let time move
                await clock.advance(1.0)
            return task.result()

        too_much = PROTOCOL.replace("0.5 mA/cm2", "2000 mA/cm2")
        ok, detail = await send("start", too_much)
        assert not ok
        assert "nothing started" in detail
        assert host.state == "idle"
        assert smu.output_on is False

        ok, detail = await send("start", PROTOCOL)
        assert ok, detail
        await _drive(clock, 0.5)
        assert host.state == "running"
        assert smu.output_on is True
        assert host.samples >= 25

        ok, detail = await send("stop")
        assert (ok, detail) == (True, "stopped")
        assert host.state == "stopped"
        assert smu.output_on is False
        ok, detail = await send("pause")
        assert not ok


async def test_a_lost_link_is_rejoined_and_the_half_cycle_keeps_its_capacity(
    tmp_path: Path, pty_pair: tuple[str, str]
) -> None:
    """The source-meter stops answering for 10 min (the output stays on there): the
    daemon reconnects, goes on with the same run, and counts the charge that flowed
    meanwhile, so the half cycle still ends at its 0.5 mAh cm⁻²."""
    host_end, instrument_end = pty_pair
    clock = VirtualClock()
    smu = SmuSimulator(clock, cell=SimCell(SimCellSpec("SEI", never_short=True), seed=5))
    protocol = tmp_path / "run.toml"
    protocol.write_text(PROTOCOL)
    config = parse_config(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[instruments]]\nname = "smu-d"\ndriver = "smu"\nserial_port = "{host_end}"\n'
        "timeout_s = 0.2\n"
        f'[[channels]]\ninstrument = "smu-d"\nchannel = "1"\nmode = "run"\n{CELL}\n'
        f'protocol_file = "{protocol}"\n'
    )
    async with smu.serve(instrument_end), started_daemon(config, clock=clock) as daemon:
        host = daemon.host("smu-d")
        await clock.wait_until_sleeping(daemon.instrument_tasks["smu-d"])
        await _drive(clock, 0.25)
        smu.hold()
        await _drive(clock, 10 / 60)
        assert not host.available
        smu.release()
        await _drive(clock, 2.0)
        assert host.available
        assert host.state == "running"
        assert smu.output_on is True
    async with Store(tmp_path / "state") as store:
        stored = await store.query_samples("smu-d", "1")
    first_strip = [s for s in stored if s.step == 1 and s.cycle == 1]
    # The gap is in the record (no sample while the link was down) ...
    gaps = [b.test_time_s - a.test_time_s for a, b in itertools.pairwise(first_strip)]
    assert max(gaps) >= 9 * 60
    # ... and the half cycle passed its capacity once, the outage's charge included.
    assert max(s.capacity_mah for s in first_strip) == pytest.approx(0.5 * 0.785, rel=0.03)
    assert first_strip[-1].test_time_s == pytest.approx(3600, abs=2 * STEP_S)


async def test_aux_readings_reach_influxdb_with_the_samples(
    tmp_path: Path, victoria_metrics: str
) -> None:
    clock = VirtualClock()
    lab = lab_simulator(clock, seed=6, cell=SimCellSpec("SEI", never_short=True))
    protocol = tmp_path / "run.toml"
    protocol.write_text(PROTOCOL)
    async with lab.serve_tcp() as (_, port):
        config = parse_config(
            f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
            f'[influxdb]\nurl = "{victoria_metrics}"\norg = "lab"\nbucket = "cycling"\n'
            f'[[instruments]]\nname = "supply-vm"\ndriver = "modbus"\nhost = "127.0.0.1"\n'
            f'port = {port}\nregister_map = "cellguard-sim-cycler"\n'
            "current_range_a = 0.01\nvoltage_range_v = 5.0\n"
            f'[[instruments]]\nname = "chamber-vm"\ndriver = "modbus-aux"\nhost = "127.0.0.1"\n'
            f'port = {port}\ndevice_id = 2\nregister_map = "cellguard-sim-chamber"\n'
            f'[[channels]]\ninstrument = "supply-vm"\nchannel = "1"\nmode = "run"\n{CELL}\n'
            f'protocol_file = "{protocol}"\naux = ["chamber-vm"]\n'
        )
        async with started_daemon(config, clock=clock) as daemon:
            host = daemon.host("supply-vm")
            await clock.wait_until_sleeping(daemon.instrument_tasks["supply-vm"])
            await _drive(clock, 1.0)
            taken = host.samples
    assert taken >= 55
    # The virtual hour ran ahead of the wall clock: read up to a day from now.
    selector = '{__name__="cellguard_samples_aux_chamber_temperature_c",instrument="supply-vm"}'
    end = int(time.time()) + 86_400
    series = await export(victoria_metrics, selector, taken, end=end)
    values = [v for s in series for v in s["values"]]
    assert len(values) == taken
    assert all(15 < v < 35 for v in values)
