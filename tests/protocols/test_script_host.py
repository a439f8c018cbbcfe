"""The host-driven executor on an ideal cell: ends, gotos, limits, soaks, resume.

The cell is integrated here in virtual time (no sleeping, no transport): V = OCV + I·R,
the OCV of a full cell rises with its charge, a Li|Li working electrode with a finite
Li stock jumps to 3 V when a strip has used it up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.script import (
    DEFAULT_TEMPERATURE_AUX,
    Action,
    CellSpec,
    Finished,
    HostRun,
    InstrumentCapability,
    OutputOff,
    Plate,
    Protocol,
    SetAux,
    SourceCurrent,
    SourceVoltage,
    StepStarted,
    Strip,
    expected_length_s,
    parse_step,
    seconds,
    to_step_file,
    volts,
)
from cellguard.protocols.script import VoltageBetween as Window
from cellguard.protocols.script.library import (
    LibraryProtocol,
    asymmetric_cycling,
    coulombic_efficiency,
    critical_current_density,
    full_cell_cccv,
    plating_to_failure,
    symmetric_cycling,
)

AREA = math.pi * 0.5**2
SYM = CellSpec("symmetric", diameter_mm=10, thick_li_um=100)
ASYM = CellSpec("asymmetric", diameter_mm=10, thick_li_um=100, thin_li_um=20)
FULL = CellSpec("full", diameter_mm=10, capacity_mah=2.0)
SMU = InstrumentCapability(
    current_range_ma=10.0, voltage_range_v=5.0, min_record_interval_s=0.1, name="SMU"
)


@dataclass
class IdealCell:
    """V = OCV(q) + I·R; ``working_mah`` is the Li a strip (I > 0) can take."""

    r_ohm: float = 50.0
    working_mah: float = math.inf
    full_capacity_mah: float | None = None  # a full cell: OCV 3.0 → 4.3 V over it
    q_mah: float = 0.0  # charge passed, signed (positive charges / strips)
    mode: str = "off"
    setpoint: float = 0.0
    compliance: float = 0.0

    def ocv_v(self) -> float:
        if self.full_capacity_mah is not None:
            return 3.0 + 1.3 * self.q_mah / self.full_capacity_mah
        return 0.0

    def current_a(self) -> float:
        if self.mode == "current":
            return self.setpoint
        if self.mode == "voltage":
            current = (self.setpoint - self.ocv_v()) / self.r_ohm
            return max(-self.compliance, min(self.compliance, current))
        return 0.0

    def voltage_v(self) -> float:
        current = self.current_a()
        depleted = current > 0 and self.q_mah >= self.working_mah
        return self.ocv_v() + current * self.r_ohm + (3.0 if depleted else 0.0)

    def advance(self, dt_s: float) -> None:
        self.q_mah += self.current_a() * dt_s / 3.6

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SourceCurrent):
                self.mode, self.setpoint = "current", action.current_a
            elif isinstance(action, SourceVoltage):
                self.mode, self.setpoint = "voltage", action.voltage_v
                self.compliance = action.compliance_a
            elif isinstance(action, OutputOff):
                self.mode = "off"


@dataclass
class Trace:
    """What a run did: every observe's time and actions, and each step start."""

    log: list[tuple[float, list[Action]]]
    starts: list[tuple[float, StepStarted, float]]  # (t_s, the action, cell q_mah then)
    readings: list[tuple[float, float, float]]  # (t_s, voltage_v, current_a) observed
    finished: Finished | None
    t_s: float
    q_end_mah: float
    samples: int

    def steps_run(self) -> list[tuple[int, float, float]]:
        """(step number, duration s, |capacity| mAh) of every step that ran."""
        ends = [(t, q) for t, _, q in self.starts[1:]] + [(self.t_s, self.q_end_mah)]
        return [
            (started.step_number, t1 - t0, abs(q1 - q0))
            for (t0, started, q0), (t1, q1) in zip(self.starts, ends, strict=True)
        ]


