"""The two present-value cyclers (Arbin CTI, Maccor MacNet) as the daemon tests see them.

The daemon guards both through one present-value link; the end-to-end tests are the
same for both but for what differs here: how the simulator is built and served, what the
config names, and how the simulator says a channel runs or was stopped (an Arbin channel
is stopped, a Maccor channel suspended: its test stays on the tester).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from cellguard.daemon.guard.links.arbin import ArbinSupervisor
from cellguard.daemon.guard.links.maccor import MaccorSupervisor
from cellguard.drivers import VirtualClock
from cellguard.drivers.arbin import ArbinSimulator
from cellguard.drivers.maccor import MaccorSimulator
from cellguard.drivers.neware import CellSlot


@dataclass(frozen=True)
class Kind:
    driver: str  # the config's `driver` and `demo --instrument`
    title: str  # as `check --connect` names the instrument
    supervisor: type[Any]
    make_sim: Callable[[VirtualClock, Mapping[int, CellSlot], int], Any]
    instrument_keys: str  # what the `[[instruments]]` table needs beyond host and port
    run_key: str  # what names the instrument's own program on a run channel
    run_value: str
    is_running: Callable[[Any, int], bool]  # 0-based channel index
    is_stopped: Callable[[Any, int], bool]
    stop_word: str  # what the guard does to a failing channel
    simulate_args: tuple[str, ...]  # `cellguard simulate DRIVER` beyond --port
    banner_port: Callable[[str], int]  # the JSON/CTI port from the simulator's first line
    check_keys: str  # instrument keys for `check --connect`
    check_answer: str  # "... at HOST:PORT answered: ..." after the port
    idle_status: str

    def __str__(self) -> str:
        return self.driver

    @asynccontextmanager
    async def served(self, sim: Any) -> AsyncIterator[int]:
        """Serve ``sim`` on loopback and yield its (JSON or CTI) port."""
        async with sim.serve() as addr:
            yield int(addr[1])


ARBIN = Kind(
    driver="arbin",
    title="Arbin CTI",
    supervisor=ArbinSupervisor,
    make_sim=lambda clock, cells, channels: ArbinSimulator(
        clock, channels=channels, cells=dict(cells), login=("lab", "pw"), seed=9
    ),
    instrument_keys='username = "lab"\npassword = "pw"\n',
    run_key="schedule",
    run_value="cellguard-cycling.sdx",
    is_running=lambda sim, ch: bool(sim.channels[ch].running),
    is_stopped=lambda sim, ch: not sim.channels[ch].running,
    stop_word="stop",
    simulate_args=(),
    banner_port=lambda line: int(line.split(" on ")[1].split(",")[0].rsplit(":", 1)[1]),
    check_keys='username = "not a username"\npassword = "not a password"\n',
    check_answer="answered: serial cellguard-sim, 4",
    idle_status="idle",
)

MACCOR = Kind(
    driver="maccor",
    title="Maccor MacNet",
    supervisor=MaccorSupervisor,
    make_sim=lambda clock, cells, channels: MaccorSimulator(
        clock, channels=channels, cells=dict(cells), seed=9
    ),
    instrument_keys="current_limit_a = 0.005\n",
    run_key="procedure",
    run_value="cellguard-cycling",
    is_running=lambda sim, ch: sim.state(ch).status == "Active",
    is_stopped=lambda sim, ch: sim.state(ch).status == "Suspended",
    stop_word="suspend",
    simulate_args=("--bin-port", "0"),
    banner_port=lambda line: int(line.split(" JSON ")[1].split(",")[0]),
    check_keys="",
    check_answer="answered: cellguard-sim, 4",
    idle_status="Available",
)

KINDS = (ARBIN, MACCOR)
