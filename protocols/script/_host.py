"""Run a protocol host-driven: a pure state machine that says what to source next.

Instruments without an on-board sequencer (a SCPI source-meter, a Modbus supply) are
driven by the host: at every sample the runner asks :class:`HostRun` what to do. The
machine does no I/O and reads no clock: the runner passes the time and the reading
in, and carries out the actions that come back, in order::

    run = HostRun(protocol, capability)
    actions = run.start(t_s)
    while not run.finished:
        ...  # carry out actions, wait until run.next_sample_due_s(), measure
        actions = run.observe(t_s, voltage_v, current_a, {"chamber_temperature_c": t_c})

The same inputs always give the same actions, so a run replays exactly in tests (virtual
time) and resumes exactly after a restart (:meth:`HostRun.position`,
:meth:`HostRun.resume`).

What it keeps: the running step, its elapsed time and capacity (|I| integrated with
the trapezoid rule, in mAh; the first interval of a step counts the new set-point's
sample alone, since the set-point changed at its start), the Repeat counts and the
cycle (1 + every loop back, as BTS counts it; a backward goto starts a cycle too).

Rules, all judged on each sample as it comes:

- **Limits** (whole-test, then the step's own): a voltage at or beyond a window's edge,
  or |current| above a ceiling, ends the run with outcome ``"limit"``, naming the
  limit, the step and the value. Compliance is the instrument's range (a backstop);
  the limits are judged here, so the run ends with a reason rather than clamping.
- **Ends**: time, capacity, voltage cut-off (reached in the direction of the current),
  a hold's current tail; the first one reached ends the step.
- **Goto**: when a step ends, its condition is judged on that last sample.
- **Temperature** (``SetTemperature``): emits :class:`SetAux`; with a band it rests the
  cell (0 A) until the reading ``aux[temperature_aux]`` is within the band, and ends the
  run with ``"aux_timeout"`` after the step's timeout.

A Rest sources 0 A (so the voltage is still measured); the output goes off only when
the run finishes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypedDict

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.galvanostatic import InstrumentLimits
from cellguard.protocols.script._model import (
    CurrentBelow,
    HoldVoltage,
    InstrumentCapability,
    Limit,
    Protocol,
    Repeat,
    Rest,
    SetTemperature,
    Step,
    VoltageBetween,
    _CurrentStep,
    as_capability,
)

Outcome = Literal["completed", "limit", "aux_timeout"]
"""How a host-driven run ended."""

DEFAULT_TEMPERATURE_AUX = "chamber_temperature_c"
"""The aux name a temperature setpoint is sent to, and its reading is read from."""

_EPS_S = 1e-6  # a step whose predicted end is nearer than this has ended
_MAH_PER_AS = 1.0 / 3.6  # 1 A·s = 1/3.6 mAh
_POSITION_VERSION = 1


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SourceCurrent:
    """Output on, sourcing ``current_a`` (positive charges / strips); |V| ≤ ``compliance_v``."""

    current_a: float
    compliance_v: float


@dataclass(frozen=True, slots=True)
class SourceVoltage:
    """Output on, holding ``voltage_v``; |current| ≤ ``compliance_a``."""

    voltage_v: float
    compliance_a: float


@dataclass(frozen=True, slots=True)
class OutputOff:
    """Output off: no current flows. Always the action before :class:`Finished`."""


@dataclass(frozen=True, slots=True)
class SetAux:
    """Set an auxiliary device's ``name`` (e.g. ``chamber_temperature_c``) to ``value``."""

    name: str
    value: float


