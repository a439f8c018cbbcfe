"""A simulated Arbin cycler behind MITS Pro's CTI server, with Li-metal cells inside.

It speaks the real wire protocol (the codec of :mod:`._codec`) over a real TCP
socket, so the same driver code runs against it and against MITS Pro, and so do
other people's clients (pycti-arbin). Each channel is a :class:`SimChannel` (the
channel model the Neware simulator uses: steps, limits, a :class:`SimCell`); what a
schedule (.sdx) does is a step program from :data:`BUILTIN_SCHEDULES`, as MITS Pro
would run the schedule file of that name.

What the simulator answers where Arbin's documents are silent (its own choices):
a stop of a channel that runs nothing succeeds (stop results 0x12/0x13 are "not
used" in Arbin's table); a command it does not implement gets a 128-byte feedback
with the mirrored code, channel -1 and result 0x11; a request that fails its
checksum gets no feedback (it is logged), and a stream that loses its framing
(bad token or length) is closed.

Time is pulled: channels are integrated up to the clock's present at each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cellguard.drivers._sim_channels import builtin_programs, channel_models
from cellguard.drivers.arbin._codec import (
    FrameSplitter,
    MalformedFrame,
    decode_request,
    encode_feedback,
)
from cellguard.drivers.arbin._messages import (
    ALL_CHANNELS,
    META_CODES,
    UNKNOWN_COMMAND_RESULT,
    AssignSchedule,
    ChannelReading,
    ChannelsInfoFeedback,
    ChannelStatus,
    Command,
    CommandFeedback,
    Feedback,
    GetChannelsInfo,
    Login,
    LoginFeedback,
    Request,
    SetMetaVariable,
    StartSchedule,
    StopSchedule,
    UnknownRequest,
    feedback_code,
)
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.drivers.neware import (
    CellSlot,
    SimChannel,
    StepFile,
)

log = logging.getLogger(__name__)

DEFAULT_USERNAME = "not a username"
DEFAULT_PASSWORD = "not a password"
"""pycti-arbin's default login, which its ArbinSpoofer accepts (it accepts any)."""

_HOURS = 3600.0

BUILTIN_SCHEDULES: Mapping[str, StepFile] = {
    f"{name}.sdx": program for name, program in builtin_programs().items()
}
"""What each schedule the simulated MITS Pro knows does (its .sdx files)."""

_STEP_STATUS = {
    "cc": ChannelStatus.CHARGE,
    "cccv": ChannelStatus.CHARGE,
    "cv": ChannelStatus.CHARGE,
    "dc": ChannelStatus.DISCHARGE,
    "cvd": ChannelStatus.DISCHARGE,
    "rest": ChannelStatus.REST,
}
_STEP_LABEL = {
    "cc": "Charge",
    "cccv": "Charge",
    "cv": "Charge",
    "dc": "Discharge",
    "cvd": "Discharge",
    "rest": "Rest",
}


@dataclass
class SimArbinChannel:
    """One channel of the simulated cycler: its model and what MITS Pro holds for it."""

    index: int
    model: SimChannel
    schedule: str = ""
    test_name: str = ""
    ever_started: bool = False
    meta_variables: dict[int, float] = field(default_factory=dict)
    # Cumulative capacities of the test, Ah (MITS Pro reports them per test).
    charge_capacity_ah: float = 0.0
    discharge_capacity_ah: float = 0.0

    @property
    def running(self) -> bool:
        return self.model.workstatus in ("working", "pause")


