"""The channel guard over an Arbin cycler (MITS Pro's CTI): poll, judge, halt at once.

One :class:`ArbinSupervisor` owns one CTI connection and every watched channel on
it. Each poll is one ``GET_CHANNELS_INFO`` for every channel (~0.45 MB at 256
channels); each running channel's value is judged by its detector as soon as its
record of the feedback is in, and a halt verdict sends ``STOP_SCHEDULE`` for that
channel there and then, while the rest of the feedback still arrives, before
anything else is done with the poll (status, events, samples), then reads the
channel back until it no longer runs (the shared halt path of
:mod:`cellguard.daemon.guard.core`).

Monitor mode: MITS Pro runs its own schedule; cellguard judges and halts. Run mode:
cellguard assigns the configured schedule (a .sdx MITS Pro knows) and starts it,
once; a halted, stopped or finished channel is never started again by a reconnect.

No backfill: CTI reports the present value of each channel only; it has no history
by position as the Neware API's ``download`` has. What the cycler recorded while the
link was down (or the daemon was stopped) stays in MITS Pro's own results and is not
fetched or judged here: the stored series has a gap there, and the reconnect says so
in an ``available`` event with the gap's length.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cellguard.daemon.guard import ChannelState
from cellguard.daemon.guard.links.present_value import PresentValueGuard, PresentValueRuntime
from cellguard.drivers.arbin import (
    ArbinClient,
    ChannelReading,
    ChannelStatus,
    StopsSent,
    status_name,
)
from cellguard.drivers.files import StepKind
from cellguard.protocols.detectors import DetectorSettings, Verdict

log = logging.getLogger(__name__)

__all__ = ["ArbinChannelSpec", "ArbinSupervisor", "step_kind_of_status"]

# "[3] 2: Step_B, Discharge": MITS Pro's "[cycle] step: name, type".
_STEP_AND_CYCLE = re.compile(r"^\s*\[(\d+)\]\s*(\d+)\s*:")
# How an instrument that ended a test says so, and the state the channel then takes.
_ENDED: dict[int, ChannelState] = {
    ChannelStatus.IDLE: "stopped",
    ChannelStatus.IDLE_FROM_MCU: "stopped",
    ChannelStatus.FINISHED: "finished",
    ChannelStatus.UNSAFE: "protected",
    ChannelStatus.ERROR: "protected",
    ChannelStatus.DAQ_MEMORY_UNSAFE: "protected",
}


def step_kind_of_status(status: int) -> StepKind:
    """The detectors' step kind of an Arbin channel status.

    Charge and discharge do not say whether the current or the voltage is held: the
    detector then tells from the data (UNKNOWN), as it does for files that do not say.
    """
    if status == ChannelStatus.REST:
        return StepKind.REST
    if status in (ChannelStatus.PAUSE, ChannelStatus.GO_PAUSE):
        return StepKind.PAUSE
    if status in (
        ChannelStatus.AC_IMPEDANCE,
        ChannelStatus.ACI_CELL,
        ChannelStatus.ACR,
        ChannelStatus.INTERNAL_RESISTANCE,
    ):
        return StepKind.IMPEDANCE
    if status == ChannelStatus.PULSE:
        return StepKind.OTHER
    return StepKind.UNKNOWN


@dataclass(frozen=True)
class ArbinChannelSpec:
    """A watched channel: which one (1-based, as MITS Pro shows it), what cell, what to do."""

    channel: int
    cell_type: str  # "symmetric" | "asymmetric" | "full"
    interphase: str = ""
    mode: str = "monitor"  # "monitor" | "run"
    schedule: str | None = None  # run mode: the .sdx to assign and start
    detector: DetectorSettings | None = None

    @property
    def index(self) -> int:
        """The channel's index on the wire (0-based)."""
        return self.channel - 1


ArbinRuntime = PresentValueRuntime[ArbinChannelSpec]


