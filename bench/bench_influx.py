"""Points per second through the InfluxDB sink into VictoriaMetrics on loopback.

``InfluxSink.write`` (line protocol encoding, HTTP requests of ``batch_lines``) is fed
batches of 5,000 samples, as the daemon's sink task hands them over, from 64 channels;
VictoriaMetrics (a server speaking the InfluxDB v2 write API) runs in its own process.

    .venv/bin/python bench/bench_influx.py [--samples 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import victoria_metrics

from cellguard.daemon.influx import InfluxSink
from cellguard.daemon.records import ChannelTags, SampleRecord

BATCH = 5000
CHANNELS = 64


def _samples(n: int) -> list[SampleRecord]:
    tags = [ChannelTags("bench", f"1-{c // 8 + 1}-{c % 8 + 1}", "1", "SEI", "symmetric")
            for c in range(CHANNELS)]  # fmt: skip
    t0 = 1.7e9
    return [
        SampleRecord(tags[k % CHANNELS], t0 + k // CHANNELS, float(k // CHANNELS),
                     0.01 + 1e-6 * k, 3.9e-4, 0.1, 0.001, 2, 1, k // CHANNELS + 1, "recorded")
        for k in range(n)
    ]  # fmt: skip


async def _write_all(url: str, state_dir: Path, samples: list[SampleRecord]) -> float:
    async with InfluxSink(
        url=url, org="bench", bucket="bench", token="", state_dir=state_dir
    ) as sink:
        await sink.write(samples[:BATCH], [])  # warm-up: connection, first request
        t0 = time.perf_counter()
        for lo in range(BATCH, len(samples), BATCH):
            await sink.write(samples[lo : lo + BATCH], [])
        elapsed = time.perf_counter() - t0
        if sink.spool.pending_lines:
            msg = f"the sink spooled {sink.spool.pending_lines} points: the server refused"
            raise RuntimeError(msg)
    return (len(samples) - BATCH) / elapsed


def measure(samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "vm"
        with victoria_metrics(data) as url:
            rate = asyncio.run(_write_all(url, Path(tmp), _samples(samples)))
    return {"influx_points_per_s": rate, "influx_points": samples - BATCH}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000)
    print(json.dumps(measure(parser.parse_args().samples)))


if __name__ == "__main__":
    main()
