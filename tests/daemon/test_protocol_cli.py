"""`cellguard protocol check|compile`: what a researcher runs before any current flows."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared import EXAMPLE_PROTOCOL

from cellguard.daemon.cli import main
from cellguard.drivers.neware import StepType, parse_step_file

EXAMPLE = EXAMPLE_PROTOCOL


def test_check_shows_absolute_currents_and_the_expected_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(EXAMPLE)
    assert main(["protocol", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0.3927 mA" in out
    assert "500 cycles" in out


def test_compile_writes_the_bts_step_file_the_simulator_runs(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(EXAMPLE)
    out = tmp_path / "p.xml"
    assert main(["protocol", "compile", str(path), "--format", "neware-xml", "-o", str(out)]) == 0
    step_file = parse_step_file(out.read_bytes())
    assert [s.step_type for s in step_file.steps] == [
        StepType.REST,
        StepType.CC_CHARGE,
        StepType.CC_DISCHARGE,
        StepType.CYCLE,
        StepType.END,
    ]
    assert step_file.steps[3].cycle_count == 500
    assert step_file.record_interval_s == 10.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('for 0.5 mAh/cm2",\n  "Plate', 'fro 1 h",\n  "Plate'), "'fro'"),
        (("diameter_mm = 10\n", ""), "area"),
        (("Strip at 0.5 mA/cm2", "Strip at 50 mA/cm2"), "allows at most 10 mA"),
    ],
)
def test_check_refuses_impossible_protocols_with_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: tuple[str, str], message: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(EXAMPLE.replace(*edit, 1))
    assert main(["protocol", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]


GOTO = """
[cell]
type = "asymmetric"
diameter_mm = 10
thick_li_um = 100
thin_li_um = 20

[protocol]
name = "until depletion"
record_every = "10 s"
limits = ["Voltage between -5 V and 5 V"]
steps = [
  "Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 or until 1 V, then goto step 4 if voltage above 1 V",
  "Plate at 0.5 mA/cm2 for 0.5 mAh/cm2",
  "Repeat steps 1-2 50 times",
  "Rest for 10 min",
]
"""


def test_a_goto_is_refused_for_the_neware_and_checked_host_driven(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "goto.toml"
    path.write_text(GOTO)
    assert main(["protocol", "check", str(path)]) == 2
    assert "a goto runs host-driven only" in capsys.readouterr().err
    assert main(["protocol", "check", str(path), "--host-driven"]) == 0
    out = capsys.readouterr().out
    assert "[0.3927 mA]" in out
    # 50 cycles of 2 h plus the 10 min rest, on an ideal cell that never depletes.
    assert "6010 min, 50 cycle(s)" in out
    assert "all steps done" in out


def test_host_driven_check_refuses_a_current_beyond_the_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "goto.toml"
    path.write_text(GOTO)
    assert main(["protocol", "check", str(path), "--host-driven", "--current-range-ma", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "0.3927 mA" in err
    assert "at most 0.1 mA" in err
