"""Where the real recordings live: ``tests/fixtures`` in the repository (copied with
their licences from the projects that recorded them; see its README).

A missing folder is a collection error, never a silently skipped test.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SHARED_FIXTURES = Path(__file__).resolve().parent / "fixtures"
if not (SHARED_FIXTURES / "neware-bts-api").is_dir():
    raise RuntimeError(f"real fixtures not found at {SHARED_FIXTURES}: the checkout is incomplete")
NEWARE_API_FIXTURES = SHARED_FIXTURES / "neware-bts-api"
NEWARE_FILES = SHARED_FIXTURES / "neware-files"
BIOLOGIC_FILES = SHARED_FIXTURES / "biologic"

# The protocol example, shipped in the package (it must work as written).
EXAMPLE_PROTOCOL = (
    Path(__file__).resolve().parents[1]
    / "protocols"
    / "script"
    / "examples"
    / "asymmetric-0.5-0.5.toml"
).read_text(encoding="utf-8")


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


class StepTimeSpy:
    """A live detector that remembers the step and step time of every poll it judges."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.seen: list[tuple[float, int | None, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def feed(self, t_s: float, *args: Any, step_time_s: float = math.nan) -> Any:
        self.seen.append((t_s, args[2] if len(args) > 2 else None, step_time_s))
        return self._inner.feed(t_s, *args, step_time_s=step_time_s)

    def assert_one_run_per_half_cycle(
        self, hours: float, half_cycle_s: float, poll_s: float
    ) -> None:
        """Every poll came with its step time; within a step it grows poll by poll, and
        it goes back only where a new half cycle (a new step) began."""
        assert len(self.seen) >= 0.8 * hours * 3600.0 / poll_s
        times = [step_time_s for _, _, step_time_s in self.seen]
        assert all(0.0 <= t <= half_cycle_s + poll_s for t in times)
        backs = [k for k in range(1, len(times)) if times[k] < times[k - 1]]
        ends = int(hours * 3600.0 // half_cycle_s)
        assert ends - 1 <= len(backs) <= ends
        assert all(self.seen[k][1] != self.seen[k - 1][1] for k in backs)
