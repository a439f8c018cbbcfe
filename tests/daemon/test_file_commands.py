"""What `replay` and `analyze` share: the same hours, a record for every file in
--json, and the full-cell window options reaching the detector settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_replay import DT_S, square_wave, write_bdf

from cellguard.daemon import analyze as analyze_mod
from cellguard.daemon import replay as replay_mod
from cellguard.daemon.cli import main
from cellguard.daemon.filecli import detector_settings
from cellguard.drivers.errors import ConfigError
from cellguard.protocols.detectors import DetectorSettings

START_S = 5 * 3600.0  # a cut-out of a longer test: its test time starts at 5 h


def _json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def late_short(tmp_path: Path) -> Path:
    """A Li|Li test whose file starts at 5 h test time and shorts at 15.25 h."""
    columns = square_wave(24.0, short_at_h=10.25)
    columns["Test Time / s"] = columns["Test Time / s"] + START_S
    return write_bdf(tmp_path / "late.csv", columns)


# ---------------------------------------------------------------- hours


def test_replay_and_analyze_give_the_same_hours_for_the_same_halt(
    late_short: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hours are the file's test time: the halt at 15.25 h test time is 15.25 h in both
    commands (not 10.25 h from the file's first row), in JSON and in text."""
    assert main(["replay", str(late_short), "--cell", "symmetric", "--json"]) == 0
    (replayed,) = _json_lines(capsys.readouterr().out)
    assert main(["analyze", str(late_short), "--cell", "symmetric", "--json"]) == 0
    (analysed,) = _json_lines(capsys.readouterr().out)
    events = replayed["events"]
    assert isinstance(events, list)
    (halt,) = (e for e in events if e["severity"] == "halt")
    failure = analysed["failure"]
    assert isinstance(failure, dict)
    assert halt["hours"] == replayed["halt_hours"] == failure["hours"]
    assert halt["hours"] == pytest.approx(halt["time_s"] / 3600.0, abs=1e-6)
    assert 15.25 <= failure["hours"] <= 15.25 + 3 * DT_S / 3600.0
    # The recording's hours: the test time of its last sample (5 h + 24 h - one sample).
    assert replayed["hours"] == pytest.approx(29.0 - DT_S / 3600.0, abs=1e-6)
    cycles = analysed["cycles"]
    assert isinstance(cycles, list)
    assert cycles[0]["hours"] == pytest.approx(7.0 - DT_S / 3600.0, abs=1e-6)

    main(["replay", str(late_short), "--cell", "symmetric"])
    replay_text = capsys.readouterr().out
    main(["analyze", str(late_short), "--cell", "symmetric"])
    analyze_text = capsys.readouterr().out
    said_replay = re.search(r"halted at ([\d.]+) h", replay_text)
    said_analyze = re.search(r"after ([\d.]+) h", analyze_text)
    assert said_replay is not None
    assert said_analyze is not None
    assert float(said_replay.group(1)) == pytest.approx(failure["hours"], abs=0.0005)
    assert float(said_analyze.group(1)) == pytest.approx(failure["hours"], abs=0.005)
    assert "samples to 29.0 h" in replay_text


