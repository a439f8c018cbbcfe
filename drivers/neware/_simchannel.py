"""One simulated CT-4008 channel: runs a BTS step file on a simulated cell.

The channel behaves as the instrument does: it runs steps in order with their limits
(time, capacity, cut-off voltage), loops at a CYCLE step, records a sample every
record interval (a step's own, else the whole test's) into its own history
(``download`` reads it by position), clamps the voltage to the instrument's range,
trips into ``protect`` at the whole-test protection limits and at the running step's
own, pauses at a PAUSE step until :meth:`SimChannel.resume` (the server's
``continue``/``cancelpause``), and rests at open circuit when stopped.

CV steps (CV charge, CV discharge, CC-CV charge) run only on a cell that can say which
current holds a voltage (``current_for_voltage``, e.g. ``SimFullCell``): each
integration interval asks the cell for the current at the set-point, clamped to the
step's ceiling (its ``current_ma``, else the instrument's range) and to the step's
direction; a CC-CV charge is simply a CV charge whose ceiling is its CC current. The
step ends at its stop current (|I| <= stop), time or capacity. A Li|Li ``SimCell``
has no such method, so CV steps on it are refused at start.

Time is pulled, not pushed: :meth:`SimChannel.advance_to` integrates up to a clock
time, so the simulator costs nothing between requests and is exactly reproducible.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Protocol, cast

from cellguard.drivers.neware._codec import download_item
from cellguard.drivers.neware._messages import (
    ChannelAddress,
    DownloadRecord,
    InquireRecord,
    StepLayerRecord,
)
from cellguard.drivers.neware._stepfile import Step, StepFile, StepType

# Log codes as the BTS server reports them in ``inquire`` and ``downloadlog``.
LOG_TEST_START = 100000
LOG_TEST_END = 100001
LOG_PROTECT = 100215
LOG_WORKING = 102000

# The longest stretch integrated in one go. Shorter than any time constant the
# detectors care about would be ideal, but the cell model integrates in closed form,
# so this only bounds how stale a depletion or short onset can be inside one step.
_MAX_DT_S = 30.0
_DEFAULT_RECORD_S = 60.0
_EPS_S = 1e-9

_CV_TYPES = (StepType.CV_CHARGE, StepType.CV_DISCHARGE, StepType.CCCV_CHARGE)

_STEP_NAMES = ("cc", "dc", "cv", "rest", "cycle", "end", "cccv", "cvd", "pause")
_STEP_CODE = {name: i for i, name in enumerate(_STEP_NAMES)}


@dataclass(frozen=True)
class RefusedStart:
    """Why a start was refused (the wire only says ``false``; the log says why)."""

    reason: str


class SimulatedCell(Protocol):
    """What a channel needs of a cell: pass a current for a while, read the voltage."""

    def advance(self, dt_s: float, current_a: float) -> float: ...


class _VoltageHoldingCell(SimulatedCell, Protocol):
    """A cell that can also run CV steps (see the module docstring)."""

    def current_for_voltage(self, voltage_v: float, dt_s: float, limit_a: float) -> float: ...


class _History:
    """Recorded samples in compact parallel arrays (a long test holds millions)."""

    def __init__(self) -> None:
        self.step_id = array("i")
        self.cycle_id = array("i")
        self.step_code = array("b")
        self.test_time_ms = array("q")
        self.voltage_v = array("d")
        self.current_a = array("d")
        self.capacity_ah = array("d")
        self.energy_wh = array("d")
        # Each record's <data> line as served, encoded the first time it is asked
        # for (None until then): a recorded sample never changes, and a real BTS
        # server serves its history from its database instead of formatting it
        # again for every request.
        self.items: list[bytes | None] = []

    def __len__(self) -> int:
        return len(self.test_time_ms)

    def append(
        self,
        step_id: int,
        cycle_id: int,
        step_code: int,
        test_time_ms: int,
        voltage_v: float,
        current_a: float,
        capacity_ah: float,
        energy_wh: float,
    ) -> None:
        self.step_id.append(step_id)
        self.cycle_id.append(cycle_id)
        self.step_code.append(step_code)
        self.test_time_ms.append(test_time_ms)
        self.voltage_v.append(voltage_v)
        self.current_a.append(current_a)
        self.capacity_ah.append(capacity_ah)
        self.energy_wh.append(energy_wh)


class SimChannel:
    """A CT-4008 channel with a cell in it (or empty: ``cell is None``)."""

    def __init__(
        self,
        address: ChannelAddress,
        cell: SimulatedCell | None,
        *,
        current_range_ma: float,
        voltage_range_v: float = 5.0,
        now_s: float = 0.0,
        wall_zone: tzinfo | None = None,
    ) -> None:
        self.address = address
        # The BTS PC's zone: wall times are then UTC instants, shown as its local time.
        self.wall_zone = wall_zone
        self.cell = cell
        self.current_range_ma = current_range_ma
        self.voltage_range_v = voltage_range_v
        self.workstatus = "finish"
        self.barcode = ""
        self.test_id = 0
        self.last_refusal: RefusedStart | None = None
        self._t_s = now_s
        self._voltage_v = 0.0
        self._current_a = 0.0
        self._program: StepFile | None = None
        self._test_start_s = now_s
        self._test_start_wall = datetime(2026, 1, 1)
        self._history = _History()
        self._log: list[tuple[int, int, float]] = []  # (seq_id, log_code, t_s)
        self._layers: list[StepLayerRecord] = []
        self._reset_test_state()

    def _reset_test_state(self) -> None:
        self._step_index = 0  # 0-based index into the program's steps
        self._step_start_s = self._t_s
        self._step_capacity_ah = 0.0
        self._step_energy_wh = 0.0
        self._cycle_id = 1
        self._loop_counts: dict[int, int] = {}
        self._next_record_s = self._t_s
        self._layer_start_seq = 1
        self._layer_start_v = 0.0
        self._layer_start_a = 0.0
        self._layer_index = 0
        self._layer_open = False
        self._last_record_t_s = -math.inf
        self._paused_at_s = 0.0

    # ------------------------------------------------------------ commands

    def start(self, program: StepFile, barcode: str, now_s: float, wall_now: datetime) -> bool:
        """Start a test. Refused (False) as the instrument would refuse it."""
        self.advance_to(now_s)
        refusal = self._check_start(program)
        self.last_refusal = refusal
        if refusal is not None:
            return False
        self._program = program
        self.barcode = barcode
        self.test_id += 1
        self._test_start_s = self._t_s
        self._test_start_wall = wall_now
        self._history = _History()
        self._log = [(1, LOG_TEST_START, self._t_s)]
        self._layers = []
        self.workstatus = "working"
        self._reset_test_state()
        self._enter_step(0)
        return True

    def _check_start(self, program: StepFile) -> RefusedStart | None:
        if self.workstatus in ("working", "pause"):
            return RefusedStart(f"channel {self.address.channel} is {self.workstatus}")
        if self.cell is None:
            return RefusedStart(f"no cell on channel {self.address.channel}")
        for index, step in enumerate(program.steps, start=1):
            if step.step_type in _CV_TYPES and not hasattr(self.cell, "current_for_voltage"):
                return RefusedStart(f"step {index}: CV steps are not simulated")
            if step.current_ma is not None and step.current_ma > self.current_range_ma:
                return RefusedStart(
                    f"step {index}: {step.current_ma} mA is beyond "
                    f"the ±{self.current_range_ma} mA range"
                )
        return None

    def stop(self, now_s: float) -> bool:
        """Stop a running test; refused (False) when nothing runs, as on the instrument."""
        self.advance_to(now_s)
        if self.workstatus not in ("working", "pause"):
            return False
        self._end_test("stop", LOG_TEST_END)
        return True

    def pause(self, now_s: float) -> bool:
        """Pause a running test now (no current until resumed); False if nothing runs."""
        self.advance_to(now_s)
        if self.workstatus != "working":
            return False
        self.workstatus = "pause"
        self._paused_at_s = self._t_s
        self._current_a = 0.0
        return True

    def resume(self, now_s: float) -> bool:
        """Resume a paused test where it stopped; the pause does not count as step time.

        At a PAUSE step the test goes on with the step after it. This is what the
        server's ``continue`` and ``cancelpause`` do; False if nothing is paused.
        """
        self.advance_to(now_s)
        if self.workstatus != "pause":
            return False
        self.workstatus = "working"
        if self._program is not None and self._current_step().step_type is StepType.PAUSE:
            if self._last_record_t_s != self._t_s:
                self._record()  # the pause step's last point, at its end
            self._next_record_s = self._t_s
            self._next_step()
            return True
        paused_s = self._t_s - self._paused_at_s
        self._step_start_s += paused_s
        self._next_record_s = self._t_s
        return True

    def _current_step(self) -> Step:
        assert self._program is not None
        return self._program.steps[self._step_index]

    def _record_interval_s(self, step: Step) -> float:
        assert self._program is not None
        own = step.record_interval_s
        return own or self._program.record_interval_s or _DEFAULT_RECORD_S

    # ------------------------------------------------------------ time

    def advance_to(self, t_s: float) -> None:
        """Integrate the channel (and its cell) up to clock time ``t_s``."""
        while self._t_s < t_s - _EPS_S:
            if self.workstatus == "working" and self._program is not None:
                self._run_until(t_s)
            else:
                self._rest_until(t_s)

    def _rest_until(self, t_s: float) -> None:
        dt_s = t_s - self._t_s
        self._current_a = 0.0
        if self.cell is not None:
            # Open circuit: the cell's own clock keeps moving (interphase growth,
            # shorts) even when nothing runs; chunked to keep the model's steps small.
            while dt_s > _EPS_S:
                chunk_s = min(dt_s, 3600.0)
                self._voltage_v = self._clamp(self.cell.advance(chunk_s, 0.0))
                dt_s -= chunk_s
        self._t_s = t_s

    def _clamp(self, voltage_v: float) -> float:
        limit = self.voltage_range_v
        return limit if voltage_v > limit else -limit if voltage_v < -limit else voltage_v

    def _run_until(self, t_s: float) -> None:
        program = self._program
        assert program is not None
        assert self.cell is not None
        protection = program.protection
        while self._t_s < t_s - _EPS_S and self.workstatus == "working":
            step = program.steps[self._step_index]
            record_s = self._record_interval_s(step)
            if step.step_type in _CV_TYPES:
                current_a, dt_s = self._cv_interval(step, t_s)
            else:
                current_a = self._step_current_a(step)
                dt_s = min(t_s - self._t_s, _MAX_DT_S, max(self._next_record_s - self._t_s, _EPS_S))
                dt_s = min(dt_s, self._time_left_s(step, current_a))
                dt_s = max(dt_s, _EPS_S)
            raw_v = self.cell.advance(dt_s, current_a)
            voltage_v = self._clamp(raw_v)
            self._t_s += dt_s
            self._current_a = current_a
            self._voltage_v = voltage_v
            self._step_capacity_ah += abs(current_a) * dt_s / 3600.0
            self._step_energy_wh += abs(voltage_v * current_a) * dt_s / 3600.0

            if protection.tripped(voltage_v, current_a) or (
                step.protection is not None and step.protection.tripped(voltage_v, current_a)
            ):
                self._record()
                self._end_test("protect", LOG_PROTECT)
                return
            if self._t_s >= self._next_record_s - _EPS_S:
                self._record()
                while self._next_record_s <= self._t_s + _EPS_S:
                    self._next_record_s += record_s
            if self._step_done(step, voltage_v):
                if self._last_record_t_s != self._t_s:
                    self._record()  # the instrument records every step's last point
                self._next_step()

    def _step_current_a(self, step: Step) -> float:
        if step.step_type is StepType.CC_CHARGE:
            return (step.current_ma or 0.0) / 1000.0
        if step.step_type is StepType.CC_DISCHARGE:
            return -(step.current_ma or 0.0) / 1000.0
        return 0.0

    def _cv_interval(self, step: Step, t_s: float) -> tuple[float, float]:
        """The next interval of a CV step: (current the cell needs to hold the set-point,
        length). The capacity limit shortens the interval, and the current is asked
        again for the shorter one."""
        cell = cast(_VoltageHoldingCell, self.cell)
        assert step.voltage_v is not None  # validate_steps guarantees it
        dt_s = min(t_s - self._t_s, _MAX_DT_S, max(self._next_record_s - self._t_s, _EPS_S))
        dt_s = max(min(dt_s, self._time_left_s(step, 0.0)), _EPS_S)
        current_a = self._cv_current_a(cell, step, dt_s)
        if step.capacity_mah is not None and current_a != 0.0:
            left_s = self._time_left_s(step, current_a)
            if left_s < dt_s:
                dt_s = left_s
                current_a = self._cv_current_a(cell, step, dt_s)
        return current_a, dt_s

    def _cv_current_a(self, cell: _VoltageHoldingCell, step: Step, dt_s: float) -> float:
        assert step.voltage_v is not None
        ceiling_ma = self.current_range_ma if step.current_ma is None else step.current_ma
        current_a = cell.current_for_voltage(step.voltage_v, dt_s, ceiling_ma / 1000.0)
        # A CV (or CC-CV) charge only charges, a CV discharge only discharges.
        if step.step_type is StepType.CV_DISCHARGE:
            return current_a if current_a < 0.0 else 0.0
        return current_a if current_a > 0.0 else 0.0

    def _time_left_s(self, step: Step, current_a: float) -> float:
        left = math.inf
        if step.time_s is not None:
            left = step.time_s - (self._t_s - self._step_start_s)
        if step.capacity_mah is not None and current_a != 0.0:
            left_ah = step.capacity_mah / 1000.0 - self._step_capacity_ah
            left = min(left, left_ah * 3600.0 / abs(current_a))
        return max(left, _EPS_S)

    def _step_done(self, step: Step, voltage_v: float) -> bool:
        tol_s = 1e-6
        if step.time_s is not None and self._t_s - self._step_start_s >= step.time_s - tol_s:
            return True
        if (
            step.capacity_mah is not None
            and self._step_capacity_ah * 1000.0 >= step.capacity_mah * (1 - 1e-9)
        ):
            return True
        if (
            step.step_type in _CV_TYPES
            and step.stop_current_ma is not None
            and abs(self._current_a) * 1000.0 <= step.stop_current_ma
        ):
            return True
        if step.stop_voltage_v is not None:
            if step.step_type is StepType.CC_CHARGE and voltage_v >= step.stop_voltage_v:
                return True
            if step.step_type is StepType.CC_DISCHARGE and voltage_v <= step.stop_voltage_v:
                return True
        return False

    def _enter_step(self, index: int) -> None:
        assert self._program is not None
        steps = self._program.steps
        # CYCLE and END are control steps: they take no time.
        while True:
            step = steps[index]
            if step.step_type is StepType.END:
                self._end_test("finish", LOG_TEST_END)
                return
            if step.step_type is StepType.CYCLE:
                done = self._loop_counts.get(index, 0) + 1
                if done < (step.cycle_count or 1):
                    self._loop_counts[index] = done
                    self._cycle_id += 1
                    index = (step.loop_start_step or 1) - 1
                else:
                    self._loop_counts[index] = 0
                    index += 1
                continue
            break
        before_s = self._record_interval_s(steps[self._step_index])
        after_s = self._record_interval_s(step)
        if after_s != before_s:
            # A step with its own record interval starts its own record grid.
            self._next_record_s = self._t_s + after_s
        self._step_index = index
        self._step_start_s = self._t_s
        self._step_capacity_ah = 0.0
        self._step_energy_wh = 0.0
        self._layer_open = True
        self._layer_start_seq = len(self._history) + 1
        self._layer_start_v = self._voltage_v
        self._layer_start_a = self._step_current_a(step)
        if step.step_type is StepType.PAUSE:
            # The channel stops its current and waits for the operator, reporting
            # "pause" as after an operator's pause; resume() goes on after this step.
            self._current_a = 0.0
            self._record()
            self.workstatus = "pause"
            self._paused_at_s = self._t_s

    def _next_step(self) -> None:
        self._close_layer()
        self._enter_step(self._step_index + 1)

    def _close_layer(self) -> None:
        if not self._layer_open or self._program is None:
            return
        self._layer_open = False
        if len(self._history) < self._layer_start_seq:
            return
        step = self._program.steps[self._step_index]
        self._layer_index += 1
        self._layers.append(
            StepLayerRecord(
                start_seq_id=self._layer_start_seq,
                end_seq_id=len(self._history),
                step_index=self._layer_index,
                step_id=self._step_index + 1,
                cycle_id=self._cycle_id,
                step_type=step.step_type.wire_name,
                step_time_ms=round((self._t_s - self._step_start_s) * 1000),
                end_wall_time=self._wall(self._t_s),
                start_voltage_v=self._layer_start_v,
                end_voltage_v=self._voltage_v,
                start_current_a=self._layer_start_a,
                end_current_a=self._current_a,
                capacity_ah=self._step_capacity_ah,
                energy_wh=self._step_energy_wh,
            )
        )

    def _end_test(self, status: str, log_code: int) -> None:
        self._close_layer()
        self.workstatus = status
        self._log.append((max(len(self._history), 1), log_code, self._t_s))
        self._current_a = 0.0

    def _test_time_ms(self) -> int:
        return round((self._t_s - self._test_start_s) * 1000)

    def _wall(self, t_s: float) -> datetime:
        return self._wall_after(round(t_s - self._test_start_s))

    def _wall_after(self, test_time_s: int) -> datetime:
        wall = self._test_start_wall + timedelta(seconds=test_time_s)
        if self.wall_zone is None:
            return wall
        # As a BTS PC's clock shows it: local time without the zone (DST repeats an hour).
        return wall.astimezone(self.wall_zone).replace(tzinfo=None)

    def _record(self) -> None:
        program = self._program
        assert program is not None
        step = program.steps[self._step_index]
        self._last_record_t_s = self._t_s
        self._history.append(
            self._step_index + 1,
            self._cycle_id,
            _STEP_CODE[step.step_type.wire_name],
            self._test_time_ms(),
            self._voltage_v,
            self._current_a,
            self._step_capacity_ah,
            self._step_energy_wh,
        )

    # ------------------------------------------------------------ queries

    @property
    def t_s(self) -> float:
        return self._t_s

    @property
    def record_count(self) -> int:
        return len(self._history)

    def inquire(self) -> InquireRecord:
        running = self.workstatus in ("working", "pause")
        ever_ran = self._program is not None
        step = self._program.steps[self._step_index] if self._program is not None else None
        return InquireRecord(
            address=self.address,
            cycle_id=self._cycle_id if ever_ran else 1,
            step_id=self._step_index + 1 if running else None,
            step_type=step.step_type.wire_name if running and step is not None else None,
            workstatus=self.workstatus,
            barcode=self.barcode,
            current_a=self._current_a if running else 0.0,
            voltage_v=self._voltage_v,
            capacity_ah=self._step_capacity_ah if running else 0.0,
            energy_wh=self._step_energy_wh if running else 0.0,
            total_time_s=(self._t_s - self._test_start_s) if running else 0.0,
            relative_time_s=(self._t_s - self._step_start_s) if running else 0.0,
            log_code=LOG_WORKING if running else 0,
        )

    def download(self, start_pos: int, count: int) -> tuple[DownloadRecord, ...]:
        """Recorded samples with seq ids ``start_pos .. start_pos+count-1`` (1-based)."""
        return tuple(self._record_at(i) for i in range(*self._download_range(start_pos, count)))

    def download_items(self, start_pos: int, count: int) -> list[bytes]:
        """The same records as :meth:`download`, as the ``<data>`` lines of the reply."""
        first, last = self._download_range(start_pos, count)
        items = self._history.items
        if len(items) < last:
            items.extend([None] * (last - len(items)))
        page = items[first:last]
        if None in page:
            for i in range(first, last):
                if items[i] is None:
                    items[i] = download_item(self._record_at(i))
            page = items[first:last]
        return cast("list[bytes]", page)

    def _download_range(self, start_pos: int, count: int) -> tuple[int, int]:
        first = max(start_pos, 1) - 1
        return first, max(first, min(first + max(count, 0), len(self._history)))

    def _record_at(self, i: int) -> DownloadRecord:
        h = self._history
        return DownloadRecord(
            seq_id=i + 1,
            step_id=h.step_id[i],
            cycle_id=h.cycle_id[i],
            step_type=_STEP_NAMES[h.step_code[i]],
            test_time_ms=h.test_time_ms[i],
            wall_time=self._wall_after(h.test_time_ms[i] // 1000),
            voltage_v=h.voltage_v[i],
            current_a=h.current_a[i],
            capacity_ah=h.capacity_ah[i],
            energy_wh=h.energy_wh[i],
        )

    def log(self) -> list[tuple[int, int, datetime]]:
        return [(seq, code, self._wall(t_s)) for seq, code, t_s in self._log]

    def step_layers(self) -> tuple[StepLayerRecord, ...]:
        return tuple(self._layers)
