"""Samples per second through the Neware driver, against the codec alone.

Runs a simulated CT-4008 (8 channels, 0.5/0.5 cycling, 10 s recording) for 100
simulated hours, then reads every recorded sample back through ``NewareClient`` over
loopback TCP (``download``, pages of 1000), and times ``inquire`` polls of all 8
channels. The baseline, measured in the same run, is the sans-IO codec alone:
encode + decode of the same pages without a socket. The ratio says what the
transport and client cost on top of the XML.

    .venv/bin/python bench/bench_neware_driver.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import (
    ChannelId,
    DownloadReply,
    NewareClient,
    NewareSimulator,
    decode_reply,
    encode_reply,
)
from cellguard.protocols import Cell, GalvanostaticCycling, disc_area_cm2, write_step_file

HOURS = 100.0
PAGE = 1000


async def main() -> None:
    clock = VirtualClock()
    sim = NewareSimulator(clock, seed=3)
    program = GalvanostaticCycling(
        Cell.symmetric(disc_area_cm2(10.0)), cycles=60, record_interval_s=10.0
    ).to_step_file()
    channels = [ChannelId(1, 1, i) for i in range(1, 9)]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_step_file(Path(tmp) / "p.xml", program)
        async with sim.serve() as (host, port), NewareClient(host, port) as client:
            await client.start([(c, f"b{c.chlid}", str(path)) for c in channels])
            t0 = time.perf_counter()
            clock.set(HOURS * 3600)
            sim.advance()
            sim_s = time.perf_counter() - t0
            total = sum(sim.channels[c].record_count for c in channels)

            # Baseline: the codec alone on the same pages.
            pages = [
                DownloadReply(
                    sim.channels[c].address,
                    1,
                    pos,
                    PAGE,
                    sim.channels[c].download(pos, PAGE),
                )
                for c in channels
                for pos in range(1, sim.channels[c].record_count + 1, PAGE)
            ]
            t0 = time.perf_counter()
            decoded = 0
            for page in pages:
                reply = decode_reply(encode_reply(page)[:-5])
                assert isinstance(reply, DownloadReply)
                decoded += len(reply.records)
            codec_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            received = 0
            for c in channels:
                pos = 1
                while True:
                    reply = await client.download(c, pos, PAGE)
                    received += len(reply.records)
                    pos += len(reply.records)
                    if len(reply.records) < PAGE:
                        break
            driver_s = time.perf_counter() - t0
            assert received == total == decoded

            polls = 2000
            t0 = time.perf_counter()
            for _ in range(polls):
                await client.inquire(channels)
            poll_s = time.perf_counter() - t0

    print(f"simulated {HOURS:.0f} h × 8 channels in {sim_s:.2f} s ({total:,} samples)")
    print(f"codec alone (baseline): {decoded / codec_s:12,.0f} samples/s")
    print(f"driver over TCP:        {received / driver_s:12,.0f} samples/s")
    print(f"ratio driver/codec:     {codec_s / driver_s:12.2f}")
    each_ms = poll_s / polls * 1e3
    print(f"inquire of 8 channels:  {polls / poll_s:12,.0f} polls/s ({each_ms:.2f} ms each)")


if __name__ == "__main__":
    asyncio.run(main())