def test_the_help_says_what_hours_are(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("replay", "analyze", "plot"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "Hours (text and --json) are the file's own test time" in text, command


# ---------------------------------------------------------------- --json records


@pytest.mark.parametrize("command", ["replay", "analyze"])
def test_json_has_a_record_for_an_unreadable_file_between_the_others(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_bdf(tmp_path / "good.csv", square_wave(4.0))
    bad = tmp_path / "bad.csv"
    bad.write_text("Test Time / s,Voltage / V\n0,0.01\n")
    other = write_bdf(tmp_path / "other.parquet", square_wave(3.0))
    argv = [command, str(good), str(bad), str(other), "--cell", "symmetric", "--json"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    records = _json_lines(out)
    assert [Path(str(r["file"])).name for r in records] == ["good.csv", "bad.csv", "other.parquet"]
    assert records[1] == {
        "file": str(bad),
        "error": "missing column 'Current / A'; columns found: 'Test Time / s', 'Voltage / V'",
    }
    assert "error" not in records[0]
    assert "error" not in records[2]
    assert err.splitlines() == [f"cellguard: {bad}: {records[1]['error']}"]


def test_replay_json_has_a_record_for_a_file_that_could_not_be_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [write_bdf(tmp_path / f"{k}.csv", square_wave(2.0)) for k in "abc"]
    made = 0

    class Broken:
        def __init__(self, settings: DetectorSettings) -> None:
            self.settings = settings

        def feed_batch(self, *arrays: object) -> list[object]:
            msg = "index 7 is out of bounds\nfor axis 0"
            raise IndexError(msg)

    def make(settings: DetectorSettings) -> object:
        nonlocal made
        made += 1
        if made == 2:
            return Broken(settings)
        return replay_mod.make_detector(settings)

    code = replay_mod.run_replay_cli(files, cell="symmetric", as_json=True, make=make)  # type: ignore[arg-type]
    assert code == 2
    out, err = capsys.readouterr()
    records = _json_lines(out)
    assert [Path(str(r["file"])).name for r in records] == ["a.csv", "b.csv", "c.csv"]
    assert records[1] == {
        "file": str(files[1]),
        "error": "could not be judged: IndexError: index 7 is out of bounds for axis 0",
    }
    assert err.splitlines() == [f"cellguard: {files[1]}: {records[1]['error']}"]


def test_analyze_json_has_a_record_for_a_file_that_could_not_be_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [write_bdf(tmp_path / f"{k}.csv", square_wave(2.0)) for k in "ab"]
    real = analyze_mod.analyze_arrays
    calls = 0

    def first_fails(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            msg = "boom"
            raise ZeroDivisionError(msg)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(analyze_mod, "analyze_arrays", first_fails)
    assert main(["analyze", *map(str, files), "--cell", "symmetric", "--json"]) == 2
    records = _json_lines(capsys.readouterr().out)
    assert records[0] == {
        "file": str(files[0]),
        "error": "could not be judged: ZeroDivisionError: boom",
    }
    assert set(records[1]) == {"file", "cycles", "failure", "average_coulombic_efficiency"}


# ---------------------------------------------------------------- --v-min / --v-max


def full_cell(path: Path, *, rest_v: float = 0.3, top_v: float = 4.2) -> Path:
    """A fresh full cell: 1 h at rest at ``rest_v`` before formation, then a 10 h
    charge at 0.5 mA from 3.0 V to ``top_v`` (sampled every minute)."""
    rest_t = np.arange(0.0, 3600.0, 60.0)
    charge_t = np.arange(3600.0, 11 * 3600.0, 60.0)
    t_s = np.concatenate([rest_t, charge_t])
    voltage_v = np.concatenate(
        [np.full(len(rest_t), rest_v), np.linspace(3.0, top_v, len(charge_t))]
    )
    current_a = np.concatenate([np.zeros(len(rest_t)), np.full(len(charge_t), 0.5e-3)])
    return write_bdf(
        path, {"Test Time / s": t_s, "Voltage / V": voltage_v, "Current / A": current_a}
    )


def test_v_min_zero_lets_a_fresh_cell_rest_below_the_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = full_cell(tmp_path / "fresh.csv")
    assert main(["replay", str(fresh), "--cell", "full", "--v-min", "0", "--json"]) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert record["halted"] is False
    assert record["events"] == []


def test_v_max_reaches_the_detector_of_replay_and_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A charge to 4.5 V is inside the default window (to 4.6 V), outside --v-max 4.3."""
    high = full_cell(tmp_path / "high.csv", rest_v=3.0, top_v=4.5)
    assert main(["replay", str(high), "--cell", "full", "--json"]) == 0
    assert _json_lines(capsys.readouterr().out)[0]["halted"] is False
    argv = ["replay", str(high), "--cell", "full", "--v-max", "4.3", "--json"]
    assert main(argv) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert record["halted"] is True
    events = record["events"]
    assert isinstance(events, list)
    assert events[-1]["kind"] == "limit"
    argv = ["analyze", str(high), "--cell", "full", "--v-max", "4.3", "--json"]
    assert main(argv) == 0
    failure = _json_lines(capsys.readouterr().out)[0]["failure"]
    assert isinstance(failure, dict)
    assert failure["kind"] == "limit"
    assert failure["hours"] == record["halt_hours"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--cell", "symmetric", "--v-min", "0"],
            "--v-min: a full-cell voltage window: only with --cell full, not symmetric",
        ),
        (
            ["--cell", "asymmetric", "--v-max", "4.2"],
            "--v-max: a full-cell voltage window: only with --cell full, not asymmetric",
        ),
        (
            ["--cell", "full", "--v-min", "4.2", "--v-max", "4.2"],
            "--v-min: 4.2 V must be below --v-max 4.2 V",
        ),
        (
            ["--cell", "full", "--v-min", "4.8"],
            "--v-min: 4.8 V must be below --v-max 4.6 V (the default)",
        ),
        (
            ["--cell", "full", "--v-max", "0.8"],
            "--v-max: 0.8 V must be above --v-min 1 V (the default)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["replay", "analyze", "plot"])
def test_a_window_that_cannot_be_is_one_line_and_exit_2(
    command: str,
    extra: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = full_cell(tmp_path / "f.csv")
    argv = [command, str(path), *extra]
    if command == "plot":
        argv += ["-o", str(tmp_path / "p.png")]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err == f"cellguard: error: {message}\n"
    assert out == ""
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "four"])
def test_a_window_voltage_must_be_a_number_of_volts(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["replay", "x.csv", "--cell", "full", "--v-min", value])
    assert info.value.code == 2
    assert "--v-min" in capsys.readouterr().err


def test_the_options_map_to_the_detector_settings() -> None:
    settings = detector_settings("full", v_min_v=0.0, v_max_v=4.9)
    assert (settings.cell, settings.full_v_min_v, settings.full_v_max_v) == ("full", 0.0, 4.9)
    assert detector_settings("full") == DetectorSettings(cell="full")
    assert detector_settings("symmetric") == DetectorSettings(cell="symmetric")
    with pytest.raises(ConfigError):
        detector_settings("symmetric", v_max_v=4.9)


def test_analyze_tabulates_a_full_cell_in_volts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    high = full_cell(tmp_path / "high.csv", rest_v=3.0, top_v=4.5)
    assert main(["analyze", str(high), "--cell", "full", "--v-max", "4.3"]) == 0
    out = capsys.readouterr().out
    assert "mean |V| V" in out
    assert "polarization mV" not in out
    assert "limit after" in out
    assert "mAh/cm² passed" in out
