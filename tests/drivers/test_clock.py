"""One clock abstraction: virtual time is deterministic; scaled time runs faster."""

from __future__ import annotations

import asyncio

import pytest

from cellguard.drivers import ScaledClock, VirtualClock, WallClock


async def test_virtual_sleepers_wake_in_deadline_order_at_exactly_their_deadline() -> None:
    clock = VirtualClock(start_s=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, duration_s: float) -> None:
        await clock.sleep(duration_s)
        woke.append((name, clock.now_s()))

    tasks = [asyncio.create_task(sleeper(n, d)) for n, d in (("b", 30.0), ("a", 10.0), ("c", 30.0))]
    for task in tasks:
        await clock.wait_until_sleeping(task)
    await clock.advance(20.0)
    assert woke == [("a", 110.0)]
    await clock.advance(100.0)
    assert woke == [("a", 110.0), ("b", 130.0), ("c", 130.0)]
    assert clock.now_s() == 220.0
    await asyncio.gather(*tasks)


async def test_advance_lets_a_woken_task_finish_its_io_before_time_moves_on() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    async def poller() -> None:
        for _ in range(3):
            await clock.sleep(60.0)
            await asyncio.sleep(0.001)  # real I/O takes real loop iterations
            seen.append(clock.now_s())

    task = asyncio.create_task(poller())
    await clock.wait_until_sleeping(task)
    await clock.advance(180.0)
    assert seen == [60.0, 120.0, 180.0]
    await task


def test_virtual_time_never_goes_back() -> None:
    clock = VirtualClock(10.0)
    clock.set(20.0)
    with pytest.raises(ValueError, match="never goes back"):
        clock.set(5.0)


async def test_scaled_clock_runs_speed_times_faster_than_the_wall() -> None:
    clock = ScaledClock(1000.0)
    wall = WallClock()
    t0, w0 = clock.now_s(), wall.now_s()
    await clock.sleep(20.0)  # 20 ms of wall time
    elapsed = clock.now_s() - t0
    assert elapsed >= 20.0
    assert elapsed == pytest.approx((wall.now_s() - w0) * 1000.0, rel=0.05)
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(0.0)
