"""Compile a protocol to a Neware BTS 8 step file, and describe what it will run.

Each script step becomes one BTS step with the same number, then END: Rest → REST,
Strip/Charge → CC_CHARGE, Plate/Discharge → CC_DISCHARGE, HoldVoltage → CV_CHARGE (or
CV_DISCHARGE after a negative current), Repeat → CYCLE looping back to its first step.
Currents and capacities become absolute (mA, mAh) through the cell's area or capacity.
Whole-test limits become the file's protection; without a current limit, the
protection is :data:`~cellguard.protocols.CURRENT_PROTECTION_FACTOR` times the largest
set-point, as for the galvanostatic protocol. Current protection is signed, as BTS
reads it: ``Current below 2 mA`` is ``Upper`` +2 mA and ``Lower`` -2 mA.

Every limit is written, none dropped:

- **per-step limits** go into the step's own ``<Protect>`` (the instrument trips the
  channel itself), and :func:`step_limits` also hands them to the daemon, keyed by the
  compiled BTS step id, to judge on the live stream;
- numbers beyond what a step file may hold (a 300-digit time, 10^12 repeats) are
  refused naming the step and the bound; currents beyond the channel's range by
  :meth:`Protocol.validate`.

What a BTS step file cannot hold is refused naming the step, or written with a
warning and enforced by the daemon:

- a **goto** (conditional jump): refused; it runs host-driven only;
- **temperature setpoints** before the first current step (and in no Repeat):
  :func:`prestart_setpoints` returns them for the daemon to apply (and wait for) before
  it starts the file, and :func:`unexpressed` words the warning for a file started by
  hand; they take no BTS step, so later steps are renumbered. Any other setpoint is
  refused (host-driven only).
"""

from __future__ import annotations

from collections.abc import Mapping

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware._stepfile import (
    MAX_CYCLE_COUNT,
    Protection,
    StepFile,
    StepType,
    check_step_bounds,
)
from cellguard.drivers.neware._stepfile import Step as BtsStep
from cellguard.protocols.galvanostatic import CURRENT_PROTECTION_FACTOR, InstrumentLimits
from cellguard.protocols.script._model import (
    CurrentBelow,
    HoldVoltage,
    InstrumentCapability,
    Limit,
    Protocol,
    Repeat,
    Rest,
    SetTemperature,
    VoltageBetween,
    _CurrentStep,
    format_duration,
    step_label,
)
from cellguard.protocols.script._model import Step as ScriptStep
from cellguard.protocols.script._preflight import format_hours

_S_PER_H = 3600.0
_HOST_ONLY = "runs host-driven only (a SCPI source-meter or Modbus supply through HostRun)"


def _prestart_numbers(protocol: Protocol) -> set[int]:
    """Script step numbers of the setpoints the daemon applies before starting the file."""
    in_repeat = {n for first, last, _ in protocol.repeat_ranges() for n in range(first, last + 1)}
    out: set[int] = set()
    for number, step in enumerate(protocol.steps, start=1):
        if isinstance(step, _CurrentStep | HoldVoltage):
            break
        if isinstance(step, SetTemperature) and number not in in_repeat:
            out.add(number)
    return out


def bts_step_ids(protocol: Protocol) -> dict[int, int]:
    """Script step number → compiled BTS step id (pre-start setpoints take no BTS step).

    Refuses, naming the step, what a BTS step file cannot run: a goto, a temperature
    setpoint after the first current step or inside a Repeat.
    """
    prestart = _prestart_numbers(protocol)
    ids: dict[int, int] = {}
    for number, step in enumerate(protocol.steps, start=1):
        where = step_label(number, step)
        if getattr(step, "goto", None) is not None:
            raise ConfigError(
                field=where,
                problem=f"a goto {_HOST_ONLY}: a Neware BTS step file has no conditional "
                "jump; run it host-driven, or remove 'then goto ...' for the Neware",
            )
        if isinstance(step, SetTemperature):
            if number in prestart:
                continue
            raise ConfigError(
                field=where,
                problem=f"a temperature setpoint here {_HOST_ONLY}: for a Neware step file "
                "the daemon sets the chamber only before the start, so put setpoints before "
                "the first current step and outside any Repeat",
            )
        ids[number] = len(ids) + 1
    return ids


