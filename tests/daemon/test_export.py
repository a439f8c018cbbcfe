"""`cellguard export`: BDF CSV / Parquet that pandas reads with the BDF column names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shared import NEWARE_FILES
from test_analyze_cli import CURRENT_A, simulated_file

from cellguard.daemon.cli import main
from cellguard.daemon.records import ChannelTags, SampleRecord
from cellguard.daemon.store import Store
from cellguard.drivers.files import read_recording

BDF_COLUMNS = ["Test Time / s", "Voltage / V", "Current / A", "Net Capacity / Ah"]
STORE_COLUMNS = [
    "Test Time / s",
    "Unix Time / s",
    "Voltage / V",
    "Current / A",
    "Cycle Count / 1",
    "Step Index / 1",
    "Step Count / 1",
    "Net Capacity / Ah",
]


def _read(path: Path, fmt: str) -> pd.DataFrame:
    return pd.read_csv(path) if fmt == "bdf-csv" else pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["bdf-csv", "bdf-parquet"])
def test_a_simulated_file_round_trips_through_pandas_with_bdf_names(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = simulated_file(tmp_path / "MII-3_symmetric.csv", "MII-3", 100.0, 6.0)
    out = tmp_path / f"out.{'csv' if fmt == 'bdf-csv' else 'parquet'}"
    assert main(["export", str(source), "--format", fmt, "-o", str(out)]) == 0
    assert "360 samples" in capsys.readouterr().out
    frame = _read(out, fmt)
    assert list(frame.columns) == BDF_COLUMNS
    rec = read_recording(source)
    np.testing.assert_array_equal(frame["Test Time / s"].to_numpy(), rec.t_s)
    np.testing.assert_allclose(frame["Voltage / V"].to_numpy(), rec.voltage_v, rtol=1e-15)
    np.testing.assert_allclose(frame["Current / A"].to_numpy(), rec.current_a, rtol=1e-15)
    # Net capacity: I × 1 h after the first hour (less the first sample's minute, which
    # has no earlier sample), and that minute short of 0 after three cycles.
    net_ah = frame["Net Capacity / Ah"].to_numpy()
    assert net_ah.max() == pytest.approx(CURRENT_A * (1 - 1 / 60), rel=1e-9)
    assert net_ah[-1] == pytest.approx(-CURRENT_A / 60, rel=1e-6)
    # And cellguard reads its own export back (analyze / plot / replay take it).
    again = read_recording(out)
    np.testing.assert_array_equal(again.voltage_v, rec.voltage_v)


def test_a_real_neware_file_exports_its_cycle_and_step_columns(tmp_path: Path) -> None:
    source = NEWARE_FILES / "TESTCELL0001-B2-2025-M50T_NewareNDA_Investigation.ndax"
    out = tmp_path / "testcell.parquet"
    assert main(["export", str(source), "--format", "bdf-parquet", "-o", str(out)]) == 0
    frame = pd.read_parquet(out)
    rec = read_recording(source)
    assert len(frame) == len(rec) == 77745
    for name in ("Cycle Count / 1", "Step Index / 1", "Step Count / 1"):
        assert name in frame.columns
    assert rec.step is not None
    np.testing.assert_array_equal(frame["Step Index / 1"].to_numpy(), rec.step)
    steps = frame["Step Count / 1"].to_numpy()
    assert steps[0] == 1
    assert (np.diff(steps) >= 0).all()
    assert steps[-1] == 1 + int((np.diff(rec.step) != 0).sum())
    np.testing.assert_array_equal(frame["Voltage / V"].to_numpy(), rec.voltage_v)


async def _fill_store(state_dir: Path) -> list[SampleRecord]:
    tags = ChannelTags("ct", "1-1-2", "test-7", "SEI", "symmetric")
    other = ChannelTags("ct", "1-1-3", "test-8", "SEI", "symmetric")
    samples = [
        SampleRecord(
            tags,
            1.7e9 + 60.0 * k,
            60.0 * k,
            0.011 if (k // 60) % 2 == 0 else -0.011,
            3.9e-4 if (k // 60) % 2 == 0 else -3.9e-4,
            step=1 + k // 60,
            cycle=1 + k // 120,
            seq=k + 1,
        )
        for k in range(240)
    ]
    live = SampleRecord(tags, 1.7e9 + 30.0, 30.0, 0.5, 3.9e-4, source="live")
    async with Store(state_dir) as store:
        await store.write([*samples, live, SampleRecord(other, 1.7e9, 0.0, 0.01, 1e-4)], [])
    return samples


@pytest.mark.parametrize("fmt", ["bdf-csv", "bdf-parquet"])
def test_a_channel_exports_from_the_daemons_store_with_unix_time(tmp_path: Path, fmt: str) -> None:
    # Sync tests: `main` runs its own event loop, as the console script does.
    samples = asyncio.run(_fill_store(tmp_path / "state"))
    out = tmp_path / "ch.out"
    argv = ["export", "--store", str(tmp_path / "state"), "--instrument", "ct"]
    argv += ["--channel", "1-1-2", "--format", fmt, "-o", str(out)]
    assert main(argv) == 0
    frame = _read(out, fmt)
    assert list(frame.columns) == STORE_COLUMNS
    # Recorded samples only (the live value repeats a moment), in time order.
    assert len(frame) == 240
    np.testing.assert_array_equal(frame["Unix Time / s"], [s.time_unix_s for s in samples])
    np.testing.assert_array_equal(frame["Voltage / V"], [s.voltage_v for s in samples])
    np.testing.assert_array_equal(frame["Cycle Count / 1"], [s.cycle for s in samples])
    assert list(frame["Step Count / 1"].iloc[[0, 59, 60, 239]]) == [1, 1, 2, 4]


def test_export_errors_are_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.csv"
    assert main(["export", "--format", "bdf-csv", "-o", str(out)]) == 2
    assert "FILE" in capsys.readouterr().err
    argv = ["export", "--store", str(tmp_path), "--instrument", "ct", "--channel", "1-1-2"]
    assert main([*argv, "--format", "bdf-csv", "-o", str(out)]) == 2
    assert "--store" in capsys.readouterr().err
    corrupt = NEWARE_FILES / "Unit27_Example_Corrupt.ndax"
    assert main(["export", str(corrupt), "--format", "bdf-csv", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "Unit27_Example_Corrupt.ndax" in err[0]
    assert not out.exists()


def test_a_store_with_several_tests_asks_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fill() -> None:
        await _fill_store(tmp_path / "state")
        tags = ChannelTags("ct", "1-1-2", "test-9", "SEI", "symmetric")
        async with Store(tmp_path / "state") as store:
            await store.write([SampleRecord(tags, 1.8e9, 0.0, 0.01, 1e-4)], [])

    asyncio.run(fill())
    argv = ["export", "--store", str(tmp_path / "state"), "--instrument", "ct"]
    argv += ["--channel", "1-1-2", "--format", "bdf-csv", "-o", str(tmp_path / "o.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--test-id" in err
    assert "'test-7'" in err
    assert "'test-9'" in err
    assert main([*argv, "--test-id", "test-9"]) == 0
    assert len(pd.read_csv(tmp_path / "o.csv")) == 1
