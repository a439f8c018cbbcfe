"""Fixtures of the daemon tests: real servers (VictoriaMetrics; Mosquitto in mqtt_broker).

``victoria_metrics``: one server for the whole session, as a base URL; tests keep
apart by writing under their own instrument name. ``victoria_metrics_process``: a
private server that a test may stop and start again on the same port (outages).
A missing binary fails the tests, never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from victoria import VictoriaMetrics, binary


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a VictoriaMetrics shared by the session."""
    server = VictoriaMetrics(binary(), tmp_path_factory.mktemp("victoria-metrics") / "data")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def victoria_metrics_process(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A running VictoriaMetrics of this test alone, which it may stop and start again."""
    server = VictoriaMetrics(binary(), tmp_path / "victoria-metrics-data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
