"""The Grafana dashboards against the schema the daemon writes (issue 17, item 9).

Two dashboards ship in ``deploy/grafana/dashboards``: Flux (InfluxDB 2.x) and InfluxQL
(InfluxDB 1.8, 2.x through its DBRP mapping, 3.x). The InfluxQL one is run here against
a real InfluxDB (Debian's 1.6, whose InfluxQL is the subset the newer servers also
speak): the daemon's own line protocol (``cellguard.daemon.influx``) is written to it,
and every query of the dashboard — panels, annotations, template variables — is run
with Grafana's macros expanded as Grafana expands them, and must return the rows it
is there to show. No Grafana server can be installed here, so the panel rendering
itself is not exercised; the structure checks below keep both dashboards in step.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cellguard.daemon.analytics_tap import CycleRow
from cellguard.daemon.influx import cycle_line, event_line, sample_line
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "influxdb.yml"
FLUX = DASHBOARDS / "cellguard.json"
INFLUXQL = DASHBOARDS / "cellguard-influxql.json"
DB = "cycling"
T0_S = time.time() - 3 * 3600.0  # three hours ago, inside "now-7d"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InfluxDB1:
    """A real ``influxd`` (1.x) on loopback ports, data in a temporary folder."""

    def __init__(self, binary: str, root: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = root / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{_free_port()}"\n'
            f'[meta]\n  dir = "{root / "meta"}"\n'
            f'[data]\n  dir = "{root / "data"}"\n  wal-dir = "{root / "wal"}"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
        )
        self.log_path = root / "influxd.log"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "-config", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"influxd did not come up: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def query(self, q: str) -> dict[str, Any]:
        body = urllib.parse.urlencode({"db": DB, "q": q, "epoch": "ms"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=body, timeout=10) as resp:
            answer: dict[str, Any] = json.load(resp)
        (result,) = answer["results"]
        assert "error" not in result, f"{q}\n-> {result['error']}"
        return result

    def write(self, lines: list[str]) -> None:
        url = f"{self.url}/write?" + urllib.parse.urlencode({"db": DB, "precision": "ns"})
        request = urllib.request.Request(url, data="\n".join(lines).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 204


@pytest.fixture(scope="module")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    binary = shutil.which("influxd")
    if binary is None:  # .ci/run installs it: a missing server fails, never skips
        pytest.fail("influxd not found: apt-get install influxdb (see .ci/run)")
    server = InfluxDB1(binary, tmp_path_factory.mktemp("influxdb1"))
    try:
        server.query(f'CREATE DATABASE "{DB}"')
        server.write(_daemon_lines())
        yield server
    finally:
        server.stop()


A = ChannelTags("ct4008-a", "21-1-3", "7", "LPSC:LGPS 4:1", "asymmetric")
B = ChannelTags("ct4008-a", "21-1-4", "8", "LPSC:LGPS 4:1", "symmetric")
C = ChannelTags("ct4008-b", "21-1-1", "9", "LPSC", "symmetric")


def _daemon_lines() -> list[str]:
    """What the daemon writes: 60 samples per channel, cycles, a halt, a warn, a start."""
    lines: list[str] = []
    for k, tags in enumerate((A, B, C)):
        for i in range(60):
            sign = 1.0 if (i // 10) % 2 == 0 else -1.0
            lines.append(
                sample_line(
                    SampleRecord(
                        tags,
                        T0_S + 60.0 * i,
                        60.0 * i,
                        sign * (0.01 + 0.001 * k),
                        sign * 3.927e-4,
                        seq=i + 1,
                        cycle=i // 20 + 1,
                    )
                )
            )
        for cycle in (1, 2):
            lines.append(
                cycle_line(
                    CycleRow(
                        tags,
                        cycle,
                        T0_S + 1200.0 * cycle,
                        1200.0 * cycle,
                        0.0105 + 0.001 * k,
                        0.012,
                        0.5 * cycle,
                    )
                )
            )
    lines.append(
        cycle_line(
            CycleRow(
                A,
                3,
                T0_S + 3590.0,
                3590.0,
                0.02,
                0.5,
                1.3,
                complete=False,
                failure="depletion",
                coulombic_efficiency=0.93,
            )
        )
    )
    lines.append(
        event_line(
            EventRecord(
                A,
                "halt",
                T0_S + 3590.0,
                fault="depletion",
                subkind="ratio",
                detail="voltage shift 2.4x the profile",
                values={"measured": 0.05},
            )
        )
    )
    lines.append(event_line(EventRecord(B, "warn", T0_S + 1800.0, fault="short", detail="glitch")))
    lines.append(event_line(EventRecord(C, "start", T0_S, detail="started")))
    return lines


def _regex_value(values: list[str] | None) -> str:
    # Grafana's ${var:regex}: "All" gives the allValue (.*), a selection (a|b) of
    # regex-escaped values.
    if values is None:
        return ".*"
    escaped = [re.sub(r"([\\.^$|?*+()\[\]{}/-])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _expand(
    query: str, instrument: list[str] | None = None, channel: list[str] | None = None
) -> str:
    return (
        query.replace("${instrument:regex}", _regex_value(instrument))
        .replace("${channel:regex}", _regex_value(channel))
        .replace("$timeFilter", "time >= now() - 7d")
        .replace("$__interval", "5m")
    )


def _dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _panel_query(title: str) -> str:
    (panel,) = [p for p in _dashboard(INFLUXQL)["panels"] if p["title"] == title]
    (target,) = panel["targets"]
    assert target["rawQuery"] is True
    query: str = target["query"]
    return query


def _series_keys(result: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s["tags"]["instrument"], s["tags"]["channel"]) for s in result.get("series", [])}


def test_voltage_and_current_panels_give_one_series_per_channel(influxdb: InfluxDB1) -> None:
    volts = influxdb.query(_expand(_panel_query("Voltage")))
    assert _series_keys(volts) == {
        ("ct4008-a", "21-1-3"),
        ("ct4008-a", "21-1-4"),
        ("ct4008-b", "21-1-1"),
    }
    values = [row[1] for s in volts["series"] for row in s["values"]]
    assert {round(abs(v), 4) for v in values} == {0.01, 0.011, 0.012}
    amps = influxdb.query(_expand(_panel_query("Current")))
    milliamps = {round(abs(row[1]), 4) for s in amps["series"] for row in s["values"]}
    assert milliamps == {0.3927}  # current_a x 1000: the panel's unit is mA


def test_the_instrument_and_channel_selectors_filter(influxdb: InfluxDB1) -> None:
    one = influxdb.query(_expand(_panel_query("Voltage"), ["ct4008-a"], ["21-1-4"]))
    assert _series_keys(one) == {("ct4008-a", "21-1-4")}
    two = influxdb.query(_expand(_panel_query("Voltage"), ["ct4008-a"], ["21-1-3", "21-1-4"]))
    assert _series_keys(two) == {("ct4008-a", "21-1-3"), ("ct4008-a", "21-1-4")}
    (instrument_var, channel_var) = _dashboard(INFLUXQL)["templating"]["list"]
    instruments = influxdb.query(_expand(instrument_var["query"]))
    assert sorted(v[1] for v in instruments["series"][0]["values"]) == ["ct4008-a", "ct4008-b"]
    channels = influxdb.query(_expand(channel_var["query"], ["ct4008-b"]))
    assert [v[1] for v in channels["series"][0]["values"]] == ["21-1-1"]


def test_cycle_panels_show_polarization_in_mv_and_capacity(influxdb: InfluxDB1) -> None:
    pol = influxdb.query(_expand(_panel_query("Polarization"), ["ct4008-a"], ["21-1-3"]))
    (series,) = pol["series"]
    assert [round(row[1], 3) for row in series["values"]] == [10.5, 10.5, 20.0]
    cap = influxdb.query(_expand(_panel_query("Plated capacity"), ["ct4008-b"]))
    (series,) = cap["series"]
    assert [row[1] for row in series["values"]] == [0.5, 1.0]


def test_failures_table_holds_only_the_failed_tests_row(influxdb: InfluxDB1) -> None:
    result = influxdb.query(_expand(_panel_query("Failures")))
    (series,) = result["series"]
    (row,) = series["values"]
    record = dict(zip(series["columns"], row, strict=True))
    assert record["instrument"] == "ct4008-a"
    assert record["channel"] == "21-1-3"
    assert record["failure"] == "depletion"
    assert record["hours"] == pytest.approx(3590.0 / 3600.0)
    assert record["cycle"] == 3
    assert record["coulombic_efficiency"] == pytest.approx(0.93)


def test_events_table_and_annotations(influxdb: InfluxDB1) -> None:
    events = influxdb.query(_expand(_panel_query("Events")))
    (series,) = events["series"]
    kinds = [dict(zip(series["columns"], row, strict=True))["kind"] for row in series["values"]]
    assert kinds == ["halt", "warn", "start"]  # newest first
    annotations = {
        a["name"]: a for a in _dashboard(INFLUXQL)["annotations"]["list"] if "query" in a
    }
    halts = influxdb.query(_expand(annotations["Halts"]["query"]))
    (series,) = halts["series"]
    (row,) = series["values"]
    record = dict(zip(series["columns"], row, strict=True))
    assert record["detail"] == "voltage shift 2.4x the profile"
    assert record["fault"] == "depletion"
    for column in ("titleColumn", "textColumn"):
        assert annotations["Halts"][column] in series["columns"]
    warns = influxdb.query(_expand(annotations["Warnings"]["query"]))
    assert [r[series["columns"].index("detail")] for r in warns["series"][0]["values"]] == [
        "glitch"
    ]


def test_both_dashboards_show_the_same_panels_on_provisioned_datasources() -> None:
    flux, influxql = _dashboard(FLUX), _dashboard(INFLUXQL)
    assert [p["title"] for p in flux["panels"]] == [p["title"] for p in influxql["panels"]]
    assert "Flux" in flux["title"]
    assert "InfluxQL" in influxql["title"]
    assert flux["uid"] != influxql["uid"]
    provisioned = {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert provisioned["cellguard-influxdb"]["jsonData"]["version"] == "Flux"
    assert provisioned["cellguard-influxql"]["jsonData"]["version"] == "InfluxQL"
    for dashboard, uid in ((flux, "cellguard-influxdb"), (influxql, "cellguard-influxql")):
        used = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
        used |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
        assert used == {uid}
