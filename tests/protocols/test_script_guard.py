"""Per-step limits on a Neware: a step's own window judged on the samples of that step."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cellguard.protocols.detectors import DetectorSettings, make_detector
from cellguard.protocols.script import StepLimitGuard, parse_protocol_text, step_limits

TEXT = """
[cell]
type = "symmetric"
diameter_mm = 10
thick_li_um = 100

[protocol]
name = "windowed"
record_every = "60 s"
steps = [
  "Set temperature to 60 °C and wait until within 1 °C",
  "Rest for 10 min",
  "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 within -0.05 V and 0.05 V",
  "Plate at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Repeat steps 3-4 10 times",
]
"""


def _guard() -> StepLimitGuard:
    protocol = parse_protocol_text(TEXT)
    return StepLimitGuard(make_detector(DetectorSettings(cell="symmetric")), protocol)


def test_the_limits_are_keyed_by_the_bts_step_the_instrument_reports() -> None:
    # The setpoint takes no BTS step: the strip is script step 3 and BTS step 2.
    assert list(step_limits(parse_protocol_text(TEXT))) == [2]


def test_a_sample_beyond_its_steps_window_halts_at_once_naming_the_step() -> None:
    guard = _guard()
    assert guard.feed(60.0, 0.012, 0.000393, step=2).severity == "ok"
    verdict = guard.feed(120.0, 0.051, 0.000393, step=2)
    assert verdict.severity == "halt"
    assert (verdict.kind, verdict.subkind, verdict.criterion) == ("limit", "step", "step limit")
    assert verdict.threshold == 0.05
    assert "step 3" in verdict.detail
    assert guard.halt is verdict
    # Once halted, nothing more is judged.
    assert guard.feed(180.0, 3.0, 0.000393, step=2).severity == "ok"


def test_the_window_binds_only_its_own_step() -> None:
    guard = _guard()
    # The same voltage on the plating step (BTS 3) or with no step id is not a trip.
    assert guard.feed(60.0, -0.2, -0.000393, step=3).severity == "ok"
    assert guard.feed(120.0, 0.2, 0.000393, step=None).severity == "ok"
    assert guard.halt is None


@given(st.lists(st.floats(min_value=-0.1, max_value=0.1), min_size=1, max_size=40))
def test_feed_batch_gives_the_verdicts_of_feed(voltages: list[float]) -> None:
    one, many = _guard(), _guard()
    t = np.arange(len(voltages), dtype=np.float64) * 60.0 + 60.0
    v = np.asarray(voltages, dtype=np.float64)
    i = np.full(len(voltages), 0.000393)
    k = np.full(len(voltages), 2, dtype=np.int64)
    expected = [
        x
        for x in (one.feed(*args, step=2) for args in zip(t, v, i, strict=True))
        if x.severity != "ok"
    ]
    assert many.feed_batch(t, v, i, k) == expected
