"""`cellguard protocol check|compile`: what a researcher runs before any current flows."""

from __future__ import annotations

import stat
import uuid
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from shared import EXAMPLE_PROTOCOL

from cellguard.daemon.cli import main
from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import (
    ChannelId,
    NewareClient,
    NewareSimulator,
    Protection,
    StepType,
    parse_step_file,
)
from cellguard.drivers.neware._simulator import CellSlot
from cellguard.drivers.sim import SimCellSpec

EXAMPLE = EXAMPLE_PROTOCOL
CH = ChannelId(1, 1, 1)


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
    assert "100.2 h (4.174 d), 50 cycle(s)" in out  # one unit family: h, and d
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


# ---------------------------------------------------------------- every limit written

WINDOWS = """
[cell]
type = "symmetric"
diameter_mm = 10
thick_li_um = 100

[protocol]
name = "windows"
record_every = "10 s"
limits = ["Voltage between -5 V and 5 V", "Current below 2 mA"]
steps = [
  "Rest for 10 min within -0.1 V and 0.1 V",
  "Strip at 0.5 mA/cm2 for 1 h within -1 V and 1 V within 0.45 mA",
  "Plate at 0.5 mA/cm2 for 1 h within -0.8 V and 0.9 V",
  "Repeat steps 2-3 10 times",
]
"""


def _compile(tmp_path: Path, text: str, *extra: str) -> tuple[int, Path]:
    path = tmp_path / "p.toml"
    path.write_text(text)
    out = tmp_path / "p.xml"
    code = main(
        ["protocol", "compile", str(path), "--format", "neware-xml", "-o", str(out), *extra]
    )
    return code, out


def test_compile_writes_each_steps_limits_into_its_own_protect(tmp_path: Path) -> None:
    """Per-step windows were judged by the daemon only; now the file holds them too."""
    code, out = _compile(tmp_path, WINDOWS)
    assert code == 0
    rest, strip, plate, _, _ = parse_step_file(out.read_bytes()).steps
    assert rest.protection == Protection(voltage_upper_v=0.1, voltage_lower_v=-0.1)
    assert strip.protection == Protection(
        voltage_upper_v=1.0, voltage_lower_v=-1.0, current_upper_ma=0.45, current_lower_ma=-0.45
    )
    assert plate.protection == Protection(voltage_upper_v=0.9, voltage_lower_v=-0.8)


def test_compile_writes_the_whole_test_current_protection_signed(tmp_path: Path) -> None:
    """``Current below 2 mA`` bounds the charge at +2 mA and the discharge at -2 mA."""
    code, out = _compile(tmp_path, WINDOWS)
    assert code == 0
    protection = parse_step_file(out.read_bytes()).protection
    assert (protection.current_upper_ma, protection.current_lower_ma) == (2.0, -2.0)


def test_compile_gives_each_file_a_uuid_guid_and_todays_date(tmp_path: Path) -> None:
    code, out = _compile(tmp_path, WINDOWS)
    assert code == 0
    first = ET.fromstring(out.read_bytes()).find("config")
    assert first is not None
    assert uuid.UUID(first.get("Guid", "")).version == 4
    assert first.get("date", "")[:8] in {
        day.strftime("%Y%m%d") for day in (date.today() - timedelta(days=1), date.today())
    }
    _compile(tmp_path, WINDOWS)
    second = ET.fromstring(out.read_bytes()).find("config")
    assert second is not None
    assert second.get("Guid") != first.get("Guid")


def test_the_compiled_file_is_readable_by_the_bts_services_account(tmp_path: Path) -> None:
    code, out = _compile(tmp_path, WINDOWS)
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("edit", "field", "bound"),
    [
        (
            ("Rest for 10 min", "Rest for " + "9" * 300 + " s"),
            "step 1 'Rest for",
            "at most 315360000 s",
        ),
        (("10 times", f"{10**12} times"), "step 4 'Repeat steps 2-3", "allowed: 1 to 65535"),
        # Beyond the channel's range (refused before this branch too; here for the set).
        (("Strip at 0.5 mA/cm2", "Strip at 10 mA/cm2"), "step 2 'Strip", "allows at most 5 mA"),
    ],
)
def test_compile_refuses_absurd_values_naming_the_step_and_the_bound(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: tuple[str, str],
    field: str,
    bound: str,
) -> None:
    extra = ("--current-range-ma", "5") if "5 mA" in bound else ()
    code, out = _compile(tmp_path, WINDOWS.replace(*edit, 1), *extra)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert field in err[0]
    assert bound in err[0]
    assert not out.exists()


