"""MQTT alerts, statuses, availability and commands against a real, locked-down Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import PASSWORDS, PREFIX, Broker, TcpProxy, running_mosquitto

from cellguard.daemon.mqtt import (
    Command,
    CommandRejected,
    LogPublisher,
    MqttPublisher,
    Outbox,
    OutboxError,
    parse_command,
)
from cellguard.daemon.records import ChannelTags, EventRecord
from cellguard.drivers.errors import ConfigError

WAIT_S = 10.0
TAGS = ChannelTags("ct4008-a", "21-1-3", test_id="T42", interphase="LPSC", cell_type="symmetric")


def halt(n: int = 0, tags: ChannelTags = TAGS) -> EventRecord:
    return EventRecord(
        tags=tags,
        kind="halt",
        time_unix_s=1_700_000_000.0 + n,
        fault="short",
        subkind="hard",
        detail=f"voltage collapsed to 0.001 V (#{n})",
        values={"voltage_v": 0.001, "threshold_v": 0.005},
    )


def make_publisher(
    port: int, outbox: Outbox, *, client_id: str = "cellguard-test"
) -> MqttPublisher:
    return MqttPublisher(
        "127.0.0.1",
        port,
        PREFIX,
        username="cellguard",
        password=PASSWORDS["cellguard"],
        client_id=client_id,
        outbox=outbox,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        publish_timeout_s=5.0,
    )


def user_client(port: int, user: str | None, client_id: str, **kwargs: object) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=PASSWORDS.get(user or ""),
        identifier=client_id,
        **kwargs,  # type: ignore[arg-type]
    )


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(WAIT_S):
        return await anext(aiter(client.messages))


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher, *, wait_ready: bool = True) -> AsyncIterator[None]:
    """Run the publisher's connection loop for the block, then cancel it and wait."""
    ready = asyncio.Event()
    task = asyncio.create_task(publisher.run(ready=ready))
    try:
        if wait_ready:
            async with asyncio.timeout(WAIT_S):
                await ready.wait()
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    """A real mosquitto on a free loopback port, with deploy/mosquitto's config and ACL."""
    async with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox.in_state_dir(tmp_path / "state") as box:
        yield box


# -- alerts -------------------------------------------------------------------------------


