"""BDF columns in other units (h, min, mA, µA, mV) are converted to s, A and V."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cellguard.drivers.files import RecordingError, read_recording

T_S = np.array([0.0, 36.0, 72.0, 108.0])
V_V = np.array([0.0101, 0.0102, -0.0103, -0.0104])
I_A = np.array([2.5e-4, 2.5e-4, -2.5e-4, -2.5e-4])


def _write(path: Path, columns: dict[str, np.ndarray]) -> Path:
    frame = pl.DataFrame(columns)
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize(
    ("time", "t_factor", "voltage", "v_factor", "current", "i_factor"),
    [
        ("Test Time / h", 3600.0, "Voltage / mV", 1e-3, "Current / mA", 1e-3),
        ("Test Time / min", 60.0, "Voltage / V", 1.0, "Current / µA", 1e-6),
        ("Test Time / s", 1.0, "Voltage / mV", 1e-3, "Current / uA", 1e-6),
        ("Test Time/h", 3600.0, "Voltage /V", 1.0, "Current / \u03bcA", 1e-6),
    ],
)
def test_other_units_are_converted_to_si(
    tmp_path: Path,
    suffix: str,
    time: str,
    t_factor: float,
    voltage: str,
    v_factor: float,
    current: str,
    i_factor: float,
) -> None:
    path = _write(
        tmp_path / f"units{suffix}",
        {time: T_S / t_factor, voltage: V_V / v_factor, current: I_A / i_factor},
    )
    rec = read_recording(path)
    np.testing.assert_allclose(rec.t_s, T_S, rtol=1e-12)
    np.testing.assert_allclose(rec.voltage_v, V_V, rtol=1e-12)
    np.testing.assert_allclose(rec.current_a, I_A, rtol=1e-12)


def test_two_columns_for_one_quantity_name_both(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "both.csv",
        {
            "Test Time / s": T_S,
            "Voltage / V": V_V,
            "Current / A": I_A,
            "Current / mA": I_A * 1e3,
        },
    )
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    message = str(info.value)
    assert message.startswith("both.csv: two current columns, 'Current / A' and 'Current / mA'")
    assert "\n" not in message


def test_an_unknown_unit_lists_the_accepted_ones(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "kilo.parquet",
        {"Test Time / d": T_S, "Voltage / V": V_V, "Current / A": I_A},
    )
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    assert str(info.value) == (
        "kilo.parquet: column 'Test Time / d': unknown unit 'd' for test time; accepted: s, min, h"
    )
    path = _write(
        tmp_path / "kilo.csv",
        {"Test Time / s": T_S, "Voltage / V": V_V, "Current / kA": I_A},
    )
    with pytest.raises(RecordingError, match=r"'kA' for current; accepted: A, mA, µA, uA$"):
        read_recording(path)


def test_a_quantity_without_unit_is_refused_with_the_spelling(tmp_path: Path) -> None:
    path = _write(tmp_path / "bare.csv", {"Test Time / s": T_S, "Voltage": V_V, "Current / A": I_A})
    with pytest.raises(RecordingError, match=r"column 'Voltage' has no unit; label it 'Voltage /"):
        read_recording(path)
