"""End to end: simulated CT-4008 → daemon → stop at the instrument, alert at an MQTT
subscriber, points in a real InfluxDB-v2-speaking server, healthy channels untouched.

Real Mosquitto (deploy/mosquitto's config and ACL) and real VictoriaMetrics; the
instrument's time is virtual, driven poll by poll.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import PASSWORDS, PREFIX, Broker, command_result, running_mosquitto
from shared import EXAMPLE_PROTOCOL
from test_influx import export

from cellguard.daemon.cli import main
from cellguard.daemon.config import parse_config
from cellguard.daemon.guard import gc_policy
from cellguard.daemon.service import serve, started_daemon
from cellguard.daemon.store import Store
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 60.0
WAIT_S = 20.0


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


def _config_text(state_dir: Path, port: int, influx: str | None, mqtt_port: int | None) -> str:
    parts = [f'[daemon]\nstate_dir = "{state_dir}"\n']
    if influx is not None:
        parts.append(f'[influxdb]\nurl = "{influx}"\norg = "lab"\nbucket = "cycling"\n')
    if mqtt_port is not None:
        parts.append(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "{PREFIX}"\n'
            f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n'
        )
    parts.append(
        f'[[instruments]]\nname = "ct4008-e2e"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = {POLL_S}\n"
    )
    for chl, interphase in ((2, "SEI"), (3, "SEI")):
        parts.append(
            f'[[channels]]\ninstrument = "ct4008-e2e"\nchannel = "1-1-{chl}"\nmode = "run"\n'
            f'cell = {{ type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, '
            f'thin_li_um = 100, interphase = "{interphase}" }}\n'
            'protocol = { kind = "galvanostatic", current_density_ma_cm2 = 0.5, '
            "areal_capacity_mah_cm2 = 0.5, cycles = 50, record_interval_s = 60 }\n"
        )
    return "\n".join(parts)


def _symmetric_script() -> str:
    """The issue's example protocol script, on a symmetric 100|100 µm cell."""
    text = EXAMPLE_PROTOCOL.replace("thin_li_um = 20", "thin_li_um = 100")
    return text.replace("asymmetric", "symmetric")


def _simulator(clock: VirtualClock) -> NewareSimulator:
    cells = {
        ChannelId(1, 1, 2): CellSlot(SimCellSpec("SEI", never_short=True)),
        ChannelId(1, 1, 3): CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", 5.0))),
    }
    return NewareSimulator(clock, cells=cells, seed=9, epoch=datetime(2026, 4, 1, 9))


async def _drive(clock: VirtualClock, hours: float) -> None:
    for _ in range(round(hours * 3600 / POLL_S)):
        await clock.advance(POLL_S)


async def test_a_short_is_stopped_alerted_and_stored_and_the_healthy_channel_runs_on(
    tmp_path: Path, mosquitto: Broker, victoria_metrics: str
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (_, port):
        config = parse_config(
            _config_text(tmp_path / "state", port, victoria_metrics, mosquitto.port)
        )
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as operator:
            await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
            await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)
            async with started_daemon(config, clock=clock) as daemon:
                await clock.wait_until_sleeping(daemon.instrument_tasks["ct4008-e2e"])
                await _drive(clock, 7.0)
                sup = daemon.supervisor("ct4008-e2e")

                # The stop arrived at the instrument; the healthy channel still runs.
                assert sim.channels[ChannelId(1, 1, 3)].workstatus == "stop"
                assert sim.channels[ChannelId(1, 1, 2)].workstatus == "working"
                halt = sup.channels[ChannelId(1, 1, 3)].halt
                assert halt is not None
                assert halt.kind == "short"
                latency_s = sup.channels[ChannelId(1, 1, 3)].halt_latencies_s[0]
                assert latency_s < 1.0  # sample in hand → stop on the wire (wall time)

                # The alert reached an MQTT subscriber (a warn on the first low sample
                # may come first).
                async with asyncio.timeout(WAIT_S):
                    while True:
                        message = await anext(aiter(operator.messages))
                        alert = json.loads(message.payload)  # type: ignore[arg-type]
                        if alert["kind"] == "halt":
                            break
                assert str(message.topic) == f"{PREFIX}/alerts/ct4008-e2e/1-1-3"
                assert (alert["kind"], alert["fault"], alert["channel"]) == (
                    "halt",
                    "short",
                    "1-1-3",
                )
                assert alert["detail"]
                assert alert["values"]["measured_v"] < 0.001

                # An operator command stops the healthy channel and is answered.
                await operator.publish(
                    f"{PREFIX}/command/ct4008-e2e/1-1-2",
                    json.dumps({"action": "stop", "request_id": "r1"}),
                    qos=1,
                )
                message = await command_result(operator, clock, POLL_S, WAIT_S)
                result = json.loads(message.payload)  # type: ignore[arg-type]
                assert (result["request_id"], result["ok"]) == ("r1", True)
                assert sim.channels[ChannelId(1, 1, 2)].workstatus == "stop"

            recorded = sup.channels[ChannelId(1, 1, 2)].next_seq - 1

    # Every recorded sample of the healthy channel is in the database.
    series = await export(
        victoria_metrics,
        '{__name__="cellguard_samples_voltage_v",instrument="ct4008-e2e",channel="1-1-2",'
        'source="recorded"}',
        recorded,
    )
    assert sum(len(s["values"]) for s in series) >= recorded > 6 * 60
    # The halt is in the event store under state_dir, for `cellguard status`.
    async with Store(tmp_path / "state") as store:
        events = await store.query_events(instrument="ct4008-e2e", kind="halt")
        states = await store.load_channel_states()
    assert [e.tags.channel for e in events] == ["1-1-3"]
    assert states[("ct4008-e2e", "1-1-3")].state == "halted"


