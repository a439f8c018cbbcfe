"""PyMeasure's ``Keithley2400`` (someone else's client) against the simulated 2400.

PyMeasure talks through pyserial to the simulator's own pty, in a worker thread (it
blocks), while the simulator answers on the event loop on a VirtualClock: every byte
crosses the kernel's pseudo-terminal, and time moves only when a test sets it. A run
ends with PyMeasure's own ``check_errors()`` (``SYST:ERR?`` until ``0``) and the
simulator's error queue, both empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pymeasure.adapters import SerialAdapter
from pymeasure.instruments.keithley import Keithley2400

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.smu import SmuSimulator

T = TypeVar("T")
Rig = tuple[VirtualClock, SmuSimulator, Keithley2400]

# Settable PyMeasure properties and a value each: every one is set, then read back.
PROPERTIES: tuple[tuple[str, Any], ...] = (
    ("source_mode", "current"),
    ("source_current_range", 1e-3),
    ("source_current_range_auto_enabled", True),
    ("source_voltage_range", 20.0),
    ("source_voltage_range_auto_enabled", True),
    ("source_delay", 0.01),
    ("source_delay_auto_enabled", True),
    ("auto_zero_enabled", True),
    ("output_off_state", "normal"),
    ("auto_output_off_enabled", False),
    ("filter_enabled", False),
    ("repeat_filter_enabled", True),
    ("filter_count", 5),
    ("current_range", 1e-3),
    ("current_range_auto_enabled", True),
    ("current_nplc", 1.0),
    ("voltage_range", 2.0),
    ("voltage_range_auto_enabled", True),
    ("voltage_nplc", 0.1),
    ("resistance_range", 2e3),
    ("resistance_range_auto_enabled", True),
    ("resistance_nplc", 1.0),
    ("resistance_mode_auto_enabled", False),
    ("compliance_current", 0.01),
    ("compliance_voltage", 5.0),
    ("trigger_count", 1),
    ("arm_count", 1),
    ("trigger_delay", 0.0),
    ("arm_timer", 0.5),
    ("trigger_source", "immediate"),
    ("arm_source", "immediate"),
    ("trigger_output_event", "none"),
    ("arm_output_event", "none"),
    ("trigger_input_line", 1),
    ("arm_input_line", 1),
    ("trigger_output_line", 2),
    ("arm_output_line", 2),
    ("display_enabled", True),
    ("wires", 2),
    ("line_frequency", 50),
    ("line_frequency_auto_enabled", False),
    ("front_terminals_enabled", True),
    ("buffer_points", 10),
)
# PyMeasure rounds to what the 2400 answers: a range reads back as the range chosen.
READ_BACK: dict[str, Any] = {
    "source_current_range": 1.05e-3,
    "source_voltage_range": 21.0,
    "current_range": 1.05e-3,
    "voltage_range": 2.1,
    "resistance_range": 2.1e3,
}


async def call(function: Callable[[], T]) -> T:
    """Run one blocking PyMeasure step in a thread while the loop serves the simulator."""
    return await asyncio.to_thread(function)


@asynccontextmanager
async def pymeasure_rig(tmp_path: Path, **options: Any) -> AsyncIterator[Rig]:
    clock = VirtualClock()
    simulator = SmuSimulator(clock, seed=5, **options)
    async with simulator.serve(f"pty:{tmp_path / 'k2400'}") as where:
        adapter = SerialAdapter(
            where, baudrate=9600, timeout=5, read_termination="\r", write_termination="\n"
        )
        smu = await call(lambda: Keithley2400(adapter))
        try:
            yield clock, simulator, smu
        finally:
            await call(adapter.close)


async def test_pymeasure_reads_the_cells_voltage_and_current_while_sourcing(
    tmp_path: Path,
) -> None:
    """apply_current, measure_voltage, enable_source, then voltage/current/resistance:
    the values the simulated cell has, and no SCPI error on the way."""
    async with pymeasure_rig(tmp_path) as (clock, simulator, smu):
        with pytest.warns(FutureWarning, match="^Deprecated"):
            await call(lambda: smu.apply_current(compliance_voltage=5.0))
        with pytest.warns(FutureWarning, match="^Deprecated"):
            await call(smu.measure_voltage)

        def start() -> None:
            smu.source_current = 0.3927e-3  # 0.5 mA/cm² on 0.785 cm²
            smu.enable_source()
            # Writes are not answered: wait for *OPC? before time moves on.
            assert smu.complete == "1"

        await call(start)
        clock.set(1800.0)
        voltage_v = await call(lambda: smu.voltage)
        current_a = await call(lambda: smu.current)
        resistance_ohm = await call(lambda: smu.resistance)
        assert simulator.output_on
        assert current_a == pytest.approx(0.3927e-3)
        assert voltage_v == pytest.approx(simulator.voltage_v, rel=1e-6)
        assert 0 < voltage_v < 0.1  # a Li|Li cell polarising, not open, not shorted
        assert resistance_ohm == pytest.approx(voltage_v / current_a, rel=1e-5)
        assert await call(smu.check_errors) == []
        assert simulator.errors == ()


async def test_pymeasure_runs_its_common_commands_with_no_scpi_error(tmp_path: Path) -> None:
    """Construction, reset, every settable property set and read back, measure_all,
    beep, the buffer (config, start, wait, data), shutdown: no entry in the error queue."""
    async with pymeasure_rig(tmp_path) as (clock, simulator, smu):

        def configure() -> dict[str, Any]:
            seen: dict[str, Any] = {"id": smu.id}
            smu.reset()
            smu.clear()
            for name, value in PROPERTIES:
                setattr(smu, name, value)
                seen[name] = getattr(smu, name)
            smu.source_current = 1e-3
            smu.enable_source()
            seen["source_enabled"] = smu.source_enabled
            return seen

        def measure_and_shut_down() -> dict[str, Any]:
            seen: dict[str, Any] = {"measure_all": smu.measure_all()}
            seen["complete"] = smu.complete
            seen["status"] = smu.status
            smu.beep(440, 0.1)
            smu.sample_continuously()
            smu.trigger_immediately()
            smu.config_buffer(points=4)
            smu.start_buffer()
            smu.wait_for_buffer(timeout=5)
            seen["buffer_data"] = smu.buffer_data
            seen["buffer_full"] = smu.is_buffer_full()
            smu.reset_buffer()
            smu.shutdown()
            seen["source_enabled_after_shutdown"] = smu.source_enabled
            seen["errors"] = smu.check_errors()
            return seen

        seen = await call(configure)
        clock.set(60.0)  # the cell takes the current for a minute
        seen |= await call(measure_and_shut_down)
        assert seen["id"].startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2400,")
        for name, value in PROPERTIES:
            expected = READ_BACK.get(name, value)
            assert seen[name] == (
                pytest.approx(expected) if isinstance(expected, float) else expected
            ), name
        assert seen["source_enabled"] is True
        everything = seen["measure_all"]
        assert everything["current"] == pytest.approx(1e-3)
        assert everything["status"] & (1 << 15)  # sourcing current
        assert seen["complete"] == "1"
        assert len(seen["buffer_data"]) == 4 * 5  # 4 readings of V, I, R, time, status
        assert seen["buffer_full"]
        assert seen["source_enabled_after_shutdown"] is False
        assert seen["errors"] == []
        assert simulator.errors == ()
        # What the run covered: 110 distinct commands (set and query forms counted apart).
        assert len(simulator.commands_seen) >= 100, sorted(simulator.commands_seen)


async def test_pymeasure_sees_compliance_in_the_status_word_and_the_trip_query(
    tmp_path: Path,
) -> None:
    """A current the cell cannot take below the compliance voltage: status bit 3 and
    :SENS:VOLT:PROT:TRIP? say so, and the voltage reads at the limit."""
    async with pymeasure_rig(tmp_path, cell="full") as (clock, simulator, smu):

        def start() -> None:
            smu.source_mode = "current"
            smu.compliance_voltage = 3.0  # below the full cell's rest voltage
            smu.source_current = 1e-3
            smu.enable_source()
            assert smu.complete == "1"

        await call(start)
        clock.set(10.0)
        everything = await call(smu.measure_all)
        tripped = await call(lambda: smu.ask(":SENS:VOLT:PROT:TRIP?").strip())
        assert everything["status"] & 8
        assert tripped == "1"
        assert simulator.in_compliance
        assert await call(smu.check_errors) == []
