"""Samples per second through ``cellguard replay``: read, detect, and both, on a real file.

Reads ``BTS85-36-6-5-110-20240424.ndax`` (a real Neware full cell, 192 h at 1 s,
≈700k rows) from tests/fixtures. The baseline, measured in the same run, is the
read alone (fastnda + our checks); then the full-cell detector alone on the arrays
already in memory (fed in the chunks replay uses); then ``replay_file`` end to end.
Each is the best of ``REPEAT`` runs. The goal is 500k samples/s read + detect.

    .venv/bin/python bench/bench_replay.py [FILE] [--cell full|symmetric|asymmetric]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from cellguard.daemon.replay import CHUNK_SAMPLES, replay_file
from cellguard.drivers.files import Recording, read_recording
from cellguard.protocols.detectors import DetectorSettings, make_detector

GOAL_SAMPLES_PER_S = 500_000
REPEAT = 3
FIXTURES = Path(
    os.environ.get("CELLGUARD_FIXTURES", Path(__file__).resolve().parents[1] / "tests" / "fixtures")
)
DEFAULT_FILE = FIXTURES / "neware-files" / "BTS85-36-6-5-110-20240424.ndax"


def best_s(run: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def detect(recording: Recording, settings: DetectorSettings) -> int:
    detector = make_detector(settings)
    events = 0
    for lo in range(0, len(recording), CHUNK_SAMPLES):
        hi = lo + CHUNK_SAMPLES
        events += len(
            detector.feed_batch(
                recording.t_s[lo:hi],
                recording.voltage_v[lo:hi],
                recording.current_a[lo:hi],
                None if recording.step is None else recording.step[lo:hi],
                None if recording.cycle is None else recording.cycle[lo:hi],
            )
        )
        if detector.halt is not None:
            break
    return events


def measure(
    file: Path = DEFAULT_FILE, cell: str = "full", repeat: int = REPEAT
) -> dict[str, float]:
    """Samples per second of read + detect (``replay_file``), best of ``repeat`` runs."""
    settings = DetectorSettings(cell=cell)  # type: ignore[arg-type]
    n = len(read_recording(file))  # also warms up imports and the page cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        replay_file(file, settings)
        times.append(time.perf_counter() - t0)
    return {"replay_samples": n, "replay_samples_per_s": n / min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--cell", default="full", choices=("symmetric", "asymmetric", "full"))
    args = parser.parse_args()
    settings = DetectorSettings(cell=args.cell)

    recording = read_recording(args.file)  # also warms up imports and the page cache
    n = len(recording)
    read_s = best_s(lambda: read_recording(args.file))
    detect_s = best_s(lambda: detect(recording, settings))
    result = replay_file(args.file, settings)
    both_s = best_s(lambda: replay_file(args.file, settings))

    hours = recording.duration_s / 3600
    print(f"{args.file.name}: {n:,} samples, {hours:.1f} h, --cell {args.cell}")
    halt = result.halt
    print(
        f"  verdicts: {len(result.events)} event(s), "
        + (f"halt at {halt.t_s / 3600:.2f} h ({halt.kind})" if halt else "no halt")
    )
    rows = [
        ("read alone (baseline)", read_s),
        ("detect alone", detect_s),
        ("read + detect (replay_file)", both_s),
    ]
    for label, seconds in rows:
        rate = n / seconds
        print(
            f"  {label:<28} {seconds:7.3f} s  {rate:>12,.0f} samples/s  "
            f"{rate / GOAL_SAMPLES_PER_S:5.2f}x the {GOAL_SAMPLES_PER_S:,}/s goal"
        )
    print(f"  read + detect costs {both_s / read_s:.2f}x the read alone")


if __name__ == "__main__":
    main()
