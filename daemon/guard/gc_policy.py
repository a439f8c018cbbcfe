"""When the garbage collector runs in a long-running guard: off the halt path.

The loop that polls a rack also sends its stops; anything that stops the loop between
a failing sample's arrival and its stop adds to the halt latency. CPython's cyclic
collector does, at moments set by allocation counts: anywhere in a poll, a young
collection costs ~1-5 ms, a full one walks every live object (up to ~90 ms with the
detectors and histories of 2,048 channels; ``bench/bench_supervise.py``). So:

- :func:`apply_service_policy`, once at service start: the automatic collections are
  made rare (raised thresholds); they remain as the safety net of a loop that
  allocates far more than usual, never as the routine. The GIL switch interval is
  shortened so that the loop waits less for it behind the SQLite writer thread.
- :func:`freeze_steady_heap`, once, after the first download: what the daemon holds for
  good (detectors, histories) is collected once and frozen, never walked again.
- :func:`collect_after_poll`, after each poll's stops are sent: the routine
  collections, done in the idle time before the next poll, where no halt waits.
"""

from __future__ import annotations

import gc
import sys

# Automatic young collections after this many new container objects (CPython's default
# is 700: ~20 a second at 2,048 channels, each one able to land between a failing
# sample and its stop). One poll of a 2,048-channel rack stays below it, so in routine
# work only the collection after the poll runs.
GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 10
# Automatic full collections only after this many middle ones: the full collection
# after every FULL_EVERY_POLLS polls comes well before.
GEN2_THRESHOLD = 100
FULL_EVERY_POLLS = 60  # one a minute at 1 Hz: ~25 ms of a 60 s idle budget
# The default 5 ms lets another thread (the SQLite writer) keep the GIL that long while
# the loop holds a stop ready; 1 ms bounds that wait at a small switching cost.
SWITCH_INTERVAL_S = 0.001

_applied = False
_frozen = False
_polls = 0


def apply_service_policy() -> bool:
    """Set the collector's thresholds and the switch interval, once per process; True
    when this call set them (a second service start in the process changes nothing)."""
    global _applied  # noqa: PLW0603 (one process, one collector)
    if _applied:
        return False
    _applied = True
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return True


def freeze_steady_heap() -> None:
    """After the first download, move what the daemon holds for good out of the GC's way.

    Collected once and frozen, that heap is never walked again (reference counting
    still frees it); later full collections walk only what came after, ~25 ms at most
    instead of ~90 ms. Once per process: a freeze without a collection just before it
    would keep cyclic garbage for good.
    """
    global _frozen  # noqa: PLW0603 (one process, one heap)
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def collect_after_poll() -> int:
    """The routine collection, called once a poll's stops are out: the young and middle
    generations every time, everything every :data:`FULL_EVERY_POLLS` polls (of any
    instrument of the process). The generation collected."""
    global _polls  # noqa: PLW0603 (one process, one collector)
    _polls += 1
    generation = 2 if _polls % FULL_EVERY_POLLS == 0 else 1
    gc.collect(generation)
    return generation