def drive(
    run: HostRun,
    cell: IdealCell,
    *,
    t0_s: float = 0.0,
    aux: Callable[[float], Mapping[str, float]] | None = None,
    max_samples: int = 200_000,
    stop_after: int | None = None,
    first: list[Action] | None = None,
) -> Trace:
    """Run ``run`` on ``cell`` in virtual time, as a runner would."""
    t_s = t0_s
    actions = run.start(t_s) if first is None else first
    log: list[tuple[float, list[Action]]] = []
    starts: list[tuple[float, StepStarted, float]] = []
    readings: list[tuple[float, float, float]] = []

    def take(actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StepStarted):
                starts.append((t_s, action, cell.q_mah))
        cell.apply(actions)

    take(actions)
    samples = 0
    while run.finished is None and samples < max_samples:
        if stop_after is not None and samples >= stop_after:
            break
        due = run.next_sample_due_s()
        assert due is not None
        assert t_s < due <= t_s + run.protocol.record_every.value + 1e-9
        cell.advance(due - t_s)
        t_s = due
        voltage_v, current_a = cell.voltage_v(), cell.current_a()
        readings.append((t_s, voltage_v, current_a))
        actions = run.observe(t_s, voltage_v, current_a, aux(t_s) if aux else None)
        samples += 1
        log.append((t_s, actions))
        take(actions)
    return Trace(log, starts, readings, run.finished, t_s, cell.q_mah, samples)


def _count(trace: Trace, number: int) -> int:
    return sum(1 for _, s, _ in trace.starts if s.step_number == number)


def _numbers(trace: Trace) -> list[int]:
    return [s.step_number for _, s, _ in trace.starts]


# ---------------------------------------------------------------- library protocols


def _library(which: int, j: float, q: float, record_s: float) -> tuple[LibraryProtocol, int]:
    """A library protocol and how many current steps (half cycles) it runs."""
    match which:
        case 0:
            return symmetric_cycling(SYM, j, q, 3, record_s, initial_rest_min=10), 6
        case 1:
            return asymmetric_cycling(ASYM, j, q, 2, record_s), 4
        case 2:
            return critical_current_density(
                SYM, levels_ma_cm2=(j, 2 * j), areal_capacity_mah_cm2=q, record_every_s=record_s
            ), 4
        case 3:
            return plating_to_failure(
                SYM, j, 4 * q, segment_mah_cm2=q, segment_rest_s=60, record_every_s=record_s
            ), 4
        case _:
            return symmetric_cycling(SYM, j, q, 2, record_s, temperature_c=60, soak_min=15), 4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(min_value=0, max_value=4),
    j=st.floats(min_value=0.1, max_value=5.0),
    q=st.floats(min_value=0.05, max_value=2.0),
    per_half=st.floats(min_value=3.0, max_value=150.0),
)
def test_every_library_protocol_runs_its_capacities_durations_and_half_cycles(
    which: int, j: float, q: float, per_half: float
) -> None:
    """Each half cycle passes its capacity to within one sample's worth, the run has as
    many half cycles as the protocol and lasts its expected length."""
    half_s = q / j * 3600.0
    record_s = max(1.0, half_s / per_half)
    lp, half_cycles = _library(which, j, q, record_s)
    protocol = lp.protocol
    run = HostRun(protocol, SMU)
    trace = drive(run, IdealCell(), aux=lambda _t: {DEFAULT_TEMPERATURE_AUX: 60.2})
    assert trace.finished is not None
    assert trace.finished.outcome == "completed"
    sf = to_step_file(protocol)
    length_s, exact = expected_length_s(sf)
    assert exact
    # A soak's wait ends at its first reading: one record interval, or the wait's
    # timeout (4 h) if that comes first (the reading is taken then, in band).
    soak_s = min(record_s, 4 * 3600.0) if which == 4 else 0.0
    assert trace.t_s == pytest.approx(length_s + soak_s, rel=1e-9, abs=1e-6)
    halves = [h for h in trace.steps_run() if isinstance(protocol.steps[h[0] - 1], Strip | Plate)]
    assert len(halves) == half_cycles
    for number, _duration_s, passed_mah in halves:
        step = protocol.steps[number - 1]
        assert isinstance(step, Strip | Plate)
        assert step.capacity is not None
        target_mah = protocol.cell.capacity_mah_of(step.capacity)
        one_sample_mah = protocol.cell.current_ma(step.current) * record_s / 3600.0
        assert target_mah - 1e-9 <= passed_mah <= target_mah + one_sample_mah
        assert passed_mah == pytest.approx(target_mah, rel=1e-9)  # the end is predicted
    cycles = max(s.cycle for _, s, _ in trace.starts)
    assert cycles == protocol.expected_cycles()


