"""`cellguard replay`: recorded files, read completely or refused in one line, judged."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import fastnda
import numpy as np
import polars as pl
import pytest
from rich.console import Console
from shared import NEWARE_FILES

from cellguard.daemon import replay as replay_mod
from cellguard.daemon.cli import main
from cellguard.daemon.replay import ReplayResult, replay_file
from cellguard.drivers.files import Recording, RecordingError, read_recording
from cellguard.protocols.detectors import DetectorSettings, Verdict

HEALTHY_NDAX = (
    NEWARE_FILES / "BTS85-36-6-5-110-20240424.ndax",
    NEWARE_FILES / "TESTCELL0001-B2-2025-M50T_NewareNDA_Investigation.ndax",
)
CORRUPT_NDAX = NEWARE_FILES / "Unit27_Example_Corrupt.ndax"

# A 10 mm Li|Li disc at 0.5 mA cm⁻²: 0.3927 mA, 1 h half cycles, sampled every 30 s.
CURRENT_A = 0.3927e-3
HALF_CYCLE_S = 3600.0
DT_S = 30.0


def square_wave(hours: float, *, short_at_h: float | None = None) -> dict[str, np.ndarray]:
    """A healthy symmetric Li|Li cell, ~10 mV overpotential rising along each half cycle.

    ``short_at_h``: from then on the cell is a short, its voltage collapses to ~0 V.
    """
    t_s = np.arange(0.0, hours * 3600.0, DT_S)
    into = np.mod(t_s, HALF_CYCLE_S)
    half = (t_s // HALF_CYCLE_S).astype(np.int64)
    sign = np.where(half % 2 == 0, 1.0, -1.0)
    current_a = sign * CURRENT_A
    voltage_v = sign * (0.010 + 0.002 * into / HALF_CYCLE_S)
    if short_at_h is not None:
        voltage_v = np.where(t_s >= short_at_h * 3600.0, sign * 1e-5, voltage_v)
    return {
        "Test Time / s": t_s,
        "Voltage / V": voltage_v,
        "Current / A": current_a,
        "Step Index": (half % 2 + 1).astype(np.int64),
        "Cycle Count": (half // 2 + 1).astype(np.int64),
    }


def write_bdf(path: Path, columns: dict[str, np.ndarray]) -> Path:
    frame = pl.DataFrame(columns)
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


@pytest.fixture
def healthy_csv(tmp_path: Path) -> Path:
    return write_bdf(tmp_path / "healthy.csv", square_wave(24.0))


@pytest.fixture
def shorted_parquet(tmp_path: Path) -> Path:
    return write_bdf(tmp_path / "shorted.parquet", square_wave(24.0, short_at_h=10.25))


class FakeDetector:
    """Halts on the first |V| below 1 mV: enough to check the plumbing, not the physics."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self._n = 0
        self._halt: Verdict | None = None
        self.batches: list[int] = []

    def feed(
        self,
        t_s: float,
        voltage_v: float,
        current_a: float,
        step: int | None = None,
        cycle: int | None = None,
        kind: int | None = None,
        *,
        step_time_s: float = math.nan,
    ) -> Verdict:
        raise NotImplementedError

    def feed_batch(
        self,
        t_s: np.ndarray,
        voltage_v: np.ndarray,
        current_a: np.ndarray,
        step: np.ndarray | None = None,
        cycle: np.ndarray | None = None,
        step_kind: np.ndarray | None = None,
    ) -> list[Verdict]:
        assert t_s.dtype == voltage_v.dtype == current_a.dtype == np.float64
        self.batches.append(len(t_s))
        if self._halt is not None:
            return []
        low = np.flatnonzero(np.abs(voltage_v) < 1e-3)
        if len(low) == 0:
            self._n += len(t_s)
            return []
        k = int(low[0])
        self._halt = Verdict(
            "halt", kind="short", index=self._n + k, t_s=float(t_s[k]), detail="fake collapse"
        )
        self._n += len(t_s)
        return [self._halt]

    @property
    def samples(self) -> int:
        return self._n

    @property
    def halt(self) -> Verdict | None:
        return self._halt


# ---------------------------------------------------------------- reading files


def test_bdf_csv_and_parquet_read_into_the_same_typed_recording(tmp_path: Path) -> None:
    """Both BDF containers give float64 SI arrays and int64 step/cycle, equal values."""
    columns = square_wave(4.0)
    csv = read_recording(write_bdf(tmp_path / "a.csv", columns))
    parquet = read_recording(write_bdf(tmp_path / "a.parquet", columns))
    assert (csv.source, parquet.source) == ("bdf-csv", "bdf-parquet")
    for rec in (csv, parquet):
        assert isinstance(rec, Recording)
        assert len(rec) == len(columns["Test Time / s"])
        assert rec.t_s.dtype == rec.voltage_v.dtype == rec.current_a.dtype == np.float64
        assert rec.step is not None
        assert rec.cycle is not None
        assert rec.step.dtype == rec.cycle.dtype == np.int64
        np.testing.assert_allclose(rec.voltage_v, columns["Voltage / V"])
        np.testing.assert_array_equal(rec.cycle, columns["Cycle Count"])
    assert csv.duration_s == pytest.approx(4 * 3600 - DT_S)


