"""Soak: the fault suite's cases at scale, for ``--minutes`` of wall time.

Rounds alternate until the time is up, each with a fresh seed:

* **fuzz**: a batch of 100,000 mutated BTS frames through the codec (typed reply or
  ProtocolViolation, nothing else);
* **link**: the daemon against a simulated CT-4008 behind a relay that cuts every
  connection mid-reply, with BTS server outages while cells short; every recorded
  sample must be stored exactly once and every fault stopped once;
* **kill**: ``cellguard run`` as a subprocess, killed -9 at seeded random moments and
  restarted, while cells short: every fault stopped once, nothing started twice,
  every recorded sample stored exactly once;
* **outages**: VictoriaMetrics stopped for hours of instrument time under a 64-channel
  rack (nothing lost or duplicated, the spool drained, its rate printed), and
  Mosquitto stopped while 32 cells short (every halt alert received after it returns).

Prints what was injected and counted per round and the totals; exits 1 if anything
was lost, duplicated, missed or crashed. Run: ``.venv/bin/python bench/soak.py --minutes 30``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in ("tests", "tests/drivers", "tests/daemon", "tests/faults"):
    sys.path.insert(0, str(ROOT / folder))

import test_fault_kill  # noqa: E402
import test_fault_link  # noqa: E402
import test_fault_outages  # noqa: E402
import test_fuzz_neware_codec as fuzz  # noqa: E402
from mqtt_broker import running_mosquitto  # noqa: E402
from victoria import VictoriaMetrics, binary  # noqa: E402


def fuzz_round(seed: int, frames: int) -> Counter[str]:
    mutator = fuzz.Mutator(seed)
    counted: Counter[str] = Counter()
    for n in range(frames):
        _, data = mutator()
        decoder = fuzz.decode_request if n % 10 == 0 else fuzz.decode_reply
        try:
            counted[fuzz._decode(decoder, data)] += 1
        except Exception as err:
            counted["foreign " + type(err).__name__] += 1
    return counted


def link_round(seed: int) -> bool:
    test_fault_link.SEED = seed
    with tempfile.TemporaryDirectory() as folder:
        try:
            asyncio.run(
                test_fault_link.test_link_drops_and_server_restarts_lose_no_sample_and_miss_no_halt(
                    Path(folder)
                )
            )
        except AssertionError as err:
            print(f"link round seed {seed}: FAILED {err}", flush=True)
            return False
    return True


def kill_round(seed: int) -> bool:
    test_fault_kill.SEED = seed
    with tempfile.TemporaryDirectory() as folder:
        try:
            asyncio.run(
                test_fault_kill.test_a_daemon_killed_9_at_random_moments_loses_nothing_and_acts_once(
                    Path(folder)
                )
            )
        except AssertionError as err:
            print(f"kill round seed {seed}: FAILED {err}", flush=True)
            return False
    return True


async def _outages(folder: Path) -> None:
    outages = test_fault_outages
    vm = VictoriaMetrics(binary(), folder / "victoria-metrics-data")
    vm.start()
    try:
        await outages.test_victoria_metrics_down_for_hours_under_load_loses_and_duplicates_nothing(
            folder / "db", vm
        )
    finally:
        vm.stop()
    async with running_mosquitto(folder / "mosquitto") as broker:
        await outages.test_mosquitto_down_while_dozens_of_cells_short_every_alert_arrives_once_back(
            folder / "mqtt", broker
        )


def outage_round(seed: int) -> bool:
    test_fault_outages.SEED = seed
    with tempfile.TemporaryDirectory() as folder:
        try:
            asyncio.run(_outages(Path(folder)))
        except AssertionError as err:
            print(f"outage round seed {seed}: FAILED {err}", flush=True)
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall time to run")
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--frames", type=int, default=100_000, help="frames per fuzz round")
    args = parser.parse_args()
    deadline = time.monotonic() + args.minutes * 60
    seed = args.seed
    totals: Counter[str] = Counter()
    failures = 0
    fuzz_s = 0.0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        counted = fuzz_round(seed, args.frames)
        fuzz_s += time.perf_counter() - started
        totals.update(counted)
        print(f"fuzz seed {seed}: {dict(counted)}", flush=True)
        if time.monotonic() < deadline:
            ok = link_round(seed)  # prints its own injected/counted line
            totals["link rounds"] += 1
            failures += not ok
        for name, round_ in (("kill", kill_round), ("outage", outage_round)):
            if time.monotonic() < deadline:
                ok = round_(seed)  # each prints its own injected/counted line
                totals[f"{name} rounds"] += 1
                failures += not ok
        seed += 1
    frames = sum(v for k, v in totals.items() if not k.endswith(" rounds"))
    foreign = sum(v for k, v in totals.items() if k.startswith("foreign"))
    print(
        f"soak: {frames} frames fuzzed ({frames / max(fuzz_s, 1e-9):,.0f} frames/s), "
        f"{foreign} foreign errors; {totals['link rounds']} link rounds, "
        f"{totals['kill rounds']} kill rounds, {totals['outage rounds']} outage rounds, "
        f"{failures} failed"
    )
    return 1 if failures or foreign else 0


if __name__ == "__main__":
    sys.exit(main())