def prestart_setpoints(protocol: Protocol) -> tuple[SetTemperature, ...]:
    """The temperature setpoints the daemon applies, in order, before starting the file.

    Those before the first current step and in no Repeat; each with a band
    (``band_c``) is waited for, at most ``timeout_s``, before the next. Refuses like
    :func:`bts_step_ids` a protocol a step file cannot run.
    """
    bts_step_ids(protocol)
    prestart = _prestart_numbers(protocol)
    return tuple(
        step
        for number, step in enumerate(protocol.steps, start=1)
        if number in prestart and isinstance(step, SetTemperature)
    )


def unexpressed(protocol: Protocol) -> tuple[str, ...]:
    """Warnings, one per step, for what the compiled file does not hold and the daemon
    enforces instead (a pre-start chamber setpoint): a file started by hand from the
    BTS software runs without it. Refuses like :func:`bts_step_ids`."""
    bts_step_ids(protocol)
    prestart = _prestart_numbers(protocol)
    return tuple(
        f"{step_label(number, step)} is not in the step file: cellguard sets the chamber "
        "before it starts the file (mode = run); started by hand from the BTS software, "
        "the test runs without it"
        for number, step in enumerate(protocol.steps, start=1)
        if number in prestart
    )


def step_limits(protocol: Protocol) -> Mapping[int, tuple[Limit, ...]]:
    """Per-step limits keyed by compiled BTS step id, for the daemon to judge live.

    The step file holds them too (each step's ``<Protect>``); the daemon judges them as
    well: a sample of BTS step ``k`` (``step_id`` in the records) is outside its step's
    window when it is at or beyond a voltage edge, or above the current (converted
    with the cell's area or capacity).
    """
    ids = bts_step_ids(protocol)
    return {
        ids[number]: step.limits
        for number, step in enumerate(protocol.steps, start=1)
        if isinstance(step, _CurrentStep | HoldVoltage | Rest) and step.limits
    }


def _window(protocol: Protocol, limits: tuple[Limit, ...]) -> Protection | None:
    """A step's own limits as its ``<Protect>``: the tightest of each, current signed."""
    upper_v: float | None = None
    lower_v: float | None = None
    current_ma: float | None = None
    for limit in limits:
        if isinstance(limit, VoltageBetween):
            upper_v = limit.high.value if upper_v is None else min(upper_v, limit.high.value)
            lower_v = limit.low.value if lower_v is None else max(lower_v, limit.low.value)
        else:
            value = protocol.cell.current_ma(limit.current)
            current_ma = value if current_ma is None else min(current_ma, value)
    if upper_v is None and current_ma is None:
        return None
    return Protection(
        voltage_upper_v=upper_v,
        voltage_lower_v=lower_v,
        current_upper_ma=current_ma,
        current_lower_ma=None if current_ma is None else -current_ma,
    )


def _record_s(step: Rest | HoldVoltage | _CurrentStep) -> float | None:
    return None if step.record_every is None else step.record_every.value


def _compile_steps(protocol: Protocol) -> tuple[BtsStep, ...]:
    ids = bts_step_ids(protocol)  # refuses first what a step file cannot run
    out: list[BtsStep] = []
    for number, step in enumerate(protocol.steps, start=1):
        compiled = _compile_step(protocol, ids, number, step)
        if compiled is not None:
            # Named by the script's own step, not by the BTS step it became.
            check_step_bounds(compiled, step_label(number, step))
            out.append(compiled)
    out.append(BtsStep(StepType.END))
    return tuple(out)


def _last_current_before(protocol: Protocol, number: int) -> _CurrentStep | None:
    for step in reversed(protocol.steps[: number - 1]):
        if isinstance(step, _CurrentStep):
            return step
    return None


