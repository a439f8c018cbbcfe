"""bench/bench_detectors.py on the reality families: a table per family, each case judged
as its channel would be. What the detectors score is the benchmark's business, not this."""

from __future__ import annotations

import contextlib
import io
import json
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from shared import load_bench

from cellguard.protocols.detectors.corpus_reality import (
    REALITY_FAULT_FAMILIES,
    REALITY_NON_FAULT_FAMILIES,
    generate_reality,
)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("bench_detectors")


def test_a_full_cell_is_judged_in_its_protocols_window(bench: ModuleType) -> None:
    formation = next(c for c in generate_reality(0, quick=True) if c.family == "formation")
    settings = bench.settings_for(formation)
    assert settings.cell == "full"
    assert (settings.full_v_min_v, settings.full_v_max_v) == (formation.v_min_v, formation.v_max_v)


def test_step_kinds_reach_a_detector_that_takes_them(bench: ModuleType) -> None:
    case = next(c for c in generate_reality(0, quick=True) if c.family == "pause")
    assert case.step_kind is not None
    received: list[Any] = []

    class TakesStepKind(bench.FixedLimit):  # type: ignore[name-defined,misc]
        def feed_batch(
            self,
            t_s: np.ndarray,
            voltage_v: np.ndarray,
            current_a: np.ndarray,
            step: np.ndarray | None = None,
            cycle: np.ndarray | None = None,
            step_kind: np.ndarray | None = None,
        ) -> list[Any]:
            received.append(step_kind)
            result: list[Any] = super().feed_batch(t_s, voltage_v, current_a, step, cycle)
            return result

    bench.run_case(case, TakesStepKind(bench.settings_for(case)))
    assert len(received) == 1
    assert np.array_equal(received[0], case.step_kind)
    # A detector without the parameter is called as before.
    outcome = bench.run_case(case, bench.FixedLimit(bench.settings_for(case)))
    assert not outcome.false_halt


def test_the_reality_sets_get_a_row_per_family_with_delays_in_samples_and_seconds(
    bench: ModuleType,
) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench.main(["--quick", "--json", "--corpus", "reality", "--parity-every", "50"]) == 0
    result = json.loads(out.getvalue())
    assert set(result["sets"]) == {"reality tuning", "reality held-out"}
    for name in ("reality tuning", "reality held-out"):
        per_family = result["sets"][name]["detectors"]["cellguard"]["per_family"]
        assert set(per_family) == set(REALITY_FAULT_FAMILIES) | set(REALITY_NON_FAULT_FAMILIES)
        for family in REALITY_FAULT_FAMILIES:
            row = per_family[family]
            assert row["faults"] >= 1
            assert {"median", "worst"} <= set(row["delay_samples"])
            assert {"median", "worst"} <= set(row["delay_s"])
        assert per_family["pause"]["faults"] == 0
    assert result["held_out_pass"] is None, "the classic corpus was not run"
    assert result["reality_held_out_pass"] in (True, False)