async def test_halt_alert_reaches_subscriber_with_qos1_and_full_json(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """A halt is published QoS 1 on {prefix}/alerts/{instrument}/{channel} as documented JSON."""
    publisher = make_publisher(mosquitto.port, outbox)
    async with user_client(mosquitto.port, "operator", "op") as operator, running(publisher):
        await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
        event = halt()
        await publisher.publish_event(event)
        message = await next_message(operator)

        rtts_s = []
        for n in range(1, 21):
            t0 = time.perf_counter()
            await publisher.publish_event(halt(n))
            await next_message(operator)
            rtts_s.append(time.perf_counter() - t0)

    assert message.topic.value == f"{PREFIX}/alerts/ct4008-a/21-1-3"
    assert message.qos == 1
    assert not message.retain
    assert isinstance(message.payload, bytes)
    body = json.loads(message.payload)
    assert body["id"] == event.event_id
    assert body["kind"] == "halt"
    assert body["instrument"] == "ct4008-a"
    assert body["channel"] == "21-1-3"
    assert body["test_id"] == "T42"
    assert body["cell"] == {"interphase": "LPSC", "type": "symmetric"}
    assert body["time_unix_s"] == event.time_unix_s
    assert body["values"] == {"voltage_v": 0.001, "threshold_v": 0.005}
    assert body["fault"] == "short"
    assert "collapsed" in body["detail"]
    median_s = statistics.median(rtts_s)
    print(
        f"QoS 1 alert round trip (publish_event -> subscriber): median {median_s * 1000:.1f} ms,"
        f" max {max(rtts_s) * 1000:.1f} ms over {len(rtts_s)}"
    )
    assert median_s < 1.0


async def test_late_subscriber_sees_the_latest_retained_status(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """Statuses are retained; a subscriber that connects later gets the newest one."""
    publisher = make_publisher(mosquitto.port, outbox)
    topic = f"{PREFIX}/status/ct4008-a/21-1-3"
    async with user_client(mosquitto.port, "operator", "watch") as watcher, running(publisher):
        await watcher.subscribe(topic, qos=1)
        await publisher.publish_status(TAGS, {"state": "running", "voltage_v": 3.9})
        await publisher.publish_status(TAGS, {"state": "halted", "voltage_v": 0.0})
        while json.loads(await_payload(await next_message(watcher)))["state"] != "halted":
            pass
    async with user_client(mosquitto.port, "operator", "late") as late:
        await late.subscribe(topic, qos=1)
        message = await next_message(late)
    assert message.retain
    body = json.loads(await_payload(message))
    assert body == {
        "instrument": "ct4008-a",
        "channel": "21-1-3",
        "test_id": "T42",
        "state": "halted",
        "voltage_v": 0.0,
    }


def await_payload(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload


def test_outbox_keeps_only_the_latest_pending_status_per_topic(outbox: Outbox) -> None:
    """Statuses coalesce (latest wins); alerts never do, and order is oldest first."""
    a1 = outbox.add("p/alerts/i/c", b"a1", 1, False)
    outbox.add("p/status/i/c", b"s1", 1, True, replace=True)
    a2 = outbox.add("p/alerts/i/c", b"a2", 1, False)
    s2 = outbox.add("p/status/i/c", b"s2", 1, True, replace=True)
    pending = outbox.pending(10)
    assert [m.id for m in pending] == [a1, a2, s2]
    assert [m.payload for m in pending] == [b"a1", b"a2", b"s2"]
    assert pending[2].retain
    outbox.mark_sent(a1)
    outbox.mark_sent(a1)  # twice is harmless
    assert [m.id for m in outbox.pending(1)] == [a2]


# -- availability ---------------------------------------------------------------------------


async def test_last_will_says_offline_on_unclean_death_and_online_after_reconnect(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """{prefix}/daemon: online; the broker's last will says offline when the link dies;
    online again after the reconnect; offline after a clean stop (no will on clean stops).
    """
    topic = f"{PREFIX}/daemon"
    async with (
        TcpProxy(mosquitto.port) as proxy,
        user_client(mosquitto.port, "operator", "avail") as operator,
    ):
        await operator.subscribe(topic, qos=1)
        publisher = make_publisher(proxy.port, outbox)
        async with running(publisher):
            assert await_payload(await next_message(operator)) == b"online"
            proxy.drop()
            seen = await next_message(operator)
            assert await_payload(seen) == b"offline"
            assert await_payload(await next_message(operator)) == b"online"
            async with asyncio.timeout(WAIT_S):
                await publisher.wait_connected()
        assert await_payload(await next_message(operator)) == b"offline"
    async with user_client(mosquitto.port, "operator", "late") as late:
        await late.subscribe(topic, qos=1)
        retained = await next_message(late)
    assert retained.retain
    assert retained.payload == b"offline"


async def test_a_status_replaced_in_flight_from_memory_takes_no_alert_with_it(
    mosquitto: Broker, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outbox unwritable, so messages wait in memory. A newer status that replaces one
    whose publish is in flight must not take the next message, the halt alert, with it."""

    def disk_full(*_: object, **__: object) -> int:
        msg = f"cannot write to the MQTT outbox {outbox.path}: database or disk is full"
        raise OutboxError(msg)

    monkeypatch.setattr(outbox, "add", disk_full)
    publish = aiomqtt.Client.publish
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def held_status(self: aiomqtt.Client, topic: str, *args: object, **kw: object) -> None:
        if "/status/" in topic and not release.is_set():
            in_flight.set()
            await release.wait()
        await publish(self, topic, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(aiomqtt.Client, "publish", held_status)
    publisher = make_publisher(mosquitto.port, outbox)
    seen: list[str] = []
    async with user_client(mosquitto.port, "operator", "op") as operator, running(publisher):
        await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
        await operator.subscribe(f"{PREFIX}/status/#", qos=1)
        await publisher.publish_status(TAGS, {"state": "halting"})
        await publisher.publish_event(halt())
        async with asyncio.timeout(WAIT_S):
            await in_flight.wait()
        await publisher.publish_status(TAGS, {"state": "halted"})
        release.set()
        async with asyncio.timeout(WAIT_S):
            async for message in operator.messages:
                body = json.loads(await_payload(message))
                seen.append(body.get("kind") or body["state"])
                if {"halt", "halted"} <= set(seen):
                    break
    assert publisher.kept_in_memory == 3
    assert publisher.unsaved == 0
    assert seen.count("halt") == 1


# -- outages and restarts ------------------------------------------------------------------


async def test_alerts_raised_while_broker_is_down_are_kept_on_disk_and_sent_when_it_returns(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """Broker stops; three halts are stored; the broker restarts on the same port; the
    publisher reconnects and a persistent subscriber receives them, oldest first.
    """
    publisher = make_publisher(mosquitto.port, outbox)
    # A persistent QoS 1 session: the broker keeps what arrives while we are away.
    reader_kw = {"clean_session": False}
    async with user_client(mosquitto.port, "operator", "alert-reader", **reader_kw) as reader:
        await reader.subscribe(f"{PREFIX}/alerts/#", qos=1)
    async with running(publisher):
        await mosquitto.stop()
        events = [halt(n) for n in range(3)]
        for event in events:
            await publisher.publish_event(event)
        with Outbox(outbox.path) as on_disk:
            stored = [json.loads(m.payload)["id"] for m in on_disk.pending(10)]
        assert stored == [e.event_id for e in events]

        await mosquitto.start()
        async with user_client(mosquitto.port, "operator", "alert-reader", **reader_kw) as reader:
            got = [json.loads(await_payload(await next_message(reader)))["id"] for _ in events]
        async with asyncio.timeout(WAIT_S):
            await publisher.wait_connected()
    assert got == [e.event_id for e in events]


async def test_alerts_stored_before_a_daemon_restart_are_sent_by_the_next_daemon(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """A daemon that never reached the broker leaves its alerts in outbox.sqlite; the
    next daemon process (a new outbox and publisher on the same state_dir) sends them.
    """
    state_dir = tmp_path / "state"
    events = [halt(n) for n in range(3)]
    await mosquitto.stop()
    with Outbox.in_state_dir(state_dir) as first_box:
        first = make_publisher(mosquitto.port, first_box)
        async with running(first, wait_ready=False):
            for event in events:
                await first.publish_event(event)
            assert not first.connected

    await mosquitto.start()
    async with user_client(mosquitto.port, "operator", "op") as operator:
        await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
        with Outbox.in_state_dir(state_dir) as second_box:
            assert second_box.count() == 3
            second = make_publisher(mosquitto.port, second_box)
            async with running(second):
                got = [
                    json.loads(await_payload(await next_message(operator)))["id"] for _ in events
                ]
            assert second_box.count() == 0
    assert got == [e.event_id for e in events]


# -- commands ------------------------------------------------------------------------------


async def test_command_from_operator_is_delivered_and_answered(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """operator → {prefix}/command/{instrument}/{channel} → commands(); reply() answers."""
    publisher = make_publisher(mosquitto.port, outbox)
    async with user_client(mosquitto.port, "operator", "op") as operator, running(publisher):
        await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)
        await operator.publish(
            f"{PREFIX}/command/ct4008-a/21-1-3",
            json.dumps({"action": "stop", "request_id": "r-1"}),
            qos=1,
        )
        async with asyncio.timeout(WAIT_S):
            command = await anext(aiter(publisher.commands()))
        assert command == Command("ct4008-a", "21-1-3", "stop", "r-1")

        await publisher.reply(command, ok=True, detail="stopped")
        result = await next_message(operator)
    assert result.topic.value == f"{PREFIX}/command_result/ct4008-a/21-1-3"
    body = json.loads(await_payload(result))
    assert body["request_id"] == "r-1"
    assert body["ok"] is True
    assert body["detail"] == "stopped"


async def test_commands_from_intruder_daemon_user_or_anonymous_are_not_delivered(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """Only the operator may command: the broker's ACL drops an intruder's command and
    one forged by the daemon's own user, and refuses anonymous logins outright.
    """
    publisher = make_publisher(mosquitto.port, outbox)
    topic = f"{PREFIX}/command/ct4008-a/21-1-3"
    with pytest.raises(aiomqtt.MqttError):
        async with user_client(mosquitto.port, None, "anon"):
            pass
    async with running(publisher):
        for user in ("intruder", "cellguard"):
            async with user_client(mosquitto.port, user, f"forger-{user}") as forger:
                # QoS 1: the broker has handled (and dropped) it when publish() returns.
                await forger.publish(
                    topic, json.dumps({"action": "start", "request_id": f"{user}-1"}), qos=1
                )
        async with user_client(mosquitto.port, "operator", "op") as operator:
            await operator.publish(
                topic, json.dumps({"action": "stop", "request_id": "op-1"}), qos=1
            )
        async with asyncio.timeout(WAIT_S):
            first = await anext(aiter(publisher.commands()))
    assert first.request_id == "op-1"


async def test_intruder_cannot_read_alerts(mosquitto: Broker, outbox: Outbox) -> None:
    """A user with a password but no ACL entry receives nothing, though it may subscribe."""
    publisher = make_publisher(mosquitto.port, outbox)
    async with (
        user_client(mosquitto.port, "intruder", "nosy") as intruder,
        user_client(mosquitto.port, "operator", "op") as operator,
        running(publisher),
    ):
        await intruder.subscribe(f"{PREFIX}/#", qos=1)
        await operator.subscribe(f"{PREFIX}/alerts/#", qos=1)
        await publisher.publish_event(halt())
        await next_message(operator)
        # The broker fans a message out before it reads the intruder's next packet, and
        # TCP keeps order: once this round trip is done, a leaked alert would be queued.
        await intruder.subscribe(f"{PREFIX}/status/#", qos=1)
        assert len(intruder.messages) == 0


async def test_invalid_command_is_answered_with_the_reason_and_not_delivered(
    mosquitto: Broker, outbox: Outbox
) -> None:
    publisher = make_publisher(mosquitto.port, outbox)
    topic = f"{PREFIX}/command/ct4008-a/21-1-3"
    async with user_client(mosquitto.port, "operator", "op") as operator, running(publisher):
        await operator.subscribe(f"{PREFIX}/command_result/#", qos=1)
        await operator.publish(topic, json.dumps({"action": "explode", "request_id": "r-9"}), qos=1)
        bad = json.loads(await_payload(await next_message(operator)))
        await operator.publish(topic, b"stop please", qos=1)
        not_json = json.loads(await_payload(await next_message(operator)))
        await operator.publish(topic, json.dumps({"action": "pause", "request_id": "r-10"}), qos=1)
        async with asyncio.timeout(WAIT_S):
            first = await anext(aiter(publisher.commands()))
    assert bad["ok"] is False
    assert bad["request_id"] == "r-9"
    assert "'explode'" in bad["detail"]
    assert "stop" in bad["detail"]
    assert not_json["ok"] is False
    assert not_json["request_id"] is None
    assert "not JSON" in not_json["detail"]
    assert first == Command("ct4008-a", "21-1-3", "pause", "r-10")


@pytest.mark.parametrize(
    ("payload", "retained", "reason"),
    [
        (b'{"action": "stop"}', False, "request_id"),
        (b'{"action": "stop", "request_id": 7}', False, "request_id"),
        (b'["stop"]', False, "JSON object"),
        (b'{"action": "stop", "request_id": "a", "force": true}', False, "unknown key"),
        (b'{"action": "stop", "request_id": "a"}', True, "retained"),
        (b"\xff\xfe", False, "not JSON"),
        (b"x" * 70_000, False, "bytes"),
    ],
)
def test_parse_command_rejects_with_a_reason(payload: bytes, retained: bool, reason: str) -> None:
    parsed = parse_command("p/q", "p/q/command/i/c", payload, retained=retained)
    assert isinstance(parsed, CommandRejected)
    assert (parsed.instrument, parsed.channel) == ("i", "c")
    assert reason in parsed.reason


@pytest.mark.parametrize(
    "topic", ["p/q/status/i/c", "p/q/command/i", "p/q/command//c", "x/command/i/c"]
)
def test_parse_command_ignores_other_topics(topic: str) -> None:
    assert parse_command("p/q", topic, b'{"action": "stop", "request_id": "a"}') is None


@pytest.mark.parametrize(
    "prefix", ["", "/cellguard", "cellguard/", "cellguard/#", "a//b", "$SYS/x"]
)
def test_bad_topic_prefix_is_a_config_error(prefix: str, outbox: Outbox) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.topic_prefix"):
        MqttPublisher("h", 1883, prefix, client_id="c", outbox=outbox)


# -- without a broker ----------------------------------------------------------------------


async def test_log_publisher_logs_halts_as_warnings_and_has_no_commands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = LogPublisher()
    event = halt()
    with caplog.at_level(logging.INFO, logger="cellguard.daemon.mqtt"):
        await publisher.publish_event(event)
        await publisher.publish_status(TAGS, {"state": "halted"})
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "HALT" in record.getMessage()
    assert "ct4008-a/21-1-3" in record.getMessage()
    assert event.event_id in record.getMessage()
    assert [c async for c in publisher.commands()] == []

    ready = asyncio.Event()
    task = asyncio.create_task(publisher.run(ready=ready))
    async with asyncio.timeout(WAIT_S):
        await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_run_at_any_point_stops_it_promptly(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """Cancellation is never swallowed: connecting, announcing, subscribing or draining."""
    publisher = make_publisher(mosquitto.port, outbox)
    await publisher.publish_event(halt())
    for steps in range(0, 60, 3):
        task = asyncio.create_task(publisher.run())
        for _ in range(steps):
            await asyncio.sleep(0)  # walk the cancel point through the connection's life
        task.cancel()
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not publisher.connected