def test_the_standard_protocol_runs_one_hour_half_cycles_at_0_3927_ma() -> None:
    lp = symmetric_cycling(SYM, 0.5, 0.5, cycles=2, record_every_s=60)
    run = HostRun(lp.protocol)
    cell = IdealCell()
    actions = run.start(0.0)
    assert actions == [
        StepStarted(1, "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2", 1),
        SourceCurrent(pytest.approx(0.5 * AREA / 1000), 5.0),  # type: ignore[arg-type]
    ]
    trace = drive(run, cell, first=actions)
    assert [(round(t), s.step_number, s.cycle) for t, s, _ in trace.starts] == [
        (0, 1, 1),
        (3600, 2, 1),
        (7200, 1, 2),
        (10800, 2, 2),
    ]
    assert trace.samples == 4 * 60
    assert trace.log[-1][1][-2:] == [OutputOff(), Finished("completed", "all steps done, 2 cycles")]
    assert run.observe(99999.0, 0.0, 0.0) == []  # finished: nothing more to do


def test_coulombic_efficiency_strips_the_plated_li_to_its_cut_off() -> None:
    cell = CellSpec("asymmetric", diameter_mm=10, thick_li_um=100, thin_li_um=1)
    lp = coulombic_efficiency(cell, 0.5, 3.0, record_every_s=10)
    run = HostRun(lp.protocol)
    initial_mah = 0.205 * AREA
    trace = drive(run, IdealCell(working_mah=initial_mah))
    assert trace.finished is not None
    assert trace.finished.outcome == "completed"
    (_, _, plated), (_, _, stripped) = trace.steps_run()
    assert plated == pytest.approx(3.0 * AREA)
    one_sample_mah = 0.5 * AREA * 10 / 3600
    # The strip takes the plated Li and the initial stock, ending one sample past it.
    assert stripped - plated == pytest.approx(initial_mah, abs=one_sample_mah + 1e-12)


def test_full_cell_cc_cv_runs_its_cycles_and_the_hold_ends_at_its_current_tail() -> None:
    lp = full_cell_cccv(FULL, 0.5, 4.2, 2.5, 0.05, cycles=2, record_every_s=30)
    run = HostRun(lp.protocol)
    cell = IdealCell(r_ohm=20.0, full_capacity_mah=2.0, q_mah=0.0)
    trace = drive(run, cell)
    assert trace.finished is not None
    assert trace.finished.outcome == "completed"
    assert _numbers(trace) == [1, 2, 3, 1, 2, 3]
    holds = [a for _, acts in trace.log for a in acts if isinstance(a, SourceVoltage)]
    # The hold's ceiling is the CC step's current (C/2 of 2 mAh), as on the Neware.
    assert holds[0] == SourceVoltage(4.2, pytest.approx(1e-3))  # type: ignore[arg-type]
    hold_end = next(t for t, s, _ in trace.starts if s.step_number == 3)
    index = next(i for i, (t, _, _) in enumerate(trace.readings) if t == hold_end)
    # The hold ended on the first sample at or below C/20 (0.1 mA), not before.
    assert abs(trace.readings[index][2]) <= 1e-4
    assert abs(trace.readings[index - 1][2]) > 1e-4


# ---------------------------------------------------------------- goto


def _p(*steps: str, limits: tuple[Window, ...] = (), record_s: float = 10.0) -> Protocol:
    return Protocol(
        "p",
        cell=CellSpec("symmetric", area_cm2=1.0),
        steps=[parse_step(s, n) for n, s in enumerate(steps, start=1)],
        limits=limits,
        record_every=seconds(record_s),
    )


GOTO = _p(
    "Strip at 1 mA for 1 mAh or until 1 V, then goto step 4 if voltage above 1 V",
    "Plate at 1 mA for 1 mAh",
    "Rest for 1 h",
    "Rest for 10 min",
)


def test_a_goto_is_taken_when_its_condition_holds_at_the_end_of_the_step() -> None:
    trace = drive(HostRun(GOTO), IdealCell(working_mah=0.5))
    assert _numbers(trace) == [1, 4]
    assert trace.starts[1][0] == pytest.approx(1800.0, abs=10.0)  # depleted after 0.5 mAh
    assert trace.finished == Finished("completed", "all steps done, 1 cycles")


