"""Per-step limits of a protocol script, judged on a Neware's samples.

A BTS step file holds only the whole-test protection, so a step's own window (``within
-1 V and 1 V`` on one step) is judged by cellguard: :class:`StepLimitGuard` wraps a
channel's detector and, for every sample that carries the instrument's step id, checks
the windows of that step (:func:`~cellguard.protocols.script.step_limits`, keyed by the
compiled BTS step id) before the detector sees it. A trip is a halt at once (kind
``limit``): the limit was written by the researcher, there is nothing to confirm.
Pure, like the detectors: no I/O, no clock.
"""

from __future__ import annotations

import math

from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict
from cellguard.protocols.detectors._api import OK, FloatArray, IntArray
from cellguard.protocols.script._host import _Window, _windows
from cellguard.protocols.script._model import Protocol, step_label
from cellguard.protocols.script._neware import bts_step_ids, step_limits


class StepLimitGuard:
    """A :class:`Detector` that also judges each sample against its step's own limits."""

    def __init__(self, inner: Detector, protocol: Protocol) -> None:
        self._inner = inner
        self.settings: DetectorSettings = inner.settings
        by_number = {bts_id: number for number, bts_id in bts_step_ids(protocol).items() if bts_id}
        self._windows: dict[int, tuple[_Window, ...]] = {}
        for bts_id, limits in step_limits(protocol).items():
            number = by_number.get(bts_id, bts_id)
            where = step_label(number, protocol.steps[number - 1])
            self._windows[bts_id] = _windows(protocol, list(limits), where)
        self._halt: Verdict | None = None
        self._n = 0

    @property
    def samples(self) -> int:
        return self._n

    @property
    def halt(self) -> Verdict | None:
        return self._halt or self._inner.halt

    def feed(
        self,
        t_s: float,
        voltage_v: float,
        current_a: float,
        step: int | None = None,
        cycle: int | None = None,
        kind: int | None = None,
        *,
        step_time_s: float = math.nan,
    ) -> Verdict:
        index = self._n
        self._n += 1
        if self._halt is not None:
            return OK
        windows = self._windows.get(step) if step is not None else None
        for window in windows or ():
            tripped = window.trips(voltage_v, current_a)
            if tripped is None:
                continue
            what, value = tripped
            edge = window.ceiling_a
            if edge is None:
                assert window.low_v is not None
                assert window.high_v is not None
                edge = window.high_v if value >= window.high_v else window.low_v
            self._halt = Verdict(
                "halt",
                kind="limit",
                index=index,
                t_s=t_s,
                criterion="step limit",
                measured=value,
                baseline=math.nan,
                threshold=edge,
                unit="A" if window.ceiling_a is not None else "V",
                detail=f"{what} reached {window.text}",
                subkind="step",
            )
            return self._halt
        return self._inner.feed(
            t_s, voltage_v, current_a, step, cycle, kind, step_time_s=step_time_s
        )

    def feed_batch(
        self,
        t_s: FloatArray,
        voltage_v: FloatArray,
        current_a: FloatArray,
        step: IntArray | None = None,
        cycle: IntArray | None = None,
        step_kind: IntArray | None = None,
    ) -> list[Verdict]:
        out = []
        steps = step.tolist() if step is not None else [None] * len(t_s)
        cycles = cycle.tolist() if cycle is not None else [None] * len(t_s)
        kinds = step_kind.tolist() if step_kind is not None else [None] * len(t_s)
        for t, v, i, k, c, m in zip(
            t_s.tolist(),
            voltage_v.tolist(),
            current_a.tolist(),
            steps,
            cycles,
            kinds,
            strict=True,
        ):
            verdict = self.feed(t, v, i, k, c, m)
            if verdict.severity != "ok":
                out.append(verdict)
        return out
