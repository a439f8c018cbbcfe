"""`cellguard bench` runs from the checkout and reports every figure of issue 8.

Only that it runs and what it prints: speed goals live in bench/, never in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KEYS = (
    "halt_latency_p50_ms",
    "halt_latency_p99_ms",
    "halt_latency_max_ms",
    "ratio_vs_aurora_neware",
    "supervisor_cpu_fraction_2048ch",
    "supervisor_rss_mb_2048ch",
    "replay_samples_per_s",
    "influx_points_per_s",
    "detection_median_delay_samples",
    "detection_worst_delay_samples",
)


def test_bench_smoke_prints_one_json_object_with_every_key() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "bench", "--smoke", "--json"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(KEYS) <= set(result)
    assert result["mode"] == "smoke"
    # Every phase really ran: these are measured whatever the machine's speed.
    assert result["replay_samples_per_s"] > 0
    assert result["influx_points_per_s"] > 0
    assert result["ratio_vs_aurora_neware"] > 0
    assert result["supervise"]["channels"] == 8
    assert result["supervise"]["false_halts"] == 0


def test_bench_refuses_quick_and_smoke_together() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "bench", "--quick", "--smoke"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "not allowed with argument" in out.stderr


def test_bench_supervise_neighbour_reports_both_measurements_and_their_ratios() -> None:
    bench = Path(__file__).parent.parent / "bench" / "bench_supervise.py"
    out = subprocess.run(
        [sys.executable, str(bench), "--units=1", "--seconds=3", "--neighbour", "--json"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"without_neighbour", "with_neighbour", "ratio_with_to_without"}
    assert result["without_neighbour"]["channels"] == 8
    assert result["with_neighbour"]["channels"] == 8
    assert set(result["ratio_with_to_without"]) == {
        "halt_latency_p50_ms",
        "halt_latency_p99_ms",
        "halt_latency_max_ms",
    }
