"""The simulated CT-4008 runs step files as BTS clients save them, over real TCP:
a pause step pauses the channel until it is continued, a step's own protection trips
it like the whole test's does, and a step's own record interval sets the logging."""

from __future__ import annotations

import shutil
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import (
    ChannelId,
    DownloadRecord,
    NewareClient,
    NewareSimulator,
    Protection,
    Step,
    StepFile,
    StepType,
)
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec
from cellguard.protocols import write_step_file

EPOCH = datetime(2026, 1, 5, 9, 0, 0)
CH = ChannelId(1, 1, 1)
BTS_SAVED = (
    Path(__file__).parents[1] / "fixtures" / "neware-stepfiles" / "li-li-pause-per-step-protect.xml"
)
STRIP_MA = 0.3927  # 0.5 mA/cm² on a 10 mm disc


def _simulator(clock: VirtualClock) -> NewareSimulator:
    slot = CellSlot(SimCellSpec(interphase="SEI", never_short=True))
    return NewareSimulator(clock, cells={CH: slot}, epoch=EPOCH)


async def _records(client: NewareClient) -> list[DownloadRecord]:
    got: list[DownloadRecord] = []
    while True:
        reply = await client.download(CH, len(got) + 1, 1000)
        if not reply.records:
            return got
        got += reply.records


def _intervals_s(records: list[DownloadRecord], step_id: int) -> set[float]:
    """The spacing of one step's samples, without its last point (recorded at its end)."""
    times = [r.test_time_ms / 1000 for r in records if r.step_id == step_id]
    return {round(b - a, 3) for a, b in pairwise(times[:-1])}


async def test_a_bts_saved_gb2312_file_runs_and_pauses_at_its_pause_step(
    tmp_path: Path,
) -> None:
    """Step 3 of the file is a pause step (type 13): after the 10 min rest and the 1 h
    strip the channel reports ``pause`` with no current, for as long as nobody continues
    it, and goes on with the plating step after ``continue``."""
    path = tmp_path / "bts-saved.xml"
    shutil.copyfile(BTS_SAVED, path)
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([(CH, "li-li-1", str(path))])
        clock.set(600 + 1800.0)
        live = (await client.inquire([CH]))[CH]
        assert (live.workstatus, live.step_type) == ("working", "cc")
        assert live.current_a > 0.0

        clock.set(600 + 3600 + 60.0)
        live = (await client.inquire([CH]))[CH]
        assert (live.workstatus, live.step_id, live.step_type) == ("pause", 3, "pause")
        assert live.current_a == 0.0
        assert (await client.get_status([CH]))[CH] == "pause"
        clock.set(600 + 3600 + 5 * 3600.0)  # a pause step has no end of its own
        assert (await client.get_status([CH]))[CH] == "pause"

        await client.resume([CH])
        clock.set(600 + 3600 + 5 * 3600 + 1800.0)
        live = (await client.inquire([CH]))[CH]
        assert (live.workstatus, live.step_id, live.step_type) == ("working", 4, "dc")
        assert live.current_a < 0.0
        records = await _records(client)
    pause = [r for r in records if r.step_id == 3]
    assert pause
    assert {r.step_type for r in pause} == {"pause"}
    assert {r.current_a for r in pause} == {0.0}


async def test_a_steps_own_record_interval_sets_the_logging_during_that_step(
    tmp_path: Path,
) -> None:
    """The fixture's rest logs at the whole test's 60 s, its strip at its own 30 s and
    its plating at its own 10 s."""
    path = tmp_path / "bts-saved.xml"
    shutil.copyfile(BTS_SAVED, path)
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([(CH, "li-li-1", str(path))])
        clock.set(600 + 3600 + 60.0)
        await client.resume([CH])
        clock.set(600 + 3600 + 60 + 3600 + 30.0)
        records = await _records(client)
    assert _intervals_s(records, 1) == {60.0}
    assert _intervals_s(records, 2) == {30.0}
    assert _intervals_s(records, 4) == {10.0}


def _protected_file(step: Step, whole: Protection | None = None) -> StepFile:
    return StepFile(
        steps=(Step(StepType.REST, time_s=120.0), step, Step(StepType.END)),
        protection=whole or Protection(voltage_upper_v=5.0, voltage_lower_v=-5.0),
        record_interval_s=10.0,
    )


@pytest.mark.parametrize(
    "step_file",
    [
        pytest.param(
            _protected_file(
                Step(
                    StepType.CC_CHARGE,
                    current_ma=STRIP_MA,
                    time_s=3600.0,
                    # The cell's overpotential at 0.5 mA/cm² is well above 2 mV.
                    protection=Protection(voltage_upper_v=0.002, voltage_lower_v=-0.002),
                )
            ),
            id="step-voltage",
        ),
        pytest.param(
            _protected_file(
                Step(
                    StepType.CC_DISCHARGE,
                    current_ma=STRIP_MA,
                    time_s=3600.0,
                    protection=Protection(current_upper_ma=0.3, current_lower_ma=-0.3),
                )
            ),
            id="step-current",
        ),
        pytest.param(
            _protected_file(
                Step(StepType.CC_DISCHARGE, current_ma=STRIP_MA, time_s=3600.0),
                whole=Protection(current_upper_ma=0.5, current_lower_ma=-0.3),
            ),
            id="whole-test-signed-current",
        ),
    ],
)
async def test_a_protection_bound_trips_the_channel_to_protect_in_its_step(
    tmp_path: Path, step_file: StepFile
) -> None:
    """The rest (inside every bound) runs; the next step trips at its first sample."""
    path = write_step_file(tmp_path / "p.xml", step_file)
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([(CH, "li-li-1", str(path))])
        clock.set(100.0)
        assert (await client.get_status([CH]))[CH] == "working"
        clock.set(200.0)
        assert (await client.get_status([CH]))[CH] == "protect"
        records = await _records(client)
    assert records[-1].step_id == 2
    assert records[-1].test_time_ms <= 130_000


async def test_a_signed_lower_current_bound_lets_a_charge_run(tmp_path: Path) -> None:
    """``Lower`` bounds the discharging current only: a charge of the same size runs."""
    step_file = _protected_file(
        Step(StepType.CC_CHARGE, current_ma=STRIP_MA, time_s=600.0),
        whole=Protection(current_upper_ma=0.5, current_lower_ma=-0.3),
    )
    path = write_step_file(tmp_path / "p.xml", step_file)
    clock = VirtualClock()
    sim = _simulator(clock)
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([(CH, "li-li-1", str(path))])
        clock.set(800.0)
        assert (await client.get_status([CH]))[CH] == "finish"
