"""`cellguard demo --instrument arbin|maccor`: the paper's cells on a simulated Arbin or
Maccor, through its driver and the daemon, in virtual time: the failing cells are halted
for the right reason, the healthy ones run on, every judged value is stored."""

from __future__ import annotations

import json
import logging

import pytest

from cellguard.daemon.cli import main


@pytest.mark.parametrize("instrument", ["arbin", "maccor"])
def test_the_demo_halts_the_failing_cells_and_spares_the_healthy_ones(
    instrument: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--instrument", instrument, "--hours", "130", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["instrument"] == instrument
    by_channel = {c["channel"]: c for c in summary["channels"]}
    assert by_channel["2"]["reason"] == "depletion"  # MII-1 asymmetric 100|20 µm
    assert by_channel["4"]["reason"] == "depletion"  # MII-2 asymmetric
    assert by_channel["7"]["reason"] == "short"  # SEI symmetric
    for healthy in ("1", "5", "6"):
        assert by_channel[healthy]["reason"] is None
        assert by_channel[healthy]["state"] == "running"
    assert all(c["samples"] > 0 for c in summary["channels"])
    assert by_channel["8"]["reason"] == "short"  # SEI asymmetric
    assert len(summary["halt_latency_ms"]) == 4  # one stop (Arbin) or suspend per halt
    assert summary["simulated_hours"] == 130.0


@pytest.mark.parametrize("instrument", ["arbin", "maccor"])
def test_the_demo_leaves_the_log_level_as_it_found_it(
    instrument: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("cellguard")
    before = logger.level
    assert main(["demo", "--instrument", instrument, "--hours", "2", "--json"]) == 0
    capsys.readouterr()
    assert logger.level == before
