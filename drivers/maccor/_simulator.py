"""A simulated Maccor tester (MacTest32's MacNet), with Li-metal cells inside.

It serves the real wire protocols over real TCP sockets: JSON-RPC on one port and
native binary MacNet on another, so cellguard's client and other people's (pymacnet)
run against it. Each channel is a :class:`SimChannel` (the Neware simulator's channel
model: steps, limits, a :class:`SimCell`); a test procedure is a step program from
:data:`BUILTIN_PROCEDURES`, as MacTest32 runs the ``.000`` file of that name; direct
mode is a one-step program replaced at each (6, 8).

Its own choices where the help is silent: a request for a channel the tester does
not have, or with a bad field, gets a JSON-RPC error "Illegal value" / "Invalid
params" naming the field (the help lists these messages, not their codes: cellguard
uses JSON-RPC's -32602 and -32600 family); a refused command answers ``Result`` with
the help's text on JSON and its code on the binary port; the channel's safety limits
(6, 10) are judged when the channel is integrated (at each request), a trip makes it
"Problem". On the binary port, (0, n) is echoed as the help says; a request for a
channel the tester lacks is answered with its own header and no data, a command it
does not carry out with result 0xFFFF, and a request cellguard cannot frame closes
the connection.

Time is pulled: channels are integrated up to the clock's present at each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cellguard.drivers._sim_channels import builtin_programs, channel_models
from cellguard.drivers.clock import Clock
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.drivers.maccor._codec import (
    BinaryFrame,
    BinarySplitter,
    JsonRequest,
    JsonSplitter,
    MalformedFrame,
    decode_bin_direct_output,
    decode_json_request,
    encode_bin,
    encode_bin_state,
    encode_json_error,
    encode_json_reply,
    float_field,
    int_field,
    str_field,
)
from cellguard.drivers.maccor._messages import (
    AUX_READINGS,
    CHARGE_MODES,
    CURRENT_RANGES,
    CURRENTS_MULTIPLE,
    DIRECT_OUTPUT_RESULTS,
    ECHO,
    GENERAL_INFO,
    MAX_STATUS_CHANNELS,
    RESET,
    RESUME,
    RF1_AVAILABLE,
    RF1_CHARGE,
    RF1_COMPLETE,
    RF1_DISCHARGE,
    RF1_PROBLEM,
    RF1_REST,
    RF1_SUSPENDED,
    RF2_NONE,
    RF2_NORMAL_END,
    RF2_SUSPENDED,
    RF2_VOLTAGE_SAFETY,
    SET_DIRECT_OUTPUT,
    SET_SAFETY,
    SET_VARIABLE,
    START_DIRECT,
    START_DIRECT_RESULTS,
    START_RESULTS,
    START_TEST,
    STAT_ACTIVE,
    STAT_AVAILABLE,
    STAT_COMPLETED,
    STAT_PROBLEM,
    STAT_SUSPENDED,
    STATUS_MULTIPLE,
    STATUS_ONE,
    SUSPEND,
    SYSTEM_INFO,
    VARIABLE_NUMBERS,
    VOLTAGES_MULTIPLE,
    ChannelState,
    DirectOutput,
    SafetyLimits,
)
from cellguard.drivers.neware import (
    CellSlot,
    SimChannel,
    Step,
    StepFile,
    StepType,
)

log = logging.getLogger(__name__)

_HOURS = 3600.0
_FOREVER_S = 5000 * _HOURS

BUILTIN_PROCEDURES: Mapping[str, StepFile] = builtin_programs()
"""What each procedure the simulated tester knows does (C:\\Maccor\\Procedure\\NAME.000)."""

# JSON-RPC 2.0's codes for the help's error messages.
_PARSE_ERROR = -32700
_INVALID_REQUEST = -32600
_INVALID_PARAMS = -32602
_METHOD_NOT_FOUND = -32601

_SINGLE_MAX = 3.4028234663852886e38


def _single(params: dict[str, object], name: str) -> float:
    """A Single field of a request: a JSON number within an IEEE 754 single's range."""
    value = float_field(params, name, "params")
    if abs(value) > _SINGLE_MAX:
        raise MalformedFrame(field=f"params.{name}", problem=f"{value} is beyond a Single's range")
    return value


