"""Fault suite: the sinks go away under load, with the daemon running.

A simulated CT-4008 rack (many channels) in virtual time. VictoriaMetrics (speaking
InfluxDB v2) is stopped for hours of instrument time and started again: every recorded
sample reaches it exactly once (counted per channel against the instrument's records)
and the disk spool drains; the drain rate is printed. Mosquitto is stopped while dozens
of cells short: after it returns, a subscriber receives every halt alert (at least
once, unique ids, none missing).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import aiomqtt
from faults import INSTRUMENT, CommandLog, daemon_config
from mqtt_broker import PASSWORDS, PREFIX, Broker
from test_influx import export
from victoria import VictoriaMetrics

from cellguard.daemon.config import parse_config
from cellguard.daemon.service import started_daemon
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

POLL_S = 60.0
SEED = 23
RACK = tuple(ChannelId(1, u, c) for u in range(1, 9) for c in range(1, 9))  # 64 channels
DRAIN_TIMEOUT_WALL_S = 60.0


async def _drive(clock: VirtualClock, hours: float) -> None:
    for _ in range(round(hours * 3600 / POLL_S)):
        await clock.advance(POLL_S)


def _rack(clock: VirtualClock, shorts: dict[ChannelId, float]) -> NewareSimulator:
    cells = {
        c: CellSlot(
            SimCellSpec("SEI", short=ShortSpec("hard", shorts[c]))
            if c in shorts
            else SimCellSpec("SEI", never_short=True)
        )
        for c in RACK
    }
    return NewareSimulator(clock, units=8, cells=cells, seed=SEED, epoch=datetime(2026, 5, 1, 8))


async def test_victoria_metrics_down_for_hours_under_load_loses_and_duplicates_nothing(
    tmp_path: Path, victoria_metrics_process: VictoriaMetrics
) -> None:
    vm = victoria_metrics_process
    clock = VirtualClock()
    sim = _rack(clock, {})
    async with sim.serve() as (_, port):
        text = daemon_config(
            str(tmp_path / "state"),
            port,
            RACK,
            poll_interval_s=POLL_S,
            download_interval_s=POLL_S,
            record_interval_s=30.0,
            extra=f'[influxdb]\nurl = "{vm.url}"\norg = "lab"\nbucket = "cycling"\n',
        )
        async with started_daemon(parse_config(text), clock=clock) as daemon:
            assert daemon.influx is not None
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 1.0)
            vm.stop()  # the database goes away for 4 h of instrument time
            await _drive(clock, 4.0)
            await daemon.queue.join()
            spooled_lines = daemon.influx.spool.pending_lines
            assert spooled_lines > 0
            vm.start()
            restarted = time.monotonic()
            give_up = restarted + DRAIN_TIMEOUT_WALL_S
            # The spool offers no event to await: its drain is watched, bounded.
            while daemon.influx.spool.pending_batches and time.monotonic() < give_up:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            drain_wall_s = time.monotonic() - restarted
            assert daemon.influx.spool.pending_batches == 0
            await _drive(clock, 1.0)  # and the rack records on, straight to the database
        on_instrument = {str(c): sim.channels[c].record_count for c in RACK}
    expected = sum(on_instrument.values())
    selector = f'cellguard_samples_seq{{instrument="{INSTRUMENT}",source="recorded"}}'
    series = await export(vm.url, selector, expected)
    seqs: dict[str, list[int]] = {c: [] for c in on_instrument}
    for s in series:
        seqs[s["metric"]["channel"]] += [int(v) for v in s["values"]]
    lost = {c: n - len(set(seqs[c])) for c, n in on_instrument.items()}
    duplicated = {c: len(v) - len(set(v)) for c, v in seqs.items()}
    print(
        f"\ndatabase outage: {len(RACK)} channels, VictoriaMetrics down 4 h of instrument "
        f"time; {spooled_lines} points spooled, drained in {drain_wall_s:.2f} s wall "
        f"({spooled_lines / drain_wall_s:.0f} samples/s); recorded on the instrument "
        f"{expected}, lost {sum(lost.values())}, duplicated {sum(duplicated.values())}"
    )
    for channel, values in seqs.items():
        assert sorted(values) == list(range(1, on_instrument[channel] + 1)), channel


async def test_mosquitto_down_while_dozens_of_cells_short_every_alert_arrives_once_back(
    tmp_path: Path, mosquitto: Broker
) -> None:
    clock = VirtualClock()
    # Half the rack shorts within 2 h of instrument time while the broker is down.
    shorts = {c: 3.0 + 2.0 * k / 32 for k, c in enumerate(RACK[::2])}
    sim = _rack(clock, shorts)
    commands = CommandLog.tap(sim)
    reader_kw = {"clean_session": False, "identifier": "alert-reader"}
    auth = {"username": "operator", "password": PASSWORDS["operator"]}
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, **auth, **reader_kw) as reader:
        await reader.subscribe(f"{PREFIX}/alerts/#", qos=1)
    async with sim.serve() as (_, port):
        text = daemon_config(
            str(tmp_path / "state"),
            port,
            RACK,
            poll_interval_s=POLL_S,
            download_interval_s=POLL_S,
            extra=(
                f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
                f'topic_prefix = "{PREFIX}"\nusername = "cellguard"\n'
                f'password = "{PASSWORDS["cellguard"]}"\n'
            ),
        )
        async with started_daemon(parse_config(text), clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            await _drive(clock, 2.5)
            await mosquitto.stop()
            await _drive(clock, 3.0)
            halted = [str(c) for c, r in daemon.supervisor(INSTRUMENT).channels.items() if r.halt]
            await mosquitto.start()
            got: list[str] = []
            async with (
                aiomqtt.Client("127.0.0.1", mosquitto.port, **auth, **reader_kw) as reader,
                asyncio.timeout(30.0),
            ):
                async for message in reader.messages:
                    payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if payload.get("kind") == "halt":
                        got.append(payload["id"])
                    if len(set(got)) >= len(shorts):
                        break
            ids = {e.event_id for e in daemon.supervisor(INSTRUMENT).events if e.kind == "halt"}
    copies = Counter(got)
    print(
        f"\nbroker outage: {len(RACK)} channels, Mosquitto down 3 h of instrument time while "
        f"{len(shorts)} cells shorted; halted {len(halted)}, halt alerts raised {len(ids)}, "
        f"received {len(got)} ({len(copies)} unique, {sum(n - 1 for n in copies.values())} "
        f"repeated); stops accepted {sum(commands.stops_accepted.values())}"
    )
    assert sorted(halted) == sorted(str(c) for c in shorts)
    assert len(ids) == len(shorts)
    assert set(copies) == ids  # every alert, none missing, ids unique per halt
