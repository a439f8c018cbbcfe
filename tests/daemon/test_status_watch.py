"""`cellguard status --watch`: the table a person reads at a glance, refreshed in place."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console
from test_analytics_tap import INSTRUMENT, run_daemon_hours
from test_service import _config_text

from cellguard.daemon.cli import main
from cellguard.daemon.config import parse_config
from cellguard.daemon.status import STATUS_COLUMNS, watch_status


def _config(tmp_path: Path) -> Path:
    asyncio.run(run_daemon_hours(tmp_path / "state", 7.0, None))
    path = tmp_path / "cellguard.toml"
    text = _config_text(tmp_path / "state", 1, None, None).replace("ct4008-e2e", INSTRUMENT)
    path.write_text(text)
    return path


def test_watch_once_renders_every_column_and_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    assert main(["status", str(path), "--watch", "--count", "1"]) == 0
    out = capsys.readouterr().out
    words = out.split()
    for column in STATUS_COLUMNS:
        assert all(word in words for word in column.split())  # a header may wrap
    assert out.count(INSTRUMENT) == 2
    assert "1-1-2" in words
    assert "1-1-3" in words
    # Each row's first line holds its one-line cells: state, cycle, polarization, age.
    healthy = next(line for line in out.splitlines() if " running " in line)
    shorted = next(line for line in out.splitlines() if " halted " in line)
    assert "SEI sym" in healthy
    cells = healthy.split()
    # cycle, then polarization now (start) in mV: ~11 mV for the SEI cell.
    cycle = cells[cells.index("running") + 1]
    assert cycle == "3"
    now_mv, start_mv = float(cells[cells.index("running") + 2]), cells[cells.index("running") + 3]
    assert 8.0 < now_mv < 15.0
    assert start_mv.startswith("(")
    assert 8.0 < float(start_mv.strip("()")) < 15.0
    # The virtual run's samples are stamped from 2026-04-01 on: their age is shown
    # in readable units whatever today's date is.
    assert "ago" in healthy
    assert "halt:" in shorted
    assert "short" in out.split("halted", 1)[1]


def test_watch_fits_80_columns_and_cuts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Long names wrap inside their cell; no line is wider than 80, nothing is cut."""
    path = _config(tmp_path)
    text = path.read_text().replace('interphase = "SEI"', 'interphase = "LPSC:LGPS 4:1"')
    path.write_text(text)
    assert main(["status", str(path), "--watch", "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "…" not in out
    words = out.split()
    for word in ("LPSC:LGPS", "4:1", "100|100", "halt:", "short,", "warn", "running", "halted"):
        assert word in words, word


async def test_watch_refreshes_in_place_on_its_clock(tmp_path: Path) -> None:
    path = await asyncio.to_thread(_config, tmp_path)
    from cellguard.drivers import VirtualClock  # noqa: PLC0415

    clock = VirtualClock()
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, force_terminal=True)
    config = parse_config(path.read_text())
    watcher = asyncio.create_task(
        watch_status(config, interval_s=5.0, count=3, clock=clock, console=console)
    )
    for _ in range(2):
        await clock.wait_until_sleeping(watcher)
        await clock.advance(5.0)
    await watcher
    text = buffer.getvalue()
    # Three renders (and the last again as Live stops), each drawn over the one before.
    assert text.count("halt: short") >= 3
    assert "\x1b[" in text
