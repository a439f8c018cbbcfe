"""Async client of Maccor's MacNet over its JSON port: status, start, suspend, direct control.

One request at a time. Every request carries ``"id": 1987``, as every example of
Maccor's help and pymacnet do (pymacnet's MaccorSpoofer answers 1987 whatever was
sent, so a fresh id per request would not be echoed by it); a reply is matched by that
id, its function and its channel, or the link is out of step and closed (a late reply
is never taken for the next request's). A timeout, a lost link or a cancellation
mid-request closes the connection; reconnecting is the caller's policy
(:meth:`MaccorClient.connect`).

Channels are 0-based here, as on the wire (``Chan``).

Given ``bin_port``, the client also opens the binary port at :meth:`MaccorClient.connect`
and offers its commands as :attr:`MaccorClient.binary` (:mod:`._bin_client`).
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar, Protocol

from cellguard.drivers._framed import FramedClient
from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    ProtocolViolation,
)
from cellguard.drivers.maccor._bin_client import MaccorBinaryClient
from cellguard.drivers.maccor._codec import (
    JsonError,
    JsonSplitter,
    MalformedFrame,
    decode_json_reply,
    decode_state,
    encode_json_request,
    float_field,
    int_field,
    str_field,
)
from cellguard.drivers.maccor._messages import (
    AUX_READINGS,
    CHARGE_MODES,
    CURRENT_RANGES,
    CURRENTS_MULTIPLE,
    DEFAULT_JSON_PORT,
    FUNCTION_NAMES,
    GENERAL_INFO,
    MAX_STATUS_CHANNELS,
    RESET,
    RESUME,
    SET_DIRECT_OUTPUT,
    SET_SAFETY,
    SET_VARIABLE,
    START_DIRECT,
    START_TEST,
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
from cellguard.drivers.maccor._transport import MacNetTransport

__all__ = ["DEFAULT_TIMEOUT_S", "MaccorClient", "MaccorWireTap"]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
REQUEST_ID = 1987
"""The JSON-RPC id of every request (Maccor's examples use it)."""
_SAFETY_ECHO_TOLERANCE = 1e-3  # the tester echoes singles: 4.3 comes back 4.30000019


class MaccorWireTap(Protocol):
    """Timestamps at the wire (``time.perf_counter()`` s), for ``bench/``."""

    def reply_arrived(self, t_s: float) -> None: ...

    def request_written(self, function: tuple[int, int], t_s: float) -> None: ...


class MaccorClient(FramedClient):
    """One MacNet JSON connection to a Maccor tester (or a simulator of it)."""

    tap: MaccorWireTap | None = None
    _server: ClassVar[str] = "the Maccor MacNet server"
    _link_name: ClassVar[str] = "Maccor MacNet"
    _log: ClassVar[logging.Logger] = _log

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_JSON_PORT,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        bin_port: int | None = None,
    ) -> None:
        super().__init__(host, port, timeout_s=timeout_s)
        self.general_info: dict[str, object] = {}
        self._binary = (
            None if bin_port is None else MaccorBinaryClient(host, bin_port, timeout_s=timeout_s)
        )

    @property
    def binary(self) -> MaccorBinaryClient:
        """The binary port's commands (rest, suspend, status of one channel...)."""
        if self._binary is None:
            raise ConfigError(
                field="bin_port",
                problem="not given: this client speaks the JSON port only "
                "(MacNet_TCP_Port, 57560 by default, is the binary port)",
            )
        return self._binary

    async def aclose(self) -> None:
        await super().aclose()
        if self._binary is not None:
            await self._binary.aclose()

    # ------------------------------------------------------------ connection

    def _new_splitter(self) -> JsonSplitter:
        return JsonSplitter()

    @property
    def channel_count(self) -> int:
        """``TestChannels`` of (1, 2), read at connect (0 before)."""
        value = self.general_info.get("TestChannels", 0)
        return value if isinstance(value, int) else 0

    async def connect(self) -> dict[str, object]:
        """Open the link and read the general system information (1, 2)."""
        async with self._lock:
            await self._drop_link()
            self._transport = await MacNetTransport.open(self.host, self.port, self.timeout_s)
            try:
                info = await self._exchange(GENERAL_INFO, {})
                int_field(info, "TestChannels", "result")
            except BaseException:
                await self._drop_link()
                raise
            self.general_info = info
        if self._binary is not None:
            self._binary.channel_count = self.channel_count
            try:
                await self._binary.connect()
            except BaseException:
                # Both links or neither: a half-connected client would fail later, unclearly.
                await self.aclose()
                raise
        _log.info(
            "connected to Maccor MacNet %s: %s, %d channels",
            self._where,
            info.get("SystemID", "?"),
            self.channel_count,
        )
        return info

    # ------------------------------------------------------------ round trips

    async def _exchange(
        self, function: tuple[int, int], params: dict[str, object]
    ) -> dict[str, object]:
        """Send one request and return its reply's ``result``; the caller holds the lock."""
        name = FUNCTION_NAMES.get(function, str(function))
        request_id = REQUEST_ID
        async with self._round_trip(f"{name} {function}") as transport:
            await transport.send(encode_json_request(function, params, request_id))
            if self.tap is not None:
                self.tap.request_written(function, time.perf_counter())
            reply = decode_json_reply(await self._next_frame(transport))
        if reply.request_id != request_id:
            await self._lose_link(f"reply id {reply.request_id!r}, asked {request_id}")
            msg = (
                f"the Maccor MacNet server at {self._where} answered id {reply.request_id!r} "
                f"to request id {request_id} ({name}): out of step"
            )
            raise ProtocolViolation(msg)
        if isinstance(reply, JsonError):
            target = params.get("Chan")
            raise CommandRefused(
                command=name,
                targets=[f"channel {target}"] if target is not None else [],
                detail=f"{reply.message} (JSON-RPC {reply.code})"
                + (f": {reply.data}" if reply.data is not None else ""),
            )
        if reply.function != function:
            await self._lose_link(f"reply to {reply.function}, asked {function}")
            msg = (
                f"the Maccor MacNet server at {self._where} answered {reply.function} to "
                f"{function} ({name}): out of step"
            )
            raise ProtocolViolation(msg)
        return reply.result

    async def request(
        self, function: tuple[int, int], params: dict[str, object]
    ) -> dict[str, object]:
        """Any MacNet function: its reply's ``result``."""
        async with self._lock:
            return await self._exchange(function, params)

    def _chan(self, channel: int) -> dict[str, object]:
        count = self.channel_count
        if not 0 <= channel < (count or 0xFFFF):
            raise ConfigError(
                field="channel",
                problem=f"{channel} is not a channel of this {count}-channel tester "
                f"(0-based: 0..{max(count - 1, 0)})",
            )
        return {"Chan": channel}

    async def _command(
        self, function: tuple[int, int], channel: int, params: dict[str, object] | None = None
    ) -> None:
        result = await self.request(function, self._chan(channel) | (params or {}))
        outcome = str_field(result, "Result", "result")
        if outcome != "OK":
            raise CommandRefused(
                command=FUNCTION_NAMES[function], targets=[f"channel {channel}"], detail=outcome
            )

    # ------------------------------------------------------------ reading

    async def system_info(self) -> dict[str, object]:
        return await self.request(SYSTEM_INFO, {})

    async def state(self, channel: int) -> ChannelState:
        """All status and readings of one channel (4, 7)."""
        result = await self.request(STATUS_ONE, self._chan(channel))
        state = decode_state(result)
        if state.channel != channel:
            await self._lose_link(f"status of channel {state.channel} where {channel} was asked")
            msg = (
                f"the Maccor MacNet server at {self._where} answered for channel "
                f"{state.channel} where {channel} was asked: out of step"
            )
            raise ProtocolViolation(msg)
        return state

    async def statuses(
        self, first: int = 0, count: int | None = None
    ) -> list[tuple[int, int, int]]:
        """``(RF1, RF2, Stat)`` of ``count`` channels from ``first`` (4, 1), 128 per request."""
        total = self.channel_count - first if count is None else count
        out: list[tuple[int, int, int]] = []
        while len(out) < total:
            chunk = min(MAX_STATUS_CHANNELS, total - len(out))
            params = self._chan(first + len(out)) | {"Len": chunk}
            result = await self.request(STATUS_MULTIPLE, params)
            status = result.get("Status")
            if not isinstance(status, list) or not status:
                raise MalformedFrame(
                    field="result.Status", problem=f"{status!r} is not a non-empty list"
                )
            for i, item in enumerate(status):
                if not isinstance(item, dict):
                    raise MalformedFrame(
                        field=f"result.Status[{i}]", problem=f"{item!r} is not an object"
                    )
                where = f"result.Status[{i}]"
                out.append(
                    (
                        int_field(item, "RF1", where, 0, 0xFF),
                        int_field(item, "RF2", where, 0, 0xFF),
                        int_field(item, "Stat", where),
                    )
                )
        return out[:total]

    async def voltages(self, first: int = 0, count: int | None = None) -> list[float]:
        """Voltage (V) of ``count`` channels from ``first`` (4, 2), 128 per request."""
        return await self._readings(VOLTAGES_MULTIPLE, "Voltage", first, count)

    async def currents(self, first: int = 0, count: int | None = None) -> list[float]:
        """Current (A) of ``count`` channels from ``first`` (4, 3), 128 per request."""
        return await self._readings(CURRENTS_MULTIPLE, "Current", first, count)

    async def _readings(
        self, function: tuple[int, int], key: str, first: int, count: int | None
    ) -> list[float]:
        total = self.channel_count - first if count is None else count
        out: list[float] = []
        while len(out) < total:
            chunk = min(MAX_STATUS_CHANNELS, total - len(out))
            params = self._chan(first + len(out)) | {"Len": chunk}
            result = await self.request(function, params)
            values = result.get(key)
            if not isinstance(values, list) or not values:
                raise MalformedFrame(
                    field=f"result.{key}", problem=f"{values!r} is not a non-empty list"
                )
            out += [float_field({"v": v}, "v", f"result.{key}[{i}]") for i, v in enumerate(values)]
        return out[:total]

    async def aux_values(self, channel: int) -> list[float]:
        result = await self.request(AUX_READINGS, self._chan(channel))
        values = result.get("AuxValues")
        if not isinstance(values, list):
            raise MalformedFrame(field="result.AuxValues", problem=f"{values!r} is not a list")
        return [float_field({"v": v}, "v", f"result.AuxValues[{i}]") for i, v in enumerate(values)]

    # ------------------------------------------------------------ control

    async def start_test(self, channel: int, procedure: str, test_name: str = "Random") -> None:
        """Start ``procedure`` (a .000 file on the tester, without the extension)."""
        params: dict[str, object] = {
            "TestName": test_name,
            "ProcName": procedure,
            "Comment": "started by cellguard",
            "Crate": 1,
            "ChamberNum": 0,
        }
        await self._command(START_TEST, channel, params)

    async def suspend(self, channel: int) -> None:
        """Suspend the channel's test: output off at once, the test kept (resumable)."""
        await self._command(SUSPEND, channel)

    async def resume(self, channel: int) -> None:
        await self._command(RESUME, channel)

    async def reset(self, channel: int) -> None:
        """End the channel's test and make it available."""
        await self._command(RESET, channel)

    async def start_direct(
        self,
        channel: int,
        output: DirectOutput,
        *,
        test_name: str = "Random",
        record_interval_s: float = 1.0,
    ) -> None:
        """Start direct mode with ``output`` (6, 7)."""
        params = _direct_params(output) | {
            "TestName": test_name,
            "DataTime": record_interval_s,
            "DataV": 0,
            "DataI": 0,
        }
        await self._command(START_DIRECT, channel, params)

    async def set_direct_output(self, channel: int, output: DirectOutput) -> None:
        """Change the direct-mode set-point (6, 8); at most one per 100 ms per channel."""
        await self._command(SET_DIRECT_OUTPUT, channel, _direct_params(output))

    async def set_variable(self, channel: int, number: int, value: float) -> None:
        if number not in VARIABLE_NUMBERS:
            raise ConfigError(field="number", problem=f"must be 1..15 (VAR1..VAR15), got {number}")
        await self._command(SET_VARIABLE, channel, {"VarNum": number, "Value": value})

    async def set_safety(self, channel: int, limits: SafetyLimits) -> SafetyLimits:
        """Programme the channel's own safety limits (6, 10); the echo must match."""
        sent = {
            "VSafeMax": limits.voltage_max_v,
            "VSafeMin": limits.voltage_min_v,
            "ISafeChg": limits.charge_current_max_a,
            "ISafeDis": limits.discharge_current_max_a,
            "PBatSafeChg": limits.charge_power_max_w,
            "PBatSafeDis": limits.discharge_power_max_w,
        }
        result = await self.request(SET_SAFETY, self._chan(channel) | sent)
        for key, value in sent.items():
            echoed = float_field(result, key, "result")
            if abs(echoed - value) > _SAFETY_ECHO_TOLERANCE * max(1.0, abs(value)):
                raise CommandRefused(
                    command="set safety",
                    targets=[f"channel {channel}"],
                    detail=f"{key} {value} was sent, the tester holds {echoed}",
                )
        return limits


def _direct_params(output: DirectOutput) -> dict[str, object]:
    if output.mode not in CHARGE_MODES:
        raise ConfigError(field="mode", problem=f"must be 'C', 'D' or 'R', got {output.mode!r}")
    if output.current_range not in CURRENT_RANGES:
        raise ConfigError(
            field="current_range", problem=f"must be 1..4, got {output.current_range}"
        )
    return {
        "Current": output.current_a,
        "Voltage": output.voltage_v,
        "Power": output.power_w,
        "Resistance": output.resistance_ohm,
        "CurrentRange": output.current_range,
        "ChMode": output.mode,
    }
