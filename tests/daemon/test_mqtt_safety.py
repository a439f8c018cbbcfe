"""MQTT safety (issue 16 item 6): who may command, once only, without flooding the log.

Against real Mosquitto: the shipped config and ACL (``mqtt_broker.running_mosquitto``)
and, for the daemons that log in without a user, an open broker such as a lab's
default install (anonymous clients allowed, no ACL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import DEPLOY, PASSWORDS, PREFIX, Broker, find_mosquitto, running_mosquitto
from test_mqtt import halt, make_publisher, running, user_client

from cellguard.daemon.cli import main
from cellguard.daemon.config import parse_config
from cellguard.daemon.mqtt import (
    ANONYMOUS_REFUSAL,
    SEEN_REQUESTS_MAX,
    MqttPublisher,
    Outbox,
    RefusalLog,
)
from cellguard.daemon.mqtt_acl import SHIPPED_ACL_DAEMON_RULES, acl_mismatch, topic_matches
from cellguard.daemon.records import ChannelTags
from cellguard.daemon.redact import RedactingFilter, redact
from cellguard.daemon.service import serve, started_daemon
from cellguard.drivers import VirtualClock
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec

WAIT_S = 20.0
COMMAND_TOPIC = f"{PREFIX}/command/ct4008-a/21-1-3"


class OpenBroker(Broker):
    """Mosquitto as many labs run it: anonymous clients welcome, no ACL."""

    def write_config(self) -> None:
        self.workdir.mkdir(exist_ok=True)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\nuser root\n"
        )


@pytest.fixture
async def open_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    broker = OpenBroker(binary=find_mosquitto(), workdir=tmp_path / "open-mosquitto")
    broker.write_config()
    await broker.start()
    try:
        yield broker
    finally:
        try:
            await broker.stop()
        finally:
            broker.kill()


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox.in_state_dir(tmp_path / "state") as box:
        yield box


def anonymous_publisher(port: int, outbox: Outbox, **kwargs: object) -> MqttPublisher:
    return MqttPublisher(
        "127.0.0.1",
        port,
        PREFIX,
        client_id="cellguard-anon",
        outbox=outbox,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


async def next_result(client: aiomqtt.Client) -> dict[str, object]:
    async with asyncio.timeout(WAIT_S):
        message = await anext(aiter(client.messages))
    assert isinstance(message.payload, bytes)
    body: dict[str, object] = json.loads(message.payload)
    return body


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition()`` until true; fail after WAIT_S."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not condition():  # noqa: ASYNC110 - a condition in another process too
                await asyncio.sleep(0.01)  # polling for a condition, not timing
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


# -- anonymous daemons refuse commands ------------------------------------------------------


async def test_a_daemon_without_broker_user_refuses_commands_and_answers_why(
    open_broker: Broker, outbox: Outbox
) -> None:
    """No user name: the broker cannot have checked who sent a command, so it is
    refused, answered on command_result with the action and the reason, never queued."""
    publisher = anonymous_publisher(open_broker.port, outbox)
    async with user_client(open_broker.port, None, "anyone") as anyone, running(publisher):
        await anyone.subscribe(f"{PREFIX}/command_result/#", qos=1)
        await anyone.publish(
            COMMAND_TOPIC, json.dumps({"action": "stop", "request_id": "anon-1"}), qos=1
        )
        result = await next_result(anyone)
    assert result["ok"] is False
    assert result["action"] == "stop"
    assert result["request_id"] == "anon-1"
    assert result["detail"] == ANONYMOUS_REFUSAL
    assert "allow_anonymous_commands = true" in str(result["detail"])
    assert publisher.commands_waiting == 0


async def test_allow_anonymous_commands_lets_them_through(
    open_broker: Broker, outbox: Outbox
) -> None:
    publisher = anonymous_publisher(open_broker.port, outbox, allow_anonymous_commands=True)
    async with user_client(open_broker.port, None, "anyone") as anyone, running(publisher):
        await anyone.publish(
            COMMAND_TOPIC, json.dumps({"action": "pause", "request_id": "anon-2"}), qos=1
        )
        async with asyncio.timeout(WAIT_S):
            command = await anext(aiter(publisher.commands()))
    assert (command.action, command.request_id) == ("pause", "anon-2")


def _mqtt_config(tmp_path: Path, mqtt: str) -> str:
    return (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\n{mqtt}'
        '[[instruments]]\nname = "ct"\ndriver = "neware"\nhost = "127.0.0.1"\nport = 502\n'
        "poll_interval_s = 1\n"
    )


def test_config_allow_anonymous_commands_and_the_banner_says_so(tmp_path: Path) -> None:
    prefix = f'topic_prefix = "{PREFIX}"\n'
    allowed = parse_config(_mqtt_config(tmp_path, prefix + "allow_anonymous_commands = true\n"))
    refused = parse_config(_mqtt_config(tmp_path, prefix))
    with_user = parse_config(
        _mqtt_config(tmp_path, prefix + 'username = "cellguard"\npassword_env = "PW"\n'),
        env={"PW": "x"},
    )
    assert allowed.mqtt is not None
    assert allowed.mqtt.allow_anonymous_commands is True
    assert "ACCEPTED WITHOUT A BROKER LOGIN" in allowed.describe()
    assert "commands REFUSED: no broker user" in refused.describe()
    assert "allow_anonymous_commands" not in with_user.describe()
    with pytest.raises(ConfigError, match=r"mqtt\.allow_anonymous_commands: must be true or false"):
        parse_config(_mqtt_config(tmp_path, prefix + 'allow_anonymous_commands = "yes"\n'))


# -- a request_id is executed once, across restarts ------------------------------------------


def test_seen_request_ids_are_kept_bounded_in_count_and_age(outbox: Outbox) -> None:
    assert outbox.first_time("a", 1000.0, max_ids=3, max_age_s=100.0)
    assert not outbox.first_time("a", 1001.0, max_ids=3, max_age_s=100.0)
    for n, request_id in enumerate("bcd"):
        assert outbox.first_time(request_id, 1002.0 + n, max_ids=3, max_age_s=100.0)
    assert outbox.seen_count() == 3  # "a" went, the oldest beyond max_ids
    assert outbox.first_time("a", 1010.0, max_ids=3, max_age_s=100.0)
    assert outbox.first_time("e", 2000.0, max_ids=3, max_age_s=100.0)
    assert outbox.seen_count() == 1  # all others older than max_age_s
    assert SEEN_REQUESTS_MAX == 10_000


def _daemon_config(state_dir: Path, sim_port: int, mqtt_port: int) -> str:
    return (
        f'[daemon]\nstate_dir = "{state_dir}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "{PREFIX}"\n'
        f'username = "cellguard"\npassword_env = "PW"\n'
        f'[[instruments]]\nname = "ct"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        f"port = {sim_port}\npoll_interval_s = 60\n"
        '[[channels]]\ninstrument = "ct"\nchannel = "1-1-2"\nmode = "run"\n'
        'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, '
        'thin_li_um = 100, interphase = "SEI" }\n'
        'protocol = { kind = "galvanostatic", current_density_ma_cm2 = 0.5, '
        "areal_capacity_mah_cm2 = 0.5, cycles = 50, record_interval_s = 60 }\n"
    )


async def test_a_request_id_is_not_executed_again_after_a_daemon_restart(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """The same stop, sent to the first and then to a restarted daemon on the same
    state_dir: executed once, refused as a duplicate the second time."""
    clock = VirtualClock()
    cells = {ChannelId(1, 1, 2): CellSlot(SimCellSpec("SEI", never_short=True))}
    sim = NewareSimulator(clock, cells=cells, seed=3, epoch=datetime(2026, 4, 1, 9))
    channel = sim.channels[ChannelId(1, 1, 2)]
    results = []
    async with (
        sim.serve() as (_, port),
        aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username="operator", password=PASSWORDS["operator"]
        ) as operator,
    ):
        await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)
        config = parse_config(
            _daemon_config(tmp_path / "state", port, mosquitto.port),
            env={"PW": PASSWORDS["cellguard"]},
        )
        for run in range(2):
            async with started_daemon(config, clock=clock) as daemon:
                assert isinstance(daemon.publisher, MqttPublisher)
                async with asyncio.timeout(WAIT_S):
                    await daemon.publisher.wait_connected()
                    await clock.wait_until_sleeping(daemon.instrument_tasks["ct"])
                    while run == 0 and channel.workstatus != "working":  # its protocol
                        await clock.advance(60)
                await operator.publish(
                    f"{PREFIX}/command/ct/1-1-2",
                    json.dumps({"action": "stop", "request_id": "restart-1"}),
                    qos=1,
                )
                result = await next_result(operator)
                # Delivery is at least once: the first daemon's answer may be sent
                # again by the restarted one (its outbox had not yet heard the
                # broker's ack). The same payload, time included, is that copy.
                while results and result == results[0]:
                    result = await next_result(operator)
                results.append(result)
    first, second = results
    assert (first["ok"], first["request_id"]) == (True, "restart-1"), first
    assert sim.channels[ChannelId(1, 1, 2)].workstatus == "stop"
    assert (second["ok"], second["action"], second["request_id"]) == (False, "stop", "restart-1")
    assert "duplicate" in str(second["detail"])


async def test_a_command_refused_as_busy_may_be_sent_again_with_the_same_request_id(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Busy is not "seen": the id is recorded only when the command is taken."""
    with Outbox(tmp_path / "busy.sqlite") as box:
        publisher = MqttPublisher(
            "127.0.0.1",
            mosquitto.port,
            PREFIX,
            username="cellguard",
            password=PASSWORDS["cellguard"],
            client_id="busy",
            outbox=box,
            command_queue_size=1,
        )
        async with user_client(mosquitto.port, "operator", "op") as operator, running(publisher):
            await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)

            async def send(request_id: str) -> None:
                body = json.dumps({"action": "stop", "request_id": request_id})
                await operator.publish(COMMAND_TOPIC, body, qos=1)

            await send("first")
            await send("second")
            busy = await next_result(operator)
            async with asyncio.timeout(WAIT_S):
                commands = aiter(publisher.commands())
                assert (await anext(commands)).request_id == "first"
                await send("second")
                assert (await anext(commands)).request_id == "second"
    assert (busy["ok"], busy["request_id"]) == (False, "second")
    assert str(busy["detail"]).startswith("busy")