class ArbinSupervisor(PresentValueGuard[ArbinClient, ArbinChannelSpec, ChannelReading]):
    """Polls one Arbin cycler over CTI and guards its configured channels."""

    _log: ClassVar[logging.Logger] = log
    _device: ClassVar[str] = "cycler"
    _program_word: ClassVar[str] = "schedule"
    _no_protocol: ClassVar[str] = "an Arbin channel runs a MITS Pro schedule, not a protocol script"
    _gap_note: ClassVar[str] = (
        "CTI has no recorded history, so the samples of the gap are not backfilled "
        "(they are in MITS Pro's own results) and were not judged"
    )
    _test_name_max: ClassVar[int] = 72
    _ended: ClassVar[Mapping[int, ChannelState]] = _ENDED

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The stops sent during this poll's feedback and how each went, until the
        # halt path takes them (:meth:`_halt_channel`).
        self._stops_sent: StopsSent = {}

    # ------------------------------------------------------------ CTI's verbs and words

    async def _read(self, client: ArbinClient) -> dict[int, ChannelReading]:
        return await client.channels_info()

    def _program(self, spec: ArbinChannelSpec) -> str | None:
        return spec.schedule

    def _busy_words(self, reading: ChannelReading) -> str:
        return f"runs {reading.test_name!r} already"

    async def _launch(self, client: ArbinClient, runtime: ArbinRuntime, test_name: str) -> str:
        spec = runtime.spec
        assert spec.schedule is not None
        await client.assign_schedule(spec.index, spec.schedule)
        await client.start(spec.index, test_name)
        return ""

    async def _still_running(self, client: ArbinClient, indexes: Collection[int]) -> list[int]:
        readings = await client.channels_info()
        return [i for i in indexes if i in readings and readings[i].running]

    def _no_action(self, action: str) -> str:
        return f"CTI has no {action}: use MITS Pro's Monitor and Control window"

    def _step_kind(self, reading: ChannelReading) -> StepKind:
        return step_kind_of_status(reading.status)

    def _step_and_cycle(self, reading: ChannelReading) -> tuple[int | None, int | None]:
        return _step_and_cycle(reading.step_and_cycle)

    def _capacity_and_energy(self, reading: ChannelReading) -> tuple[float, float]:
        return (
            reading.charge_capacity_ah - reading.discharge_capacity_ah,
            reading.charge_energy_wh - reading.discharge_energy_wh,
        )

    def _status_code(self, reading: ChannelReading) -> int:
        return reading.status

    def _status_text(self, reading: ChannelReading) -> str:
        return reading.status_name

    def _status_name(self, status: int) -> str:
        return status_name(status)

    def _new_test_note(self, reading: ChannelReading) -> str:
        return f"a new test runs: {reading.test_name!r}"

    # ------------------------------------------------------------ the live stream

    async def poll_once(self, client: ArbinClient) -> None:
        """One channel-info request for every channel; each running channel is judged as
        soon as its record of the feedback is in, and one judged failing is stopped
        there and then (its "halting" persisted first), before the rest of the
        feedback is read. Status, samples and warnings wait for the whole feedback
        (checksum checked); the halts are then confirmed by reading the channels back."""
        self._outbox.flush()
        by_index = {runtime.spec.index: runtime for runtime in self.channels.values()}
        halts: list[ArbinRuntime] = []
        warns: list[tuple[ArbinRuntime, Verdict]] = []
        seen: list[tuple[ArbinRuntime, ChannelReading]] = []
        first_halt_s: list[float] = []  # when the first failing value was judged

        def judge(reading: ChannelReading) -> bool:
            runtime = by_index.get(reading.channel)
            if runtime is None:
                return False
            seen.append((runtime, reading))
            if reading.test_name != runtime.test_name or (
                reading.running and reading.test_time_s < runtime.last_test_time_s
            ):
                self._new_test(runtime, reading.test_name)
            verdict = self._judge(runtime, reading)
            if verdict is None:
                return False
            if verdict.severity == "halt":
                if not halts:
                    first_halt_s.append(time.perf_counter())
                self._mark_halting(runtime, verdict)
                halts.append(runtime)
                return True
            if verdict.severity == "warn":
                warns.append((runtime, verdict))
            return False

        _, self._stops_sent = await client.channels_info_judged(judge)
        self.polls += 1
        if halts:
            # The stops are out and answered; this reads back whether the channels still
            # run. A halt's latency counts from its failing value in hand, as before.
            await self._stop_attempt(client, halts, first_halt_s[0])
            await self._report_halts(halts)
        self._stops_sent = {}
        await self._after_judging(seen, warns)

    async def _halt_channel(self, client: ArbinClient, index: int) -> None:
        if index in self._stops_sent:
            # Sent while the feedback that carried the fault was still arriving.
            refusal = self._stops_sent.pop(index)
            if refusal is not None:
                raise refusal
            return
        await client.stop(index)


def _step_and_cycle(text: str) -> tuple[int | None, int | None]:
    """(step, cycle) from MITS Pro's "[cycle] step: ..." text; None where it says nothing."""
    match = _STEP_AND_CYCLE.match(text)
    if match is None:
        return None, None
    return int(match.group(2)), int(match.group(1))
