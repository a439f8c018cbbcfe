"""Which run of a step a live poll sees: the step number alone does not say.

A step file that loops (``goto``, a cycle step) runs the same step number again and
again: one-direction blocks of an hour with a 7 s impedance scan or a 10 s rest between
them read step 3, 2, 3, 2, ... in a recording. A poll every 60 s misses most of the
short steps, so consecutive polls read step 3 in two different blocks, and a detector
told only the step number takes hours of blocks for one half cycle: its profile, its
positions and every later judgement are then wrong. Every live link (Neware
``inquire``, Arbin, Maccor) also reports the time within the running step, which
starts again from zero with each run: when it goes back, a new run began, whatever the
step number says. Recorded streams need none of this: they keep every step's samples.
"""

from __future__ import annotations

import math

# A step's time only grows within a run (a pause freezes it or lets it run on); this
# much back is a new run, with room for an instrument's rounding of the same reading.
_BACK_S = 1e-3


class StepRuns:
    """Numbers the runs of steps seen by one channel's live polls: 1, 2, 3, ...

    ``of(step, step_time_s)`` is a new number when the step number changes or the
    step's own time went back since the previous poll (a new run of the same step),
    and the same number otherwise, also across a pause, which continues its run. The
    number is what a detector compares to tell a new step: a change means a new step.
    ``None`` where the instrument reports no step. With no step time (NaN: a recorded
    stream, which keeps every step's samples) the numbers change with the step number
    only.
    """

    __slots__ = ("_run", "_step", "_step_time_s")

    def __init__(self) -> None:
        self._run = 0
        self._step: int | None = None
        self._step_time_s = math.nan

    def of(self, step: int | None, step_time_s: float) -> int | None:
        if step is None:
            return None
        # (NaN, an unknown step time, never compares as gone back.)
        if step != self._step or step_time_s < self._step_time_s - _BACK_S:
            self._run += 1
        self._step = step
        self._step_time_s = step_time_s
        return self._run
