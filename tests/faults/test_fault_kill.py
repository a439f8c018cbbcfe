"""Fault suite: the daemon killed with SIGKILL at random moments, and restarted.

``cellguard run`` runs as a real subprocess (its own wall clock) against a simulated
CT-4008 served from this process at a ×SPEED speed-up, with healthy cells and cells
that short at random (seeded) times. The daemon is killed -9 several times at seeded
random moments and started again at once. Counted from the instrument's side: each
faulty channel stopped exactly once, no healthy channel stopped, no test started
twice; and from the store: every sample the instrument recorded is there exactly once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from faults import INSTRUMENT, CommandLog, PausableClock, daemon_config, spawn_daemon, ticking

from cellguard.daemon.store import STORE_FILENAME, Store
from cellguard.drivers.neware import ChannelId, NewareSimulator
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import ShortSpec, SimCellSpec

SEED = 9
SPEED = 300.0  # one wall second is five instrument minutes
RUN_WALL_S = 40.0  # 3.3 h of instrument time
KILLS = 5
HEALTHY = tuple(ChannelId(1, 1, c) for c in range(1, 5))
FAULTY = tuple(ChannelId(1, 1, c) for c in range(5, 9))
# The detectors learn one half cycle (1 h) per direction before they judge a short.
SHORT_AT_H = (2.2, 3.0)
CATCH_UP_WALL_S = 30.0


@dataclass
class KillRun:
    """What was injected and what was counted."""

    shorts_h: dict[str, float]
    kills_at_wall_s: list[float] = field(default_factory=list)
    daemon_logs: list[Path] = field(default_factory=list)


def _simulator(
    clock: PausableClock, rng: random.Random
) -> tuple[NewareSimulator, dict[str, float]]:
    cells = {c: CellSlot(SimCellSpec("SEI", never_short=True)) for c in HEALTHY}
    shorts_h = {str(c): round(rng.uniform(*SHORT_AT_H), 3) for c in FAULTY}
    for c in FAULTY:
        cells[c] = CellSlot(SimCellSpec("SEI", short=ShortSpec("hard", shorts_h[str(c)])))
    sim = NewareSimulator(clock, cells=cells, seed=SEED, epoch=datetime(2026, 5, 1, 8))
    return sim, shorts_h


def _stored_counts(state_dir: Path) -> dict[str, tuple[int, int]]:
    """Recorded samples per channel in the store: (rows, distinct seqs); read-only."""
    path = state_dir / STORE_FILENAME
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute(
            "SELECT channel, COUNT(*), COUNT(DISTINCT seq) FROM samples "
            "WHERE source = 'recorded' GROUP BY channel"
        ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        conn.close()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


async def test_a_daemon_killed_9_at_random_moments_loses_nothing_and_acts_once(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    clock = PausableClock(SPEED)
    sim, shorts_h = _simulator(clock, rng)
    commands = CommandLog.tap(sim)
    run = KillRun(shorts_h)
    state_dir = tmp_path / "state"
    # Two kills while the detectors learn, three while the cells short.
    shorts_wall_s = (SHORT_AT_H[0] * 3600 / SPEED, RUN_WALL_S - 2.0)
    kill_at = sorted(
        [rng.uniform(2.0, shorts_wall_s[0]) for _ in range(2)]
        + [rng.uniform(*shorts_wall_s) for _ in range(KILLS - 2)]
    )
    async with sim.serve() as (_, port), ticking(sim):
        config = tmp_path / "cellguard.toml"
        config.write_text(
            daemon_config(
                str(state_dir),
                port,
                (*HEALTHY, *FAULTY),
                poll_interval_s=0.1,
                download_interval_s=0.5,
                record_interval_s=30.0,
            )
        )
        started = time.monotonic()
        run.daemon_logs.append(tmp_path / "daemon-0.log")
        proc = await spawn_daemon(config, run.daemon_logs[-1])
        try:
            for k, at_s in enumerate(kill_at, start=1):
                await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                run.kills_at_wall_s.append(round(time.monotonic() - started, 2))
                run.daemon_logs.append(tmp_path / f"daemon-{k}.log")
                proc = await spawn_daemon(config, run.daemon_logs[-1])
            await asyncio.sleep(max(0.0, started + RUN_WALL_S - time.monotonic()))
            # The instrument stops recording; the daemon catches up, then stops cleanly.
            clock.pause()
            # The simulator records lazily (when asked, or on its tick): bring it up to
            # the frozen moment before counting, or a record due by then would be made
            # after the count, at the daemon's next request.
            sim.advance()
            on_instrument = {str(c): sim.channels[c].record_count for c in sim.channels}
            give_up = time.monotonic() + CATCH_UP_WALL_S
            while time.monotonic() < give_up:
                stored = _stored_counts(state_dir)
                if all(stored.get(c, (0, 0))[1] >= n for c, n in on_instrument.items()):
                    break
                await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30.0) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    async with Store(state_dir) as store:
        per_channel = {
            c: [
                s.seq
                for s in await store.query_samples(INSTRUMENT, c, limit=None)
                if s.source == "recorded"
            ]
            for c in on_instrument
        }
    lost = {c: n - len(set(per_channel[c])) for c, n in on_instrument.items()}
    duplicated = {c: len(s) - len(set(s)) for c, s in per_channel.items()}
    print(
        f"\nkill -9: {len(run.kills_at_wall_s)} SIGKILLs at wall s {run.kills_at_wall_s} "
        f"(×{SPEED:g}: instrument h "
        f"{[round(t * SPEED / 3600, 2) for t in run.kills_at_wall_s]}); shorts at h "
        f"{shorts_h}; samples on the instrument {on_instrument}, lost {lost}, duplicated "
        f"{duplicated}; starts accepted {dict(commands.starts_accepted)}, stops asked "
        f"{dict(commands.stops)}, stops accepted {dict(commands.stops_accepted)}"
    )
    assert len(run.kills_at_wall_s) == KILLS
    for channel, seqs in per_channel.items():
        assert sorted(seqs) == list(range(1, on_instrument[channel] + 1)), channel
    for faulty in FAULTY:
        assert sim.channels[faulty].workstatus == "stop", faulty
        assert commands.stops_accepted[str(faulty)] == 1, faulty
    for healthy in HEALTHY:
        assert sim.channels[healthy].workstatus == "working", healthy
        assert commands.stops[str(healthy)] == 0, healthy
    for channel in (*HEALTHY, *FAULTY):
        assert commands.starts_accepted[str(channel)] == 1, channel
        assert commands.starts[str(channel)] == 1, channel
