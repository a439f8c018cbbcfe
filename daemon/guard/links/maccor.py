"""The channel guard over a Maccor tester (MacNet, JSON port): poll, judge, halt at once.

One :class:`MaccorSupervisor` owns one MacNet connection and every watched channel on
it. Each poll reads every watched channel with (4, 7) "all status and readings of one
channel": its voltage, current, state, step and test time come from one instant.
(4, 2)/(4, 3) read the voltage or the current of up to 128 channels per request, but
in separate requests, with no step or time: a pair of them is not one sample.
Each running channel's value is judged by its detector, and a halt verdict sends
(6, 3) *suspend* for that channel before anything else is done with the poll, then
reads the channel back until it is no longer active (the shared halt path of
:mod:`cellguard.daemon.guard.core`). Suspend, not reset: the output goes off at once
and the test and its data file stay on the tester for the operator to judge (a reset
ends the test and frees the channel for anyone's next start).

Monitor mode: MacTest32 runs its own procedure; cellguard judges and halts. Run mode:
cellguard programmes the channel's own safety limits (6, 10) when the instrument's
``current_limit_a`` is set (voltage at the detectors' range backstop), then starts
the configured procedure (6, 2), once; a halted, stopped or finished channel is never
started again by a reconnect.

No backfill: MacNet reports the present values of a channel only. The records of the
test are in MacTest32's data file, which the binary port's (1, 7) can send whole, in
500-byte blocks ("slow", says the help, which points to Maccor's MIMS instead), in a
format the MacNet help does not describe; cellguard does not fetch or parse it. What
the tester recorded while the link was down is therefore not judged here: the stored
series has a gap there, and the reconnect says so in an ``available`` event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from cellguard.daemon.guard import ChannelState
from cellguard.daemon.guard.links.present_value import PresentValueGuard, PresentValueRuntime
from cellguard.daemon.guard.ports import Publisher, SampleQueue, StateStore
from cellguard.drivers.clock import Clock
from cellguard.drivers.files import StepKind
from cellguard.drivers.maccor import ChannelState as Reading
from cellguard.drivers.maccor import MaccorClient, SafetyLimits, status_name
from cellguard.protocols.detectors import DetectorSettings, Verdict

log = logging.getLogger(__name__)

__all__ = ["MaccorChannelSpec", "MaccorSupervisor", "step_kind_of_rf1"]

# Stat of a channel whose test is over (or held), and the state the guard then takes.
_ENDED: dict[int, ChannelState] = {
    0: "stopped",  # Available
    3: "stopped",  # Suspended (by the operator or a Pause step)
    4: "finished",  # Completed
    5: "protected",  # Problem
    7: "stopped",  # Reset
}


def step_kind_of_rf1(rf1: int) -> StepKind:
    """The detectors' step kind of the controller board's RF1 code.

    Charge and discharge do not say whether current or voltage is held: the detector
    then tells from the data (UNKNOWN), as it does for files that do not say.
    """
    if rf1 == 4:
        return StepKind.REST
    if rf1 in (5, 30):
        return StepKind.PAUSE
    if rf1 == 26:
        return StepKind.IMPEDANCE
    return StepKind.UNKNOWN


@dataclass(frozen=True)
class MaccorChannelSpec:
    """A watched channel: which one (1-based, as MacTest32 shows it), what cell, what to do."""

    channel: int
    cell_type: str  # "symmetric" | "asymmetric" | "full"
    interphase: str = ""
    mode: str = "monitor"  # "monitor" | "run"
    procedure: str | None = None  # run mode: the test procedure (.000, without it) to start
    detector: DetectorSettings | None = None

    @property
    def index(self) -> int:
        """The channel's ``Chan`` on the wire (0-based)."""
        return self.channel - 1


MaccorRuntime = PresentValueRuntime[MaccorChannelSpec]


