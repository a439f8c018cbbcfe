"""A real Mosquitto for the MQTT tests, configured from the files cellguard ships.

The broker's config is ``deploy/mosquitto/mosquitto.conf`` with only the listener
(loopback, a free port), the file paths and ``user root`` changed, and its ACL is
``deploy/mosquitto/acl`` verbatim, so the tests check the shipped access rules.
A test module wraps :func:`running_mosquitto` in its own fixture (pytest only loads
``conftest.py`` files, and this one belongs to the MQTT tests alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from cellguard.drivers import VirtualClock

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PREFIX = "cellguard/test"
PASSWORDS = {"cellguard": "daemon-pw", "operator": "operator-pw", "intruder": "intruder-pw"}
START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/mosquitto/mosquitto.conf no longer has {old!r}"
    return text.replace(old, new)


@dataclass
class Broker:
    """A mosquitto process that a test can stop and start again on the same port."""

    binary: str
    workdir: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> None:
        self.workdir.mkdir(exist_ok=True)
        passwd = self.workdir / "passwd"
        passwd.unlink(missing_ok=True)
        passwd_tool = shutil.which("mosquitto_passwd")
        assert passwd_tool, "mosquitto_passwd is missing: apt-get install -y mosquitto"
        for i, (user, password) in enumerate(PASSWORDS.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run([passwd_tool, *create, "-b", str(passwd), user, password], check=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        text = (DEPLOY / "mosquitto.conf").read_text()
        text = _replace_once(text, "\nlistener 1883\n", f"\nlistener {self.port} 127.0.0.1\n")
        text = _replace_once(text, "/mosquitto/config/passwd", str(passwd))
        text = _replace_once(text, "/mosquitto/config/acl", str(DEPLOY / "acl"))
        text = _replace_once(text, "/mosquitto/data/", f"{self.workdir / 'data'}/")
        # As root mosquitto would switch to the "mosquitto" user, who cannot read tmp_path.
        self.conf.write_text(text + "\nuser root\n")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )

    async def start(self) -> None:
        """Start mosquitto and return once its port accepts connections."""
        assert self.process is None, "broker already running"
        self.process = await asyncio.to_thread(self._spawn)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    if self.process.poll() is not None:
                        pytest.fail(f"mosquitto exited at start:\n{self.log_path.read_text()}")
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    except OSError:
                        await asyncio.sleep(0.02)  # polling for readiness, not timing
                        continue
                    writer.close()
                    await writer.wait_closed()
                    return
        except TimeoutError:
            self.kill()
            pytest.fail(f"mosquitto did not listen within {START_TIMEOUT_S} s")

    async def stop(self) -> None:
        """Terminate mosquitto by PID (it saves its persistence file) and wait."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        await asyncio.to_thread(process.wait, START_TIMEOUT_S)

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait()


def find_mosquitto() -> str:
    """The mosquitto binary; fails the test (never skips) when it is not installed."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients")


@contextlib.asynccontextmanager
async def running_mosquitto(workdir: Path) -> AsyncIterator[Broker]:
    """A running mosquitto with the shipped config and ACL and three users.

    The MQTT guarantees are only checked against a real broker, so a missing binary
    fails the test instead of skipping it.
    """
    broker = Broker(binary=find_mosquitto(), workdir=workdir)
    broker.write_config()
    await broker.start()
    try:
        yield broker
    finally:
        try:
            await broker.stop()
        finally:
            broker.kill()


class TcpProxy:
    """A TCP relay in front of the broker whose connections a test can cut at will.

    Cutting them (``drop()``) is an unclean death of the daemon's link: the broker sees
    the socket close without a DISCONNECT and publishes the last will.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def drop(self) -> None:
        """Abort every relayed connection at once, on both sides."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def _handle(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(down_w)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            down_w.transport.abort()
            self._writers.discard(down_w)
            self._handlers.discard(task)
            return
        self._writers.add(up_w)
        try:
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(_pump(down_r, up_w))
                pumps.create_task(_pump(up_r, down_w))
        finally:
            for w in (up_w, down_w):
                w.transport.abort()
                self._writers.discard(w)
            self._handlers.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


async def command_result(
    operator: aiomqtt.Client, clock: VirtualClock, poll_s: float, wait_s: float = 20.0
) -> aiomqtt.Message:
    """The next ``command_result`` the operator receives, the virtual clock moving one
    poll at a time until it comes.

    A command is run between two polls, and it reaches the daemon through the broker
    in wall time: a test that advanced the clock a fixed number of polls after
    publishing it waited for ever when the broker took longer than those polls (a
    loaded CI machine).
    """

    async def receive() -> aiomqtt.Message:
        async for message in operator.messages:
            if "command_result" in str(message.topic):
                return message
        raise AssertionError("the operator's connection ended before a command_result")

    waiter = asyncio.ensure_future(receive())
    try:
        async with asyncio.timeout(wait_s):
            while not waiter.done():
                await clock.advance(poll_s)
                await asyncio.wait({waiter}, timeout=0.01)
        return waiter.result()
    finally:
        waiter.cancel()