# -- refusals are logged at a bounded rate ---------------------------------------------------


def test_refusal_log_logs_the_first_then_one_count_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = RefusalLog(
        logging.getLogger("test.refusals"),
        interval_s=60.0,
        answers_per_interval=5,
        clock=lambda: now[0],
    )
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        answered = [refusals.refused(f"stop #{n}") for n in range(1000)]
        now[0] = 59.0
        refusals.tick()
        assert len(caplog.records) == 1  # the interval is not over yet
        now[0] = 60.0
        refusals.tick()
        now[0] = 61.0
        refusals.refused("start #1000")
        refusals.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "stop #0" in lines[0]
    assert "999 more command(s) refused in 60 s (latest: stop #999)" in lines[1]
    assert "start #1000" in lines[2]
    assert answered.count(True) == 5
    assert refusals.total == 1001


async def test_ten_thousand_spammed_commands_give_a_few_log_lines_and_bounded_answers(
    open_broker: Broker, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone on an open broker floods the command topic of a daemon without a user:
    every command is refused, the log gets the first one and a count, the outbox (and so
    the alerts behind it) at most one interval's answers."""
    caplog.set_level(logging.INFO, logger="cellguard.daemon.mqtt")
    spam = 10_000
    publisher = anonymous_publisher(open_broker.port, outbox)
    started = time.perf_counter()
    async with user_client(open_broker.port, None, "spammer") as spammer, running(publisher):
        await spammer.subscribe(f"{PREFIX}/command_result/#", qos=1)
        await spammer.subscribe(f"{PREFIX}/alerts/#", qos=1)
        for n in range(spam):
            body = json.dumps({"action": "stop", "request_id": f"spam-{n}"})
            await spammer.publish(COMMAND_TOPIC, body, qos=0)
            if n % 500 == 499:  # flow control: the broker drops what a slow reader misses
                await until(lambda n=n: publisher.refusals.total > n, "the daemon to catch up")
        await until(lambda: publisher.refusals.total == spam, "all refusals")
        # The alert path still works right after the flood, behind the answers.
        await publisher.publish_event(halt())
        answers = 0
        async with asyncio.timeout(WAIT_S):
            async for message in spammer.messages:
                if "/alerts/" in message.topic.value:
                    break
                answers += 1
    elapsed_s = time.perf_counter() - started
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "cellguard.daemon.mqtt" and "refused" in r.getMessage()
    ]
    print(
        f"\nspam: {spam} commands in {elapsed_s:.1f} s -> {len(lines)} log line(s), "
        f"{answers} command_result answer(s); {lines[-1]!r}"
    )
    assert publisher.commands_waiting == 0
    assert len(lines) == 2
    assert f"{spam - 1} more command(s) refused" in lines[1]
    assert 1 <= answers <= 20