def test_a_goto_is_not_taken_when_the_step_ends_otherwise() -> None:
    trace = drive(HostRun(GOTO), IdealCell())
    assert _numbers(trace) == [1, 2, 3, 4]
    assert trace.starts[1][0] == pytest.approx(3600.0)


@pytest.mark.parametrize(
    ("condition", "taken"),
    [
        ("time reached 10 min", True),
        ("time reached 11 min", False),
        ("capacity reached 0.1 mAh", True),
        ("capacity reached 0.2 mAh", False),
        ("voltage above 0.05 V", True),  # I·R = 1 mA · 50 Ω, exactly at the threshold
        ("voltage above 0.0501 V", False),
        ("voltage below 0.05 V", True),
        ("voltage below 0.0499 V", False),
        ("current below 1 mA", True),
        ("current below 0.999 mA", False),
    ],
)
def test_each_condition_is_judged_on_the_last_sample_of_the_step(
    condition: str, taken: bool
) -> None:
    protocol = _p(
        f"Strip at 1 mA for 10 min, then goto step 3 if {condition}",
        "Rest for 1 min",
        "Rest for 2 min",
    )
    trace = drive(HostRun(protocol), IdealCell())
    assert _numbers(trace) == ([1, 3] if taken else [1, 2, 3])


def test_goto_end_finishes_the_run_and_skips_the_rest() -> None:
    protocol = _p("Rest for 1 min, then goto end if voltage below 1 V", "Strip at 1 mA for 1 h")
    trace = drive(HostRun(protocol), IdealCell())
    assert _numbers(trace) == [1]
    assert trace.finished == Finished("completed", "a goto ended the protocol")


def test_a_backward_goto_loops_until_the_condition_fails_and_counts_cycles() -> None:
    protocol = _p(
        "Strip at 1 mA for 0.2 mAh or until 1 V, then goto step 3 if voltage above 1 V",
        "Rest for 1 min, then goto step 1 if time reached 1 min",
        "Rest for 1 min",
    )
    trace = drive(HostRun(protocol), IdealCell(working_mah=0.5))
    assert _numbers(trace) == [1, 2, 1, 2, 1, 3]
    assert [s.cycle for _, s, _ in trace.starts] == [1, 1, 2, 2, 3, 3]


def test_a_goto_out_of_a_repeat_ends_that_loop_and_it_starts_afresh_later() -> None:
    protocol = _p(
        "Strip at 1 mA for 1 min",
        "Plate at 1 mA for 1 min, then goto step 4 if time reached 1 min",
        "Repeat steps 1-2 3 times",
        "Rest for 1 min, then goto step 1 if capacity reached 1 mAh",
    )
    # Step 4 never passes capacity at rest: it falls through and the run ends.
    trace = drive(HostRun(protocol), IdealCell())
    assert _numbers(trace) == [1, 2, 4]
    protocol = _p(
        "Strip at 1 mA for 1 min",
        "Plate at 1 mA for 1 min, then goto step 4 if voltage below -1 V",
        "Repeat steps 1-2 3 times",
        "Rest for 1 min",
    )
    assert _numbers(drive(HostRun(protocol), IdealCell())) == [1, 2, 1, 2, 1, 2, 4]


# ---------------------------------------------------------------- limits


def test_a_step_limit_ends_the_run_naming_the_step_and_the_value() -> None:
    protocol = _p("Strip at 1 mA for 1 mAh within -0.5 V and 0.5 V", "Rest for 1 h")
    run = HostRun(protocol)
    trace = drive(run, IdealCell(working_mah=0.25))
    assert trace.finished is not None
    assert trace.finished.outcome == "limit"
    assert trace.finished.step_number == 1
    assert trace.finished.value == pytest.approx(3.05)
    assert "voltage 3.05 V reached step 1's limit 'Voltage between -0.5 V and 0.5 V'" in (
        trace.finished.detail
    )
    assert "'Strip at 1 mA for 1 mAh within -0.5 V and 0.5 V'" in trace.finished.detail
    assert trace.log[-1][1] == [OutputOff(), trace.finished]
    assert trace.t_s == pytest.approx(900.0, abs=10.0)


def test_a_step_limit_binds_only_its_own_step() -> None:
    protocol = _p("Rest for 1 min", "Strip at 1 mA for 1 min within -0.01 V and 0.01 V")
    run = HostRun(protocol)
    run.start(0.0)
    assert run.observe(60.0, 0.5, 0.0)[0] == StepStarted(2, protocol.steps[1].text, 1)
    finish = run.observe(70.0, 0.05, 1e-3)
    assert finish[-1].outcome == "limit"  # type: ignore[union-attr]