def _compile_step(
    protocol: Protocol, ids: Mapping[int, int], number: int, step: ScriptStep
) -> BtsStep | None:
    cell = protocol.cell
    if isinstance(step, SetTemperature):
        return None  # a pre-start action of the daemon (bts_step_ids refused the rest)
    if isinstance(step, Rest):
        return BtsStep(
            StepType.REST,
            time_s=step.duration.value,
            protection=_window(protocol, step.limits),
            record_interval_s=_record_s(step),
        )
    if isinstance(step, _CurrentStep):
        return BtsStep(
            StepType.CC_CHARGE if step.positive else StepType.CC_DISCHARGE,
            current_ma=cell.current_ma(step.current),
            time_s=None if step.duration is None else step.duration.value,
            capacity_mah=None if step.capacity is None else cell.capacity_mah_of(step.capacity),
            stop_voltage_v=None if step.until is None else step.until.value,
            protection=_window(protocol, step.limits),
            record_interval_s=_record_s(step),
        )
    if isinstance(step, HoldVoltage):
        last_current = _last_current_before(protocol, number)
        negative = last_current is not None and not last_current.positive
        return BtsStep(
            StepType.CV_DISCHARGE if negative else StepType.CV_CHARGE,
            # A CV step's current is its ceiling: the CC step before it (CC-CV).
            current_ma=None if last_current is None else cell.current_ma(last_current.current),
            voltage_v=step.voltage.value,
            time_s=None if step.duration is None else step.duration.value,
            stop_current_ma=None
            if step.until_current is None
            else cell.current_ma(step.until_current),
            protection=_window(protocol, step.limits),
            record_interval_s=_record_s(step),
        )
    assert isinstance(step, Repeat)
    if step.times > MAX_CYCLE_COUNT:
        raise ConfigError(
            field=step_label(number, step),
            problem=f"{step.times} repeats are beyond what a step file holds; allowed: "
            f"1 to {MAX_CYCLE_COUNT} (nest two Repeats for more)",
        )
    return BtsStep(StepType.CYCLE, loop_start_step=ids[step.first_step], cycle_count=step.times)


def _protection(protocol: Protocol, steps: tuple[BtsStep, ...]) -> Protection:
    upper_v: float | None = None
    lower_v: float | None = None
    current_ma: float | None = None
    for limit in protocol.limits:
        if isinstance(limit, VoltageBetween):
            upper_v = limit.high.value if upper_v is None else min(upper_v, limit.high.value)
            lower_v = limit.low.value if lower_v is None else max(lower_v, limit.low.value)
        elif isinstance(limit, CurrentBelow):
            value = protocol.cell.current_ma(limit.current)
            current_ma = value if current_ma is None else min(current_ma, value)
    if current_ma is None:
        set_points = [s.current_ma for s in steps if s.current_ma is not None]
        if set_points:
            current_ma = CURRENT_PROTECTION_FACTOR * max(set_points)
    return Protection(
        voltage_upper_v=upper_v,
        voltage_lower_v=lower_v,
        current_upper_ma=current_ma,
        current_lower_ma=None if current_ma is None else -current_ma,
    )


def to_step_file(
    protocol: Protocol, limits: InstrumentLimits | InstrumentCapability | None = None
) -> StepFile:
    """The BTS 8 step file running ``protocol`` on an instrument with ``limits``.

    Validates first (:meth:`Protocol.validate`): an impossible protocol raises
    :class:`ConfigError` naming the step or field, and nothing is compiled.
    """
    protocol.validate(limits)
    steps = _compile_steps(protocol)
    cell = protocol.cell
    area = cell.electrode_area_cm2
    remark = f"{protocol.name}; {cell.cell_type} cell"
    if area is not None:
        remark += f" {area:.4g} cm2"
    if cell.interphase:
        remark += f", {cell.interphase}"
    return StepFile(
        steps=steps,
        protection=_protection(protocol, steps),
        record_interval_s=protocol.record_every.value,
        remark=remark,
    )


def _step_duration_s(step: BtsStep) -> float | None:
    """How long a step runs if nothing else ends it first; None if only V or I ends it."""
    candidates: list[float] = []
    if step.time_s is not None:
        candidates.append(step.time_s)
    if step.capacity_mah is not None and step.current_ma:
        candidates.append(step.capacity_mah / step.current_ma * _S_PER_H)
    return min(candidates) if candidates else None


def _multiplicities(steps: tuple[BtsStep, ...]) -> list[int]:
    runs = [1] * len(steps)
    for cycle_index, step in enumerate(steps):
        if step.step_type is StepType.CYCLE and step.loop_start_step and step.cycle_count:
            for i in range(step.loop_start_step - 1, cycle_index):
                runs[i] *= step.cycle_count
    return runs


def expected_length_s(step_file: StepFile) -> tuple[float, bool]:
    """Expected test length in s, and whether it is exact.

    Not exact (a lower bound) when some step ends only on a voltage or current.
    """
    total = 0.0
    exact = True
    for step, runs in zip(step_file.steps, _multiplicities(step_file.steps), strict=True):
        if step.step_type in (StepType.CYCLE, StepType.END):
            continue
        duration = _step_duration_s(step)
        if duration is None:
            exact = False
        else:
            total += duration * runs
    return total, exact


