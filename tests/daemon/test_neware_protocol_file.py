"""A protocol script from the config runs on a Neware channel (issue 17 item 4).

``protocol_file`` on a run-mode Neware channel: the daemon compiles the script to a
BTS step file and starts it on the (simulated, over TCP) instrument, as it does the
built-in galvanostatic protocol.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from shared import EXAMPLE_PROTOCOL

from cellguard.daemon.config import parse_config
from cellguard.daemon.service import started_daemon
from cellguard.drivers import ConfigError, VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator, StepType, parse_step_file
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec

INSTRUMENT = "ct4008-pf"
CHANNEL = ChannelId(1, 1, 4)
POLL_S = 60.0


def _config(tmp_path: Path, port: int, channel_extra: str) -> str:
    return (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[[instruments]]\nname = "{INSTRUMENT}"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        f'port = {port}\npoll_interval_s = {POLL_S}\nstep_file_dir = "{tmp_path / "steps"}"\n\n'
        f'[[channels]]\ninstrument = "{INSTRUMENT}"\nchannel = "{CHANNEL}"\nmode = "run"\n'
        'cell = { type = "asymmetric", area_cm2 = 0.785, thick_li_um = 100, thin_li_um = 20 }\n'
        + channel_extra
    )


async def test_a_protocol_file_is_compiled_and_started_on_a_neware_channel(
    tmp_path: Path,
) -> None:
    script = tmp_path / "asym.toml"
    script.write_text(EXAMPLE_PROTOCOL)  # rest 10 min, then strip/plate 0.5/0.5 x500
    clock = VirtualClock()
    cells = {CHANNEL: CellSlot(SimCellSpec("SEI", li_working_um=20.0, never_short=True))}
    sim = NewareSimulator(clock, cells=cells, seed=5, epoch=datetime(2026, 4, 1, 9))
    async with sim.serve() as (_, port):
        config = parse_config(
            _config(tmp_path, port, f'protocol_file = "{script}"\n'), base_dir=tmp_path
        )
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            for _ in range(round(3600 / POLL_S)):
                await clock.advance(POLL_S)
            runtime = daemon.supervisor(INSTRUMENT).channels[CHANNEL]
            assert runtime.state == "running"
    channel = sim.channels[CHANNEL]
    assert channel.workstatus == "working"
    live = channel.inquire()
    assert live.step_type == "cc"  # 50 min into the strip after the 10 min rest
    assert live.current_a == pytest.approx(0.5e-3 * 0.785, rel=1e-3)
    written = parse_step_file((tmp_path / "steps" / f"{INSTRUMENT}-{CHANNEL}.xml").read_bytes())
    assert [s.step_type for s in written.steps][:4] == [
        StepType.REST,
        StepType.CC_CHARGE,
        StepType.CC_DISCHARGE,
        StepType.CYCLE,
    ]
    assert written.steps[3].cycle_count == 500
    assert written.record_interval_s == 10.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'protocol_file = "asym.toml"\nprotocol = { kind = "galvanostatic", '
            "current_density_ma_cm2 = 0.5, areal_capacity_mah_cm2 = 0.5, cycles = 5 }\n",
            "protocol or protocol_file, not both",
        ),
        ('protocol_file = "missing.toml"\n', "protocol_file"),
        ("", "protocol_file"),  # neither: the message names both ways
    ],
)
def test_a_neware_channel_needs_exactly_one_protocol_and_a_readable_script(
    tmp_path: Path, extra: str, message: str
) -> None:
    (tmp_path / "asym.toml").write_text(EXAMPLE_PROTOCOL)
    with pytest.raises(ConfigError) as refused:
        parse_config(_config(tmp_path, 5020, extra), base_dir=tmp_path)
    assert message in str(refused.value)
    assert "channels[0]" in str(refused.value)


def test_a_script_the_neware_cannot_run_is_refused_at_load_naming_the_key(
    tmp_path: Path,
) -> None:
    """A goto runs host-driven only: refused when the config is read (exit 2 at
    ``cellguard run``), not left to an unguarded channel at connect."""
    script = tmp_path / "goto.toml"
    script.write_text(
        EXAMPLE_PROTOCOL.replace(
            '"Strip at 0.5 mA/cm2 for 0.5 mAh/cm2",',
            '"Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 or until 1 V, then goto step 4 if '
            'voltage above 1 V",',
        )
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(_config(tmp_path, 5020, f'protocol_file = "{script}"\n'), base_dir=tmp_path)
    assert refused.value.field == "channels[0].protocol_file"
    assert "goto" in str(refused.value)
