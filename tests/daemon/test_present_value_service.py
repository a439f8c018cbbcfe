"""End to end: a simulated Arbin cycler (CTI over TCP) or Maccor tester (MacNet JSON over
TCP) → daemon → stop (Arbin) or suspend (Maccor) at the instrument, alert at a real
Mosquitto subscriber, every judged value in the SQLite store, an operator's MQTT command
answered; configured with ``driver = "arbin"`` or ``"maccor"``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import PASSWORDS, PREFIX, Broker, command_result, running_mosquitto
from present_value_kinds import KINDS, MACCOR, Kind

from cellguard.daemon.config import parse_config
from cellguard.daemon.service import started_daemon
from cellguard.daemon.store import Store
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 60.0
WAIT_S = 20.0


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


def _config_text(kind: Kind, state_dir: Path, port: int, mqtt_port: int) -> str:
    name = f"{kind.driver}-e2e"
    parts = [
        f'[daemon]\nstate_dir = "{state_dir}"\n',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "{PREFIX}"\n'
        f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n',
        f'[[instruments]]\nname = "{name}"\ndriver = "{kind.driver}"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = {POLL_S}\n{kind.instrument_keys}",
    ]
    for channel in (2, 3):
        parts.append(
            f'[[channels]]\ninstrument = "{name}"\nchannel = "{channel}"\nmode = "run"\n'
            f'{kind.run_key} = "{kind.run_value}"\n'
            'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, '
            'thin_li_um = 100, interphase = "SEI" }\n'
        )
    return "\n".join(parts)


async def _drive(clock: VirtualClock, hours: float) -> None:
    for _ in range(round(hours * 3600 / POLL_S)):
        await clock.advance(POLL_S)


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_a_short_is_stopped_at_the_instrument_alerted_and_stored(
    kind: Kind, tmp_path: Path, mosquitto: Broker
) -> None:
    clock = VirtualClock()
    name = f"{kind.driver}-e2e"
    cells = {
        1: CellSlot(SimCellSpec("SEI", never_short=True)),
        2: CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 5.0))),
    }
    sim = kind.make_sim(clock, cells, 8)
    async with kind.served(sim) as port:
        config = parse_config(_config_text(kind, tmp_path / "state", port, mosquitto.port))
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as operator:
            await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
            await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)
            async with started_daemon(config, clock=clock) as daemon:
                await clock.wait_until_sleeping(daemon.instrument_tasks[name])
                await _drive(clock, 7.0)
                guard = daemon.host(name)
                assert isinstance(guard, kind.supervisor)
                assert kind.is_stopped(sim, 2)
                assert kind.is_running(sim, 1)
                if kind is MACCOR:
                    assert sim.channels[2].safety is not None  # the tester's own limits, too
                halt = guard.channels[3].halt
                assert halt is not None
                assert halt.kind == "short"
                assert guard.channels[3].halt_latencies_s[0] < 1.0  # wall time to the stop

                async with asyncio.timeout(WAIT_S):
                    while True:
                        message = await anext(aiter(operator.messages))
                        alert = json.loads(message.payload)  # type: ignore[arg-type]
                        if alert["kind"] == "halt":
                            break
                assert str(message.topic) == f"{PREFIX}/alerts/{name}/3"
                assert (alert["fault"], alert["channel"]) == ("short", "3")

                await operator.publish(
                    f"{PREFIX}/command/{name}/2",
                    json.dumps({"action": "stop", "request_id": "r1"}),
                    qos=1,
                )
                message = await command_result(operator, clock, POLL_S, WAIT_S)
                result = json.loads(message.payload)  # type: ignore[arg-type]
                assert (result["request_id"], result["ok"]) == ("r1", True)
                assert kind.is_stopped(sim, 1)
                judged = guard.channels[2].samples

    async with Store(tmp_path / "state") as store:
        samples = await store.query_samples(name, "2")
        events = await store.query_events(instrument=name, kind="halt")
        states = await store.load_channel_states()
    # Every value judged on the healthy channel is stored (live values: no backfill).
    assert len(samples) == judged >= 7 * 60
    assert [e.tags.channel for e in events] == ["3"]
    assert states[(name, "3")].state == "halted"
    assert states[(name, "2")].state == "stopped"
