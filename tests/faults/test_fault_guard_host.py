"""Fault suite: a host-driven source-meter is its own last protection.

Rules: before the output goes on, the source-meter's compliance is the protocol's
voltage limit (±5 V), not its range (21 V), so a hung or killed daemon never lets it
drive the cell past the protocol; when the daemon stops (SIGINT/SIGTERM cancel the
guard) the output goes off unless ``keep_output_on = true``, and the log says which.
The daemon, a simulated Keithley 2400 on a real pty, virtual time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cellguard.daemon.config import parse_config
from cellguard.daemon.service import started_daemon
from cellguard.drivers import VirtualClock
from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.drivers.smu import SmuSimulator

STEP_S = 60.0
PROTOCOL = """
[cell]
type = "symmetric"
diameter_mm = 10
thick_li_um = 100
thin_li_um = 100

[protocol]
name = "symmetric 0.5/0.5"
record_every = "60 s"
limits = ["Voltage between -5 V and 5 V"]
steps = [
  "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Plate at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Repeat steps 1-2 100 times",
]
"""
CELL = (
    'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, thin_li_um = 100, '
    'interphase = "SEI" }'
)


async def _run_smu_then_stop(
    tmp_path: Path, pty_pair: tuple[str, str], extra: str = ""
) -> tuple[SmuSimulator, list[float], bool]:
    """Run the protocol for an hour, stop the daemon; (smu, compliances seen while the
    output was on, output on just before the stop)."""
    host_end, instrument_end = pty_pair
    clock = VirtualClock()
    smu = SmuSimulator(clock, cell=SimCell(SimCellSpec("SEI", never_short=True), seed=3), seed=3)
    protocol = tmp_path / "run.toml"
    protocol.write_text(PROTOCOL)
    config = parse_config(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[instruments]]\nname = "smu-a"\ndriver = "smu"\nserial_port = "{host_end}"\n{extra}'
        f'[[channels]]\ninstrument = "smu-a"\nchannel = "1"\nmode = "run"\n{CELL}\n'
        f'protocol_file = "{protocol}"\n'
    )
    compliances: list[float] = []
    async with smu.serve(instrument_end), started_daemon(config, clock=clock) as daemon:
        host = daemon.host("smu-a")
        await clock.wait_until_sleeping(daemon.instrument_tasks["smu-a"])
        for _ in range(60):
            await clock.advance(STEP_S)
            if smu.output_on:
                compliances.append(smu.voltage_compliance_v)
        assert host.state == "running"
        on_before_stop = smu.output_on
    # Leaving the block, the daemon stopped as on SIGTERM (its guards cancelled) while
    # the source-meter was still there to be told.
    return smu, compliances, on_before_stop


async def test_the_source_meter_is_limited_by_the_protocol_and_off_after_the_daemon(
    tmp_path: Path, pty_pair: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cellguard.daemon")
    smu, compliances, on_before_stop = await _run_smu_then_stop(tmp_path, pty_pair)
    assert on_before_stop
    assert compliances
    assert set(compliances) == {5.0}
    assert smu.output_on is False
    said = [r.getMessage() for r in caplog.records if "daemon stopping" in r.getMessage()]
    assert len(said) == 1
    assert "output switched OFF" in said[0]
    assert "smu-a 1" in said[0]


async def test_keep_output_on_leaves_the_source_on_and_says_so(
    tmp_path: Path, pty_pair: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cellguard.daemon")
    smu, _, on_before_stop = await _run_smu_then_stop(
        tmp_path, pty_pair, extra="keep_output_on = true\n"
    )
    assert on_before_stop
    assert smu.output_on is True
    assert smu.voltage_compliance_v == 5.0
    said = [r.getMessage() for r in caplog.records if "daemon stopping" in r.getMessage()]
    assert len(said) == 1
    assert "output LEFT ON" in said[0]
    assert "keep_output_on = true" in said[0]
