"""Stored data a lab reads on its first day (issue 17 item 8), end to end.

A simulated CT-4008 over TCP, the daemon that ``cellguard run`` starts, a real
Mosquitto with the shipped ACL; the instrument's time is virtual, driven poll by poll.

- the cycle numbers of the stored per-cycle rows go on across a restart;
- the first live sample of a test carries its test id;
- the retained status says the cycle and how old the newest sample is, refreshed at a
  bounded rate;
- ``command_result`` names the action, also when the command is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import PASSWORDS, PREFIX, Broker, running_mosquitto
from shared import EXAMPLE_PROTOCOL

from cellguard.daemon.config import parse_config
from cellguard.daemon.guard.status import STATUS_REFRESH_S
from cellguard.daemon.mqtt import MqttPublisher, Outbox
from cellguard.daemon.service import started_daemon
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.drivers.smu import SmuSimulator
from cellguard.protocols import Cell, GalvanostaticCycling

WAIT_S = 20.0
INSTRUMENT = "ct4008-fr"
CHANNEL = ChannelId(1, 1, 2)


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


def _config(state_dir: Path, port: int, poll_s: float, mqtt_port: int | None = None) -> str:
    parts = [f'[daemon]\nstate_dir = "{state_dir}"\n']
    if mqtt_port is not None:
        parts.append(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "{PREFIX}"\n'
            f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n'
        )
    parts.append(
        f'[[instruments]]\nname = "{INSTRUMENT}"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = {poll_s}\ndownload_interval_s = 600\n"
    )
    parts.append(
        f'[[channels]]\ninstrument = "{INSTRUMENT}"\nchannel = "{CHANNEL}"\nmode = "run"\n'
        'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, '
        'interphase = "SEI" }\n'
        'protocol = { kind = "galvanostatic", current_density_ma_cm2 = 0.5, '
        "areal_capacity_mah_cm2 = 0.5, cycles = 50, record_interval_s = 60 }\n"
    )
    return "\n".join(parts)


def _simulator(clock: VirtualClock) -> NewareSimulator:
    cells = {CHANNEL: CellSlot(SimCellSpec("SEI", never_short=True))}
    return NewareSimulator(clock, cells=cells, seed=3, epoch=datetime(2026, 4, 1, 9))


async def _drive(clock: VirtualClock, hours: float, poll_s: float) -> None:
    for _ in range(round(hours * 3600 / poll_s)):
        await clock.advance(poll_s)


async def test_stored_cycle_numbers_go_on_across_a_restart_of_the_daemon(tmp_path: Path) -> None:
    """0.5 mAh cm⁻² half cycles of 1 h: cycles end at 2, 4, 6, 8 h. The daemon is
    stopped after 5 h (cycles 1-2 stored, cycle 3 half done) and started again; the
    rows after the restart are cycles 3 and 4 with the capacity cycled so far, not a
    new cycle 1 with nothing cycled."""
    clock = VirtualClock()
    sim = _simulator(clock)
    poll_s = 60.0
    async with sim.serve() as (_, port):
        config = parse_config(_config(tmp_path / "state", port, poll_s))
        for hours in (5.0, 4.0):
            async with started_daemon(config, clock=clock) as daemon:
                await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
                await _drive(clock, hours, poll_s)
        async with started_daemon(config, clock=clock) as daemon:
            rows = await daemon.store.query_cycles(INSTRUMENT, str(CHANNEL))
    assert sim.channels[CHANNEL].test_id == 1  # one test all along, never started twice
    assert [r.cycle for r in rows] == [1, 2, 3, 4]
    assert all(r.complete for r in rows)
    assert [round(r.capacity_mah_cm2, 2) for r in rows] == [1.0, 2.0, 3.0, 4.0]
    assert [round(r.hours, 2) for r in rows] == [2.0, 4.0, 6.0, 8.0]
    # The cycle cut by the restart has its polarization like its neighbours (~11 mV).
    assert rows[2].polarization_v == pytest.approx(rows[1].polarization_v, rel=0.2)


async def test_the_first_live_sample_of_a_test_carries_its_test_id(tmp_path: Path) -> None:
    """The recorded history, which used to be the first to tell the test id, is fetched
    every 10 min here: the live samples before it were stored under no test."""
    clock = VirtualClock()
    sim = _simulator(clock)
    poll_s = 60.0
    async with sim.serve() as (_, port):
        config = parse_config(_config(tmp_path / "state", port, poll_s))
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 0.5, poll_s)
        async with started_daemon(config, clock=clock) as daemon:
            samples = await daemon.store.query_samples(INSTRUMENT, str(CHANNEL))
    live = [s for s in samples if s.source == "live"]
    assert len(live) >= 25
    assert [s.tags.test_id for s in live[:3]] == ["1", "1", "1"]
    assert {s.tags.test_id for s in samples} == {"1"}


async def test_the_retained_status_says_the_cycle_and_the_sample_age_at_a_bounded_rate(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """The retained status follows the cycle and says how old the newest sample is,
    refreshed every minute at most while polls come every 10 s."""
    clock = VirtualClock()
    sim = _simulator(clock)
    poll_s = 10.0
    hours = 3.0
    status_topic = f"{PREFIX}/status/{INSTRUMENT}/{CHANNEL}"
    async with sim.serve() as (_, port):
        config = parse_config(_config(tmp_path / "state", port, poll_s, mosquitto.port))
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as operator:
            await operator.subscribe(status_topic, qos=1)
            async with started_daemon(config, clock=clock) as daemon:
                await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
                await _drive(clock, hours, poll_s)
                statuses = []
                recent_s = hours * 3600 - STATUS_REFRESH_S - poll_s
                async with asyncio.timeout(WAIT_S):
                    async for message in operator.messages:
                        assert isinstance(message.payload, bytes)
                        statuses.append(json.loads(message.payload))
                        if statuses[-1]["test_time_s"] >= recent_s:
                            break
        # A late subscriber reads the retained status only.
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as late:
            await late.subscribe(status_topic, qos=1)
            async with asyncio.timeout(WAIT_S):
                retained = await anext(aiter(late.messages))
    assert isinstance(retained.payload, bytes)
    now = json.loads(retained.payload)
    assert now["test_id"] == "1"
    assert now["state"] == "running"
    assert now["cycle"] == 2  # 3 h into 2 h cycles
    assert now["test_time_s"] >= recent_s
    assert now["last_sample_age_s"] is not None
    assert 0 <= now["last_sample_age_s"] <= poll_s
    # Bounded: a refresh a minute and the changes, not one status per poll (1,080).
    polls = hours * 3600 / poll_s
    assert len(statuses) <= hours * 3600 / STATUS_REFRESH_S + 5
    assert len(statuses) < polls / 5
    assert [s["cycle"] for s in statuses] == sorted(s["cycle"] for s in statuses)


async def test_command_result_names_the_action_also_when_the_command_is_refused(
    tmp_path: Path, mosquitto: Broker
) -> None:
    with Outbox.in_state_dir(tmp_path / "state") as outbox:
        publisher = MqttPublisher(
            "127.0.0.1",
            mosquitto.port,
            PREFIX,
            username="cellguard",
            password=PASSWORDS["cellguard"],
            client_id="cellguard-fr",
            outbox=outbox,
            backoff_initial_s=0.05,
        )
        ready = asyncio.Event()
        task = asyncio.create_task(publisher.run(ready=ready))
        try:
            async with aiomqtt.Client(
                "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
            ) as operator:
                async with asyncio.timeout(WAIT_S):
                    await ready.wait()
                await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)
                topic = f"{PREFIX}/command/{INSTRUMENT}/{CHANNEL}"
                await operator.publish(
                    topic, json.dumps({"action": "stop", "request_id": "r-1", "now": 1}), qos=1
                )
                async with asyncio.timeout(WAIT_S):
                    message = await anext(aiter(operator.messages))
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert isinstance(message.payload, bytes)
    result = json.loads(message.payload)
    assert result["ok"] is False
    assert result["request_id"] == "r-1"
    assert "unknown key" in result["detail"]
    assert result["action"] == "stop"


async def test_a_host_driven_channel_keeps_a_current_retained_status(
    tmp_path: Path, pty_pair: tuple[str, str], mosquitto: Broker
) -> None:
    """A source-meter channel (cellguard is its sequencer) had no status at all."""
    host_end, instrument_end = pty_pair
    clock = VirtualClock()
    smu = SmuSimulator(clock, cell=SimCell(SimCellSpec("SEI", never_short=True), seed=3), seed=3)
    protocol = tmp_path / "run.toml"
    protocol.write_text(
        EXAMPLE_PROTOCOL.replace("asymmetric", "symmetric").replace("thin_li_um = 20", "")
    )
    config = parse_config(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ntopic_prefix = "{PREFIX}"\n'
        f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n'
        f'[[instruments]]\nname = "smu-a"\ndriver = "smu"\nserial_port = "{host_end}"\n'
        '[[channels]]\ninstrument = "smu-a"\nchannel = "1"\nmode = "run"\n'
        'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }\n'
        f'protocol_file = "{protocol}"\n'
    )
    hours = 3.0
    recent_s = hours * 3600 - STATUS_REFRESH_S - 60.0
    async with (
        smu.serve(instrument_end),
        aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as operator,
    ):
        await operator.subscribe(f"{PREFIX}/status/smu-a/1", qos=1)
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks["smu-a"])
            for _ in range(round(hours * 60)):
                await clock.advance(60.0)
            statuses = []
            async with asyncio.timeout(WAIT_S):
                async for message in operator.messages:
                    assert isinstance(message.payload, bytes)
                    statuses.append(json.loads(message.payload))
                    if statuses[-1]["test_time_s"] >= recent_s:
                        break
    last = statuses[-1]
    assert last["state"] == "running"
    assert last["workstatus"] == "working"
    # 10 min rest, then 2 h cycles: 2 h 50 min in is cycle 2.
    assert last["cycle"] == 2
    assert last["last_sample_age_s"] is not None
    assert 0 <= last["last_sample_age_s"] <= 60.0
    assert len(statuses) <= hours * 3600 / STATUS_REFRESH_S + 5


async def test_live_samples_of_a_test_started_by_hand_carry_its_new_id(tmp_path: Path) -> None:
    """A researcher stops the test in the BTS software and starts another on the same
    channel: from its first live sample on it is stored as the new test (and guarded
    as a new run), not under the old id until the next download 10 min later."""
    clock = VirtualClock()
    sim = _simulator(clock)
    poll_s = 60.0
    async with sim.serve() as (_, port):
        config = parse_config(_config(tmp_path / "state", port, poll_s))
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 31 * poll_s / 3600, poll_s)  # downloads at 0, 10, 20, 30 min
            channel = sim.channels[CHANNEL]
            assert channel.stop(clock.now_s())
            await _drive(clock, 2 * poll_s / 3600, poll_s)
            program = GalvanostaticCycling(Cell.symmetric(0.785), cycles=5).to_step_file()
            assert channel.start(program, "by-hand", clock.now_s(), datetime(2026, 4, 1, 9))
            await _drive(clock, 3 * poll_s / 3600, poll_s)  # no download before 40 min
            runtime = daemon.supervisor(INSTRUMENT).channels[CHANNEL]
            assert runtime.state == "running"
            assert runtime.test_id == 2
        async with started_daemon(config, clock=clock) as daemon:
            samples = await daemon.store.query_samples(INSTRUMENT, str(CHANNEL))
            starts = await daemon.store.query_events(INSTRUMENT, str(CHANNEL), kind="start")
    live_ids = [s.tags.test_id for s in samples if s.source == "live"]
    # The three polls after the start, all of them; the 31 or 32 before the stop.
    assert live_ids.count("2") == 3
    assert 31 <= live_ids.count("1") <= 32
    assert len(live_ids) == live_ids.count("1") + 3
    assert any("test 2 started on the instrument" in e.detail for e in starts)