def test_compile_warns_loudly_about_a_setpoint_the_file_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pre-start chamber setpoint is not in the file: written with a warning naming the
    step (cellguard applies it in run mode), never dropped silently."""
    text = WINDOWS.replace("steps = [\n", 'steps = [\n  "Set temperature to 25 °C",\n')
    text = text.replace("Repeat steps 2-3", "Repeat steps 3-4")
    code, out = _compile(tmp_path, text)
    assert code == 0
    err = capsys.readouterr().err
    assert "WARNING" in err
    assert "step 1 'Set temperature to 25 °C' is not in the step file" in err
    assert parse_step_file(out.read_bytes()).steps[0].step_type is StepType.REST


# ---------------------------------------------------------------- per-step record interval


def test_compile_writes_a_steps_own_record_interval_into_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``record every 1 s`` on the strip: its ``<Record>`` holds 1 s, the others none
    (they log at the protocol's 10 s)."""
    text = WINDOWS.replace("within 0.45 mA", "within 0.45 mA record every 1 s")
    code, out = _compile(tmp_path, text)
    assert code == 0
    step_file = parse_step_file(out.read_bytes())
    assert [s.record_interval_s for s in step_file.steps[:3]] == [None, 1.0, None]
    assert step_file.record_interval_s == 10.0
    assert main(["protocol", "check", str(tmp_path / "p.toml")]) == 0
    strip_line = next(line for line in capsys.readouterr().out.splitlines() if "CC_CHARGE" in line)
    assert strip_line.endswith("; record every 1 s")


