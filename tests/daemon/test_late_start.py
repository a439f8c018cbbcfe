"""Issue 17 item 11 end to end: a 1 mA cm⁻² asymmetric channel started on a simulator
that had been up for days.

The simulated CT-4008 (demo layout: 1-1-4 holds an MII-2 100|20 µm cell) idles 100 h
of virtual time; then the daemon starts the configured protocol through the Neware
driver over TCP. The cell is fresh, as one assembled for its test: it cycles, nothing
is halted, and no Coulombic efficiency is stored (the cell did not deplete).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cellguard.daemon.config import parse_config
from cellguard.daemon.service import started_daemon
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import ChannelId, NewareSimulator

INSTRUMENT = "ct4008-late"
CHANNEL = ChannelId(1, 1, 4)
POLL_S = 60.0


async def test_a_test_started_on_a_long_running_simulator_cycles_a_fresh_cell(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    sim = NewareSimulator(clock, seed=1, epoch=datetime(2026, 4, 1, 9))
    async with sim.serve() as (_, port):
        await clock.advance(100 * 3600.0)  # the simulator was up long before the test
        config = parse_config(
            f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n'
            f'[[instruments]]\nname = "{INSTRUMENT}"\ndriver = "neware"\nhost = "127.0.0.1"\n'
            f"port = {port}\npoll_interval_s = {POLL_S}\ndownload_interval_s = 600\n\n"
            f'[[channels]]\ninstrument = "{INSTRUMENT}"\nchannel = "{CHANNEL}"\nmode = "run"\n'
            'cell = { type = "asymmetric", area_cm2 = 0.785, thick_li_um = 100, '
            'thin_li_um = 20, interphase = "LPSC:LGPS 4:1" }\n'
            'protocol = { kind = "galvanostatic", current_density_ma_cm2 = 1.0, '
            "areal_capacity_mah_cm2 = 0.5, cycles = 100, record_interval_s = 60 }\n"
        )
        async with started_daemon(config, clock=clock) as daemon:
            await clock.wait_until_sleeping(daemon.instrument_tasks[INSTRUMENT])
            for _ in range(round(6 * 3600 / POLL_S)):  # six 1 h cycles
                await clock.advance(POLL_S)
            runtime = daemon.supervisor(INSTRUMENT).channels[CHANNEL]
            halt = runtime.halt
            events = await daemon.store.query_events(INSTRUMENT, str(CHANNEL), kind="halt")
        async with started_daemon(config, clock=clock) as daemon:
            rows = await daemon.store.query_cycles(INSTRUMENT, str(CHANNEL))
    assert halt is None, halt
    assert events == []
    assert sim.channels[CHANNEL].workstatus == "working"
    assert [r.cycle for r in rows][:5] == [1, 2, 3, 4, 5]
    assert not any(r.failure for r in rows)
    assert max(r.max_polarization_v for r in rows) < 0.2  # ~40 mV at 1 mA cm⁻², not 5 V
