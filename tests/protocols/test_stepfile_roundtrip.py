"""Compile → BTS XML → parse gives back the same steps and every limit (issue 16).

Drawn protocols carry per-step windows (voltage and current) and whole-test limits;
the parsed file must hold each of them, in the step it belongs to, signed as BTS
reads current protection. Numbers agree to what the XML holds (6 decimals in the
instrument's units: mA, ms, 0.1 mV, mAs).
"""

from __future__ import annotations

from dataclasses import astuple, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellguard.drivers.neware import Protection, StepType, parse_step_file, render_step_file
from cellguard.protocols import CURRENT_PROTECTION_FACTOR
from cellguard.protocols.script import (
    CellSpec,
    CurrentBelow,
    Limit,
    Plate,
    Protocol,
    Repeat,
    Rest,
    Strip,
    VoltageBetween,
    ma,
    parse_step,
    seconds,
    to_step_file,
    volts,
)
from cellguard.protocols.script import Step as ScriptStep

CELL = CellSpec("symmetric", diameter_mm=10, thick_li_um=100)
_current_ma = st.integers(1, 10_000).map(lambda n: n / 1000)  # up to the 10 mA range
_time_s = st.integers(1, 3600)
_volt = st.integers(-5000, 5000).map(lambda n: n / 1000)


@st.composite
def _window(draw: st.DrawFn) -> tuple[Limit, ...]:
    limits: list[Limit] = []
    if draw(st.booleans()):
        low, high = sorted(draw(st.lists(_volt, min_size=2, max_size=2, unique=True)))
        limits.append(VoltageBetween(volts(low), volts(high)))
    if draw(st.booleans()):
        limits.append(CurrentBelow(ma(draw(_current_ma))))
    return tuple(limits)


@st.composite
def _protocols(draw: st.DrawFn) -> Protocol:
    steps: list[ScriptStep] = []
    for kind in draw(st.lists(st.sampled_from(["rest", "strip", "plate"]), min_size=1, max_size=6)):
        limits = draw(_window())
        record = draw(st.none() | st.integers(1, 600).map(seconds))
        if kind == "rest":
            steps.append(Rest(seconds(draw(_time_s)), limits=limits, record_every=record))
        else:
            verb = Strip if kind == "strip" else Plate
            steps.append(
                verb(
                    ma(draw(_current_ma)),
                    duration=seconds(draw(_time_s)),
                    limits=limits,
                    record_every=record,
                )
            )
    if draw(st.booleans()):
        first = draw(st.integers(1, len(steps)))
        steps.append(Repeat(first, len(steps), times=draw(st.integers(1, 65_535))))
    return Protocol(
        "drawn",
        cell=CELL,
        steps=steps,
        limits=draw(_window()),
        record_every=seconds(draw(st.integers(1, 600))),
    )


def _expected(protocol: Protocol, limits: tuple[Limit, ...]) -> Protection:
    """What a window must become in the file: the tightest bounds, current signed."""
    volt = [lim for lim in limits if isinstance(lim, VoltageBetween)]
    curr = [
        protocol.cell.current_ma(lim.current) for lim in limits if isinstance(lim, CurrentBelow)
    ]
    return Protection(
        voltage_upper_v=min(v.high.value for v in volt) if volt else None,
        voltage_lower_v=max(v.low.value for v in volt) if volt else None,
        current_upper_ma=min(curr) if curr else None,
        current_lower_ma=-min(curr) if curr else None,
    )


def _numbers(protection: Protection | None) -> tuple[object, ...]:
    return astuple(protection if protection is not None else Protection())


@settings(max_examples=60, deadline=None)
@given(_protocols())
def test_compile_then_parse_gives_back_the_same_steps_and_every_limit(protocol: Protocol) -> None:
    compiled = to_step_file(protocol)
    parsed = parse_step_file(render_step_file(compiled).encode("utf-8"))

    assert [s.step_type for s in parsed.steps] == [s.step_type for s in compiled.steps]
    for script_step, step in zip(protocol.steps, parsed.steps, strict=False):
        if isinstance(script_step, Repeat):
            assert step.step_type is StepType.CYCLE
            assert (step.loop_start_step, step.cycle_count) == (
                script_step.first_step,
                script_step.times,
            )
            continue
        assert step.time_s == pytest.approx(
            script_step.duration.value if script_step.duration else None
        )
        if not isinstance(script_step, Rest):
            assert step.current_ma == pytest.approx(script_step.current.value, abs=1e-6)
        record = script_step.record_every
        assert step.record_interval_s == (None if record is None else record.value)
        expected = _expected(protocol, script_step.limits)
        assert _numbers(step.protection) == pytest.approx(_numbers(expected), abs=1e-6)
    whole = _expected(protocol, tuple(protocol.limits))
    if whole.current_upper_ma is None:
        # No current limit given: the backstop is a factor over the largest set-point.
        set_points = [s.current.value for s in protocol.steps if isinstance(s, Strip | Plate)]
        if set_points:
            backstop_ma = CURRENT_PROTECTION_FACTOR * max(set_points)
            whole = replace(whole, current_upper_ma=backstop_ma, current_lower_ma=-backstop_ma)
    assert _numbers(parsed.protection) == pytest.approx(_numbers(whole), abs=1e-6)
    assert parsed.record_interval_s == protocol.record_every.value


@settings(max_examples=60, deadline=None)
@given(_protocols())
def test_each_step_written_as_text_reads_back_the_same(protocol: Protocol) -> None:
    """Windows and a step's own record interval survive the text form too."""
    for number, step in enumerate(protocol.steps, start=1):
        assert parse_step(step.text, number) == step
