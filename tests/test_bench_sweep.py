"""bench/sweep_detectors.py: the seed sweep's table, its goal counts and its list of the
cases outside the goals, from bench_detectors.py's JSON."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from shared import load_bench


@pytest.fixture(scope="module")
def sweep() -> ModuleType:
    return load_bench("sweep_detectors")


def _case(name: str, *, fault: bool, delay: float | None, false_halt: bool = False) -> Any:
    return {
        "case": name,
        "fault": fault,
        "caught": fault and delay is not None,
        "false_halt": false_halt,
        "delay_samples": delay,
        "halt_criterion": "slide" if fault else "drop",
    }


def _payload(cases: list[dict[str, Any]], set_names: tuple[str, ...]) -> dict[str, Any]:
    faults = [c for c in cases if c["fault"]]
    delays = [c["delay_samples"] for c in faults if c["caught"]]
    overall = {
        "faults": len(faults),
        "caught": sum(c["caught"] for c in faults),
        "false_halts": sum(c["false_halt"] for c in cases),
        "delay_samples": {
            "median": sorted(delays)[len(delays) // 2] if delays else None,
            "worst": max(delays) if delays else None,
        },
    }
    figures = {"detectors": {"cellguard": {"overall": overall, "cases": cases}}}
    return {"sets": dict.fromkeys(set_names, figures)}


def test_seeds_are_read_as_lists_and_ranges(sweep: ModuleType) -> None:
    assert sweep.parse_seeds("0-3") == [0, 1, 2, 3]
    assert sweep.parse_seeds("7,0,4-5") == [0, 4, 5, 7]
    with pytest.raises(ValueError, match="--seeds: 'x' is not a seed"):
        sweep.parse_seeds("x")
    with pytest.raises(ValueError, match="--seeds: '5-2' is no range"):
        sweep.parse_seeds("5-2")


def test_a_set_outside_a_goal_is_counted_out_and_its_cases_are_listed(
    sweep: ModuleType,
) -> None:
    good = [_case("short/00", fault=True, delay=1), _case("healthy/00", fault=False, delay=None)]
    late = [_case("short/00", fault=True, delay=4), _case("healthy/00", fault=False, delay=None)]
    halted = [
        _case("short/00", fault=True, delay=0),
        _case("noise/02", fault=False, delay=None, false_halt=True),
    ]
    runs = {
        (0, "classic"): _payload(good, ("tuning", "held-out")),
        (1, "classic"): _payload(late, ("tuning", "held-out")),
        (0, "reality"): _payload(halted, ("reality tuning", "reality held-out")),
    }
    text = sweep.summarize(runs)
    assert "| 0 | 1/1 · 0 · 1 · 1 | 1/1 · 0 · 1 · 1 | 1/1 · **1** · 0 · 0 |" in text
    assert "| 1 | 1/1 · 0 · **4** · **4** | 1/1 · 0 · **4** · **4** | (failed) | (failed) |" in text
    assert "classic: 2 of 4 sets within every goal" in text
    assert "reality: 0 of 4 sets within every goal" in text
    assert "- seed 1 held-out short/00: 4 samples late (slide)" in text
    assert "- seed 0 reality tuning noise/02: FALSE HALT (drop)" in text
    assert "healthy/00" not in text


def test_the_sweep_runs_the_benchmark_per_seed_and_keeps_its_json(
    sweep: ModuleType, tmp_path: Path
) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        args = ["--seeds", "0", "--quick", "--corpus", "classic", "--jobs", "1"]
        code = sweep.main([*args, "--out", str(tmp_path)])
    assert code == 0
    text = printed.getvalue()
    assert text.startswith("| seed | tuning | held-out |")
    assert "\n| 0 | " in text
    assert re.search(r"^classic: [0-2] of 2 sets within every goal$", text, re.MULTILINE)
    assert (tmp_path / "0-classic.json").is_file()
