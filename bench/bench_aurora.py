"""Channel-samples per second: cellguard's Neware driver against aurora-neware, same server.

aurora-neware (Empa's Neware BTS client on PyPI) is a synchronous socket client; it is
the baseline, measured in the same run against the same simulated server process.
Two figures, each the best of ``--repeat`` alternating runs (so a burst of load from
elsewhere on the machine does not decide a ratio):

* **download** (``ratio_vs_aurora_neware``): what a daemon needs is every sample of
  every channel, i.e. the recorded history. ``bench/history_server.py`` holds
  ``--download-units`` × 8 channels with ``--history-h`` hours recorded every
  ``--record-s`` s, its clock standing still; each client reads all of it: aurora
  through its public ``NewareAPI.download(channel, 0)`` (one ``inquiredf``, then
  1,000-record pages), cellguard through ``NewareClient.download`` in pages of 1,000
  as the supervisor catches up. Both must receive exactly the records the server
  holds.
* **inquire** (``inquire_ratio_vs_aurora_neware``): the newest value of all
  ``--units`` × 8 channels of a running ``cellguard simulate neware``, one ``inquire``
  after another for ``--seconds``.

A channel-sample is one record (or one channel's value) received and decoded. Each
client's own CPU per sample is measured in this process, and the server's in its.

    .venv/bin/python bench/bench_aurora.py [--units 256] [--download-units 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aurora_neware.neware import NewareAPI
from bench_common import cpu_s, history_simulator, neware_simulator

from cellguard.drivers.neware import NewareClient
from cellguard.protocols import Cell, GalvanostaticCycling, disc_area_cm2, write_step_file

# Records per download request, for both clients (aurora's fixed chunk size).
PAGE = 1000


async def _start_all(port: int, step_file: Path) -> None:
    async with NewareClient("127.0.0.1", port, timeout_s=120) as client:
        channels = [c.address.channel for c in client.channels]
        await client.start([(c, f"b{c}", str(step_file)) for c in channels])


# ---------------------------------------------------------------- inquire


async def _cellguard_inquire(port: int, seconds: float) -> tuple[float, float]:
    async with NewareClient("127.0.0.1", port, timeout_s=120) as client:
        channels = [c.address.channel for c in client.channels]
        await client.inquire(channels)  # warm-up
        samples, t0, cpu0 = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - t0) < seconds:
            samples += len(await client.inquire(channels))
        return samples / elapsed, (time.process_time() - cpu0) / samples


def _aurora_inquire(port: int, seconds: float) -> tuple[float, float]:
    with NewareAPI("127.0.0.1", port) as api:
        ids = list(api.channel_map)
        api.inquire(ids)  # warm-up
        samples, t0, cpu0 = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - t0) < seconds:
            samples += len(api.inquire(ids))
        return samples / elapsed, (time.process_time() - cpu0) / samples


def compare_inquire(*, units: int, seconds: float, repeat: int) -> dict[str, Any]:
    """Best channel-samples/s of each client's ``inquire`` of the whole rack."""
    with neware_simulator(units=units) as port, tempfile.TemporaryDirectory() as tmp:
        program = GalvanostaticCycling(Cell.symmetric(disc_area_cm2(10.0))).to_step_file()
        asyncio.run(_start_all(port, write_step_file(Path(tmp) / "p.xml", program)))
        ours, theirs = [], []
        for _ in range(repeat):
            ours.append(asyncio.run(_cellguard_inquire(port, seconds)))
            theirs.append(_aurora_inquire(port, seconds))
    best_ours, best_theirs = max(r for r, _ in ours), max(r for r, _ in theirs)
    cpu_ours, cpu_theirs = min(c for _, c in ours), min(c for _, c in theirs)
    return {
        "inquire_channels": units * 8,
        "cellguard_inquire_samples_per_s": best_ours,
        "aurora_inquire_samples_per_s": best_theirs,
        "inquire_ratio_vs_aurora_neware": best_ours / best_theirs,
        "cellguard_inquire_client_cpu_us_per_sample": cpu_ours * 1e6,
        "aurora_inquire_client_cpu_us_per_sample": cpu_theirs * 1e6,
        "inquire_client_cpu_ratio_vs_aurora_neware": cpu_theirs / cpu_ours,
    }