class MaccorSupervisor(PresentValueGuard[MaccorClient, MaccorChannelSpec, Reading]):
    """Polls one Maccor tester over MacNet and guards its configured channels."""

    _log: ClassVar[logging.Logger] = log
    _device: ClassVar[str] = "tester"
    _program_word: ClassVar[str] = "procedure"
    _no_protocol: ClassVar[str] = (
        "a Maccor channel runs a MacTest32 procedure, not a protocol script"
    )
    _gap_note: ClassVar[str] = (
        "MacNet serves present values only, so the samples of the gap are not "
        "backfilled (they are in MacTest32's data file) and were not judged"
    )
    _test_name_max: ClassVar[int] = 250
    _ended: ClassVar[Mapping[int, ChannelState]] = _ENDED

    def __init__(
        self,
        name: str,
        connect: Callable[[], MaccorClient],
        channels: Sequence[MaccorChannelSpec],
        queue: SampleQueue,
        publisher: Publisher,
        *,
        clock: Clock,
        poll_interval_s: float = 1.0,
        state: StateStore | None = None,
        voltage_range_v: float = 5.0,
        current_limit_a: float | None = None,
    ) -> None:
        super().__init__(
            name,
            connect,
            channels,
            queue,
            publisher,
            clock=clock,
            poll_interval_s=poll_interval_s,
            state=state,
            voltage_range_v=voltage_range_v,
        )
        self.current_limit_a = current_limit_a

    def safety_limits(self, runtime: MaccorRuntime) -> SafetyLimits | None:
        """The tester's own limits for a run-mode channel: the detectors' range backstop
        in V and ``current_limit_a`` both ways (None without a current limit: (6, 10)
        sets all six at once and a current it does not know is not invented)."""
        if self.current_limit_a is None:
            return None
        settings = runtime.settings
        voltage_v = settings.range_fraction * settings.voltage_range_v
        power_w = voltage_v * self.current_limit_a
        return SafetyLimits(
            voltage_v, -voltage_v, self.current_limit_a, self.current_limit_a, power_w, power_w
        )

    # ------------------------------------------------------------ MacNet's verbs and words

    async def _read(self, client: MaccorClient) -> dict[int, Reading]:
        """(4, 7) of every guarded channel, by wire index."""
        return {r.spec.index: await client.state(r.spec.index) for r in self.channels.values()}

    def _program(self, spec: MaccorChannelSpec) -> str | None:
        return spec.procedure

    def _busy_words(self, reading: Reading) -> str:
        return "is active already"

    async def _launch(self, client: MaccorClient, runtime: MaccorRuntime, test_name: str) -> str:
        spec = runtime.spec
        assert spec.procedure is not None
        limits = self.safety_limits(runtime)
        if limits is not None:
            await client.set_safety(spec.index, limits)
        await client.start_test(spec.index, spec.procedure, test_name)
        return "" if limits is None else f", tester limits ±{limits.voltage_max_v:.3g} V"

    async def _halt_channel(self, client: MaccorClient, index: int) -> None:
        # Suspend, not reset: the output goes off and the test stays for the operator.
        await client.suspend(index)

    async def _still_running(self, client: MaccorClient, indexes: Collection[int]) -> list[int]:
        return [i for i in indexes if (await client.state(i)).running]

    def _no_action(self, action: str) -> str:
        return f"cellguard has no {action} for MacNet: use MacTest32"

    def _step_kind(self, reading: Reading) -> StepKind:
        return step_kind_of_rf1(reading.rf1)

    def _step_and_cycle(self, reading: Reading) -> tuple[int | None, int | None]:
        return reading.step, reading.cycle

    def _capacity_and_energy(self, reading: Reading) -> tuple[float, float]:
        return reading.capacity_ah, reading.energy_wh

    def _status_code(self, reading: Reading) -> int:
        return reading.stat

    def _status_text(self, reading: Reading) -> str:
        return reading.status

    def _status_name(self, status: int) -> str:
        return status_name(status)

    def _new_test_note(self, reading: Reading) -> str:
        return "a new test runs"

    # ------------------------------------------------------------ the live stream

    async def poll_once(self, client: MaccorClient) -> None:
        """One (4, 7) per guarded channel; judge each running one; suspend at once every
        channel judged failing, before anything else of this poll."""
        self._outbox.flush()
        halts: list[tuple[MaccorRuntime, Verdict]] = []
        warns: list[tuple[MaccorRuntime, Verdict]] = []
        seen: list[tuple[MaccorRuntime, Reading]] = []
        for runtime in list(self.channels.values()):
            reading = await client.state(runtime.spec.index)
            received_at = time.perf_counter()
            seen.append((runtime, reading))
            if reading.running and reading.test_time_s < runtime.last_test_time_s:
                # Test time went back: a new test (MacNet's (4, 7) carries no test name).
                runtime.tests_seen += 1
                self._new_test(runtime, f"{self.name}-{runtime.spec.channel}-t{runtime.tests_seen}")
            verdict = self._judge(runtime, reading)
            if verdict is None:
                continue
            if verdict.severity == "halt":
                # Suspended now, before the other channels are read: each read costs time.
                await self._stop_halting(client, [(runtime, verdict)], received_at)
                halts.append((runtime, verdict))
            elif verdict.severity == "warn":
                warns.append((runtime, verdict))
        self.polls += 1
        if halts:
            await self._report_halts([r for r, _ in halts])
        await self._after_judging(seen, warns)
