"""The detector benchmark over many corpus seeds: one table, the sets within every goal.

Runs ``bench_detectors.py --seed N --json --corpus C`` for every seed and corpus, as
separate processes (``--jobs`` at a time: each is one CPU's work), and prints what
``bench/RESULTS.md`` records after each detector change:

- a row per seed with each set's recall · false halts · median · worst delay (samples),
  out-of-goal figures in bold;
- per corpus, how many sets meet every goal (100 % recall, 0 false halts, median
  <= 1 sample, worst <= 3);
- every case outside the goals: a false halt, a miss, or a delay over 3 samples.

    .venv/bin/python bench/sweep_detectors.py --seeds 0-11 [--jobs 2] [--corpus both]
                                              [--quick] [--out DIR]

Seeds 0-11 take about 5.5 min on two cores. ``--out`` keeps each run's JSON. Exit
code 0 whatever the result: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent / "bench_detectors.py"
GOAL_MEDIAN_DELAY = 1.0
GOAL_WORST_DELAY = 3.0
# bench_detectors.py's set names, per corpus, in table order.
SETS = {"classic": ("tuning", "held-out"), "reality": ("reality tuning", "reality held-out")}


@dataclass(frozen=True)
class Cell:
    text: str
    in_goals: bool


def parse_seeds(text: str) -> list[int]:
    """``"0-11"``, ``"3"`` or ``"0,4,7-9"`` as a sorted list of seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            msg = f"--seeds: {part.strip()!r} is not a seed or a range (allowed: 3, 0-11, 0,4,7-9)"
            raise ValueError(msg) from None
        if first < 0 or last < first:
            msg = f"--seeds: {part.strip()!r} is no range of seeds >= 0 (low-high, low <= high)"
            raise ValueError(msg)
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def cell(overall: dict[str, Any]) -> Cell:
    """One set's figures, and whether they meet every goal."""
    delay = overall["delay_samples"]
    median, worst = delay["median"], delay["worst"]
    false_halts = overall["false_halts"]
    all_caught = overall["caught"] == overall["faults"]
    good_median = median is not None and median <= GOAL_MEDIAN_DELAY
    good_worst = worst is not None and worst <= GOAL_WORST_DELAY
    recall = f"{overall['caught']}/{overall['faults']}"
    parts = [
        recall if all_caught else f"**{recall}**",
        f"**{false_halts}**" if false_halts else "0",
        "—" if median is None else (f"{median:g}" if good_median else f"**{median:g}**"),
        "—" if worst is None else (f"{worst:g}" if good_worst else f"**{worst:g}**"),
    ]
    in_goals = all_caught and not false_halts and good_median and good_worst
    return Cell(" · ".join(parts), in_goals)


def outside_goals(seed: int, set_name: str, cases: list[dict[str, Any]]) -> list[str]:
    """A line per case of a set that is a false halt, a miss or late."""
    lines = []
    for case in cases:
        if case["false_halt"]:
            what = "FALSE HALT"
        elif case["fault"] and not case["caught"]:
            what = "missed"
        elif case["fault"] and (case["delay_samples"] or 0) > GOAL_WORST_DELAY:
            what = f"{case['delay_samples']:g} samples late"
        else:
            continue
        lines.append(f"seed {seed} {set_name} {case['case']}: {what} ({case['halt_criterion']})")
    return lines


def summarize(runs: dict[tuple[int, str], dict[str, Any]]) -> str:
    """The table, the counts and the cases outside the goals, as markdown."""
    corpora = [c for c in SETS if any(corpus == c for _, corpus in runs)]
    seeds = sorted({seed for seed, _ in runs})
    columns = [(c, s) for c in corpora for s in SETS[c]]
    out = ["| seed | " + " | ".join(name for _, name in columns) + " |"]
    out.append("|---" * (len(columns) + 1) + "|")
    counts = {c: [0, 0] for c in corpora}
    late: list[str] = []
    for seed in seeds:
        row = []
        for corpus, set_name in columns:
            payload = runs.get((seed, corpus))
            if payload is None:
                row.append("(failed)")
                counts[corpus][1] += 1
                continue
            figures = payload["sets"][set_name]["detectors"]["cellguard"]
            result = cell(figures["overall"])
            row.append(result.text)
            counts[corpus][0] += result.in_goals
            counts[corpus][1] += 1
            late += outside_goals(seed, set_name, figures["cases"])
        out.append(f"| {seed} | " + " | ".join(row) + " |")
    out.append("")
    for corpus, (met, total) in counts.items():
        out.append(f"{corpus}: {met} of {total} sets within every goal")
    out.append("")
    out.append("Outside the goals:" if late else "Outside the goals: none")
    out += [f"- {line}" for line in late]
    return "\n".join(out)


def _run(seed: int, corpus: str, quick: bool, parity_every: int, out: Path) -> dict[str, Any]:
    command = [sys.executable, str(BENCH), "--seed", str(seed), "--json", "--corpus", corpus]
    command += ["--parity-every", str(parity_every)] + (["--quick"] if quick else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"seed {seed} {corpus}: bench_detectors.py exited {done.returncode}: {done.stderr}"
        raise RuntimeError(msg)
    (out / f"{seed}-{corpus}.json").write_text(done.stdout)
    payload: dict[str, Any] = json.loads(done.stdout)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-11", help="seeds: 3, 0-11 or 0,4,7-9 (0-11)")
    parser.add_argument("--corpus", choices=("classic", "reality", "both"), default="both")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (2)")
    parser.add_argument("--quick", action="store_true", help="a small subset of each corpus")
    parser.add_argument(
        "--parity-every", type=int, default=1000,
        help="replay every Nth case through per-sample feed as well (1000: the first only)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="keep each run's JSON in this folder")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        parser.error(str(err))
    if args.jobs < 1:
        parser.error(f"--jobs: {args.jobs} is not a number of runs at a time (allowed: >= 1)")
    corpora = list(SETS) if args.corpus == "both" else [args.corpus]
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        runs: dict[tuple[int, str], dict[str, Any]] = {}
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {
                (seed, corpus): pool.submit(_run, seed, corpus, args.quick, args.parity_every, out)
                for seed in seeds
                for corpus in corpora
            }
            for key, future in futures.items():
                try:
                    runs[key] = future.result()
                except RuntimeError as err:
                    print(err, file=sys.stderr)
        print(summarize(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