# ---------------------------------------------------------------- download


async def _cellguard_history(port: int) -> int:
    """Every recorded sample of every channel, as the supervisor pages through them."""
    samples = 0
    async with NewareClient("127.0.0.1", port, timeout_s=120) as client:
        for info in client.channels:
            position = 1
            while True:
                reply = await client.download(info.address.channel, position, PAGE)
                got = len(reply.records)
                samples += got
                position += got
                if got < PAGE:
                    break
    return samples


def _aurora_history(port: int) -> int:
    """Every recorded sample of every channel, through aurora's public download()."""
    samples = 0
    with NewareAPI("127.0.0.1", port) as api:
        for pipeline in api.channel_map:
            data = api.download(pipeline, 0)  # 0: the whole test
            samples += len(data.get("seqid", ()))
    return samples


def _timed(read: Callable[[], int], server_pid: int, expected: int) -> dict[str, float]:
    server0, cpu0, t0 = cpu_s(server_pid), time.process_time(), time.perf_counter()
    samples = read()
    wall_s = time.perf_counter() - t0
    client_cpu_s, server_cpu_s = time.process_time() - cpu0, cpu_s(server_pid) - server0
    if samples != expected:
        msg = f"a client read {samples} records where the server holds {expected}"
        raise RuntimeError(msg)
    return {
        "per_s": samples / wall_s,
        "client_us": client_cpu_s / samples * 1e6,
        "server_us": server_cpu_s / samples * 1e6,
    }


def compare_download(
    *, units: int, history_h: float, record_s: float, repeat: int
) -> dict[str, Any]:
    """Best channel-samples/s of each client reading the whole recorded history."""
    with history_simulator(units=units, history_h=history_h, record_s=record_s) as server:
        port, pid, records = server["port"], server["pid"], server["records"]
        ours, theirs = [], []
        for _ in range(repeat):
            ours.append(_timed(lambda: asyncio.run(_cellguard_history(port)), pid, records))
            theirs.append(_timed(lambda: _aurora_history(port), pid, records))

    def best(runs: list[dict[str, float]], key: str, pick: Callable[..., float]) -> float:
        return pick(r[key] for r in runs)

    ours_per_s, theirs_per_s = best(ours, "per_s", max), best(theirs, "per_s", max)
    ours_cpu, theirs_cpu = best(ours, "client_us", min), best(theirs, "client_us", min)
    return {
        "download_channels": server["channels"],
        "download_records": records,
        "cellguard_channel_samples_per_s": ours_per_s,
        "aurora_channel_samples_per_s": theirs_per_s,
        "ratio_vs_aurora_neware": ours_per_s / theirs_per_s,
        # The client's own CPU per sample (the server is another process): what each
        # driver costs, without the server's share that bounds both throughputs.
        "cellguard_client_cpu_us_per_sample": ours_cpu,
        "aurora_client_cpu_us_per_sample": theirs_cpu,
        "client_cpu_ratio_vs_aurora_neware": theirs_cpu / ours_cpu,
        "server_cpu_us_per_sample_serving_cellguard": best(ours, "server_us", min),
        "server_cpu_us_per_sample_serving_aurora": best(theirs, "server_us", min),
    }


def compare(
    *,
    units: int,
    seconds: float,
    repeat: int,
    download_units: int = 8,
    history_h: float = 1.0,
    record_s: float = 1.0,
) -> dict[str, Any]:
    """Both comparisons; ``ratio_vs_aurora_neware`` is the download (what a daemon needs)."""
    results = compare_download(
        units=download_units, history_h=history_h, record_s=record_s, repeat=repeat
    )
    results.update(compare_inquire(units=units, seconds=seconds, repeat=repeat))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=256, help="inquire: units of 8 channels")
    parser.add_argument("--seconds", type=float, default=5.0, help="inquire: seconds per run")
    parser.add_argument("--download-units", type=int, default=8)
    parser.add_argument("--history-h", type=float, default=1.0)
    parser.add_argument("--record-s", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    results = compare(
        units=args.units,
        seconds=args.seconds,
        repeat=args.repeat,
        download_units=args.download_units,
        history_h=args.history_h,
        record_s=args.record_s,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