def _window_text(protocol: Protocol, limit: Limit) -> str:
    if isinstance(limit, VoltageBetween):
        return f"voltage {limit.low.value:g} V to {limit.high.value:g} V"
    return f"|current| ≤ {protocol.cell.current_ma(limit.current):.4g} mA"


def _length_text(total_s: float) -> str:
    # One unit family with the pre-flight's lines (h, and d from two days on).
    return format_hours(total_s)


def describe(
    protocol: Protocol, limits: InstrumentLimits | InstrumentCapability | None = None
) -> str:
    """The compiled steps with absolute currents, durations and the expected test length.

    Validates and compiles like :func:`to_step_file` (and raises as it does).
    """
    step_file = to_step_file(protocol, limits)
    cell = protocol.cell
    area = cell.electrode_area_cm2
    lines = [f"{protocol.name}"]
    cell_line = f"cell: {cell.cell_type}"
    if area is not None:
        cell_line += f", {area:.4g} cm²"
    working = cell.working_li_mah_cm2
    if working is not None:
        cell_line += f", working Li {working:.4g} mAh/cm2"
    if cell.capacity_mah is not None:
        cell_line += f", 1C = {cell.capacity_mah:g} mA"
    if cell.interphase:
        cell_line += f", interphase {cell.interphase}"
    lines.append(cell_line)
    prot = step_file.protection
    guards = []
    if prot.voltage_lower_v is not None and prot.voltage_upper_v is not None:
        guards.append(f"voltage {prot.voltage_lower_v:g} V to {prot.voltage_upper_v:g} V")
    if prot.current_upper_ma is not None:
        guards.append(f"|current| ≤ {prot.current_upper_ma:.4g} mA")
    lines.append(f"record every {protocol.record_every}; protection: {', '.join(guards) or 'none'}")
    for setpoint in prestart_setpoints(protocol):
        line = f"before start: chamber to {setpoint.temperature}"
        if setpoint.within is not None and setpoint.timeout_s is not None:
            line += (
                f", wait until within {setpoint.within} "
                f"(at most {format_duration(setpoint.timeout_s)})"
            )
        lines.append(line)
    windows = step_limits(protocol)
    runs = _multiplicities(step_file.steps)
    for number, (step, times) in enumerate(zip(step_file.steps, runs, strict=True), start=1):
        name = step.step_type.name
        if step.step_type is StepType.CYCLE:
            detail = f"repeat steps {step.loop_start_step}-{number - 1}, {step.cycle_count} times"
        elif step.step_type is StepType.END:
            detail = ""
        elif step.step_type is StepType.REST:
            detail = f"for {format_duration(step.time_s or 0.0)}"
            if times > 1:
                detail += f" × {times}"
        else:
            parts = []
            if step.current_ma is not None:
                parts.append(f"{step.current_ma:.4g} mA")
            if step.voltage_v is not None:
                parts.append(f"at {step.voltage_v:g} V")
            ends = []
            if step.time_s is not None:
                ends.append(format_duration(step.time_s))
            if step.capacity_mah is not None:
                ends.append(f"{step.capacity_mah:.4g} mAh")
            if step.stop_voltage_v is not None:
                ends.append(f"{step.stop_voltage_v:g} V")
            if step.stop_current_ma is not None:
                ends.append(f"{step.stop_current_ma:.4g} mA")
            parts.append("until " + " or ".join(ends))
            duration = _step_duration_s(step)
            parts.append(f"(≈ {format_duration(duration)})" if duration else "(open-ended)")
            if times > 1:
                parts.append(f"× {times}")
            detail = " ".join(parts)
        if number in windows:
            detail += "; step limits: " + ", ".join(
                _window_text(protocol, limit) for limit in windows[number]
            )
        if step.record_interval_s is not None:
            detail += f"; record every {format_duration(step.record_interval_s)}"
        lines.append(f"{number:>4}  {name:<13} {detail}".rstrip())
    total_s, exact = expected_length_s(step_file)
    prefix = "" if exact else "at least "
    lines.append(
        f"expected length: {prefix}{_length_text(total_s)}, {protocol.expected_cycles()} cycles"
    )
    return "\n".join(lines)