class ArbinSimulator:
    """A simulated Arbin cycler: :meth:`handle` is the whole server brain (request in,
    feedbacks out, no socket); :meth:`serve` puts it on TCP."""

    def __init__(
        self,
        clock: Clock,
        *,
        channels: int = 16,
        cells: Mapping[int, CellSlot] | None = None,
        login: tuple[str, str] | None = (DEFAULT_USERNAME, DEFAULT_PASSWORD),
        current_range_ma: float = 10.0,
        voltage_range_v: float = 5.0,
        schedules: Mapping[str, StepFile] | None = None,
        seed: int = 0,
        serial_number: str = "cellguard-sim",
    ) -> None:
        if not 1 <= channels <= 0xFFFF:
            raise ConfigError(field="channels", problem=f"must be 1..65535, got {channels}")
        self.clock = clock
        self.login = login
        self.serial_number = serial_number
        self.schedules = dict(BUILTIN_SCHEDULES if schedules is None else schedules)
        models = channel_models(
            clock,
            cells,
            channels=channels,
            seed=seed,
            current_range_ma=current_range_ma,
            voltage_range_v=voltage_range_v,
            not_on_instrument=lambda unknown: (
                f"channel indexes {unknown} are not on a {channels}-channel cycler"
            ),
        )
        self.channels = [SimArbinChannel(i, m) for i, m in enumerate(models)]
        self.requests_served = 0
        self.calls: dict[str, int] = {}

    def advance(self) -> None:
        """Integrate every channel up to the clock's present."""
        now_s = self.clock.now_s()
        for channel in self.channels:
            self._advance(channel, now_s)

    def _advance(self, channel: SimArbinChannel, now_s: float) -> None:
        before = channel.model.t_s
        channel.model.advance_to(now_s)
        # MITS Pro reports charge and discharge capacity of the whole test; the model
        # keeps the step's, so the present current is integrated over what passed.
        current_a = channel.model.inquire().current_a
        dt_h = max(0.0, channel.model.t_s - before) / _HOURS
        if current_a > 0:
            channel.charge_capacity_ah += current_a * dt_h
        elif current_a < 0:
            channel.discharge_capacity_ah -= current_a * dt_h

    # ------------------------------------------------------------ the brain

    def handle(self, request: Request) -> list[Feedback]:
        """The feedbacks MITS Pro sends for ``request`` (one, except start of several)."""
        self.requests_served += 1
        name = type(request).__name__
        self.calls[name] = self.calls.get(name, 0) + 1
        match request:
            case Login():
                return [self._login(request)]
            case GetChannelsInfo():
                return [self._channels_info(request)]
            case AssignSchedule():
                return [self._assign(request)]
            case StartSchedule():
                return self._start(request)
            case StopSchedule():
                return self._stop(request)
            case SetMetaVariable():
                return [self._set_mv(request)]
            case UnknownRequest():
                code = feedback_code(request.command_code)
                return [CommandFeedback(code, ALL_CHANNELS, UNKNOWN_COMMAND_RESULT)]

    def _login(self, request: Login) -> LoginFeedback:
        ok = self.login is None or (request.username, request.password) == self.login
        return LoginFeedback(
            result=1 if ok else 2,
            ip_address=bytes((127, 0, 0, 1)),
            serial_number=self.serial_number,
            note=f"cellguard simulated Arbin cycler, {len(self.channels)} channels",
            nickname="cellguard simulator",
            version=1,
            allow_control=1,
            channel_count=len(self.channels) if ok else 0,
        )

    def _find(self, index: int) -> SimArbinChannel | None:
        return self.channels[index] if 0 <= index < len(self.channels) else None

    def _channels_info(self, request: GetChannelsInfo) -> ChannelsInfoFeedback:
        now_s = self.clock.now_s()
        if request.channel == ALL_CHANNELS:
            wanted = list(self.channels)
        else:
            found = self._find(request.channel)
            wanted = [found] if found is not None else []
        readings = []
        for channel in wanted:
            self._advance(channel, now_s)
            reading = self._reading(channel)
            if request.selection == 2 and not channel.running:
                continue
            if request.selection == 3 and reading.status != ChannelStatus.UNSAFE:
                continue
            readings.append(reading)
        return ChannelsInfoFeedback(tuple(readings))

    def _reading(self, channel: SimArbinChannel) -> ChannelReading:
        record = channel.model.inquire()
        workstatus = channel.model.workstatus
        step = record.step_type or ""
        if workstatus == "working":
            status = _STEP_STATUS.get(step, ChannelStatus.RUNNING)
        elif workstatus == "pause":
            status = ChannelStatus.PAUSE
        elif workstatus == "protect":
            status = ChannelStatus.UNSAFE
        elif workstatus == "finish" and channel.ever_started:
            status = ChannelStatus.FINISHED
        else:
            status = ChannelStatus.IDLE
        running = channel.running
        step_and_cycle = (
            f"[{record.cycle_id}] {record.step_id}: Step_{record.step_id}, "
            f"{_STEP_LABEL.get(step, step)}"
            if running and record.step_id is not None
            else ""
        )
        return ChannelReading(
            channel=channel.index,
            status=int(status),
            schedule=channel.schedule,
            test_name=channel.test_name,
            exit_condition="" if running or not channel.ever_started else workstatus,
            step_and_cycle=step_and_cycle,
            master_channel=channel.index,
            test_time_s=record.total_time_s,
            step_time_s=record.relative_time_s,
            voltage_v=record.voltage_v,
            current_a=record.current_a,
            power_w=record.voltage_v * record.current_a,
            charge_capacity_ah=channel.charge_capacity_ah,
            discharge_capacity_ah=channel.discharge_capacity_ah,
        )

    def _assign(self, request: AssignSchedule) -> CommandFeedback:
        code = feedback_code(Command.ASSIGN_SCHEDULE)
        channel = self._find(request.channel)
        if channel is None:
            return CommandFeedback(code, request.channel, 0x10)
        if not request.schedule:
            return CommandFeedback(code, request.channel, 0x12)
        if request.schedule not in self.schedules:
            return CommandFeedback(code, request.channel, 0x13)
        if channel.running:
            return CommandFeedback(code, request.channel, 0x14)
        channel.schedule = request.schedule
        return CommandFeedback(code, request.channel, 0)

    def _start(self, request: StartSchedule) -> list[Feedback]:
        code = feedback_code(Command.START_SCHEDULE)
        if not request.channels:
            return [CommandFeedback(code, ALL_CHANNELS, 0x1F)]
        return [
            CommandFeedback(code, i, self._start_one(i, request.test_name))
            for i in request.channels
        ]

    def _start_one(self, index: int, test_name: str) -> int:
        channel = self._find(index)
        if channel is None:
            return 0x10
        if channel.running:
            return 0x12
        if not channel.schedule:
            return 0x15
        if not test_name:
            return 0x23
        if channel.model.cell is None:
            return 0x13
        now_s = self.clock.now_s()
        if not channel.model.start(
            self.schedules[channel.schedule], test_name, now_s, datetime.now()
        ):
            return 0x26  # the schedule does not fit the channel (safety pre-check)
        channel.test_name = test_name
        channel.ever_started = True
        channel.charge_capacity_ah = channel.discharge_capacity_ah = 0.0
        channel.meta_variables.clear()
        return 0

    def _stop(self, request: StopSchedule) -> list[Feedback]:
        code = feedback_code(Command.STOP_SCHEDULE)
        now_s = self.clock.now_s()
        if request.all_channels:
            for each in self.channels:
                each.model.stop(now_s)
            return [CommandFeedback(code, c.index, 0) for c in self.channels]
        channel = self._find(request.channel)
        if channel is None:
            return [CommandFeedback(code, request.channel, 0x10)]
        channel.model.stop(now_s)  # nothing running: nothing to do, still a success
        return [CommandFeedback(code, request.channel, 0)]

    def _set_mv(self, request: SetMetaVariable) -> CommandFeedback:
        code = feedback_code(Command.SET_META_VARIABLE)
        channel = self._find(request.channel)
        if channel is None or request.mv_type != 1 or request.value_type != 1:
            return CommandFeedback(code, request.channel, 0x10)
        if request.meta_code not in META_CODES:
            return CommandFeedback(code, request.channel, 0x11)
        self._advance(channel, self.clock.now_s())
        if not channel.running:
            return CommandFeedback(code, request.channel, 0x12)
        channel.meta_variables[request.meta_code] = request.value
        return CommandFeedback(code, request.channel, 0)

    # ------------------------------------------------------------ the socket

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[tuple[str, int]]:
        """Serve CTI on ``host:port`` (0: any free port); yields the bound address."""
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
            raise ConfigError(
                field="port", problem=f"cannot listen on {host}:{port}: {err.strerror}"
            ) from err
        bound = server.sockets[0].getsockname()
        try:
            yield str(bound[0]), int(bound[1])
        finally:
            server.close()
            # Closing the sockets ends each handler at its next read (cancelling the
            # tasks instead makes asyncio's streams log the cancellation as an error).
            for writer in list(connections.values()):
                writer.transport.abort()
            if connections:
                await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        splitter = FrameSplitter("request")
        peer = writer.get_extra_info("peername")
        try:
            while data := await reader.read(65536):
                for frame in splitter.feed(data):
                    try:
                        request = decode_request(frame)
                    except MalformedFrame as err:
                        log.warning("Arbin simulator: bad request from %s dropped: %s", peer, err)
                        continue
                    for feedback in self.handle(request):
                        writer.write(encode_feedback(feedback))
                await writer.drain()
        except (ConnectionError, CellguardError) as err:
            log.info("Arbin simulator: connection from %s ended: %s", peer, err)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await asyncio.shield(writer.wait_closed())
