"""What the benchmarks share: the machine's description, processes they start, /proc reads.

Not installed with cellguard: ``bench/`` runs from a checkout (``cellguard bench`` finds
it next to the sources). The simulators and VictoriaMetrics run as their own processes,
so what is measured in the bench process is the daemon's side alone.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0


def machine() -> dict[str, Any]:
    """Date (UTC), cores, CPU model and Python: what RESULTS.md records with each run."""
    model = ""
    with Path("/proc/cpuinfo").open() as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
    }


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process now, in MB (10⁶ bytes), from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(argv: list[str], *, what: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``argv``; yield it with its first stdout line; terminate it afterwards."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first:
            _, err = proc.communicate(timeout=10)
            msg = f"{what} did not start: {err.strip()[-2000:]}"
            raise RuntimeError(msg)
        yield proc, first
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.communicate()


@contextmanager
def fault_simulator(
    *,
    units: int,
    speed: float,
    fault_fraction: float,
    onset_h: tuple[float, float],
    seed: int,
) -> Iterator[dict[str, Any]]:
    """``bench/sim_server.py`` in its own process; yields its JSON greeting and ``pid``."""
    argv = [
        sys.executable,
        str(BENCH_DIR / "sim_server.py"),
        f"--units={units}",
        f"--speed={speed}",
        f"--fault-fraction={fault_fraction}",
        "--onset-h",
        str(onset_h[0]),
        str(onset_h[1]),
        f"--seed={seed}",
    ]
    with process(argv, what="the fault-injecting simulator") as (proc, first):
        info: dict[str, Any] = json.loads(first)
        info["pid"] = proc.pid
        yield info


@contextmanager
def neware_simulator(*, units: int, speed: float = 1.0, seed: int = 0) -> Iterator[int]:
    """``cellguard simulate neware`` in its own process; yields its port."""
    argv = [
        sys.executable,
        "-m",
        "cellguard.daemon.cli",
        "simulate",
        "neware",
        "--port=0",
        f"--units={units}",
        f"--speed={speed}",
        f"--seed={seed}",
    ]
    with process(argv, what="cellguard simulate neware") as (_, first):
        yield int(first.split(" on ")[1].split(",")[0].rsplit(":", 1)[1])


@contextmanager
def history_simulator(
    *, units: int, history_h: float, record_s: float, seed: int = 0
) -> Iterator[dict[str, Any]]:
    """``bench/history_server.py`` (a rack with a recorded history, frozen) in its own
    process; yields its JSON greeting (``port``, ``channels``, ``records``)."""
    argv = [
        sys.executable,
        str(BENCH_DIR / "history_server.py"),
        f"--units={units}",
        f"--history-h={history_h}",
        f"--record-s={record_s}",
        f"--seed={seed}",
    ]
    with process(argv, what="the history simulator") as (proc, first):
        info: dict[str, Any] = json.loads(first)
        info["pid"] = proc.pid
        yield info


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def victoria_metrics(data_dir: Path) -> Iterator[str]:
    """A ``victoria-metrics`` on loopback (as in tests/daemon/conftest.py); yields its URL."""
    binary = shutil.which("victoria-metrics")
    if binary is None:
        msg = "victoria-metrics is not installed (apt-get install -y victoria-metrics)"
        raise RuntimeError(msg)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir.parent / "victoria-metrics.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={data_dir}",
                "-retentionPeriod=100y",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                msg = f"victoria-metrics did not come up: {log_path.read_text()[-1000:]}"
                raise RuntimeError(msg)
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]