def test_bdf_without_step_and_cycle_columns_has_none(tmp_path: Path) -> None:
    columns = square_wave(2.0)
    del columns["Step Index"], columns["Cycle Count"]
    rec = read_recording(write_bdf(tmp_path / "bare.csv", columns))
    assert rec.step is None
    assert rec.cycle is None


def test_missing_column_names_the_column_and_lists_those_found(tmp_path: Path) -> None:
    columns = square_wave(1.0)
    del columns["Current / A"]
    path = write_bdf(tmp_path / "nocurrent.parquet", columns)
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    message = str(info.value)
    assert message.startswith("nocurrent.parquet: missing column 'Current / A'")
    assert "'Test Time / s'" in message
    assert "'Voltage / V'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("header.csv", b"Test Time / s,Voltage / V,Current / A\n", "no samples"),
        ("junk.parquet", b"this is not parquet at all", "not a readable BDF table"),
        ("notes.txt", b"hello", "unknown file type '.txt'"),
        ("junk.ndax", b"PK\x03\x04 truncated zip", "not a readable Neware file"),
        (
            "backwards.csv",
            b"Test Time / s,Voltage / V,Current / A\n0,0.01,1e-4\n10,0.01,1e-4\n5,0.01,1e-4\n",
            "time goes backwards at row 2 (10 s, then 5 s)",
        ),
        (
            "nan.csv",
            b"Test Time / s,Voltage / V,Current / A\n0,0.01,1e-4\nNaN,0.01,1e-4\n",
            "non-finite value(s) in time, first at row 1",
        ),
        (
            "hole.csv",
            b"Test Time / s,Voltage / V,Current / A\n0,0.01,1e-4\n1,,1e-4\n",
            "1 missing value(s) in voltage, first at row 1",
        ),
        (
            "words.csv",
            b"Test Time / s,Voltage / V,Current / A\n0,0.01,1e-4\n1,high,1e-4\n",
            "not a readable BDF table",
        ),
    ],
)
def test_unreadable_files_raise_one_line_naming_file_and_problem(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    """Never a traceback from a foreign library, never a partial load."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert expected in message
    assert "\n" not in message
    assert info.value.path == path


def test_missing_file_is_a_recording_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"gone\.ndax: no such file"):
        read_recording(tmp_path / "gone.ndax")


def test_real_ndax_reads_in_si_units_without_printing(capsys: pytest.CaptureFixture[str]) -> None:
    """fastnda's notices go to our log, not to stdout; mA become A."""
    rec = read_recording(HEALTHY_NDAX[1])
    assert rec.source == "neware-ndax"
    assert len(rec) == 77745
    assert rec.duration_s / 3600 == pytest.approx(21.58, abs=0.01)
    assert 4.9 < float(np.abs(rec.current_a).max()) < 5.1  # ±5 A, not ±5000
    assert 2.4 < float(rec.voltage_v.min()) < float(rec.voltage_v.max()) < 4.3
    assert rec.step is not None
    assert rec.cycle is not None
    assert np.all(np.diff(rec.t_s) >= 0)
    assert capsys.readouterr() == ("", "")


def test_fastnda_notice_is_logged_at_info_not_printed(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("INFO", logger="cellguard")
    rec = read_recording(HEALTHY_NDAX[0])
    assert len(rec) == 699677
    notices = [r for r in caplog.records if "negative jumps" in r.getMessage()]
    assert [r.levelname for r in notices] == ["INFO"]
    assert capsys.readouterr() == ("", "")


def test_corrupt_ndax_is_refused_not_partially_loaded() -> None:
    """fastnda reads this file's main data but drops its damaged aux channels: refuse."""
    with pytest.raises(RecordingError) as info:
        read_recording(CORRUPT_NDAX)
    message = str(info.value)
    assert message.startswith("Unit27_Example_Corrupt.ndax: damaged Neware file")
    assert "TestInfo.xml" in message
    assert "\n" not in message


def test_nda_dispatches_to_fastnda_with_step_count_fallback_and_quiet_stdout(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What fastnda prints or warns is logged at INFO; current in mA becomes A."""

    def fake_read(path: Path) -> pl.DataFrame:
        print("IMPORTANT: This file has negative jumps in unix_time_s")
        warnings.warn("unverified nda version", UserWarning, stacklevel=1)
        return pl.DataFrame(
            {
                "total_time_s": [0.0, 1.0, 2.0],
                "voltage_V": pl.Series([3.0, 3.1, 3.2], dtype=pl.Float32),
                "current_mA": pl.Series([0.0, 2.5, 2.5], dtype=pl.Float32),
                "step_count": pl.Series([1, 2, 2], dtype=pl.UInt32),
            }
        )

    monkeypatch.setattr(fastnda, "read", fake_read)
    caplog.set_level("INFO", logger="cellguard")
    path = tmp_path / "old.NDA"
    path.write_bytes(b"NEWARE")
    rec = read_recording(path)
    assert rec.source == "neware-nda"
    np.testing.assert_allclose(rec.current_a, [0.0, 2.5e-3, 2.5e-3])
    assert rec.step is not None
    assert rec.step.tolist() == [1, 2, 2]
    assert rec.cycle is None
    assert capsys.readouterr() == ("", "")
    logged = {r.getMessage(): r.levelname for r in caplog.records}
    assert logged == {
        "old.NDA: fastnda: IMPORTANT: This file has negative jumps in unix_time_s": "INFO",
        "old.NDA: fastnda: unverified nda version": "INFO",
    }


def test_neware_table_without_voltage_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        fastnda, "read", lambda path: pl.DataFrame({"total_time_s": [0.0], "current_mA": [1.0]})
    )
    path = tmp_path / "x.ndax"
    path.write_bytes(b"PK")
    with pytest.raises(RecordingError, match=r"x\.ndax: missing column 'voltage_V'; columns found"):
        read_recording(path)


# ---------------------------------------------------------------- replay_file


def test_replay_feeds_every_sample_in_chunks_and_reports_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_mod, "CHUNK_SAMPLES", 1000)
    path = write_bdf(tmp_path / "long.parquet", square_wave(30.0))  # 3600 samples
    made: list[FakeDetector] = []

    def make(settings: DetectorSettings) -> FakeDetector:
        made.append(FakeDetector(settings))
        return made[-1]

    seen: list[tuple[int, int]] = []
    result = replay_file(
        path,
        DetectorSettings(cell="symmetric"),
        progress=lambda done, total: seen.append((done, total)),
        make=make,
    )
    assert isinstance(result, ReplayResult)
    assert (result.file, result.samples, result.judged, result.events) == (path, 3600, 3600, [])
    assert made[0].settings.cell == "symmetric"
    assert made[0].batches == [1000, 1000, 1000, 600]
    assert seen[0] == (0, 3600)
    assert seen[-1] == (3600, 3600)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert result.seconds >= result.read_s > 0


def test_replay_stops_feeding_at_the_halt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_mod, "CHUNK_SAMPLES", 100)
    path = write_bdf(tmp_path / "s.csv", square_wave(24.0, short_at_h=10.25))
    made: list[FakeDetector] = []

    def make(settings: DetectorSettings) -> FakeDetector:
        made.append(FakeDetector(settings))
        return made[-1]

    result = replay_file(path, DetectorSettings(cell="symmetric"), make=make)
    halt = result.halt
    assert halt is not None
    assert halt.t_s == 10.25 * 3600
    assert halt.index == int(10.25 * 3600 / DT_S)
    assert result.judged == halt.index + 1
    assert sum(made[0].batches) == 1300  # the chunk holding the halt, then no more


def test_real_lithium_detector_halts_the_short_and_not_the_healthy_cell(
    healthy_csv: Path, shorted_parquet: Path
) -> None:
    settings = DetectorSettings(cell="symmetric")
    assert replay_file(healthy_csv, settings).halt is None
    halt = replay_file(shorted_parquet, settings).halt
    assert halt is not None
    assert halt.kind == "short"
    assert 10.25 * 3600 <= halt.t_s <= 10.25 * 3600 + 5 * DT_S


# ---------------------------------------------------------------- the CLI


def test_cli_reports_each_file_in_a_table_and_a_summary(
    healthy_csv: Path, shorted_parquet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", str(healthy_csv), str(shorted_parquet), "--cell", "symmetric"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert "healthy.csv (symmetric cell): no events" in out
    assert "2,880 samples to 24.0 h, no halt" in out
    assert "shorted.parquet" in out
    assert "short" in out
    assert "halted at 10.25" in out
    assert "samples/s" in out


def test_cli_json_is_one_parsable_object_per_file(
    healthy_csv: Path, shorted_parquet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "replay",
            str(healthy_csv),
            str(shorted_parquet),
            "--cell",
            "symmetric",
            "--area-cm2",
            "0.785",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [Path(d["file"]).name for d in lines] == ["healthy.csv", "shorted.parquet"]
    healthy, shorted = lines
    assert healthy["samples"] == shorted["samples"] == 2880
    assert healthy["events"] == []
    assert healthy["area_cm2"] == 0.785
    assert healthy["cell"] == "symmetric"
    halts = [e for e in shorted["events"] if e["severity"] == "halt"]
    assert len(halts) == 1
    assert halts[0]["kind"] == "short"
    assert {"kind", "severity", "time_s", "index", "detail"} <= set(halts[0])
    assert all(e["severity"] in ("warn", "halt") for e in shorted["events"])
    assert math.isclose(halts[0]["time_s"] / 3600, 10.25, abs_tol=0.05)


def test_real_healthy_fixtures_do_not_halt_a_full_cell(capsys: pytest.CaptureFixture[str]) -> None:
    """192 h and 21.6 h of real, healthy Neware cycling: no halt, not one."""
    code = main(["replay", *map(str, HEALTHY_NDAX), "--cell", "full", "--json"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["samples"] for d in lines] == [699677, 77745]
    for d in lines:
        assert not [e for e in d["events"] if e["severity"] == "halt"], d["file"]
        assert d["area_cm2"] is None


def test_corrupt_file_costs_one_stderr_line_and_exit_2_but_others_are_reported(
    healthy_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", str(CORRUPT_NDAX), str(healthy_csv), "--cell", "symmetric", "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"cellguard: {CORRUPT_NDAX}: damaged Neware file")
    corrupt, healthy = (json.loads(line) for line in out.splitlines())
    # The failed file has its own record, so a script reading the lines misses none.
    assert corrupt == {"file": str(CORRUPT_NDAX), "error": err.split(": ", 2)[2].strip()}
    assert corrupt["error"].startswith("damaged Neware file")
    assert Path(healthy["file"]).name == "healthy.csv"
    assert "error" not in healthy


def test_unknown_suffix_and_missing_column_in_one_call(
    tmp_path: Path, healthy_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.xlsx"
    notes.write_bytes(b"x")
    columns = square_wave(1.0)
    del columns["Voltage / V"]
    novolt = write_bdf(tmp_path / "novolt.csv", columns)
    code = main(["replay", str(notes), str(novolt), str(healthy_csv), "--cell", "asymmetric"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [
        f"cellguard: {notes}: unknown file type '.xlsx'; cellguard reads .csv, .mpr, .nda, .ndax, "
        ".parquet",
        f"cellguard: {novolt}: missing column 'Voltage / V'; columns found: 'Test Time / s', "
        "'Current / A', 'Step Index', 'Cycle Count'",
    ]
    assert "healthy.csv" in out


@pytest.mark.parametrize("area", ["0", "-1", "abc"])
def test_area_must_be_a_positive_number(
    area: str, healthy_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["replay", str(healthy_csv), "--cell", "symmetric", "--area-cm2", area])
    assert info.value.code == 2
    assert "--area-cm2" in capsys.readouterr().err


def test_cell_is_required_and_checked(
    healthy_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["replay", str(healthy_csv)], ["replay", str(healthy_csv), "--cell", "pouch"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "--cell" in capsys.readouterr().err


def test_installed_command_replays_real_and_corrupt_files(healthy_csv: Path) -> None:
    """End to end through a real process: stdout holds only the JSON lines."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellguard.daemon.cli",
            "replay",
            str(HEALTHY_NDAX[1]),
            str(CORRUPT_NDAX),
            str(healthy_csv),
            "--cell",
            "full",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert proc.returncode == 2
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    names = [Path(d["file"]).name for d in lines]
    assert names == [HEALTHY_NDAX[1].name, CORRUPT_NDAX.name, "healthy.csv"]
    assert lines[1] == {"file": str(CORRUPT_NDAX), "error": _corrupt_problem()}
    assert proc.stderr.splitlines() == [
        f"cellguard: {CORRUPT_NDAX}: " + str(_corrupt_problem()),
    ]


def _corrupt_problem() -> str:
    with pytest.raises(RecordingError) as info:
        read_recording(CORRUPT_NDAX)
    return info.value.problem


def test_progress_bar_only_on_a_terminal_and_gone_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal a transient bar advances per chunk; the report stays readable."""
    screen = io.StringIO()
    monkeypatch.setattr(
        replay_mod, "Console", lambda **_: Console(file=screen, force_terminal=True, width=500)
    )
    monkeypatch.setattr(replay_mod, "PROGRESS_MIN_SAMPLES", 1000)
    monkeypatch.setattr(replay_mod, "CHUNK_SAMPLES", 500)
    files = [write_bdf(tmp_path / f"{k}.parquet", square_wave(30.0)) for k in "ab"]
    assert replay_mod.run_replay_cli(files, cell="symmetric") == 0
    text = screen.getvalue()
    assert "judging a.parquet" in text
    assert "judging b.parquet" in text
    assert text.count("(symmetric cell): no events") == 2
    assert text.count("3,600 samples to 30.0 h") == 2
