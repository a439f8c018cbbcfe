"""``cellguard bench``: every speed figure of issue 8 in one run, as a table or one JSON object.

Phases (each reuses the script of the same name in ``bench/``):

* ``bench_supervise``: 2,048 simulated CT-4008 channels polled at 1 Hz with faults
  injected at random; halt latency, the daemon's CPU and RSS. Runs in a process of its
  own (so its CPU and memory are the daemon's alone), the simulator in another.
* ``bench_aurora``: channel-samples/s of cellguard's driver over aurora-neware's,
  against the same simulated server process: reading the recorded history
  (``ratio_vs_aurora_neware``) and the live ``inquire`` (``inquire_ratio_...``).
* ``bench_replay``: read + detect on the real 700k-row ``.ndax`` fixture.
* ``bench_influx``: the InfluxDB sink into VictoriaMetrics on loopback.
* ``bench_detectors``: detection delay on the held-out labelled corpus.

``--quick`` keeps the whole run under three minutes on a 2-core machine; ``--smoke``
runs every phase on toy sizes in seconds (for the test suite: its figures mean
nothing); ``--record`` appends the results, date and machine to ``bench/RESULTS.md``.

    .venv/bin/python bench/run_bench.py [--quick | --smoke] [--json] [--record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bench_aurora
import bench_detectors
import bench_influx
import bench_replay
from bench_common import BENCH_DIR, machine
from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Sizes:
    units: int
    supervise_s: float
    aurora_units: int
    aurora_s: float
    aurora_repeat: int
    download_units: int
    history_h: float
    influx_samples: int
    replay_repeat: int
    detectors_quick: bool


SIZES = {
    "full": Sizes(256, 150.0, 256, 5.0, 3, 16, 2.0, 300_000, 3, False),
    "quick": Sizes(256, 70.0, 256, 3.0, 2, 8, 1.0, 100_000, 2, True),
    "smoke": Sizes(1, 3.0, 1, 0.3, 1, 1, 0.05, 10_000, 1, True),
}

# (key, label, unit/format, goal text, goal test)
GOALS: list[tuple[str, str, str, str, Any]] = [
    ("halt_latency_p50_ms", "halt latency p50", "{:.2f} ms", "", None),
    ("halt_latency_p99_ms", "halt latency p99", "{:.2f} ms", "≤ 10 ms", lambda v: v <= 10),
    ("halt_latency_max_ms", "halt latency max", "{:.2f} ms", "", None),
    ("ratio_vs_aurora_neware", "channel-samples/s vs aurora-neware", "{:.2f}×", "≥ 20",
     lambda v: v >= 20),
    ("client_cpu_ratio_vs_aurora_neware", "client CPU per sample, aurora / cellguard",
     "{:.2f}×", "", None),
    ("inquire_ratio_vs_aurora_neware", "live inquire channel-samples/s vs aurora-neware",
     "{:.2f}×", "", None),
    ("supervisor_cpu_fraction_2048ch", "daemon CPU, 2,048 ch at 1 Hz", "{:.3f} core",
     "≤ 0.25", lambda v: v <= 0.25),
    ("supervisor_rss_mb_2048ch", "daemon RSS, 2,048 ch", "{:.1f} MB", "≤ 150 MB",
     lambda v: v <= 150),
    ("replay_samples_per_s", "replay read + detect", "{:,.0f} /s", "≥ 500,000",
     lambda v: v >= 500_000),
    ("influx_points_per_s", "InfluxDB sink → VictoriaMetrics", "{:,.0f} /s", "≥ 100,000",
     lambda v: v >= 100_000),
    ("detection_median_delay_samples", "detection delay median", "{:.1f} samples", "", None),
    ("detection_worst_delay_samples", "detection delay worst", "{:.1f} samples", "", None),
]  # fmt: skip


def _supervise(sizes: Sizes) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_supervise.py"), "--json",
         f"--units={sizes.units}", f"--seconds={sizes.supervise_s}"],
        capture_output=True, text=True, check=False, timeout=sizes.supervise_s + 300,
    )  # fmt: skip
    if out.returncode != 0:
        msg = f"bench_supervise.py failed: {out.stderr.strip()[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(mode: str) -> dict[str, Any]:
    sizes = SIZES[mode]
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "machine": machine(), "phase_s": {}}

    def phase(name: str, fn: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        got: dict[str, Any] = fn()
        results["phase_s"][name] = round(time.perf_counter() - t0, 1)
        return got

    sup = phase("supervise", lambda: _supervise(sizes))
    results.update({
        "halt_latency_p50_ms": sup["halt_latency_p50_ms"],
        "halt_latency_p99_ms": sup["halt_latency_p99_ms"],
        "halt_latency_max_ms": sup["halt_latency_max_ms"],
        "supervisor_cpu_fraction_2048ch": sup["cpu_fraction"],
        "supervisor_rss_mb_2048ch": sup["rss_mb"],
        "supervise": sup,
    })  # fmt: skip
    aurora = phase(
        "aurora",
        lambda: bench_aurora.compare(
            units=sizes.aurora_units,
            seconds=sizes.aurora_s,
            repeat=sizes.aurora_repeat,
            download_units=sizes.download_units,
            history_h=sizes.history_h,
        ),
    )
    # The recorded history is what a daemon must read in full: that is the figure.
    for key in (
        "ratio_vs_aurora_neware",
        "client_cpu_ratio_vs_aurora_neware",
        "inquire_ratio_vs_aurora_neware",
    ):
        results[key] = aurora[key]
    results["aurora"] = aurora
    results.update(phase("replay", lambda: bench_replay.measure(repeat=sizes.replay_repeat)))
    results.update(phase("influx", lambda: bench_influx.measure(sizes.influx_samples)))
    results.update(
        phase("detectors", lambda: bench_detectors.delays(0, quick=sizes.detectors_quick))
    )
    results["runtime_s"] = round(time.perf_counter() - started, 1)
    return results


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else spec.format(value)


def table(results: dict[str, Any]) -> Table:
    m = results["machine"]
    title = (
        f"cellguard bench ({results['mode']}) — {m['date_utc']}, {m['nproc']} × "
        f"{m['cpu_model']}, Python {m['python']}, {results['runtime_s']} s"
    )
    t = Table(title=title)
    for name in ("figure", "value", "goal", "met"):
        t.add_column(name)
    for key, label, spec, goal, test in GOALS:
        value = results.get(key)
        met = "" if test is None or value is None else ("yes" if test(value) else "NO")
        t.add_row(label, _fmt(value, spec), goal, met)
    return t


def record(results: dict[str, Any]) -> None:
    """Append one run to RESULTS.md: date, machine, every figure."""
    m = results["machine"]
    lines = [
        "",
        f"## {m['date_utc']} — `--{results['mode']}`" if results["mode"] != "full"
        else f"## {m['date_utc']} — full run",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, "
        f"load average (1 min) at the start {m['load_avg_1m']:.2f}.",
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        *[f"| {label} (`{key}`) | {_fmt(results.get(key), spec)} | {goal or '—'} |"
          for key, label, spec, goal, _ in GOALS],
        "",
        f"Supervision: {json.dumps(results['supervise'])}",
        "",
        f"aurora: {json.dumps(results['aurora'])}",
        "",
    ]  # fmt: skip
    with (BENCH_DIR / "RESULTS.md").open("a") as f:
        f.write("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cellguard bench", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="under three minutes")
    size.add_argument("--smoke", action="store_true", help="toy sizes, seconds (for tests)")
    parser.add_argument("--json", action="store_true", help="one JSON object only")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    results = run(mode)
    if args.json:
        print(json.dumps(results))
    else:
        Console().print(table(results))
    if args.record:
        record(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