_RF1_OF_STEP = {"cc": RF1_CHARGE, "cccv": RF1_CHARGE, "cv": RF1_CHARGE, "dc": RF1_DISCHARGE}


@dataclass
class SimMaccorChannel:
    index: int
    model: SimChannel
    test_name: str = ""
    procedure: str = ""
    direct: DirectOutput | None = None
    ever_started: bool = False
    problem: bool = False
    test_start_s: float = 0.0
    last_direct_s: float = -1.0
    safety: SafetyLimits | None = None
    variables: dict[int, float] = field(default_factory=dict)
    capacity_ah: float = 0.0
    energy_wh: float = 0.0

    @property
    def running(self) -> bool:
        return self.model.workstatus in ("working", "pause")


class _Refused(Exception):
    """A request the tester answers with a JSON-RPC error (message, field)."""

    def __init__(self, code: int, message: str, detail: str) -> None:
        self.code = code
        self.message = message
        self.detail = detail
        super().__init__(f"{message}: {detail}")


class MaccorSimulator:
    """A simulated Maccor tester: :meth:`handle_json` and :meth:`handle_binary` are the
    server's brain (a frame in, bytes out); :meth:`serve` puts both on TCP."""

    def __init__(
        self,
        clock: Clock,
        *,
        channels: int = 16,
        cells: Mapping[int, CellSlot] | None = None,
        current_range_ma: float = 10.0,
        voltage_range_v: float = 5.0,
        procedures: Mapping[str, StepFile] | None = None,
        seed: int = 0,
        system_id: str = "cellguard-sim",
    ) -> None:
        if not 1 <= channels <= 0xFFFE:
            raise ConfigError(field="channels", problem=f"must be 1..65534, got {channels}")
        self.clock = clock
        self.system_id = system_id
        self.procedures = dict(BUILTIN_PROCEDURES if procedures is None else procedures)
        self.current_range_a = current_range_ma / 1000.0
        self.voltage_range_v = voltage_range_v
        models = channel_models(
            clock,
            cells,
            channels=channels,
            seed=seed,
            current_range_ma=current_range_ma,
            voltage_range_v=voltage_range_v,
            not_on_instrument=lambda unknown: (
                f"channels {unknown} (0-based) are not on a {channels}-channel tester"
            ),
        )
        self.channels: list[SimMaccorChannel] = [
            SimMaccorChannel(i, m) for i, m in enumerate(models)
        ]
        self.requests_served = 0
        self.calls: dict[str, int] = {}

    # ------------------------------------------------------------ physics

    def advance(self) -> None:
        now_s = self.clock.now_s()
        for channel in self.channels:
            self._advance(channel, now_s)

    def _advance(self, channel: SimMaccorChannel, now_s: float) -> None:
        before = channel.model.t_s
        channel.model.advance_to(now_s)
        record = channel.model.inquire()
        dt_h = max(0.0, channel.model.t_s - before) / _HOURS
        channel.capacity_ah += abs(record.current_a) * dt_h
        channel.energy_wh += abs(record.current_a * record.voltage_v) * dt_h
        limits = channel.safety
        if limits is None or not channel.running:
            return
        tripped = (
            (limits.voltage_max_v > 0 and record.voltage_v > limits.voltage_max_v)
            or record.voltage_v < limits.voltage_min_v
            or (record.current_a > 0 and record.current_a > limits.charge_current_max_a > 0)
            or (record.current_a < 0 and -record.current_a > limits.discharge_current_max_a > 0)
        )
        if tripped:
            channel.model.stop(now_s)
            channel.problem = True

    def state(self, index: int) -> ChannelState:
        """What (4, 7) reports for channel ``index`` (0-based), integrated to now."""
        channel = self.channels[index]
        self._advance(channel, self.clock.now_s())
        record = channel.model.inquire()
        workstatus = channel.model.workstatus
        if channel.problem:
            stat, rf1, rf2 = STAT_PROBLEM, RF1_PROBLEM, RF2_VOLTAGE_SAFETY
        elif workstatus == "working":
            stat, rf2 = STAT_ACTIVE, 1
            rf1 = _RF1_OF_STEP.get(record.step_type or "", RF1_REST)
            if channel.direct is not None and channel.direct.mode == "R":
                rf1 = RF1_REST
        elif workstatus == "pause":
            stat, rf1, rf2 = STAT_SUSPENDED, RF1_SUSPENDED, RF2_SUSPENDED
        elif workstatus == "protect":
            stat, rf1, rf2 = STAT_PROBLEM, RF1_PROBLEM, RF2_VOLTAGE_SAFETY
        elif channel.ever_started:
            stat, rf1, rf2 = STAT_COMPLETED, RF1_COMPLETE, RF2_NORMAL_END
        else:
            stat, rf1, rf2 = STAT_AVAILABLE, RF1_AVAILABLE, RF2_NONE
        running = channel.running
        now_s = self.clock.now_s()
        return ChannelState(
            channel=index,
            rf1=rf1,
            rf2=rf2,
            stat=stat,
            last_record=channel.model.record_count,
            cycle=max(0, record.cycle_id - 1),
            step=record.step_id or 0,
            test_time_s=(now_s - channel.test_start_s) if running else 0.0,
            step_time_s=record.relative_time_s,
            capacity_ah=channel.capacity_ah,
            energy_wh=channel.energy_wh,
            current_a=record.current_a,
            voltage_v=record.voltage_v,
            tester_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        )

    # ------------------------------------------------------------ JSON brain

    def handle_json(self, frame: bytes) -> bytes:
        """The reply to one JSON frame (an error reply when it is malformed)."""
        self.requests_served += 1
        try:
            request = decode_json_request(frame)
        except MalformedFrame as err:
            code = _PARSE_ERROR if err.field == "frame" else _INVALID_REQUEST
            message = {
                "frame": "Parse error",
                "params.FClass": '"FClass" key does not exist or value syntax error',
                "params.FNum": '"FNum" key does not exist or value syntax error',
            }.get(err.field, "Method MacNet, jsonrpc 2.0 or id not found")
            if err.field == "params":
                code, message = _INVALID_PARAMS, "Invalid params"
            return encode_json_error(code, message, None, str(err))
        name = f"{request.function}"
        self.calls[name] = self.calls.get(name, 0) + 1
        try:
            result = self._dispatch(request)
        except MalformedFrame as err:
            return encode_json_error(
                _INVALID_PARAMS, "Invalid params", request.request_id, str(err)
            )
        except _Refused as err:
            return encode_json_error(err.code, err.message, request.request_id, err.detail)
        return encode_json_reply(result, request.request_id)

    def _channel(self, params: dict[str, object]) -> SimMaccorChannel:
        chan = params.get("Chan")
        if isinstance(chan, bool) or not isinstance(chan, int):
            raise _Refused(_INVALID_PARAMS, "Illegal value", f"Chan: {chan!r} is not an integer")
        if not 0 <= chan < len(self.channels):
            raise _Refused(
                _INVALID_PARAMS,
                "Illegal value",
                f"Chan: no channel {chan} (0-based) on this {len(self.channels)}-channel tester",
            )
        return self.channels[chan]

    def _dispatch(self, request: JsonRequest) -> dict[str, object]:
        fn = request.function
        params = request.params
        head: dict[str, object] = {"FClass": fn[0], "FNum": fn[1]}
        handlers: dict[tuple[int, int], Callable[[dict[str, object]], dict[str, object]]] = {
            SYSTEM_INFO: self._system_info,
            GENERAL_INFO: self._general_info,
            STATUS_MULTIPLE: self._status_multiple,
            VOLTAGES_MULTIPLE: lambda p: self._readings_multiple(p, "Voltage"),
            CURRENTS_MULTIPLE: lambda p: self._readings_multiple(p, "Current"),
            AUX_READINGS: self._aux,
            STATUS_ONE: self._status_one,
            START_TEST: self._start_test,
            SUSPEND: self._suspend,
            RESUME: self._resume,
            RESET: self._reset,
            START_DIRECT: self._start_direct,
            SET_DIRECT_OUTPUT: self._set_direct_json,
            SET_VARIABLE: self._set_variable,
            SET_SAFETY: self._set_safety,
        }
        if fn == ECHO:
            return dict(params)
        handler = handlers.get(fn)
        if handler is None:
            message = "Invalid FClass" if fn[0] not in {f[0] for f in handlers} else "Invalid FNum"
            raise _Refused(_METHOD_NOT_FOUND, message, f"({fn[0]}, {fn[1]}) is not served")
        return head | handler(params)

    def _system_info(self, params: dict[str, object]) -> dict[str, object]:
        return {
            "APIVersion": 1,
            "MacTest32EXEversionMajor": 3,
            "MacTest32EXEversionMinor": 2,
            "MacTest32EXEversionBuild": 0,
            "MacTest32DLLversionMajor": 3,
            "MacTest32DLLversionMinor": 2,
            "MacTest32DLLversionBuild": 0,
            "MacTest32ExeDT": "2026-01-01T00:00:00",
            "MacTest32DLLDT": "2026-01-01T00:00:00",
        }

    def _general_info(self, params: dict[str, object]) -> dict[str, object]:
        return {
            "SystemID": self.system_id,
            "SystemType": 0,
            "ControllerBoards": (len(self.channels) + 15) // 16,
            "TestChannels": len(self.channels),
            "AuxBoards": 0,
            "AuxChannels": 0,
            "SMB1Pos": 0,
            "SMB3Pos": 0,
        }

    def _status_multiple(self, params: dict[str, object]) -> dict[str, object]:
        first = self._channel(params).index
        count = int_field(params, "Len", "params", 1, MAX_STATUS_CHANNELS)
        last = min(len(self.channels), first + count)
        status = []
        for index in range(first, last):
            s = self.state(index)
            status.append({"RF1": s.rf1, "RF2": s.rf2, "Stat": s.stat})
        return {"Chan": first, "Len": len(status), "Status": status}

    def _readings_multiple(self, params: dict[str, object], key: str) -> dict[str, object]:
        # (4, 2) / (4, 3): "the actual voltage [current] of "Len" channels starting from
        # "Chan" [...] Up to 128 channels can be requested at the time."
        first = self._channel(params).index
        count = int_field(params, "Len", "params", 1, MAX_STATUS_CHANNELS)
        last = min(len(self.channels), first + count)
        states = [self.state(index) for index in range(first, last)]
        values = [s.voltage_v if key == "Voltage" else s.current_a for s in states]
        return {"Chan": first, "Len": len(values), key: values}

    def _aux(self, params: dict[str, object]) -> dict[str, object]:
        # One thermocouple per channel at room temperature: the cells have no thermal model.
        return {"Chan": self._channel(params).index, "Len": 1, "AuxValues": [25.0]}

    def _status_one(self, params: dict[str, object]) -> dict[str, object]:
        s = self.state(self._channel(params).index)
        return {
            "Chan": s.channel,
            "RF1": s.rf1,
            "RF2": s.rf2,
            "Stat": s.stat,
            "LastRecNum": s.last_record,
            "Cycle": s.cycle,
            "Step": s.step,
            "TestTime": s.test_time_s,
            "StepTime": s.step_time_s,
            "Capacity": s.capacity_ah,
            "Energy": s.energy_wh,
            "Current": s.current_a,
            "Voltage": s.voltage_v,
            "TesterTime": s.tester_time,
        }

    def _begin(self, channel: SimMaccorChannel, program: StepFile, name: str) -> bool:
        now_s = self.clock.now_s()
        if not channel.model.start(program, name, now_s, datetime.now(UTC)):
            return False
        channel.test_name = name
        channel.ever_started = True
        channel.problem = False
        channel.test_start_s = now_s
        channel.capacity_ah = channel.energy_wh = 0.0
        channel.variables.clear()
        return True

    def _start_test(self, params: dict[str, object]) -> dict[str, object]:
        channel = self._channel(params)
        procedure = str_field(params, "ProcName", "params").strip()
        name = str_field(params, "TestName", "params").strip()
        self._advance(channel, self.clock.now_s())
        code = 0
        if channel.running or channel.problem:
            code = 23
        elif procedure not in self.procedures:
            code = 14
        elif not name or not self._begin(channel, self.procedures[procedure], name):
            code = 22
        else:
            channel.procedure = procedure
            channel.direct = None
        return {"Chan": channel.index, "Result": START_RESULTS[code]}

    def _command(
        self, params: dict[str, object], action: Callable[[SimMaccorChannel], bool]
    ) -> dict[str, object]:
        channel = self._channel(params)
        self._advance(channel, self.clock.now_s())
        ok = action(channel)
        return {"Chan": channel.index, "Result": "OK" if ok else "Not possible in this state"}

    def _suspend(self, params: dict[str, object]) -> dict[str, object]:
        return self._command(params, lambda c: c.model.pause(self.clock.now_s()))

    def _resume(self, params: dict[str, object]) -> dict[str, object]:
        return self._command(params, lambda c: c.model.resume(self.clock.now_s()))

    def _reset(self, params: dict[str, object]) -> dict[str, object]:
        def reset(channel: SimMaccorChannel) -> bool:
            channel.model.stop(self.clock.now_s())
            channel.ever_started = channel.problem = False
            channel.direct = None
            return True

        return self._command(params, reset)

    def _direct_output(self, params: dict[str, object]) -> DirectOutput:
        mode = str_field(params, "ChMode", "params")
        if mode not in CHARGE_MODES:
            raise MalformedFrame(field="params.ChMode", problem=f"{mode!r} is not 'C', 'D' or 'R'")
        current_range = int_field(params, "CurrentRange", "params", 1, 4)
        return DirectOutput(
            current_a=_single(params, "Current"),
            voltage_v=_single(params, "Voltage"),
            power_w=_single(params, "Power"),
            mode=mode,
            current_range=current_range,
            resistance_ohm=_single(params, "Resistance"),
        )

    def _program(self, output: DirectOutput) -> StepFile:
        current_ma = abs(output.current_a) * 1000.0
        in_range_v = 0 < output.voltage_v <= self.voltage_range_v
        if output.mode == "R" or current_ma == 0:
            step = Step(StepType.REST, time_s=_FOREVER_S)
        elif output.mode == "C":
            # The voltage limits the charge: the channel stops there (no CV hold simulated).
            step = Step(
                StepType.CC_CHARGE,
                current_ma=current_ma,
                time_s=_FOREVER_S,
                stop_voltage_v=output.voltage_v if in_range_v else None,
            )
        else:
            step = Step(
                StepType.CC_DISCHARGE,
                current_ma=current_ma,
                time_s=_FOREVER_S,
                stop_voltage_v=output.voltage_v if in_range_v else None,
            )
        return StepFile(steps=(step, Step(StepType.END)), record_interval_s=1.0)

    def _start_direct(self, params: dict[str, object]) -> dict[str, object]:
        channel = self._channel(params)
        output = self._direct_output(params)
        name = str_field(params, "TestName", "params").strip() or "Random"
        self._advance(channel, self.clock.now_s())
        code = 0
        if channel.running or channel.problem:
            code = 2
        elif not self._begin(channel, self._program(output), name):
            code = 3
        else:
            channel.direct = output
            channel.procedure = ""
            channel.last_direct_s = self.clock.now_s()
        return {"Chan": channel.index, "Result": START_DIRECT_RESULTS[code]}

    def set_direct_output(self, channel: SimMaccorChannel, output: DirectOutput) -> int:
        """(6, 8) on ``channel``: the help's result code."""
        now_s = self.clock.now_s()
        self._advance(channel, now_s)
        if not channel.running:
            return 2
        if channel.direct is None:
            return 4
        if now_s - channel.last_direct_s < 0.1:
            return 3
        test_start_s, capacity_ah, energy_wh = (
            channel.test_start_s,
            channel.capacity_ah,
            channel.energy_wh,
        )
        channel.model.stop(now_s)
        if not self._begin(channel, self._program(output), channel.test_name):
            return 2
        # One direct-mode test goes on: its time and totals are not restarted.
        channel.test_start_s, channel.capacity_ah, channel.energy_wh = (
            test_start_s,
            capacity_ah,
            energy_wh,
        )
        channel.direct = output
        channel.last_direct_s = now_s
        return 0

    def _set_direct_json(self, params: dict[str, object]) -> dict[str, object]:
        channel = self._channel(params)
        code = self.set_direct_output(channel, self._direct_output(params))
        return {"Chan": channel.index, "Result": DIRECT_OUTPUT_RESULTS[code]}

    def _set_variable(self, params: dict[str, object]) -> dict[str, object]:
        channel = self._channel(params)
        number = int_field(
            params, "VarNum", "params", VARIABLE_NUMBERS.start, VARIABLE_NUMBERS.stop - 1
        )
        channel.variables[number] = _single(params, "Value")
        return {"Chan": channel.index, "Result": "OK"}

    def _set_safety(self, params: dict[str, object]) -> dict[str, object]:
        channel = self._channel(params)
        limits = SafetyLimits(
            voltage_max_v=_single(params, "VSafeMax"),
            voltage_min_v=_single(params, "VSafeMin"),
            charge_current_max_a=_single(params, "ISafeChg"),
            discharge_current_max_a=_single(params, "ISafeDis"),
            charge_power_max_w=_single(params, "PBatSafeChg"),
            discharge_power_max_w=_single(params, "PBatSafeDis"),
        )
        channel.safety = limits
        # The tester echoes what it holds, as singles (4.3 comes back 4.30000019...).
        single = struct.Struct("<f")

        def f32(value: float) -> float:
            return float(single.unpack(single.pack(value))[0])

        return {
            "Chan": channel.index,
            "VSafeMax": f32(limits.voltage_max_v),
            "VSafeMin": f32(limits.voltage_min_v),
            "ISafeChg": f32(limits.charge_current_max_a),
            "ISafeDis": f32(limits.discharge_current_max_a),
            "PBatSafeChg": f32(limits.charge_power_max_w),
            "PBatSafeDis": f32(limits.discharge_power_max_w),
        }

    # ------------------------------------------------------------ binary brain

    def handle_binary(self, frame: BinaryFrame) -> bytes:
        """The reply to one binary frame."""
        self.requests_served += 1
        name = f"bin{frame.function}"
        self.calls[name] = self.calls.get(name, 0) + 1
        fn = frame.function
        if fn[0] == ECHO[0]:
            # "For a Function Class of 0, the received message will be replied as is."
            return encode_bin(fn, frame.chan, frame.data, frame.length)
        if not 0 <= frame.chan < len(self.channels) and fn not in (SYSTEM_INFO, GENERAL_INFO):
            # No channel there: the reply carries the request's header and no data.
            return encode_bin(fn, frame.chan, b"")
        if fn == STATUS_ONE:
            return encode_bin_state(
                self.state(frame.chan), int(datetime.now(UTC).timestamp() * 1000)
            )
        if fn == STATUS_MULTIPLE:
            last = min(len(self.channels), frame.chan + min(frame.length, MAX_STATUS_CHANNELS))
            data = b"".join(
                struct.pack("<BBH", s.rf1, s.rf2, s.stat)
                for s in (self.state(i) for i in range(frame.chan, last))
            )
            return encode_bin(fn, frame.chan, data)
        result = 0xFFFF
        channel = self.channels[frame.chan] if 0 <= frame.chan < len(self.channels) else None
        now_s = self.clock.now_s()
        if channel is not None:
            if fn == SET_DIRECT_OUTPUT:
                try:
                    output = decode_bin_direct_output(frame)
                except MalformedFrame as err:
                    log.warning("Maccor simulator: bad (6, 8): %s", err)
                    output = None
                if output is None or output.current_range not in CURRENT_RANGES:
                    result = 0xFFFF
                else:
                    result = self.set_direct_output(channel, output)
            elif fn == SUSPEND:
                result = 0 if channel.model.pause(now_s) else 1
            elif fn == RESUME:
                result = 0 if channel.model.resume(now_s) else 1
            elif fn == RESET:
                channel.model.stop(now_s)
                channel.ever_started = channel.problem = False
                channel.direct = None
                result = 0
        return encode_bin(fn, frame.chan, struct.pack("<H", result))

    # ------------------------------------------------------------ sockets

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", json_port: int = 0, bin_port: int = 0
    ) -> AsyncIterator[tuple[str, int, int]]:
        """Serve JSON on ``json_port`` and binary on ``bin_port`` (0: any free port);
        yields ``(host, json_port, bin_port)`` as bound."""
        connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

        def handler(
            serve_one: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
        ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
            async def on_connect(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                task = asyncio.current_task()
                assert task is not None
                connections[task] = writer
                try:
                    await serve_one(reader, writer)  # type: ignore[misc]
                finally:
                    connections.pop(task, None)

            return on_connect

        servers: list[asyncio.Server] = []
        try:
            for port, serve_one in ((json_port, self._serve_json), (bin_port, self._serve_binary)):
                try:
                    servers.append(await asyncio.start_server(handler(serve_one), host, port))  # type: ignore[arg-type]
                except OSError as err:
                    name = "port" if serve_one == self._serve_json else "bin_port"
                    raise ConfigError(
                        field=name, problem=f"cannot listen on {host}:{port}: {err.strerror}"
                    ) from err
            bound_json = servers[0].sockets[0].getsockname()
            bound_bin = servers[1].sockets[0].getsockname()
            yield str(bound_json[0]), int(bound_json[1]), int(bound_bin[1])
        finally:
            for server in servers:
                server.close()
            for writer in list(connections.values()):
                writer.transport.abort()
            if connections:
                await asyncio.gather(*connections, return_exceptions=True)
            for server in servers:
                await server.wait_closed()

    async def _serve_json(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = JsonSplitter()
        peer = writer.get_extra_info("peername")
        try:
            while data := await reader.read(65536):
                try:
                    frames = splitter.feed(data)
                except MalformedFrame as err:
                    # Unframeable: answer once, then the stream cannot be trusted.
                    writer.write(encode_json_error(_PARSE_ERROR, "Parse error", None, str(err)))
                    await writer.drain()
                    break
                for frame in frames:
                    writer.write(self.handle_json(frame))
                await writer.drain()
        except (ConnectionError, CellguardError) as err:
            log.info("Maccor simulator: JSON connection from %s ended: %s", peer, err)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await asyncio.shield(writer.wait_closed())

    async def _serve_binary(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        splitter = BinarySplitter("request")
        peer = writer.get_extra_info("peername")
        try:
            while data := await reader.read(65536):
                for frame in splitter.feed(data):
                    writer.write(self.handle_binary(frame))
                await writer.drain()
        except (ConnectionError, CellguardError) as err:
            log.info("Maccor simulator: binary connection from %s ended: %s", peer, err)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await asyncio.shield(writer.wait_closed())