# -- the topic prefix and the shipped ACL -----------------------------------------------------


def _acl_section(user: str) -> list[tuple[str, str]]:
    rules: list[tuple[str, str]] = []
    current = None
    for raw in (DEPLOY / "acl").read_text().splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            current = words[1]
        elif words[0] == "topic" and current == user:
            rules.append((words[1], words[2]))
    return rules


def test_the_acl_rules_checked_at_start_are_those_of_the_shipped_file() -> None:
    assert list(SHIPPED_ACL_DAEMON_RULES) == _acl_section("cellguard")


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("cellguard/+/alerts/#", "cellguard/lab1/alerts/i/c", True),
        ("cellguard/+/alerts/#", "cellguard/lab1/alerts", True),
        ("cellguard/+/alerts/#", "cellguard/a/b/alerts/i/c", False),
        ("cellguard/+/daemon", "cellguard/lab1/daemon", True),
        ("cellguard/+/daemon", "cellguard/lab1/daemon/x", False),
        ("cellguard/+/daemon", "lab1/daemon", False),
    ],
)
def test_topic_matches_like_mosquitto(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


@pytest.mark.parametrize("prefix", ["lab1", "cellguard/lab1/pc2", "cellguard", "cg/lab1"])
def test_a_prefix_the_shipped_acl_cannot_match_is_warned_about_at_load(
    tmp_path: Path, prefix: str
) -> None:
    config = parse_config(
        _mqtt_config(tmp_path, f'topic_prefix = "{prefix}"\nusername = "cellguard"\n')
    )
    (warning,) = config.warnings
    assert warning.startswith(f"mqtt.topic_prefix: topic_prefix {prefix!r} does not fit")
    assert "'cellguard/+/alerts/#'" in warning
    ok = parse_config(_mqtt_config(tmp_path, f'topic_prefix = "{PREFIX}"\nusername = "c"\n'))
    assert ok.warnings == ()


async def test_the_warned_prefix_really_loses_alerts_at_the_shipped_broker(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """What the warning is for: with 'cellguard/lab1/pc2' the broker drops the daemon's
    alert without an error, while the same alert under the fitting prefix arrives."""
    bad_prefix = "cellguard/lab1/pc2"
    assert acl_mismatch(bad_prefix) is not None
    assert acl_mismatch(PREFIX) is None
    tags = ChannelTags("ct4008-a", "21-1-3", test_id="T1")
    with Outbox(tmp_path / "bad.sqlite") as bad_box, Outbox(tmp_path / "ok.sqlite") as ok_box:
        bad = MqttPublisher(
            "127.0.0.1",
            mosquitto.port,
            bad_prefix,
            username="cellguard",
            password=PASSWORDS["cellguard"],
            client_id="bad-prefix",
            outbox=bad_box,
        )
        good = make_publisher(mosquitto.port, ok_box)
        async with (
            user_client(mosquitto.port, "operator", "op") as operator,
            running(bad),
            running(good),
        ):
            await operator.subscribe("cellguard/#", qos=1)
            await bad.publish_event(halt(1, tags))
            await until(lambda: bad_box.count() == 0, "the broker to acknowledge")
            await good.publish_event(halt(2, tags))
            async with asyncio.timeout(WAIT_S):
                async for message in operator.messages:
                    if "/alerts/" in message.topic.value:
                        break
    assert message.topic.value == f"{PREFIX}/alerts/ct4008-a/21-1-3"


# -- secrets in the configuration ------------------------------------------------------------


def _secret_config(tmp_path: Path, influx: str, mqtt: str) -> str:
    return (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[influxdb]\nurl = "http://127.0.0.1:8086"\norg = "lab"\nbucket = "b"\n{influx}'
        f'[mqtt]\nhost = "127.0.0.1"\ntopic_prefix = "{PREFIX}"\nusername = "cellguard"\n{mqtt}'
        '[[instruments]]\nname = "ct"\ndriver = "neware"\nhost = "127.0.0.1"\nport = 502\n'
        "poll_interval_s = 1\n"
    )


def test_inline_secrets_and_world_readable_secret_files_are_warned_about_by_key(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("influx-token\n")
    token_file.chmod(0o644)
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("mqtt-pw\n")
    password_file.chmod(0o600)
    config = parse_config(
        _secret_config(tmp_path, f'token_file = "{token_file}"\n', 'password = "mqtt-inline-pw"\n')
    )
    warnings = "\n".join(config.warnings)
    assert len(config.warnings) == 2, warnings
    assert "influxdb.token_file:" in warnings
    assert "readable by every user (mode 644)" in warnings
    assert "mqtt.password: the MQTT password is written inline" in warnings
    assert "mqtt-inline-pw" not in warnings
    assert "influx-token" not in warnings

    quiet = parse_config(
        _secret_config(tmp_path, 'token_env = "TOKEN"\n', f'password_file = "{password_file}"\n'),
        env={"TOKEN": "t"},
    )
    assert quiet.warnings == ()
    token_file.chmod(0o640)  # group-readable is the systemd EnvironmentFile habit
    inline_token = parse_config(_secret_config(tmp_path, 'token = "tok"\n', ""))
    assert [w.split(":")[0] for w in inline_token.warnings] == ["influxdb.token"]


# -- credentials never reach a log line -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("InfluxDB at http://lab:s3cr3t@influx:8086 is unreachable", "http://lab:***@influx:8086"),
        ("broker mqtt://cellguard:pa:ss@host:1883 gone", "mqtt://cellguard:***@host:1883"),
        ("POST http://influx/write?org=lab&token=s3cr3t&b=x", "?org=lab&token=***&b=x"),
        ("GET http://influx/query?u=lab&p=s3cr3t", "?u=***&p=***"),
        ("header Authorization: Token s3cr3t-s3cr3t", "Authorization: Token ***"),
    ],
)
def test_redact_hides_url_passwords_query_tokens_and_auth_headers(line: str, shown: str) -> None:
    redacted = redact(line)
    assert "s3cr3t" not in redacted
    assert "pa:ss" not in redacted
    assert shown in redacted


def test_redact_leaves_plain_urls_alone() -> None:
    line = "InfluxDB at http://127.0.0.1:8086 bucket cycling, mqtt 10.0.0.5:1883"
    assert redact(line) == line


def test_the_cli_installs_a_filter_that_redacts_every_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After ``cellguard ...`` set up logging, a sink's outage line with the URL, its
    arguments and a traceback come out of every root handler redacted."""
    config = tmp_path / "c.toml"
    config.write_text(_mqtt_config(tmp_path, f'topic_prefix = "{PREFIX}"\n'))
    root = logging.getLogger()
    try:
        assert main(["status", str(config)]) == 0
        assert any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters)
        url = "http://lab:s3cr3t@127.0.0.1:9/api/v2/write?org=lab&token=t0ken-s3cr3t"
        sink_log = logging.getLogger("cellguard.daemon.influx")
        with caplog.at_level(logging.INFO):
            sink_log.warning("InfluxDB at %s is unreachable", url)
            try:
                raise OSError(f"cannot connect to {url}")
            except OSError:
                sink_log.exception("write failed")
    finally:
        for handler in root.handlers:
            for f in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(f)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "http://lab:***@127.0.0.1:9" in text
    assert "s3cr3t" not in text
    assert "s3cr3t" not in caplog.text


def test_the_banner_shows_no_url_password(tmp_path: Path) -> None:
    config = parse_config(
        _secret_config(tmp_path, "", "").replace(
            "http://127.0.0.1:8086", "http://lab:s3cr3t@127.0.0.1:8086/?token=s3cr3t"
        )
    )
    assert "s3cr3t" not in config.describe()
    assert "http://lab:***@127.0.0.1:8086" in config.describe()


async def test_serve_logs_the_anonymous_commands_banner_and_every_config_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = VirtualClock()
    cells = {ChannelId(1, 1, 2): CellSlot(SimCellSpec("SEI", never_short=True))}
    sim = NewareSimulator(clock, cells=cells, seed=3, epoch=datetime(2026, 4, 1, 9))
    async with sim.serve() as (_, port):
        text = (
            f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
            '[influxdb]\nurl = "http://127.0.0.1:9"\norg = "lab"\nbucket = "b"\n'
            'token = "inline-token"\n'
            '[mqtt]\nhost = "127.0.0.1"\nport = 9\ntopic_prefix = "lab1"\n'
            "allow_anonymous_commands = true\n"
            f'[[instruments]]\nname = "ct"\ndriver = "neware"\nhost = "127.0.0.1"\n'
            f"port = {port}\npoll_interval_s = 60\n"
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(parse_config(text), stop=stop, clock=clock))
        try:
            await until(
                lambda: any("config <config>:" in r.getMessage() for r in caplog.records),
                "the start-up log",
            )
        finally:
            stop.set()
            await task
    logged = [r.getMessage() for r in caplog.records]
    (banner,) = [line for line in logged if line.startswith("cellguard starting")]
    assert "ACCEPTED WITHOUT A BROKER LOGIN (allow_anonymous_commands = true)" in banner
    warnings = [line for line in logged if line.startswith("config <config>:")]
    assert any("influxdb.token: the InfluxDB API token is written inline" in w for w in warnings)
    assert any(
        "mqtt.topic_prefix: topic_prefix 'lab1'" in w and "'cellguard/+/alerts/#'" in w
        for w in warnings
    )


@pytest.mark.parametrize(
    ("section", "value", "key"),
    [
        ("mqtt", "mqtt://cellguard:s3cr3t@broker:1883", "mqtt.host"),
        ("mqtt", "cellguard:s3cr3t@broker", "mqtt.host"),
        ("influxdb", "influx://lab:s3cr3t@influx:8086", "influxdb.url"),
    ],
)
def test_a_refused_url_with_credentials_is_not_repeated_in_the_error(
    tmp_path: Path, section: str, value: str, key: str
) -> None:
    text = _secret_config(tmp_path, "", "")
    old = '"127.0.0.1"' if section == "mqtt" else '"http://127.0.0.1:8086"'
    head, _, tail = text.partition(f"[{section}]")
    with pytest.raises(ConfigError) as refused:
        parse_config(head + f"[{section}]" + tail.replace(old, json.dumps(value), 1))
    message = str(refused.value)
    assert message.startswith(f"{key}: must be")
    assert "s3cr3t" not in message
    assert "***" in message