@dataclass(frozen=True, slots=True)
class StepStarted:
    """Step ``step_number`` (1-based, as written) starts, in cycle ``cycle``."""

    step_number: int
    label: str
    cycle: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The run ended: ``completed``, ``limit`` or ``aux_timeout``; ``detail`` says why.

    ``step_number`` is the step running then (None on completion); ``value`` the
    offending reading (V, A or °C) for a limit or a timeout.
    """

    outcome: Outcome
    detail: str
    step_number: int | None = None
    value: float | None = None


Action = SourceCurrent | SourceVoltage | OutputOff | SetAux | StepStarted | Finished
"""Anything :class:`HostRun` asks the runner to do or to record."""


class Position(TypedDict):
    """Where a run stands, small and JSON-able: enough to resume it exactly.

    ``loops`` maps each Repeat's step number (as text, for JSON) to the loop backs it
    made in the current pass; ``last_current_a`` is the last reading of the running
    step (None before its first sample), so the capacity integral continues as if the
    run had not stopped.
    """

    version: int
    step: int
    cycle: int
    loops: dict[str, int]
    step_elapsed_s: float
    step_capacity_mah: float
    last_current_a: float | None
    test_elapsed_s: float
    total_capacity_mah: float


# ---------------------------------------------------------------- the compiled plan


@dataclass(frozen=True, slots=True)
class _Window:
    """A limit in base units: a voltage window or a |current| ceiling."""

    text: str
    low_v: float | None = None
    high_v: float | None = None
    ceiling_a: float | None = None

    def trips(self, voltage_v: float, current_a: float) -> tuple[str, float] | None:
        # The edges trip, as the Neware's own protection does.
        if (
            self.low_v is not None
            and self.high_v is not None
            and not self.low_v < voltage_v < self.high_v
        ):
            return f"voltage {voltage_v:.6g} V", voltage_v
        if self.ceiling_a is not None and abs(current_a) > self.ceiling_a * (1 + 1e-9):
            return f"current {current_a * 1000:.6g} mA", current_a
        return None


@dataclass(frozen=True, slots=True)
class _Jump:
    target: int | None  # 0-based index; None = end
    kind: str
    threshold: float  # V, A, s or mAh

    def holds(self, voltage_v: float, current_a: float, elapsed_s: float, mah: float) -> bool:
        match self.kind:
            case "voltage above":
                return voltage_v >= self.threshold
            case "voltage below":
                return voltage_v <= self.threshold
            case "current below":
                return abs(current_a) <= self.threshold
            case "time reached":
                return elapsed_s >= self.threshold - _EPS_S
            case _:
                return mah >= self.threshold * (1 - 1e-9)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One step in base units."""

    number: int
    label: str
    source: SourceCurrent | SourceVoltage | None = None
    duration_s: float | None = None
    capacity_mah: float | None = None
    until_v: float | None = None
    stop_current_a: float | None = None
    windows: tuple[_Window, ...] = ()
    jump: _Jump | None = None
    setpoint_c: float | None = None
    band_c: float | None = None
    timeout_s: float | None = None
    repeat: Repeat | None = None
    record_s: float | None = None  # the step's own record interval, else the protocol's


def _windows(
    protocol: Protocol, limits: tuple[Limit, ...] | list[Limit], where: str
) -> tuple[_Window, ...]:
    out: list[_Window] = []
    for limit in limits:
        text = f"{where} {str(limit)!r}"
        if isinstance(limit, VoltageBetween):
            out.append(_Window(text, low_v=limit.low.value, high_v=limit.high.value))
        elif isinstance(limit, CurrentBelow):
            out.append(_Window(text, ceiling_a=protocol.cell.current_ma(limit.current) / 1000))
    return tuple(out)


def _compile(
    protocol: Protocol, cap: InstrumentCapability
) -> tuple[tuple[_Plan, ...], tuple[_Window, ...]]:
    cell = protocol.cell
    compliance_v = cap.voltage_range_v
    ceiling_a = cap.current_range_ma / 1000
    for limit in protocol.limits:
        if isinstance(limit, CurrentBelow):
            ceiling_a = min(ceiling_a, cell.current_ma(limit.current) / 1000)
        elif isinstance(limit, VoltageBetween):
            # The instrument's own protection at the protocol's limit: should the host
            # stop judging (a hang, a crash), the source-meter still never drives the
            # cell past it (a 2400's range is 21 V).
            widest_v = max(abs(limit.low.value), abs(limit.high.value))
            compliance_v = min(compliance_v, widest_v)
    plans: list[_Plan] = []
    last_current: _CurrentStep | None = None
    for number, step in enumerate(protocol.steps, start=1):
        plans.append(_plan(protocol, number, step, last_current, compliance_v, ceiling_a))
        if isinstance(step, _CurrentStep):
            last_current = step
    return tuple(plans), _windows(protocol, list(protocol.limits), "the whole-test limit")