def test_host_driven_runs_sample_a_step_at_its_own_record_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same file run host-driven: the dry run samples the strip every second."""
    path = tmp_path / "p.toml"
    path.write_text(WINDOWS)
    assert main(["protocol", "check", str(path), "--host-driven"]) == 0
    before = capsys.readouterr().out
    path.write_text(WINDOWS.replace("within 0.45 mA", "within 0.45 mA record every 1 s"))
    assert main(["protocol", "check", str(path), "--host-driven"]) == 0
    after = capsys.readouterr().out

    def samples(out: str) -> int:
        return int(out.rsplit(" samples", 1)[0].rsplit(" ", 1)[1])

    # Ten 1 h strips at 1 s instead of 10 s: 9 × 3600 more samples each, about.
    assert samples(after) - samples(before) == pytest.approx(10 * 3240, rel=0.01)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("record every 5 mA", "'record every' needs a time"),
        ("record every 0.5 s", "at least 1 s is allowed"),
        ("record every 5 s within -1 V and 1 V", "unexpected 'within'"),
    ],
)
def test_a_bad_step_record_interval_is_refused_naming_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, message: str
) -> None:
    text = WINDOWS.replace(
        "Plate at 0.5 mA/cm2 for 1 h within -0.8 V and 0.9 V", f"Plate at 0.5 mA/cm2 for 1 h {edit}"
    )
    code, out = _compile(tmp_path, text)
    assert code == 2
    err = capsys.readouterr().err
    assert "step 3 'Plate at 0.5 mA/cm2 for 1 h" in err
    assert message in err
    assert not out.exists()


async def test_a_compiled_file_runs_its_step_limits_and_record_intervals_on_the_simulator(
    tmp_path: Path,
) -> None:
    """End to end over TCP: the strip logs at its own 5 s; the plating step's own 2 mV
    window (under the cell's overpotential) trips the channel to protect at once."""
    text = WINDOWS.replace("within 0.45 mA", "within 0.45 mA record every 5 s").replace(
        "within -0.8 V and 0.9 V", "within -0.002 V and 0.002 V"
    )
    code, out = _compile(tmp_path, text)
    assert code == 0
    clock = VirtualClock()
    slot = CellSlot(SimCellSpec(interphase="SEI", never_short=True))
    sim = NewareSimulator(clock, cells={CH: slot}, epoch=datetime(2026, 1, 5, 9))
    async with sim.serve() as (host, port), NewareClient(host, port) as client:
        await client.start([(CH, "cell", str(out))])
        clock.set(600 + 3000.0)
        assert (await client.get_status([CH]))[CH] == "working"
        clock.set(600 + 3600 + 120.0)
        assert (await client.get_status([CH]))[CH] == "protect"
        records = (await client.download(CH, 1, 1000)).records
    strip_s = [r.test_time_ms / 1000 for r in records if r.step_id == 2]
    assert {round(b - a, 3) for a, b in pairwise(strip_s[:-1])} == {5.0}
    assert records[-1].step_id == 3
    assert records[-1].test_time_ms <= (600 + 3600 + 10) * 1000


# ---------------------------------------------------------------- pre-flight (issue 17 item 5)


def _asymmetric(tmp_path: Path, cycles: int) -> Path:
    path = tmp_path / f"asym-{cycles}.toml"
    path.write_text(EXAMPLE.replace("500 times", f"{cycles} times", 1))
    return path


def test_check_warns_that_the_thin_electrode_runs_out_before_the_protocol_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """20 µm Li holds 4.1 mAh cm⁻²; at CE 99 % each 0.5 mAh cm⁻² cycle loses 0.005 of it,
    so the strip of cycle 722 finds 0.495 left: it runs out 0.99 h into that strip,
    at 10 min + 721 × 2 h + 0.99 h = 1443.2 h (60.13 d), before 1000 cycles end."""
    assert main(["protocol", "check", str(_asymmetric(tmp_path, 1000))]) == 0
    out = capsys.readouterr().out
    assert "assumed Li CE of 99 %" in out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 1
    assert "runs out in cycle 722 at 1443 h (60.13 d)" in warnings[0]
    assert "before the protocol's end at 2000 h (83.34 d)" in warnings[0]


def test_check_says_the_thin_electrode_lasts_and_the_stated_ce_changes_the_forecast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _asymmetric(tmp_path, 500)
    assert main(["protocol", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4.1 mAh/cm2 of Li lasts the protocol" in out
    assert "WARNING" not in out
    # At 98 % a cycle loses 0.01 mAh cm⁻²: the strip of cycle 362 finds 0.49 left.
    assert main(["protocol", "check", str(path), "--ce", "0.98"]) == 0
    out = capsys.readouterr().out
    assert "assumed Li CE of 98 %" in out
    assert "WARNING: the thin electrode (4.1 mAh/cm2) runs out in cycle 362" in out


def test_check_refuses_a_ce_that_is_not_a_fraction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["protocol", "check", str(_asymmetric(tmp_path, 5)), "--ce", "99"])
    assert exited.value.code == 2
    assert "--ce: must be a fraction in (0, 1]" in capsys.readouterr().err


def test_check_flags_an_absurd_length_in_hours_and_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo'd repeat count: 60,000 cycles of 2 h are 13.7 years (a step file holds
    at most 65,535 repeats)."""
    assert main(["protocol", "check", str(_asymmetric(tmp_path, 60_000))]) == 0
    out = capsys.readouterr().out
    assert (
        "WARNING: the protocol runs 120,000 h (5000 d), longer than a year: check the "
        "repeat counts" in out
    )


def test_check_states_lengths_in_one_unit_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every length the check sums up is in h (and d beside it), never min or days."""
    path = tmp_path / "goto.toml"
    path.write_text(GOTO)
    for argv in (
        ["protocol", "check", str(_asymmetric(tmp_path, 1000))],
        ["protocol", "check", str(path), "--host-driven"],
    ):
        assert main(argv) == 0
        summary = [
            line
            for line in capsys.readouterr().out.splitlines()
            if line.startswith(("expected length", "dry run", "pre-flight", "WARNING"))
        ]
        assert any(" h" in line for line in summary)
        for line in summary:
            assert " min" not in line
            assert " days" not in line