def test_current_ceilings_and_whole_test_limits_trip_too() -> None:
    protocol = _p("Strip at 1 mA for 1 h within 1.5 mA", limits=(Window(volts(-1), volts(1)),))
    run = HostRun(protocol)
    run.start(0.0)
    assert run.observe(10.0, 0.05, 1.4e-3) == []
    actions = run.observe(20.0, 0.05, 1.6e-3)
    assert actions[-1] == Finished(
        "limit",
        "current 1.6 mA reached step 1's limit 'Current below 1.5 mA' in step 1 "
        "'Strip at 1 mA for 1 h within 1.5 mA'",
        1,
        1.6e-3,
    )
    run = HostRun(protocol)
    run.start(0.0)
    finished = run.observe(10.0, 1.0, 1e-3)[-1]
    assert isinstance(finished, Finished)
    assert finished.outcome == "limit"
    assert "the whole-test limit 'Voltage between -1 V and 1 V'" in finished.detail


# ---------------------------------------------------------------- temperature


SOAK = _p(
    "Set temperature to 60 °C and wait until within 1 °C for at most 30 min",
    "Rest for 10 min",
    record_s=60.0,
)


def test_a_soak_rests_the_cell_until_the_chamber_reads_within_the_band() -> None:
    run = HostRun(SOAK)
    actions = run.start(0.0)
    assert actions == [
        StepStarted(1, SOAK.steps[0].text, 1),
        SetAux(DEFAULT_TEMPERATURE_AUX, 60.0),
        SourceCurrent(0.0, 5.0),
    ]
    trace = drive(
        run, IdealCell(), aux=lambda t: {DEFAULT_TEMPERATURE_AUX: 25 + 2 * t / 60}, first=actions
    )
    # 2 °C/min from 25 °C: 59 °C at 17 min, the first reading inside the band.
    assert trace.starts[1][0] == pytest.approx(17 * 60.0)
    assert trace.finished is not None
    assert trace.finished.outcome == "completed"
    assert trace.t_s == pytest.approx(27 * 60.0)


@pytest.mark.parametrize(
    ("aux", "seen"),
    [
        (lambda t: {DEFAULT_TEMPERATURE_AUX: 25 + t / 60}, "the reading was 55 °C"),
        (lambda t: {}, "no reading"),
    ],
)
def test_a_soak_that_never_reaches_the_band_times_out(
    aux: Callable[[float], Mapping[str, float]], seen: str
) -> None:
    trace = drive(HostRun(SOAK), IdealCell(), aux=aux)
    assert trace.finished is not None
    assert trace.finished.outcome == "aux_timeout"
    assert trace.t_s == pytest.approx(30 * 60.0)
    assert "did not come within 1 °C of 60 °C in 1800 s" in trace.finished.detail
    assert seen in trace.finished.detail
    assert _numbers(trace) == [1]


def test_a_setpoint_without_a_wait_takes_no_time_and_the_aux_name_is_configurable() -> None:
    protocol = _p("Rest for 1 min", "Set temperature to 25 C", "Rest for 1 min")
    run = HostRun(protocol, temperature_aux="oven_c")
    run.start(0.0)
    assert run.observe(60.0, 0.0, 0.0) == [
        StepStarted(2, "Set temperature to 25 C", 1),
        SetAux("oven_c", 25.0),
        StepStarted(3, "Rest for 1 min", 1),
        SourceCurrent(0.0, 5.0),
    ]


# ---------------------------------------------------------------- resume


RESUMABLE = [
    lambda: symmetric_cycling(SYM, 0.5, 0.2, 3, 60.0, initial_rest_min=5).protocol,
    lambda: _p(
        "Strip at 1 mA for 0.2 mAh or until 1 V, then goto step 3 if voltage above 1 V",
        "Rest for 1 min, then goto step 1 if time reached 1 min",
        "Set temperature to 30 °C and wait until within 1 °C",
        "Rest for 5 min",
        record_s=30.0,
    ),
    lambda: full_cell_cccv(FULL, 1.0, 4.2, 2.5, 0.1, cycles=2, record_every_s=60).protocol,
]


