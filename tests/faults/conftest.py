"""Fixtures of the fault suite: the real servers of ``tests/daemon`` (Mosquitto with
the shipped config and ACL, VictoriaMetrics), reused rather than copied."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

_DAEMON_TESTS = Path(__file__).resolve().parents[1] / "daemon"
sys.path.insert(0, str(_DAEMON_TESTS))  # mqtt_broker, test_influx helpers

from mqtt_broker import Broker, running_mosquitto  # noqa: E402
from victoria import VictoriaMetrics, binary  # noqa: E402


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    """A real mosquitto on a free loopback port with deploy/mosquitto's config and ACL."""
    async with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def victoria_metrics_process(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A VictoriaMetrics of this test alone, which it may stop and start again."""
    server = VictoriaMetrics(binary(), tmp_path / "victoria-metrics-data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
