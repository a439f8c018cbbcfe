"""`cellguard demo`: the paper's eight cells through the real driver over TCP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from cellguard.daemon.demo import run_demo


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    result = asyncio.run(run_demo(hours=600.0, seed=1))
    return result.as_dict()


def _by(summary: dict[str, Any], interphase: str, cell_type: str) -> dict[str, Any]:
    (row,) = [
        c
        for c in summary["channels"]
        if c["interphase"] == interphase and c["cell_type"] == cell_type
    ]
    return row


def test_summary_has_every_channel_with_the_documented_fields(summary: dict[str, Any]) -> None:
    assert len(summary["channels"]) == 8
    for row in summary["channels"]:
        assert row["interphase"] in ("MII-1", "MII-2", "MII-3", "SEI")
        assert row["cell_type"] in ("symmetric", "asymmetric")
        assert row["thin_li_um"] == (100.0 if row["cell_type"] == "symmetric" else 20.0)
        assert row["outcome"] in ("completed", "halted")
        assert row["reason"] in (None, "depletion", "short", "limit")
        assert row["hours"] > 0
        assert row["cycles"] >= 1
    assert summary["simulated_hours"] == pytest.approx(600.0)


def test_detectors_halt_mii1_and_mii2_asymmetric_for_depletion_before_the_range(
    summary: dict[str, Any],
) -> None:
    mii1 = _by(summary, "MII-1", "asymmetric")
    mii2 = _by(summary, "MII-2", "asymmetric")
    for row in (mii1, mii2):
        assert (row["outcome"], row["reason"]) == ("halted", "depletion")
        assert "expected" in row["detail"]  # the shift criterion, not the ±5 V range
    assert mii1["hours"] < mii2["hours"] < 200
    halted = [c for c in summary["channels"] if c["outcome"] == "halted"]
    assert min(halted, key=lambda c: c["hours"]) == mii1


def test_sei_symmetric_shorts_first_and_mii2_symmetric_lives_about_three_times_longer(
    summary: dict[str, Any],
) -> None:
    sei = _by(summary, "SEI", "symmetric")
    mii2 = _by(summary, "MII-2", "symmetric")
    assert (sei["outcome"], sei["reason"]) == ("halted", "short")
    assert (mii2["outcome"], mii2["reason"]) == ("halted", "short")
    symmetric = [c for c in summary["channels"] if c["cell_type"] == "symmetric"]
    assert min(symmetric, key=lambda c: c["hours"]) == sei
    assert 2.5 <= mii2["hours"] / sei["hours"] <= 3.5
    assert 24.0 <= mii2["max_polarization_mv"] <= 28.0


def test_nothing_else_halts_and_mii3_beats_sei(summary: dict[str, Any]) -> None:
    halted = {
        (c["interphase"], c["cell_type"]) for c in summary["channels"] if c["outcome"] == "halted"
    }
    assert halted == {
        ("MII-1", "asymmetric"),
        ("MII-2", "asymmetric"),
        ("MII-2", "symmetric"),
        ("SEI", "symmetric"),
        ("SEI", "asymmetric"),
    }
    for cell_type in ("symmetric", "asymmetric"):
        mii3 = _by(summary, "MII-3", cell_type)
        sei = _by(summary, "SEI", cell_type)
        assert mii3["outcome"] == "completed"
        assert mii3["hours"] == pytest.approx(600.0)
        assert mii3["max_polarization_mv"] < sei["max_polarization_mv"]
    mii1 = _by(summary, "MII-1", "symmetric")
    assert mii1["outcome"] == "completed"
    assert mii1["polarization_mv"] > 100.0  # it only grows


def test_every_recorded_sample_arrived_through_the_driver(summary: dict[str, Any]) -> None:
    # 600 h at one sample a minute, plus each step's last point: nothing skipped.
    full = _by(summary, "MII-3", "symmetric")
    assert full["samples"] >= 600 * 60
    assert summary["samples"] == sum(c["samples"] for c in summary["channels"])


def test_cli_json_prints_one_object_with_the_channels() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "demo", "--hours", "12", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(out.stdout)
    assert [c["channel"] for c in data["channels"]] == [f"1-1-{i}" for i in range(1, 9)]
    assert all(c["outcome"] == "completed" for c in data["channels"])  # nothing fails in 12 h


def test_cli_human_output_ends_with_a_summary_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "demo", "--hours", "6"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "summary after 6 simulated h" in out.stdout
    assert out.stdout.count("completed") == 8
    assert "samples through the driver" in out.stdout.replace("\n", " ")


def test_cli_rejects_a_bad_option_naming_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "demo", "--hours", "zero"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "--hours" in out.stderr
