"""A simulated Neware CT-4008 behind a BTS 8 API server, on a real TCP socket.

Any BTS API client can use it: it speaks the same framing and XML as the real
server (see :mod:`._codec` for the quirks reproduced). Units of 8 channels (device
type 27), a ±5 V range and a configurable current range; each channel holds a
simulated Li cell (:mod:`cellguard.drivers.sim`). The step file named in ``start``
is read from the server's own disk, as the real BTS server does.

Options reproduce what differs between server versions (see ``realworld.md``):
``download_units="mA"`` reports ``download`` current, capacity and energy in mA, mAh
and mWh as a 2025 server does; ``first_cycle_id=0`` numbers ``download`` cycles from 0.

Simulated time comes from a :class:`~cellguard.drivers.clock.Clock`: a virtual clock
for tests and the demo (deterministic), a scaled wall clock when served to others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import assert_never

from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.drivers.neware._codec import (
    RequestSplitter,
    decode_request,
    encode_download_reply,
    encode_reply,
)
from cellguard.drivers.neware._messages import (
    DEVTYPE_CT4008,
    ChannelAddress,
    ChannelId,
    ChannelInfo,
    ChannelStatus,
    ClearFlag,
    CommandReply,
    CommandResult,
    Connect,
    ConnectReply,
    Continue,
    DataCount,
    DevInfoReply,
    Download,
    DownloadLog,
    DownloadLogReply,
    DownloadRecord,
    DownloadReply,
    DownloadStepLayer,
    DownloadUnits,
    GetChlStatus,
    GetDevInfo,
    Inquire,
    InquireDf,
    InquireDfReply,
    InquireReply,
    Light,
    LogRecord,
    OtherCommand,
    OtherReply,
    Pause,
    Reply,
    Request,
    Start,
    StartItem,
    StatusReply,
    StepLayerReply,
    Stop,
)
from cellguard.drivers.neware._simchannel import SimChannel
from cellguard.drivers.neware._stepfile import parse_step_file
from cellguard.drivers.sim import SimCell, SimCellSpec

log = logging.getLogger(__name__)

CHANNELS_PER_UNIT = 8
DEFAULT_PORT = 502
# Largest ``download`` answered in one reply; the real server pages at 1000 too.
MAX_DOWNLOAD_COUNT = 1000
DOWNLOAD_UNITS: tuple[str, ...] = ("A", "mA")
_CMD_RE = re.compile(rb"<cmd>\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*</cmd>")


@dataclass(frozen=True)
class CellSlot:
    """What sits in one channel of the simulated instrument."""

    spec: SimCellSpec
    label: str = ""


def demo_layout() -> tuple[CellSlot, ...]:
    """The paper's matrix on one 8-channel unit: 4 interphases × (100|100, 100|20 µm)."""
    slots = []
    for name in ("MII-1", "MII-2", "MII-3", "SEI"):
        slots.append(CellSlot(SimCellSpec(interphase=name), f"{name} symmetric 100|100"))
        slots.append(
            CellSlot(SimCellSpec(interphase=name, li_working_um=20.0), f"{name} asymmetric 100|20")
        )
    return tuple(slots)