def _cell_for(index: int) -> IdealCell:
    if index == 2:
        return IdealCell(r_ohm=20.0, full_capacity_mah=2.0)
    return IdealCell(working_mah=0.5)


def _aux(t_s: float) -> Mapping[str, float]:
    return {DEFAULT_TEMPERATURE_AUX: 25 + t_s / 600}


@settings(max_examples=30, deadline=None)
@given(which=st.integers(min_value=0, max_value=2), fraction=st.floats(min_value=0, max_value=1))
def test_resuming_from_a_position_gives_the_same_remaining_actions(
    which: int, fraction: float
) -> None:
    """Stop anywhere, keep only the JSON position, resume: the rest of the run is the
    uninterrupted run's, action for action and sample for sample."""
    protocol = RESUMABLE[which]()
    whole = drive(HostRun(protocol), _cell_for(which), aux=_aux)
    assert whole.finished is not None
    stop = min(int(fraction * whole.samples), whole.samples - 1)
    run = HostRun(protocol)
    cell = _cell_for(which)
    head = drive(run, cell, aux=_aux, stop_after=stop)
    assert head.log == whole.log[:stop]
    mode_before = (cell.mode, cell.setpoint)
    position = json.loads(json.dumps(run.position()))  # all that survives the restart
    resumed, actions = HostRun.resume(protocol, None, position, head.t_s)
    assert isinstance(actions[0], StepStarted)
    assert actions[0].step_number == position["step"]
    cell.apply(actions)
    assert (cell.mode, cell.setpoint) == mode_before  # the set-point is re-applied
    tail = drive(resumed, cell, aux=_aux, t0_s=head.t_s, first=actions)
    assert tail.log == whole.log[stop:]
    assert tail.finished == whole.finished


def test_resume_continues_a_half_cycle_without_repeating_or_skipping_it() -> None:
    protocol = symmetric_cycling(SYM, 0.5, 0.5, 2, 60.0).protocol
    run = HostRun(protocol)
    cell = IdealCell()
    drive(run, cell, stop_after=90)  # 1.5 h: in the first plate
    position = run.position()
    assert position["step"] == 2
    assert position["step_elapsed_s"] == pytest.approx(1800.0)
    assert position["step_capacity_mah"] == pytest.approx(0.25 * AREA)
    # The daemon was down for a day; its clock restarted at 0.
    resumed, actions = HostRun.resume(protocol, None, position, 5.0)
    assert actions[0] == StepStarted(2, protocol.steps[1].text, 1)
    tail = drive(resumed, cell, t0_s=5.0, first=actions)
    assert _numbers(tail) == [2, 1, 2]
    assert tail.starts[1][0] == pytest.approx(5.0 + 1800.0)
    assert tail.t_s == pytest.approx(5.0 + 1800.0 + 7200.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": 2}, "position.version"),
        ({"step": 3}, "position.step"),  # the Repeat
        ({"step": 9}, "position.step"),
        ({"step_elapsed_s": -1.0}, "position.step_elapsed_s"),
        ({"loops": {"1": 1}}, "position.loops"),
        ({"loops": {"3": 5}}, "position.loops"),
        ({"cycle": "two"}, "position.cycle"),
    ],
)
def test_a_damaged_position_is_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    protocol = symmetric_cycling(SYM, cycles=5).protocol
    run = HostRun(protocol)
    run.start(0.0)
    position = {**run.position(), **change}
    with pytest.raises(ConfigError) as info:
        HostRun.resume(protocol, None, position, 0.0)
    assert info.value.field == field


# ---------------------------------------------------------------- misuse


def test_misuse_is_refused_with_a_clear_error() -> None:
    run = HostRun(GOTO)
    with pytest.raises(ConfigError, match="start"):
        run.observe(0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="only a running run"):
        run.position()
    run.start(10.0)
    with pytest.raises(ConfigError, match="already started"):
        run.start(10.0)
    with pytest.raises(ConfigError, match="time went back"):
        run.observe(5.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="finite") as info:
        run.observe(20.0, math.nan, 0.0)
    assert info.value.field == "voltage_v"
    with pytest.raises(ConfigError, match=r"allows at most 0\.5 mA"):
        HostRun(GOTO, InstrumentCapability(current_range_ma=0.5, name="tiny"))
    assert HostRun(GOTO).next_sample_due_s() is None
