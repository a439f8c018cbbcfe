"""Fault suite, security: TLS to the broker with a lab's own CA, the BTS API login from
the config, secrets never in the logs, every server cellguard opens on loopback.

(MQTT commands only from the ``operator`` user of the ACL, against Mosquitto with the
shipped password file and ACL, are checked in ``tests/daemon/test_mqtt.py``:
``test_commands_from_intruder_daemon_user_or_anonymous_are_not_delivered`` and
``test_intruder_cannot_read_alerts``.)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import ssl
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from faults import INSTRUMENT, daemon_config
from mqtt_broker import PASSWORDS, PREFIX, Broker, find_mosquitto

from cellguard.daemon.cli import build_parser
from cellguard.daemon.config import parse_config
from cellguard.daemon.mqtt import MqttPublisher, Outbox
from cellguard.daemon.records import ChannelTags, EventRecord
from cellguard.daemon.service import serve, started_daemon
from cellguard.drivers import VirtualClock
from cellguard.drivers.modbus import ModbusSimulator
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec
from cellguard.drivers.smu import SmuSimulator

WAIT_S = 10.0
BTS_PASSWORD = "bts-Secr3t-4711"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a broker certificate for 127.0.0.1 / localhost, by openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=cellguard test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr", cwd=folder,
    )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=folder,
    )  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


async def test_alerts_reach_the_broker_over_tls_with_the_labs_own_ca(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    broker = Broker(binary=find_mosquitto(), workdir=tmp_path / "mosquitto")
    broker.write_config()
    broker.conf.write_text(
        broker.conf.read_text() + f"\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    )
    await broker.start()
    try:
        config = parse_config(
            f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntopic_prefix = "{PREFIX}"\n'
            f'username = "cellguard"\npassword = "{PASSWORDS["cellguard"]}"\n'
            f'tls = true\nca_file = "{ca}"\n'
            '[[instruments]]\nname = "x"\ndriver = "neware"\nhost = "127.0.0.1"\nport = 502\n'
            "poll_interval_s = 1\n"
        )
        mq = config.mqtt
        assert mq is not None
        assert mq.ca_file == ca
        operator_tls = ssl.create_default_context(cafile=ca)
        # Without the lab's CA the broker's certificate is refused.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1",
                broker.port,
                ssl=ssl.create_default_context(),
                server_hostname="localhost",
            )
        event = EventRecord(ChannelTags(INSTRUMENT, "1-1-3"), "halt", 1.7e9, "short", "hard")
        with Outbox.in_state_dir(tmp_path / "state") as outbox:
            publisher = MqttPublisher(
                mq.host,
                mq.port,
                mq.topic_prefix,
                username=mq.username.reveal() if mq.username else None,
                password=mq.password.reveal() if mq.password else None,
                tls=mq.tls,
                ca_file=mq.ca_file,
                client_id=mq.client_id,
                outbox=outbox,
            )
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                username="operator",
                password=PASSWORDS["operator"],
                tls_context=operator_tls,
            ) as operator:
                await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
                ready = asyncio.Event()
                task = asyncio.create_task(publisher.run(ready=ready))
                try:
                    async with asyncio.timeout(WAIT_S):
                        await ready.wait()
                    await publisher.publish_event(event)
                    async with asyncio.timeout(WAIT_S):
                        message = await anext(aiter(operator.messages))
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        got = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        print(f"\nTLS: 1 alert published over TLS (CA {ca.name}); received id {got['id']}")
        assert got["id"] == event.event_id
    finally:
        try:
            await broker.stop()
        finally:
            broker.kill()


def test_ca_file_needs_tls_and_an_existing_file(tmp_path: Path) -> None:
    head = f'[daemon]\nstate_dir = "{tmp_path}"\n[mqtt]\nhost = "h"\ntopic_prefix = "cellguard/x"\n'
    tail = (
        '[[instruments]]\nname = "x"\ndriver = "neware"\nhost = "h"\nport = 1\n'
        "poll_interval_s = 1\n"
    )
    with pytest.raises(Exception, match=r"mqtt\.ca_file: only with tls = true"):
        parse_config(head + f'ca_file = "{tmp_path}"\n' + tail)
    with pytest.raises(Exception, match=r"mqtt\.ca_file: .*missing\.pem is not a readable file"):
        parse_config(head + 'tls = true\nca_file = "missing.pem"\n' + tail, base_dir=tmp_path)


def _sim(clock: VirtualClock) -> NewareSimulator:
    cells = {ChannelId(1, 1, 1): CellSlot(SimCellSpec("SEI", never_short=True))}
    return NewareSimulator(clock, cells=cells, login=("lab-user", BTS_PASSWORD))


async def test_the_bts_api_login_comes_from_the_config_and_a_wrong_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"BTS_PW": BTS_PASSWORD, "BTS_BAD": "wrong-" + BTS_PASSWORD}
    clock = VirtualClock()
    sim = _sim(clock)
    polls = {}
    async with sim.serve() as (_, port):
        for name, variable in (("good", "BTS_PW"), ("bad", "BTS_BAD")):
            text = daemon_config(
                str(tmp_path / name),
                port,
                [ChannelId(1, 1, 1)],
                poll_interval_s=60,
                download_interval_s=60,
                extra="",
            ).replace(
                "timeout_s = 5.0\n",
                f'timeout_s = 5.0\nusername = "lab-user"\npassword_env = "{variable}"\n',
            )
            config = parse_config(text, env=env)
            async with started_daemon(config, clock=clock) as daemon:
                await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
                for _ in range(5):
                    await clock.advance(60)
                polls[name] = daemon.supervisor(INSTRUMENT).polls
    print(f"\nBTS login: polls with the right password {polls['good']}, wrong {polls['bad']}")
    assert polls["good"] >= 5
    assert polls["bad"] == 0
    assert "refused" in caplog.text
    assert BTS_PASSWORD not in caplog.text


async def test_no_secret_appears_in_the_logs_at_debug_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every secret of a config (BTS API, MQTT, InfluxDB) through start, a lost broker,
    a refused login, polls and stop: none shows in any log record."""
    caplog.set_level(logging.DEBUG)
    secrets = {
        "BTS_PW": BTS_PASSWORD,
        "MQTT_PW": "mqtt-Secr3t-0815",
        "INFLUX_TOKEN": "influx-Secr3t-token-42",
    }
    clock = VirtualClock()
    sim = _sim(clock)
    async with sim.serve() as (_, port):
        text = daemon_config(
            str(tmp_path / "state"),
            port,
            [ChannelId(1, 1, 1)],
            poll_interval_s=60,
            download_interval_s=60,
            extra=(
                '[influxdb]\nurl = "http://127.0.0.1:9"\norg = "lab"\nbucket = "b"\n'
                'token_env = "INFLUX_TOKEN"\n'
                '[mqtt]\nhost = "127.0.0.1"\nport = 9\ntopic_prefix = "cellguard/sec"\n'
                'username = "cellguard"\npassword_env = "MQTT_PW"\n'
            ),
        ).replace(
            "timeout_s = 5.0\n", 'timeout_s = 5.0\nusername = "lab-user"\npassword_env = "BTS_PW"\n'
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(parse_config(text, env=secrets), stop=stop, clock=clock))
        await asyncio.sleep(0.2)  # let it start (wall time: the broker retry loop runs)
        for _ in range(5):
            await clock.advance(60)
        stop.set()
        await task
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    shown = [name for name, value in secrets.items() if value in logged]
    print(f"\nsecrets: {len(secrets)} secrets configured, {len(caplog.records)} log records "
          f"searched, {len(shown)} secret(s) found in them")  # fmt: skip
    assert len(caplog.records) > 5
    assert "Secret" not in logged or "***" in logged
    assert shown == []


@pytest.mark.parametrize("instrument", ["neware", "modbus"])
def test_simulate_listens_on_loopback_by_default(instrument: str) -> None:
    """``cellguard simulate neware|modbus`` binds 127.0.0.1 unless --host says otherwise
    (the address is read back from what the server says it bound, port 0 = any)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", instrument, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    match = re.search(r" on ([0-9.]+):(\d+)", first)
    assert match, first
    print(f"\nsimulate {instrument} listens on {match.group(1)}:{match.group(2)}")
    assert match.group(1) == "127.0.0.1"
    assert match.group(2) != "0"


def test_every_server_cellguard_opens_defaults_to_loopback() -> None:
    assert inspect.signature(NewareSimulator.serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(ModbusSimulator.serve_tcp).parameters["host"].default == "127.0.0.1"
    parser = build_parser()
    for instrument in ("neware", "modbus"):
        args = parser.parse_args(["simulate", instrument, "--port", "5020"])
        assert args.host == "127.0.0.1", instrument
    # The source-meter simulator serves a serial line; given a socket:// URL without a
    # host it listens on loopback too.
    assert "127.0.0.1" in inspect.getsource(SmuSimulator._serve_tcp)
