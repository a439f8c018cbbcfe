"""Shared pieces of the fault suite (``test_fault_*.py``) and of ``bench/soak.py``.

A relay that cuts connections after a seeded number of bytes (a link that drops in
the middle of replies, repeatedly), a record of the commands a simulated instrument
received (counted from the instrument's side, not the daemon's), and the daemon's
config for a simulated CT-4008 with faulty and healthy cells.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._messages import CommandReply, Reply, Request, Start, Stop


class CuttingProxy:
    """A TCP relay to ``target_port`` that cuts each connection after a random byte count.

    While ``cutting`` is on, every new connection gets a budget (seeded) of bytes the
    server may send before both sides are aborted: most cuts land in the middle of a
    reply. ``cuts`` counts what was injected.
    """

    def __init__(self, target_port: int, *, seed: int, budget_bytes: tuple[int, int]) -> None:
        self.target_port = target_port
        self.port = 0
        self.cutting = True
        self.cuts = 0
        self.connections = 0
        # Stop requests to swallow (the link dies as the stop is sent): a halt whose
        # stop never reached the instrument must still be carried out.
        self.swallow_stops = 0
        self.stops_swallowed = 0
        self._rng = random.Random(seed)
        self._budget_bytes = budget_bytes
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(down_w)
        self.connections += 1
        budget = self._rng.randint(*self._budget_bytes) if self.cutting else None
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
                pumps.create_task(self._pump(down_r, up_w, None, upstream=True))
                pumps.create_task(self._pump(up_r, down_w, budget))
        finally:
            for w in (up_w, down_w):
                w.transport.abort()
                self._writers.discard(w)
            self._handlers.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        budget: int | None,
        *,
        upstream: bool = False,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if upstream and self.swallow_stops and b"<cmd>stop</cmd>" in data:
                    self.swallow_stops -= 1
                    self.stops_swallowed += 1
                    break
                if budget is not None and self.cutting:
                    if len(data) >= budget:
                        writer.write(data[:budget])
                        self.cuts += 1
                        break
                    budget -= len(data)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@dataclass
class CommandLog:
    """What a simulated instrument was told to do, per channel, as it saw it."""

    starts: Counter[str]
    starts_accepted: Counter[str]
    stops: Counter[str]
    stops_accepted: Counter[str]

    @classmethod
    def tap(cls, sim: NewareSimulator) -> CommandLog:
        """Record every start and stop ``sim`` answers (wraps its request handler)."""
        log = cls(Counter(), Counter(), Counter(), Counter())
        handle = sim.handle

        def recording(request: Request) -> Reply:
            reply = handle(request)
            if isinstance(request, Start | Stop) and isinstance(reply, CommandReply):
                asked, accepted = (
                    (log.starts, log.starts_accepted)
                    if isinstance(request, Start)
                    else (log.stops, log.stops_accepted)
                )
                for result in reply.items:
                    asked[str(result.address.channel)] += 1
                    if result.ok:
                        accepted[str(result.address.channel)] += 1
            return reply

        sim.handle = recording  # type: ignore[method-assign]
        return log


@contextlib.asynccontextmanager
async def ticking(sim: NewareSimulator) -> AsyncIterator[None]:
    """Bring the simulation up to the present every half second (as ``cellguard
    simulate`` does), so no request pays for a long stretch at once."""

    async def tick() -> None:
        while True:
            sim.advance()
            await asyncio.sleep(0.5)

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class PausableClock:
    """Wall time × ``speed`` that can be frozen: a simulated instrument served to a daemon
    running in another process (its own wall clock) that stops recording on ``pause()``,
    so what it recorded can be counted against what the daemon stored."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._wall0_s = time.monotonic()
        self._frozen_s: float | None = None

    def now_s(self) -> float:
        if self._frozen_s is not None:
            return self._frozen_s
        return (time.monotonic() - self._wall0_s) * self.speed

    def pause(self) -> None:
        self._frozen_s = self.now_s()

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s) / self.speed)


INSTRUMENT = "ct4008-fault"


def daemon_config(
    state_dir: str,
    port: int,
    channels: Sequence[ChannelId],
    *,
    poll_interval_s: float,
    download_interval_s: float,
    record_interval_s: float = 60.0,
    timeout_s: float = 5.0,
    extra: str = "",
) -> str:
    """A daemon config: every channel a symmetric 100|100 µm Li cell the daemon runs."""
    parts = [
        f'[daemon]\nstate_dir = "{state_dir}"\n',
        extra,
        f'[[instruments]]\nname = "{INSTRUMENT}"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        f"port = {port}\npoll_interval_s = {poll_interval_s}\n"
        f"download_interval_s = {download_interval_s}\ntimeout_s = {timeout_s}\n",
    ]
    for channel in channels:
        parts.append(
            f'[[channels]]\ninstrument = "{INSTRUMENT}"\nchannel = "{channel}"\nmode = "run"\n'
            'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, '
            'thin_li_um = 100, interphase = "SEI" }\n'
            'protocol = { kind = "galvanostatic", current_density_ma_cm2 = 0.5, '
            "areal_capacity_mah_cm2 = 0.5, cycles = 500, "
            f"record_interval_s = {record_interval_s} }}\n"
        )
    return "\n".join(parts)


async def spawn_daemon(config: Path, log_path: Path) -> asyncio.subprocess.Process:
    """``cellguard run CONFIG`` as a real subprocess (its own wall clock), stderr to
    ``log_path``: what the kill -9 tests kill and start again."""
    with log_path.open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cellguard.daemon.cli",
            "run",
            str(config),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