def _plan(
    protocol: Protocol,
    number: int,
    step: Step,
    last_current: _CurrentStep | None,
    compliance_v: float,
    ceiling_a: float,
) -> _Plan:
    cell = protocol.cell
    label = step.text
    if isinstance(step, Repeat):
        return _Plan(number, label, repeat=step)
    if isinstance(step, SetTemperature):
        return _Plan(
            number,
            label,
            source=SourceCurrent(0.0, compliance_v),
            setpoint_c=step.setpoint_c,
            band_c=step.band_c,
            timeout_s=step.timeout_s,
        )
    windows = _windows(protocol, step.limits, f"step {number}'s limit")
    jump = None
    if step.goto is not None:
        condition = step.goto.condition
        q = condition.threshold
        match q.kind:
            case "current":
                threshold = cell.current_ma(q) / 1000
            case "capacity":
                threshold = cell.capacity_mah_of(q)
            case _:
                threshold = q.value
        target = None if step.goto.to_step == "end" else int(step.goto.to_step) - 1
        jump = _Jump(target, condition.kind, threshold)
    if isinstance(step, Rest):
        return _Plan(
            number,
            label,
            source=SourceCurrent(0.0, compliance_v),
            duration_s=step.duration.value,
            windows=windows,
            jump=jump,
            record_s=_record_s(step),
        )
    if isinstance(step, HoldVoltage):
        # A CV step's ceiling is the CC step before it (CC-CV), as on the Neware.
        hold_ceiling_a = ceiling_a
        if last_current is not None:
            hold_ceiling_a = min(ceiling_a, cell.current_ma(last_current.current) / 1000)
        return _Plan(
            number,
            label,
            source=SourceVoltage(step.voltage.value, hold_ceiling_a),
            duration_s=None if step.duration is None else step.duration.value,
            stop_current_a=None
            if step.until_current is None
            else cell.current_ma(step.until_current) / 1000,
            windows=windows,
            jump=jump,
            record_s=_record_s(step),
        )
    current_a = cell.current_ma(step.current) / 1000
    return _Plan(
        number,
        label,
        source=SourceCurrent(current_a if step.positive else -current_a, compliance_v),
        duration_s=None if step.duration is None else step.duration.value,
        capacity_mah=None if step.capacity is None else cell.capacity_mah_of(step.capacity),
        until_v=None if step.until is None else step.until.value,
        windows=windows,
        jump=jump,
        record_s=_record_s(step),
    )