class NewareSimulator:
    """The instrument: units of 8 channels, each running step files on a cell.

    ``handle`` is the whole server brain (request in, reply out) and needs no
    socket; :meth:`serve` puts it on TCP.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        units: int = 1,
        devid: int = 1,
        cells: Mapping[ChannelId, CellSlot] | None = None,
        current_range_ma: float = 10.0,
        voltage_range_v: float = 5.0,
        seed: int = 0,
        epoch: datetime | None = None,
        ip: str = "127.0.0.1",
        login: tuple[str, str] | None = None,
        wall_zone: tzinfo | None = None,
        download_units: DownloadUnits = "A",
        first_cycle_id: int = 1,
    ) -> None:
        """``epoch``: the wall time of clock zero; with ``wall_zone`` (the BTS PC's
        zone) a UTC instant (naive: UTC), and ``atime`` is that zone's local time."""
        if download_units not in DOWNLOAD_UNITS:
            raise ConfigError(
                field="download_units",
                problem=f"must be 'A' (A/Ah/Wh) or 'mA' (mA/mAh/mWh), got {download_units!r}",
            )
        if first_cycle_id not in (0, 1):
            raise ConfigError(
                field="first_cycle_id", problem=f"must be 0 or 1, got {first_cycle_id!r}"
            )
        self.download_units: DownloadUnits = download_units
        self.first_cycle_id = first_cycle_id
        if units < 1:
            raise ConfigError(field="units", problem="must be >= 1 (8 channels each)")
        if not current_range_ma > 0:
            raise ConfigError(field="current_range_ma", problem="must be > 0 mA")
        self.clock = clock
        self.devid = devid
        self.ip = ip
        self.current_range_ma = current_range_ma
        self.voltage_range_v = voltage_range_v
        # Wall-clock time of clock zero: ``atime`` of recorded samples derives from it.
        self.epoch = epoch or datetime.now().replace(microsecond=0)
        if wall_zone is not None:
            self.epoch = self.epoch.replace(tzinfo=self.epoch.tzinfo or UTC).astimezone(UTC)
        if cells is None:
            layout = demo_layout()
            cells = {
                ChannelId(devid, unit, chl): layout[chl - 1]
                for unit in range(1, units + 1)
                for chl in range(1, CHANNELS_PER_UNIT + 1)
            }
        unknown = [str(c) for c in cells if c.devid != devid or not 1 <= c.subdevid <= units]
        if unknown:
            raise ConfigError(
                field="cells", problem=f"channels {', '.join(unknown)} are not on this instrument"
            )
        self._channels: dict[ChannelId, SimChannel] = {}
        now_s = clock.now_s()
        for unit in range(1, units + 1):
            for chl in range(1, CHANNELS_PER_UNIT + 1):
                cid = ChannelId(devid, unit, chl)
                slot = cells.get(cid)
                # A distinct, reproducible seed per channel from the simulator seed.
                cell_seed = seed * 1_000_003 + unit * 100 + chl
                cell = SimCell(slot.spec, cell_seed) if slot is not None else None
                self._channels[cid] = SimChannel(
                    ChannelAddress(cid, DEVTYPE_CT4008, ip),
                    cell,
                    current_range_ma=current_range_ma,
                    voltage_range_v=voltage_range_v,
                    now_s=now_s,
                    wall_zone=wall_zone,
                )
        self.labels = {cid: slot.label for cid, slot in cells.items()}
        self.requests_served = 0
        # (user name, password) the API accepts; None: any, as a factory-fresh server.
        self.login = login

    @property
    def channels(self) -> Mapping[ChannelId, SimChannel]:
        return self._channels

    def advance(self) -> None:
        """Bring every channel up to the clock's present."""
        now_s = self.clock.now_s()
        for channel in self._channels.values():
            channel.advance_to(now_s)

    def _wall_now(self) -> datetime:
        return self.epoch + timedelta(seconds=round(self.clock.now_s()))

    # ------------------------------------------------------------ the brain

    def handle(self, request: Request) -> Reply:
        """Answer one request as the BTS server would."""
        self.requests_served += 1
        # Only the channels a request names are brought up to the present (each is
        # pulled, not pushed, so the others lose nothing): on a 256-unit rack the
        # download of one channel must not integrate all 2,048.
        now_s = self.clock.now_s()
        for address in _addresses(request):
            channel = self._channels.get(address.channel)
            if channel is not None:
                channel.advance_to(now_s)
        match request:
            case Connect(username, password):
                return ConnectReply(ok=self.login is None or (username, password) == self.login)
            case GetDevInfo():
                return DevInfoReply(
                    tuple(
                        ChannelInfo(ch.address, ch.cell is not None)
                        for ch in self._channels.values()
                    ),
                    server_ip=self.ip,
                    server_port=3306,
                )
            case GetChlStatus(channels):
                return StatusReply(
                    tuple(
                        ChannelStatus(a, self._find(a).workstatus if self._has(a) else "stop")
                        for a in channels
                    )
                )
            case Inquire(channels):
                return InquireReply(
                    tuple(self._find(a).inquire() for a in channels if self._has(a))
                )
            case InquireDf(channels):
                return InquireDfReply(
                    tuple(
                        DataCount(
                            a,
                            self._find(a).test_id,
                            self._find(a).record_count,
                            self._find(a).workstatus != "working",
                        )
                        for a in channels
                        if self._has(a)
                    )
                )
            case Start(items):
                return CommandReply("start", self._start_batch(items))
            case Stop(channels):
                now_s = self.clock.now_s()
                return CommandReply(
                    "stop",
                    tuple(
                        CommandResult(a, self._has(a) and self._find(a).stop(now_s))
                        for a in channels
                    ),
                )
            case Pause(channels):
                now_s = self.clock.now_s()
                return CommandReply(
                    "setpause",
                    tuple(
                        CommandResult(a, self._has(a) and self._find(a).pause(now_s))
                        for a in channels
                    ),
                )
            case Continue(channels):
                now_s = self.clock.now_s()
                return CommandReply(
                    "continue",
                    tuple(
                        CommandResult(a, self._has(a) and self._find(a).resume(now_s))
                        for a in channels
                    ),
                )
            case ClearFlag(channels):
                # Nothing is flagged on a simulated unit: the real server answers false.
                return CommandReply("clearflag", tuple(CommandResult(a, False) for a in channels))
            case Light(channels):
                return CommandReply(
                    "light", tuple(CommandResult(a, self._has(a)) for a in channels)
                )
            case Download(address, start_pos, count) if not self._has(address):
                return DownloadReply(address, 0, start_pos, count, ())
            case DownloadLog(address) | DownloadStepLayer(address) if not self._has(address):
                return (
                    DownloadLogReply(address, 0, ())
                    if isinstance(request, DownloadLog)
                    else StepLayerReply(address, 0, ())
                )
            case Download(address, start_pos, count):
                channel = self._find(address)
                records = channel.download(start_pos, min(count, MAX_DOWNLOAD_COUNT))
                served = tuple(self._as_served(r) for r in records)
                return DownloadReply(address, channel.test_id, start_pos, count, served)
            case DownloadLog(address):
                channel = self._find(address)
                return DownloadLogReply(
                    address,
                    channel.test_id,
                    tuple(LogRecord(seq, code, wall) for seq, code, wall in channel.log()),
                )
            case DownloadStepLayer(address):
                channel = self._find(address)
                return StepLayerReply(address, channel.test_id, channel.step_layers())
            case OtherCommand(cmd, channels):
                return self._other(cmd, channels)
        assert_never(request)

    def _other(self, cmd: str, channels: tuple[ChannelAddress, ...]) -> OtherReply:
        """Commands beyond the basics: answered as a real server would, never silence."""
        now_s = self.clock.now_s()
        known = [a for a in channels if self._has(a)]

        def each(ok: Callable[[SimChannel], bool]) -> OtherReply:
            return OtherReply(
                cmd,
                tuple(CommandResult(a, self._has(a) and ok(self._find(a))) for a in channels),
                result=None if channels else "false",
            )

        match cmd:
            case "getpause":
                # A pause reserved or in force: only the latter exists here.
                return each(lambda ch: ch.workstatus == "pause")
            case "cancelpause":
                # Nothing is reserved on a simulated channel, so there is nothing to cancel.
                return each(lambda ch: False)
            case "resetalarm" | "chl_ctrl" | "reset":
                return each(lambda ch: True)
            case "broadcaststop" if not channels:
                # A whole device is named (devtype and devid only): every test on it stops.
                for channel in self._channels.values():
                    channel.stop(now_s)
                return OtherReply(cmd, result="ok")
            case "broadcaststop":
                return each(lambda ch: ch.stop(now_s))
            case "goto" | "parallel":
                # Jumping steps and paralleling channels are refused, not pretended.
                log.info("BTS simulator: %s refused for %d channel(s)", cmd, len(known))
                return each(lambda ch: False)
            case "getparallel":
                return each(lambda ch: False)  # no channel runs in parallel here
        return OtherReply(cmd, result="error", error=f"unknown command {cmd!r}")

    def _start_batch(self, items: tuple[StartItem, ...]) -> tuple[CommandResult, ...]:
        """Start each item; the channels started by one ``start`` share one ``testid``."""
        results = [
            CommandResult(
                item.address,
                self._has(item.address)
                and self._start(self._find(item.address), item.barcode, item.step_file_path),
            )
            for item in items
        ]
        started = [self._find(r.address) for r in results if r.ok]
        if started:
            # Above every started channel's own ids, so each channel's ids still grow.
            shared = max(ch.test_id for ch in started)
            for channel in started:
                channel.test_id = shared
        return tuple(results)

    def _as_served(self, record: DownloadRecord) -> DownloadRecord:
        """A recorded sample in this server's ``download`` units and cycle numbering."""
        if self.download_units == "A" and self.first_cycle_id == 1:
            return record
        scale = 1000.0 if self.download_units == "mA" else 1.0
        return record._replace(
            cycle_id=record.cycle_id - 1 + self.first_cycle_id,
            current_a=record.current_a * scale,
            capacity_ah=record.capacity_ah * scale,
            energy_wh=record.energy_wh * scale,
        )

    def respond(self, request: Request) -> bytes:
        """The reply frame to ``request``: ``encode_reply(handle(request))``, byte for byte.

        A ``download`` is joined from the channel's cached ``<data>`` lines (each
        recorded sample is encoded once), so serving history costs a join, not a
        formatting of every record for every request.
        """
        plain = self.download_units == "A" and self.first_cycle_id == 1
        if isinstance(request, Download) and self._has(request.address) and plain:
            self.requests_served += 1
            channel = self._find(request.address)
            channel.advance_to(self.clock.now_s())
            items = channel.download_items(
                request.start_pos, min(request.count, MAX_DOWNLOAD_COUNT)
            )
            return encode_download_reply(
                request.address, channel.test_id, request.start_pos, request.count, items
            )
        return encode_reply(self.handle(request))

    def _has(self, address: ChannelAddress) -> bool:
        return address.channel in self._channels

    def _find(self, address: ChannelAddress) -> SimChannel:
        try:
            return self._channels[address.channel]
        except KeyError:
            raise ConfigError(
                field="channel", problem=f"{address.channel} is not on this instrument"
            ) from None

    def _start(self, channel: SimChannel, barcode: str, path: str) -> bool:
        try:
            program = parse_step_file(Path(path).read_bytes())
        except (OSError, ConfigError) as err:
            log.warning("start %s refused: step file %s: %s", channel.address.channel, path, err)
            return False
        ok = channel.start(program, barcode, self.clock.now_s(), self._wall_now())
        if not ok and channel.last_refusal is not None:
            log.warning(
                "start %s refused: %s", channel.address.channel, channel.last_refusal.reason
            )
        return ok

    # ------------------------------------------------------------ the socket

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[tuple[str, int]]:
        """Serve the BTS API on ``host:port`` (0 = any free port); yields the bound address."""
        connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections[task] = writer
            try:
                await self._serve_connection(reader, writer)
            finally:
                connections.pop(task, None)

        try:
            server = await asyncio.start_server(on_connect, host, port)
        except OSError as err:
            problem = f"cannot listen on {host}:{port}: {err.strerror}"
            raise ConfigError(field="port", problem=problem) from err
        bound = server.sockets[0].getsockname()
        try:
            yield str(bound[0]), int(bound[1])
        finally:
            server.close()
            # Closing the sockets ends each handler at its next read. Cancelling the
            # handler tasks instead makes asyncio's stream machinery log the
            # cancellation as an error (it asks a cancelled task for its exception).
            for writer in list(connections.values()):
                writer.transport.abort()
            if connections:
                await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        splitter = RequestSplitter()
        peer = writer.get_extra_info("peername")
        try:
            while data := await reader.read(65536):
                for frame_bytes in splitter.feed(data):
                    try:
                        reply = self.respond(decode_request(frame_bytes))
                    except CellguardError as err:
                        # Never silence: a client waiting for its reply gets an error.
                        log.warning("BTS simulator: bad request from %s: %s", peer, err)
                        reply = encode_reply(_error_reply(frame_bytes, str(err)))
                    writer.write(reply)
                await writer.drain()
        except (ConnectionError, CellguardError) as err:
            log.info("BTS simulator: connection from %s ended: %s", peer, err)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await asyncio.shield(writer.wait_closed())


def _error_reply(frame_bytes: bytes, why: str) -> OtherReply:
    """The answer to a request that cannot be read, named after its ``<cmd>`` if any."""
    match = _CMD_RE.search(frame_bytes)
    cmd = match.group(1).decode("ascii") if match else "error"
    return OtherReply(cmd, result="error", error=why)


def _addresses(request: Request) -> tuple[ChannelAddress, ...]:
    """The channels ``request`` reads or commands."""
    match request:
        case Connect() | GetDevInfo():
            return ()
        case Start(items):
            return tuple(item.address for item in items)
        case (
            GetChlStatus(channels)
            | Inquire(channels)
            | InquireDf(channels)
            | Stop(channels)
            | Pause(channels)
            | Continue(channels)
            | ClearFlag(channels)
            | Light(channels)
            | OtherCommand(_, channels)
        ):
            return channels
        case Download(address) | DownloadLog(address) | DownloadStepLayer(address):
            return (address,)
    assert_never(request)
