"""docs/quickstart.md, followed as a new user would (issue 17, item 2).

The guide's section 2 is executed, not paraphrased: its simulator command, its
``lab.toml`` and every ``cellguard`` command of its shell blocks run as real
subprocesses (the only change: a free port instead of 5502). A new user must reach a
guarded, stored and exported channel on the simulated CT-4008.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cellguard.daemon.store import STORE_FILENAME

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "quickstart.md"
GUIDE_PORT = "5502"
WAIT_WALL_S = 60.0


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _commands(section: str) -> list[list[str]]:
    """Every ``cellguard ...`` line of the section's shell blocks, comments stripped."""
    commands = []
    for block in _blocks(section, "sh"):
        for raw in block.splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("cellguard "):
                commands.append(shlex.split(line)[1:])
    return commands


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cellguard(*args: str) -> list[str]:
    return [sys.executable, "-m", "cellguard.daemon.cli", *args]


async def _until(what: str, done: Callable[[], bool]) -> None:
    """Wait, bounded, for what another process does (no event to await there)."""
    give_up = time.monotonic() + WAIT_WALL_S
    while not done():
        if time.monotonic() > give_up:
            pytest.fail(f"not within {WAIT_WALL_S} s: {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _background(
    args: list[str], cwd: Path, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *_cellguard(*args), cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """One ``cellguard`` command to its end: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *_cellguard(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_WALL_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _stored(state_dir: Path, source: str) -> int:
    path = state_dir / STORE_FILENAME
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            (n,) = db.execute(
                "SELECT count(*) FROM samples WHERE channel = '1-1-1' AND source = ?", (source,)
            ).fetchone()
    except sqlite3.OperationalError:  # the daemon is creating its tables
        return 0
    return int(n)


async def test_the_quick_start_reaches_a_guarded_stored_exported_channel(tmp_path: Path) -> None:
    guide = GUIDE.read_text()
    section = _section(guide, "## 2. Try it on the simulated CT-4008")
    commands = _commands(section)
    (simulate,) = [c for c in commands if c[0] == "simulate"]
    config = _blocks(section, "toml")[0]
    assert f"port = {GUIDE_PORT}" in config
    port = str(_free_port())
    (tmp_path / "lab.toml").write_text(config.replace(f"port = {GUIDE_PORT}", f"port = {port}"))
    simulate = [port if arg == GUIDE_PORT else arg for arg in simulate]
    state_dir = tmp_path / "cellguard-state"

    async with _background(simulate, tmp_path, tmp_path / "simulate.log"):
        sim_log = tmp_path / "simulate.log"
        await _until("the simulator listens", lambda: "channels:" in sim_log.read_text())
        daemon_log = tmp_path / "run.log"
        for args in commands:
            if args[0] in ("simulate", "run") or "--watch" in args or args[0] == "export":
                continue
            code, _, err = await _run(args, tmp_path)
            assert code == 0, f"cellguard {shlex.join(args)}: {err}"
        (run,) = [c for c in commands if c[0] == "run"]
        async with _background(run, tmp_path, daemon_log) as daemon:
            await _until(
                "live and recorded samples of 1-1-1 stored",
                lambda: _stored(state_dir, "live") > 3 and _stored(state_dir, "recorded") > 0,
            )
            assert daemon.returncode is None, daemon_log.read_text()
            for args in commands:
                if args[0] == "status" and "--watch" not in args:
                    code, out, err = await _run(args, tmp_path)
                    assert code == 0, err
                    assert "1-1-1" in out
                    assert "running" in out
        assert daemon.returncode == 0, daemon_log.read_text()

    (export,) = [c for c in commands if c[0] == "export"]
    code, _, err = await _run(export, tmp_path)
    assert code == 0, err
    with (tmp_path / export[export.index("-o") + 1]).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= _stored(state_dir, "recorded")
    assert {"Test Time / s", "Voltage / V", "Current / A"} <= set(rows[0])
    # 0.5 mA cm⁻² on 0.785 cm²: the channel really cycled at the guide's current.
    currents_ma = {round(abs(float(r["Current / A"])) * 1000, 3) for r in rows}
    assert 0.393 in currents_ma