async def test_embedded_defaults_store_samples_in_sqlite_and_alert_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (_, port):
        config = parse_config(_config_text(tmp_path / "state", port, None, None))
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks["ct4008-e2e"])
            await _drive(clock, 6.0)
    assert any("HALTED" in r.getMessage() for r in caplog.records)
    async with Store(tmp_path / "state") as store:
        samples = await store.query_samples("ct4008-e2e", "1-1-2")
    recorded = [s for s in samples if s.source == "recorded"]
    assert [s.seq for s in recorded] == list(range(1, len(recorded) + 1))
    assert len(recorded) >= 6 * 60


async def test_the_collector_policy_is_applied_once_at_service_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cellguard run`` tunes the garbage collector for a long-running service, once
    per process (recorded, not carried out: the test process keeps its own)."""
    thresholds: list[tuple[int, ...]] = []
    monkeypatch.setattr(gc_policy, "_applied", False)
    monkeypatch.setattr(gc, "set_threshold", lambda *t: thresholds.append(t))
    monkeypatch.setattr(sys, "setswitchinterval", lambda _s: None)
    clock = VirtualClock()
    async with _simulator(clock).serve() as (_, port):
        config = parse_config(_config_text(tmp_path / "state", port, None, None))
        for _ in range(2):  # started twice in one process: applied the first time only
            stop = asyncio.Event()
            stop.set()
            await serve(config, stop=stop, clock=clock)
    assert thresholds == [
        (gc_policy.GEN0_THRESHOLD, gc_policy.GEN1_THRESHOLD, gc_policy.GEN2_THRESHOLD)
    ]


def test_run_with_a_bad_config_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[daemon]\nstate_dir = "x"\n[[instruments]]\nname = "a"\ndriver = "neware"\n'
        'host = "127.0.0.1"\nport = 70000\npoll_interval_s = 1\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "instruments[0].port" in lines[0]


def test_status_shows_each_channel_state_from_the_state_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cellguard.toml"

    async def scenario() -> None:
        clock = VirtualClock()
        sim = _simulator(clock)
        async with sim.serve() as (_, port):
            path.write_text(_config_text(tmp_path / "state", port, None, None))
            async with started_daemon(parse_config(path.read_text()), clock=clock) as daemon:
                await clock.wait_until_sleeping(daemon.instrument_tasks["ct4008-e2e"])
                await _drive(clock, 6.0)

    asyncio.run(scenario())
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1-1-3" in out
    assert "halted" in out
    assert "running" in out


async def test_a_restarted_daemon_resumes_the_same_tests_without_restarting_or_halting_twice(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (_, port):
        config = parse_config(_config_text(tmp_path / "state", port, None, None))
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks["ct4008-e2e"])
            await _drive(clock, 6.0)  # the short at 5 h is halted
        test_ids = {c: ch.test_id for c, ch in sim.channels.items()}
        await _drive(clock, 1.0)  # the daemon is down for an hour
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks["ct4008-e2e"])
            await _drive(clock, 2.0)
            sup = daemon.supervisor("ct4008-e2e")
            assert sup.channels[ChannelId(1, 1, 3)].state == "halted"
            assert sup.channels[ChannelId(1, 1, 2)].state == "running"
    assert {c: ch.test_id for c, ch in sim.channels.items()} == test_ids  # nothing re-started
    async with Store(tmp_path / "state") as store:
        halts = await store.query_events(instrument="ct4008-e2e", kind="halt")
        starts = await store.query_events(instrument="ct4008-e2e", kind="start")
        samples = await store.query_samples("ct4008-e2e", "1-1-2")
    assert len(halts) == 1
    assert len(starts) == 2  # one per channel, from the first run only
    recorded = [s.seq for s in samples if s.source == "recorded"]
    # The hour the daemon was down is backfilled: no gap and no duplicate.
    assert recorded == list(range(1, len(recorded) + 1))
    assert len(recorded) >= 9 * 60


async def test_an_operator_starts_a_protocol_script_on_a_stopped_channel_over_mqtt(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """The script is validated and compiled by the daemon; an invalid one starts nothing."""
    script = _symmetric_script()
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (_, port):
        config = parse_config(_config_text(tmp_path / "state", port, None, mosquitto.port))
        async with (
            aiomqtt.Client(
                "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
            ) as operator,
            started_daemon(config, clock=clock) as daemon,
        ):
            await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)
            await clock.wait_until_sleeping(daemon.instrument_tasks["ct4008-e2e"])
            await _drive(clock, 1.0)

            async def command(body: dict[str, object]) -> dict[str, object]:
                topic = f"{PREFIX}/command/ct4008-e2e/1-1-2"
                await operator.publish(topic, json.dumps(body), qos=1)
                message = await command_result(operator, clock, POLL_S, WAIT_S)
                result: dict[str, object] = json.loads(message.payload)  # type: ignore[arg-type]
                return result

            assert (await command({"action": "stop", "request_id": "a"}))["ok"] is True
            first_test = sim.channels[ChannelId(1, 1, 2)].test_id
            bad = await command(
                {"action": "start", "request_id": "b", "protocol": script.replace("fo", "fro")}
            )
            assert bad["ok"] is False
            assert "nothing started" in str(bad["detail"])
            assert sim.channels[ChannelId(1, 1, 2)].workstatus == "stop"
            good = await command({"action": "start", "request_id": "c", "protocol": script})
            assert good["ok"] is True
            await _drive(clock, 0.5)
            channel = sim.channels[ChannelId(1, 1, 2)]
            assert channel.workstatus == "working"
            assert channel.test_id == first_test + 1
            assert channel.download(1, 1)[0].step_type == "rest"  # the script's first step
            assert channel.inquire().step_type == "cc"  # then it strips


async def test_cellguard_protocol_start_reaches_the_running_daemon(
    tmp_path: Path, mosquitto: Broker
) -> None:
    protocol = tmp_path / "p.toml"
    protocol.write_text(_symmetric_script())
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (_, port):
        text = _config_text(tmp_path / "state", port, None, mosquitto.port)
        config_path = tmp_path / "cellguard.toml"
        config_path.write_text(text)
        async with started_daemon(parse_config(text), clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks["ct4008-e2e"])
            await _drive(clock, 0.5)
            stop = asyncio.create_task(
                daemon.supervisor("ct4008-e2e").command(ChannelId(1, 1, 2), "stop")
            )
            await _drive(clock, POLL_S / 3600)
            assert (await stop)[0] is True
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cellguard.daemon.cli",
                "protocol",
                "start",
                str(config_path),
                "ct4008-e2e",
                "1-1-2",
                str(protocol),
                "--via",
                "mqtt",  # the daemon serves a local control socket here too
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "CELLGUARD_OPERATOR_PASSWORD": PASSWORDS["operator"]},
            )
            waiting = asyncio.create_task(proc.communicate())
            async with asyncio.timeout(60):
                while not waiting.done():
                    await _drive(clock, POLL_S / 3600)  # the daemon answers at its next poll
                    await asyncio.wait({waiting}, timeout=0.02)
            out, err = await waiting
    assert proc.returncode == 0, err.decode()
    assert "started" in out.decode()
    assert sim.channels[ChannelId(1, 1, 2)].test_id == 2