def _record_s(step: Rest | HoldVoltage | _CurrentStep) -> float | None:
    return None if step.record_every is None else step.record_every.value


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(field=name, problem=f"must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- the machine


class HostRun:
    """A protocol running host-driven; see the module docstring.

    ``capability`` is the instrument's (validated against, as for a Neware: ranges,
    fastest recording); ``temperature_aux`` names the chamber's setpoint and reading.
    Raises :class:`ConfigError` for a protocol the cell or instrument cannot run.
    """

    def __init__(
        self,
        protocol: Protocol,
        capability: InstrumentCapability | InstrumentLimits | None = None,
        *,
        temperature_aux: str = DEFAULT_TEMPERATURE_AUX,
    ) -> None:
        cap = as_capability(capability if capability is not None else InstrumentCapability())
        protocol.validate(cap)
        self.protocol = protocol
        self.capability = cap
        self.temperature_aux = temperature_aux
        self._plans, self._test_windows = _compile(protocol, cap)
        self._record_s = protocol.record_every.value
        self._index = 0
        self._started = False
        self._finished: Finished | None = None
        self._loops: dict[int, int] = {}
        self._cycle = 1
        self._step_elapsed_s = 0.0
        self._step_capacity_mah = 0.0
        self._last_current_a: float | None = None
        self._last_t_s = 0.0
        self._test_elapsed_s = 0.0
        self._total_capacity_mah = 0.0

    # ------------------------------------------------------------ state

    @property
    def finished(self) -> Finished | None:
        """How the run ended, or None while it runs (or before it starts)."""
        return self._finished

    @property
    def step_number(self) -> int:
        """The running step's number (1-based, as written)."""
        return self._plans[self._index].number

    @property
    def cycle(self) -> int:
        """The cycle: 1 + every Repeat loop back and backward goto so far."""
        return self._cycle

    @property
    def setpoint(self) -> SourceCurrent | SourceVoltage | None:
        """What the running step sources (a rest or a soak: 0 A); None when not running.
        A runner re-applies it after the instrument lost its state (a power cycle)."""
        if not self._started or self._finished is not None:
            return None
        return self._plans[self._index].source

    @property
    def step_capacity_mah(self) -> float:
        """Capacity passed in the running step, mAh (|I| integrated)."""
        return self._step_capacity_mah

    @property
    def step_elapsed_s(self) -> float:
        """Time in the running step, s."""
        return self._step_elapsed_s

    def position(self) -> Position:
        """Where the run stands, to resume it after a restart (JSON-able)."""
        if not self._started or self._finished is not None:
            raise ConfigError(
                field="HostRun.position",
                problem="only a running run has a position (start it; a finished run "
                "has nothing to resume)",
            )
        return Position(
            version=_POSITION_VERSION,
            step=self.step_number,
            cycle=self._cycle,
            loops={str(k): v for k, v in sorted(self._loops.items()) if v},
            step_elapsed_s=self._step_elapsed_s,
            step_capacity_mah=self._step_capacity_mah,
            last_current_a=self._last_current_a,
            test_elapsed_s=self._test_elapsed_s,
            total_capacity_mah=self._total_capacity_mah,
        )

    @classmethod
    def resume(
        cls,
        protocol: Protocol,
        capability: InstrumentCapability | InstrumentLimits | None,
        position: Mapping[str, object],
        t_s: float,
        *,
        temperature_aux: str = DEFAULT_TEMPERATURE_AUX,
    ) -> tuple[HostRun, list[Action]]:
        """Continue a run from :meth:`position` at ``t_s``; the actions re-apply the
        running step's set-point (the instrument's state after a restart is unknown).

        The step goes on from its elapsed time and capacity: the half cycle is neither
        repeated nor skipped. Time and charge while nobody ran the machine are not
        counted (the runner turns the output off when it stops).
        """
        run = cls(protocol, capability, temperature_aux=temperature_aux)
        run._restore(position)
        run._started = True
        run._last_t_s = _finite("t_s", t_s)
        plan = run._plans[run._index]
        actions: list[Action] = [StepStarted(plan.number, plan.label, run._cycle)]
        if plan.setpoint_c is not None:
            actions.append(SetAux(run.temperature_aux, plan.setpoint_c))
        if plan.source is not None:
            actions.append(plan.source)
        return run, actions

    def _restore(self, position: Mapping[str, object]) -> None:
        def number(key: str, *, whole: bool = False) -> float:
            value = position.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(
                    field=f"position.{key}", problem=f"must be a number, got {value!r}"
                )
            if not math.isfinite(value) or value < 0 or (whole and value != int(value)):
                raise ConfigError(
                    field=f"position.{key}",
                    problem=f"must be a finite {'whole ' if whole else ''}number >= 0, "
                    f"got {value!r}",
                )
            return float(value)

        if position.get("version") != _POSITION_VERSION:
            raise ConfigError(
                field="position.version",
                problem=f"must be {_POSITION_VERSION}, got {position.get('version')!r}",
            )
        step = int(number("step", whole=True))
        if not 1 <= step <= len(self._plans) or self._plans[step - 1].repeat is not None:
            raise ConfigError(
                field="position.step",
                problem=f"step {step} is not a step this protocol can be in "
                f"(1-{len(self._plans)}, not a Repeat)",
            )
        loops = position.get("loops")
        if not isinstance(loops, Mapping):
            raise ConfigError(field="position.loops", problem=f"must be a mapping, got {loops!r}")
        restored: dict[int, int] = {}
        for key, done in loops.items():
            repeat = self._plans[int(key) - 1].repeat if str(key).isdigit() else None
            if (
                repeat is None
                or int(key) > len(self._plans)
                or isinstance(done, bool)
                or not isinstance(done, int)
                or not 0 <= done < repeat.times
            ):
                raise ConfigError(
                    field="position.loops",
                    problem=f"{key!r}: {done!r} is not a loop count of a Repeat step",
                )
            restored[int(key)] = done
        last = position.get("last_current_a")
        if last is not None:
            last = _finite("position.last_current_a", last)  # type: ignore[arg-type]
        self._index = step - 1
        self._cycle = max(1, int(number("cycle", whole=True)))
        self._loops = restored
        self._step_elapsed_s = number("step_elapsed_s")
        self._step_capacity_mah = number("step_capacity_mah")
        self._last_current_a = last
        self._test_elapsed_s = number("test_elapsed_s")
        self._total_capacity_mah = number("total_capacity_mah")

    # ------------------------------------------------------------ driving

    def start(self, t_s: float) -> list[Action]:
        """Start at ``t_s``: the first step's actions."""
        if self._started:
            raise ConfigError(field="HostRun.start", problem="the run has already started")
        self._last_t_s = _finite("t_s", t_s)
        self._started = True
        actions: list[Action] = []
        self._enter(0, actions)
        return actions

    def next_sample_due_s(self) -> float | None:
        """When to measure next: at most one record interval after the last sample, and
        sooner at the running step's expected end (time, capacity at the present
        current, a soak's timeout), so a cut-off is not overshot; None once finished."""
        if not self._started or self._finished is not None:
            return None
        plan = self._plans[self._index]
        wait_s = plan.record_s or self._record_s
        left = self._time_left_s(plan)
        if left is not None:
            wait_s = min(wait_s, max(left, _EPS_S))
        return self._last_t_s + wait_s

    def _time_left_s(self, plan: _Plan) -> float | None:
        left: float | None = None
        for limit_s in (plan.duration_s, plan.timeout_s):
            if limit_s is not None:
                rest = limit_s - self._step_elapsed_s
                left = rest if left is None else min(left, rest)
        if plan.capacity_mah is not None:
            current_a = self._last_current_a
            if current_a is None and isinstance(plan.source, SourceCurrent):
                current_a = plan.source.current_a
            if current_a:
                rest = (plan.capacity_mah - self._step_capacity_mah) / _MAH_PER_AS / abs(current_a)
                left = rest if left is None else min(left, rest)
        return left

    def observe(
        self,
        t_s: float,
        voltage_v: float,
        current_a: float,
        aux: Mapping[str, float] | None = None,
    ) -> list[Action]:
        """Feed one reading at ``t_s``; the actions to carry out, in order.

        ``aux`` holds auxiliary readings (``{"chamber_temperature_c": 59.6}``). After
        the run finished, returns no actions.
        """
        if not self._started:
            raise ConfigError(field="HostRun.observe", problem="start() the run first")
        if self._finished is not None:
            return []
        t_s = _finite("t_s", t_s)
        voltage_v = _finite("voltage_v", voltage_v)
        current_a = _finite("current_a", current_a)
        if t_s < self._last_t_s:
            raise ConfigError(
                field="t_s",
                problem=f"time went back: {t_s:g} s after a reading at {self._last_t_s:g} s",
            )
        dt_s = t_s - self._last_t_s
        previous_a = abs(current_a) if self._last_current_a is None else abs(self._last_current_a)
        passed_mah = (previous_a + abs(current_a)) / 2 * dt_s * _MAH_PER_AS
        self._step_elapsed_s += dt_s
        self._test_elapsed_s += dt_s
        self._step_capacity_mah += passed_mah
        self._total_capacity_mah += passed_mah
        self._last_t_s = t_s
        self._last_current_a = current_a
        plan = self._plans[self._index]
        actions: list[Action] = []
        for window in self._test_windows + plan.windows:
            tripped = window.trips(voltage_v, current_a)
            if tripped is not None:
                what, value = tripped
                detail = f"{what} reached {window.text} in step {plan.number} {plan.label!r}"
                self._finish(actions, Finished("limit", detail, plan.number, value))
                return actions
        if plan.setpoint_c is not None:
            self._soak(plan, aux or {}, actions)
            return actions
        if self._step_ended(plan, voltage_v, current_a):
            jump = plan.jump
            if jump is not None and jump.holds(
                voltage_v, current_a, self._step_elapsed_s, self._step_capacity_mah
            ):
                self._goto(jump.target, actions)
            else:
                self._enter(self._index + 1, actions)
        return actions

    def _step_ended(self, plan: _Plan, voltage_v: float, current_a: float) -> bool:
        left = self._time_left_s(plan)
        if left is not None and left <= _EPS_S:
            return True
        if plan.capacity_mah is not None and self._step_capacity_mah >= plan.capacity_mah * (
            1 - 1e-9
        ):
            return True
        if plan.until_v is not None and isinstance(plan.source, SourceCurrent):
            if plan.source.current_a > 0 and voltage_v >= plan.until_v:
                return True
            if plan.source.current_a < 0 and voltage_v <= plan.until_v:
                return True
        return plan.stop_current_a is not None and abs(current_a) <= plan.stop_current_a

    def _soak(self, plan: _Plan, aux: Mapping[str, float], actions: list[Action]) -> None:
        assert plan.setpoint_c is not None  # only a waiting setpoint gets here
        assert plan.band_c is not None
        assert plan.timeout_s is not None
        reading = aux.get(self.temperature_aux)
        if (
            reading is not None
            and math.isfinite(reading)
            and abs(reading - plan.setpoint_c) <= plan.band_c
        ):
            self._enter(self._index + 1, actions)
            return
        if self._step_elapsed_s >= plan.timeout_s - _EPS_S:
            seen = "no reading" if reading is None else f"the reading was {reading:g} °C"
            detail = (
                f"step {plan.number} {plan.label!r}: the chamber did not come within "
                f"{plan.band_c:g} °C of {plan.setpoint_c:g} °C in {plan.timeout_s:g} s; {seen}"
            )
            self._finish(actions, Finished("aux_timeout", detail, plan.number, reading))

    def _goto(self, target: int | None, actions: list[Action]) -> None:
        if target is None:
            self._finish(actions, Finished("completed", "a goto ended the protocol"))
            return
        source = self._plans[self._index].number
        # Loops holding both ends keep their count; any other loop is left (or entered
        # at its top, which validation ensures), so its count starts afresh.
        for first, last, repeat_number in self.protocol.repeat_ranges():
            if not (first <= source <= last and first <= target + 1 <= last):
                self._loops.pop(repeat_number, None)
        if target + 1 <= source:
            self._cycle += 1
        self._enter(target, actions)

    def _enter(self, index: int, actions: list[Action]) -> None:
        """Start step ``index`` (0-based), running control steps (Repeat, setpoints
        without a wait) at once, as the Neware runs CYCLE: they take no time."""
        while index < len(self._plans):
            plan = self._plans[index]
            if plan.repeat is not None:
                done = self._loops.get(plan.number, 0) + 1
                if done < plan.repeat.times:
                    self._loops[plan.number] = done
                    self._cycle += 1
                    index = plan.repeat.first_step - 1
                else:
                    self._loops.pop(plan.number, None)
                    index += 1
                continue
            self._index = index
            self._step_elapsed_s = 0.0
            self._step_capacity_mah = 0.0
            self._last_current_a = None
            actions.append(StepStarted(plan.number, plan.label, self._cycle))
            if plan.setpoint_c is not None:
                actions.append(SetAux(self.temperature_aux, plan.setpoint_c))
                if plan.band_c is None:
                    index += 1
                    continue
            assert plan.source is not None  # every timed step has a set-point
            actions.append(plan.source)
            return
        self._finish(actions, Finished("completed", f"all steps done, {self._cycle} cycles"))

    def _finish(self, actions: list[Action], finished: Finished) -> None:
        self._finished = finished
        actions += [OutputOff(), finished]


__all__ = [
    "DEFAULT_TEMPERATURE_AUX",
    "Action",
    "Finished",
    "HostRun",
    "Outcome",
    "OutputOff",
    "Position",
    "SetAux",
    "SourceCurrent",
    "SourceVoltage",
    "StepStarted",
]


# ---------------------------------------------------------------- a dry run


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a host-driven run of a protocol does on an ideal cell (see :func:`dry_run`)."""

    length_s: float
    samples: int
    steps_entered: int
    cycles: int
    finished: Finished | None  # None: cut at ``max_samples``


def dry_run(
    protocol: Protocol,
    capability: InstrumentCapability | InstrumentLimits | None = None,
    *,
    overpotential_v: float = 0.01,
    temperature_c: float | None = None,
    max_samples: int = 2_000_000,
) -> DryRun:
    """Run ``protocol`` host-driven on an ideal cell: |V| = ``overpotential_v`` with the
    sign of the current (0 V at rest), the chamber at its setpoint at once (or at
    ``temperature_c``). What ``cellguard protocol check --host-driven`` reports: the
    expected length when no limit trips and voltage-conditioned gotos behave as on that
    ideal cell. Validates like :class:`HostRun` (raises the same refusals)."""
    run = HostRun(protocol, capability)
    chamber: dict[str, float] = {}
    entered = 0

    def note(actions: list[Action]) -> float:
        nonlocal entered
        current = 0.0
        for action in actions:
            if isinstance(action, StepStarted):
                entered += 1
            elif isinstance(action, SetAux):
                chamber[action.name] = action.value if temperature_c is None else temperature_c
            elif isinstance(action, SourceCurrent):
                current = action.current_a
            elif isinstance(action, SourceVoltage):
                current = 0.0
        return current

    current_a = note(run.start(0.0))
    t_s = 0.0
    samples = 0
    while run.finished is None and samples < max_samples:
        due = run.next_sample_due_s()
        if due is None:
            break
        t_s = due
        voltage_v = math.copysign(overpotential_v, current_a) if current_a else 0.0
        actions = run.observe(t_s, voltage_v, current_a, chamber)
        samples += 1
        if any(isinstance(a, SourceCurrent | SourceVoltage | OutputOff) for a in actions):
            current_a = note(actions)
        else:
            note(actions)
    return DryRun(t_s, samples, entered, run.cycle, run.finished)
