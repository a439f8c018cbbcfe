"""BioLogic EC-Lab ``.mpr`` files: real files read completely and right, damaged ones
refused in one line (never another exception, never a partial load).

The expected values of the real files were checked against galvani 0.5.0 (every column
of every fixture bit-identical), outside this suite.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared import BIOLOGIC_FILES

from cellguard.drivers.biologic import MprData, MprFormatError, parse_mpr, step_kinds
from cellguard.drivers.files import SUFFIXES, Recording, RecordingError, StepKind, read_recording

GCPL_OLD = BIOLOGIC_FILES / "jdb11-1_c3_gcpl_5cycles_2V-3p8V_C-24_data_C09.mpr"
GCPL_CCCV = BIOLOGIC_FILES / "250116_kigr_gen6_01_02_GCPL_CD8.mpr"
PEIS = BIOLOGIC_FILES / "PEIS.mpr"
OCV = BIOLOGIC_FILES / "test_C01.mpr"
MB_POTENTIO = BIOLOGIC_FILES / "00_test_04_MB_C01.mpr"
MB_GALVANO = BIOLOGIC_FILES / "commercial_cell_001__1753280829_C01.mpr"


@dataclass(frozen=True)
class Expected:
    path: Path
    technique: str
    data_version: int
    rows: int
    first_t_s: float
    last_t_s: float
    first_v: float
    last_v: float
    kinds: dict[StepKind, int]
    steps: list[int] | None
    cycles: list[int] | None


REAL = [
    # EC-Lab < 11.50 (old module headers, data module version 3), no current column.
    Expected(
        GCPL_OLD,
        "GCPL",
        3,
        46102,
        0.0,
        456309.586151,
        2.508576,
        1.999960,
        {StepKind.CC: 45741, StepKind.REST: 361},
        [0, 1, 2, 3],
        None,
    ),
    Expected(
        GCPL_CCCV,
        "GCPL",
        3,
        3791,
        43213.762053,
        81716.459927,
        0.288364,
        3.838288,
        {StepKind.CC: 3282, StepKind.CV: 475, StepKind.REST: 34},
        [0, 1, 2, 3],
        None,
    ),
    # EC-Lab >= 11.50 (new module headers, data module version 11).
    Expected(
        PEIS,
        "PEIS",
        11,
        244,
        304582.830884,
        6430105.806792,
        3.778918,
        3.751022,
        {StepKind.IMPEDANCE: 244},
        [0],
        [1, 2, 3, 4],
    ),
    Expected(
        OCV,
        "OCV",
        11,
        18001,
        1.0,
        17999.999928,
        0.047539,
        0.047086,
        {StepKind.REST: 18001},
        None,
        None,
    ),
    Expected(
        MB_POTENTIO,
        "MB",
        11,
        1501,
        16.167400,
        17.667200,
        -1.650138,
        -1.650130,
        {StepKind.CV: 1501},
        [0],
        None,
    ),
    Expected(
        MB_GALVANO,
        "MB",
        11,
        95,
        0.0,
        900.000377,
        4.039393,
        4.042684,
        {StepKind.CC: 31, StepKind.REST: 64},
        [0, 2, 3],
        None,
    ),
]


def _kinds(rec: Recording) -> dict[StepKind, int]:
    assert rec.step_kind is not None
    values, counts = np.unique(rec.step_kind, return_counts=True)
    return {StepKind(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def test_mpr_is_a_known_suffix() -> None:
    assert SUFFIXES[".mpr"] == "biologic-mpr"


@pytest.mark.parametrize("want", REAL, ids=lambda e: e.path.name)
def test_real_files_load_completely_with_their_known_values(want: Expected) -> None:
    """Row counts, first/last times and voltages, step kinds, Ns and cycle numbers."""
    rec = read_recording(want.path)
    assert rec.source == "biologic-mpr"
    assert len(rec) == want.rows
    for array in (rec.t_s, rec.voltage_v, rec.current_a):
        assert array.dtype == np.float64
        assert len(array) == want.rows
    assert rec.t_s[0] == pytest.approx(want.first_t_s, abs=1e-5)
    assert rec.t_s[-1] == pytest.approx(want.last_t_s, abs=1e-5)
    assert rec.voltage_v[0] == pytest.approx(want.first_v, abs=1e-6)
    assert rec.voltage_v[-1] == pytest.approx(want.last_v, abs=1e-6)
    assert _kinds(rec) == want.kinds
    assert (None if rec.step is None else np.unique(rec.step).tolist()) == want.steps
    assert (None if rec.cycle is None else np.unique(rec.cycle).tolist()) == want.cycles
    mpr = parse_mpr(want.path.read_bytes())
    assert (mpr.technique, mpr.data_version, mpr.n_rows) == (
        want.technique,
        want.data_version,
        want.rows,
    )


def test_galvanostatic_current_without_a_current_column_comes_from_dq_over_dt() -> None:
    """Old GCPL files store dq (mA·h since the previous row), not I: dq/dt is EC-Lab's
    <I>, and under constant current it is the set point (control/V/mA)."""
    for path, setpoint_ma in ((GCPL_OLD, 0.088796), (GCPL_CCCV, 1.2065)):
        mpr = parse_mpr(path.read_bytes())
        assert not {"I/mA", "<I>/mA"} & set(mpr.columns)
        rec = read_recording(path)
        cc = np.asarray(mpr.columns["mode"]) == 1
        control_ma = np.asarray(mpr.columns["control/V/mA"], dtype=np.float64)[cc]
        np.testing.assert_allclose(np.unique(np.abs(np.round(control_ma, 6))), [setpoint_ma])
        error = np.abs(rec.current_a[cc] * 1000 - control_ma) / np.abs(control_ma)
        assert np.median(error) < 1e-3
        # Only intervals that span a step change (rest, then current) differ.
        assert np.mean(error < 0.01) > 0.99
        # At open circuit no current flows, whatever the interval before it averaged.
        rest = np.asarray(mpr.columns["mode"]) == 3
        assert not rec.current_a[rest].any()


def test_logging_on_change_intervals_from_sub_millisecond_to_minutes_are_normal() -> None:
    """EC-Lab logs a row when E moves by dE or after dt: both ends in one file."""
    for path, shortest_s, longest_s in ((GCPL_OLD, 1e-3, 10.0), (GCPL_CCCV, 3e-3, 120.0)):
        dt_s = np.diff(read_recording(path).t_s)
        assert dt_s.min() < shortest_s
        assert dt_s.max() >= longest_s


def test_measured_current_is_used_when_the_file_has_it() -> None:
    mpr = parse_mpr(MB_POTENTIO.read_bytes())
    rec = read_recording(MB_POTENTIO)
    np.testing.assert_array_equal(
        rec.current_a, np.asarray(mpr.columns["I/mA"], dtype=np.float64) / 1000
    )
    assert rec.current_a[0] == pytest.approx(-4.469791e-05, rel=1e-6)
    peis = read_recording(PEIS)  # <I>/mA only
    assert peis.current_a[0] == pytest.approx(-5.476046e-08 * 1000, rel=1e-6)


def test_open_circuit_file_has_zero_current_and_averaged_voltage() -> None:
    """An OCV file records <Ewe> (id 174) and no current: the cell is open."""
    mpr = parse_mpr(OCV.read_bytes())
    assert mpr.column_ids == (1, 3, 4, 174)
    assert "<Ewe>/V" in mpr.columns
    rec = read_recording(OCV)
    assert not rec.current_a.any()


def test_peis_rows_carry_frequency_and_impedance_columns() -> None:
    mpr = parse_mpr(PEIS.read_bytes())
    freq = np.asarray(mpr.columns["freq/Hz"])
    assert freq[0] == pytest.approx(10002.226, rel=1e-6)
    assert freq.min() == pytest.approx(0.01000917, rel=1e-6)
    assert mpr.columns["|Z|/Ohm"][0] == pytest.approx(5.6276608, rel=1e-6)
    assert mpr.units["|Z|/Ohm"] == "Ohm"
    assert "mode" not in mpr.columns  # PEIS rows carry no flags byte


def test_flags_share_one_byte_placed_at_the_first_flag_id() -> None:
    mpr = parse_mpr(GCPL_CCCV.read_bytes())
    assert mpr.column_ids[:7] == (1, 2, 3, 21, 31, 65, 131)
    for name in ("mode", "ox/red", "error", "control changes", "Ns changes", "counter inc."):
        assert name in mpr.columns
    assert set(np.unique(mpr.columns["mode"]).tolist()) == {1, 2, 3}
    # In this file the Ns-changes bit is set on the second row of every new sequence.
    ns = np.asarray(mpr.columns["Ns"])
    first_of_sequence = np.flatnonzero(np.diff(ns)) + 1
    flagged = np.flatnonzero(np.asarray(mpr.columns["Ns changes"]))
    np.testing.assert_array_equal(flagged, first_of_sequence + 1)
    assert np.count_nonzero(mpr.columns["error"]) == 0


# --- synthetic files: our own writer of the layout, for the rules the real files lack.

_SYNTH = np.dtype([("flags", "u1"), ("Ns", "<u2"), ("time/s", "<f8"), ("Ewe/V", "<f4")])
_SYNTH_IDS = (1, 2, 131, 4, 6)


def build_mpr(
    ids: tuple[int, ...],
    rows: np.ndarray,
    *,
    layout: str = "old",
    version: int = 3,
    technique: int = 0x04,
) -> bytes:
    """An .mpr file with a settings and a data module, as EC-Lab lays them out."""

    def module(short: str, long: str, body: bytes, module_version: int) -> bytes:
        names = short.ljust(10).encode() + long.ljust(25).encode()
        if layout == "old":
            numbers = struct.pack("<2I", len(body), module_version)
        else:
            numbers = struct.pack("<4I", 0xFFFFFFFF, len(body), 0, module_version)
        return b"MODULE" + names + numbers + b"12/04/26" + body

    offset = {2: 405, 3: 406, 10: 1007, 11: 1007}[version]
    order = "<" if layout == "old" else ">"
    head = struct.pack("<IB", len(rows), len(ids)) + struct.pack(f"{order}{len(ids)}H", *ids)
    data_body = head.ljust(offset, b"\x00") + rows.tobytes()
    settings_body = bytes([technique]) + bytes(200)
    return (
        b"BIO-LOGIC MODULAR FILE\x1a".ljust(48)
        + bytes(4)
        + module("VMP Set", "VMP settings", settings_body, 0 if layout == "old" else 10)
        + module("VMP data", "VMP data", data_body, version)
    )


def _rows(dtype: np.dtype, **columns: list[float]) -> np.ndarray:
    n = len(next(iter(columns.values())))
    rows = np.zeros(n, dtype=dtype)
    for name, values in columns.items():
        rows[name] = values
    return rows


def _write(tmp_path: Path, data: bytes, name: str = "synthetic.mpr") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("layout", "version"), [("old", 2), ("old", 3), ("new", 10), ("new", 11)])
def test_both_layouts_and_every_known_data_version_read_the_same_rows(
    layout: str, version: int
) -> None:
    dtype = np.dtype(
        [("flags", "u1"), ("Ns", "<u2"), ("time/s", "<f8"), ("Ewe/V", "<f4"), ("P/W", "<f4")]
    )
    rows = _rows(dtype, flags=[3, 1, 1], Ns=[0, 1, 1], **{"time/s": [0, 1, 2]})
    rows["Ewe/V"] = [0.01, 0.02, 0.03]
    mpr = parse_mpr(build_mpr((1, 131, 4, 6, 70), rows, layout=layout, version=version))
    np.testing.assert_array_equal(mpr.columns["time/s"], [0, 1, 2])
    np.testing.assert_array_equal(mpr.columns["mode"], [3, 1, 1])
    np.testing.assert_array_equal(mpr.columns["Ns"], [0, 1, 1])
    np.testing.assert_allclose(mpr.columns["Ewe/V"], [0.01, 0.02, 0.03], rtol=1e-6)


def test_an_unknown_column_id_is_named_in_the_error(tmp_path: Path) -> None:
    rows = np.zeros(2, dtype=[("time/s", "<f8"), ("x", "<f4")])
    path = _write(tmp_path, build_mpr((4, 9999), rows))
    with pytest.raises(RecordingError, match=r"unknown column id 9999 \(column 2 of 2\)") as info:
        read_recording(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("synthetic.mpr: ")


def test_an_unknown_data_module_version_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    data = bytearray(build_mpr(_SYNTH_IDS, _rows(_SYNTH, Ns=[0])))
    version_at = data.index(b"VMP data") + 35 + 4
    data[version_at] = 7
    with pytest.raises(RecordingError, match="data module version 7 is not supported"):
        read_recording(_write(tmp_path, bytes(data)))


def test_ewe_minus_ece_is_the_cell_voltage_when_recorded(tmp_path: Path) -> None:
    """With Ece recorded (3 electrodes), Ewe-Ece is the voltage across the cell."""
    dtype = np.dtype([("time/s", "<f8"), ("Ewe/V", "<f4"), ("Ewe-Ece/V", "<f4"), ("I", "<f4")])
    rows = _rows(dtype, **{"time/s": [0, 1], "Ewe/V": [0.01, 0.01], "Ewe-Ece/V": [0.02, 0.03]})
    rec = read_recording(_write(tmp_path, build_mpr((4, 6, 27, 8), rows)))
    np.testing.assert_allclose(rec.voltage_v, [0.02, 0.03], rtol=1e-6)


def test_current_from_dq_carries_on_through_a_burst_at_one_instant(tmp_path: Path) -> None:
    """Logging on change: rows < 1 ms apart may share a time stamp; dq/0 is no current."""
    dtype = np.dtype([("flags", "u1"), ("time/s", "<f8"), ("Ewe/V", "<f4"), ("dq", "<f8")])
    rows = _rows(dtype, flags=[3, 1, 1, 1], **{"time/s": [0, 10, 10, 20]})
    rows["dq"] = [0.0, 1e-3, 0.0, 2e-3]  # mA·h since the previous row
    rec = read_recording(_write(tmp_path, build_mpr((1, 4, 6, 7), rows)))
    np.testing.assert_allclose(rec.current_a * 1000, [0.0, 0.36, 0.36, 0.72])


def test_control_in_volts_is_never_taken_for_a_current(tmp_path: Path) -> None:
    """control/V/mA holds volts in potentiostatic rows: without a measured current the
    file is refused, not read with volts as milliamperes."""
    dtype = np.dtype([("flags", "u1"), ("time/s", "<f8"), ("ctl", "<f4"), ("Ewe/V", "<f4")])
    rows = _rows(dtype, flags=[1, 2], **{"time/s": [0, 1]})
    path = _write(tmp_path, build_mpr((1, 4, 5, 6), rows))
    with pytest.raises(RecordingError, match="no current column"):
        read_recording(path)
    galvanostatic = _rows(dtype, flags=[3, 1], ctl=[0.0, 0.5], **{"time/s": [0, 1]})
    rec = read_recording(_write(tmp_path, build_mpr((1, 4, 5, 6), galvanostatic), "cc.mpr"))
    np.testing.assert_allclose(rec.current_a, [0.0, 0.5e-3])


@pytest.mark.parametrize(
    ("times", "volts", "problem"),
    [
        ([0.0, 2.0, 1.0], [0.01, 0.01, 0.01], "time goes backwards at row 2 (2 s, then 1 s)"),
        ([0.0, 1.0, 2.0], [0.01, float("nan"), 0.01], "1 non-finite value(s) in voltage"),
    ],
)
def test_untrustworthy_samples_are_refused_by_the_common_checks(
    tmp_path: Path, times: list[float], volts: list[float], problem: str
) -> None:
    dtype = np.dtype([("flags", "u1"), ("time/s", "<f8"), ("Ewe/V", "<f4"), ("I/mA", "<f4")])
    rows = _rows(dtype, flags=[1, 1, 1], **{"time/s": times, "Ewe/V": volts})
    with pytest.raises(RecordingError, match=re.escape(problem)):
        read_recording(_write(tmp_path, build_mpr((1, 4, 6, 8), rows)))


def _mpr(technique: str | None, **columns: list[float]) -> MprData:
    arrays = {name.replace("_", "/"): np.asarray(v) for name, v in columns.items()}
    n = len(next(iter(arrays.values())))
    return MprData((), technique, 11, (), arrays, {}, n)


@pytest.mark.parametrize(
    ("technique", "columns", "kinds"),
    [
        ("GCPL", {"mode": [1, 2, 3, 0]}, [StepKind.CC, StepKind.CV, StepKind.REST, 0]),
        ("OCV", {"mode": [3, 1]}, [StepKind.REST, StepKind.REST]),
        ("CV", {"mode": [2, 2]}, [StepKind.OTHER, StepKind.OTHER]),
        ("PEIS", {"time_s": [0, 1]}, [StepKind.IMPEDANCE, StepKind.IMPEDANCE]),
        # A PEIS inside a Modulo Bat sequence: its rows are the ones with a frequency.
        (
            "MB",
            {"mode": [1, 2, 3], "freq_Hz": [0, 1e3, 0]},
            [StepKind.CC, StepKind.IMPEDANCE, StepKind.REST],
        ),
        (None, {"time_s": [0.0]}, [StepKind.UNKNOWN]),
        ("0x99", {"mode": [1]}, [StepKind.CC]),
    ],
)
def test_step_kind_comes_from_mode_flag_technique_and_frequency(
    technique: str | None, columns: dict[str, list[float]], kinds: list[int]
) -> None:
    assert step_kinds(_mpr(technique, **columns)).tolist() == [int(k) for k in kinds]


# --- damaged files: one line, RecordingError, never anything else, never a partial load.


def test_empty_and_foreign_files_are_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        "empty.mpr": (b"", "the file is empty"),
        "text.mpr": (b"time/s\tEwe/V\n0\t3.1\n", "not a BioLogic .mpr file"),
        "short.mpr": (b"BIO-LOGIC", "not a BioLogic .mpr file"),
        "header.mpr": (PEIS.read_bytes()[:52], "no modules"),
    }
    for name, (data, problem) in cases.items():
        with pytest.raises(RecordingError) as info:
            read_recording(_write(tmp_path, data, name))
        assert str(info.value).startswith(f"{name}: ")
        assert problem in str(info.value)
        assert "\n" not in str(info.value)


def _module_starts(data: bytes) -> list[int]:
    starts, pos = [], data.find(b"MODULE")
    while pos != -1:
        starts.append(pos)
        pos = data.find(b"MODULE", pos + 1)
    return starts


@pytest.mark.parametrize("path", [GCPL_CCCV, PEIS], ids=lambda p: p.name)
def test_truncation_anywhere_inside_a_module_is_refused(tmp_path: Path, path: Path) -> None:
    data = path.read_bytes()
    starts = _module_starts(data)
    assert len(starts) >= 2
    data_at = data.index(b"VMP data") - 6
    cuts = sorted(
        {1, 20, 51, 52 + 3, 52 + 30, data_at + 10, data_at + 59, data_at + 500}
        | {data_at + 1007 + k for k in (0, 1, 13)}
        | {len(data) - 1, len(data) - 100, (data_at + len(data)) // 2}
    )
    for cut in cuts:
        if cut in starts:
            continue
        with pytest.raises(RecordingError) as info:
            read_recording(_write(tmp_path, data[:cut]))
        assert "\n" not in str(info.value), cut


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        (lambda d: 0, "not a BioLogic .mpr file"),
        (lambda d: 30, "damaged .mpr file header"),
        (lambda d: d.index(b"MODULE", 60), "expected a module"),
        (lambda d: d.index(b"VMP data") + 2, "damaged short name"),
        (lambda d: d.index(b"VMP data") + 35 + 2, "declares"),
        (lambda d: d.index(b"VMP data") + 35 + 4, "version 252 is not supported"),
        (lambda d: d.index(b"VMP data") + 35 + 8 + 1, "damaged date"),
    ],
    ids=["magic", "padding", "module magic", "module name", "length", "version", "date"],
)
def test_a_flipped_header_byte_is_refused_naming_the_problem(
    tmp_path: Path, where: object, problem: str
) -> None:
    data = bytearray(GCPL_CCCV.read_bytes())
    at = where(bytes(data))  # type: ignore[operator]
    data[at] ^= 0xFF
    with pytest.raises(RecordingError, match=problem.replace("(", r"\(").replace(".", r"\.")):
        read_recording(_write(tmp_path, bytes(data)))


def test_a_row_count_the_data_module_cannot_hold_is_refused(tmp_path: Path) -> None:
    data = bytearray(PEIS.read_bytes())
    count_at = data.index(b"VMP data") + 59
    struct.pack_into("<I", data, count_at, 245)
    with pytest.raises(RecordingError, match="declares 245 rows of 72 bytes"):
        read_recording(_write(tmp_path, bytes(data)))


def test_a_corrupted_column_id_is_refused_naming_it(tmp_path: Path) -> None:
    data = bytearray(GCPL_OLD.read_bytes())
    ids_at = data.index(b"VMP data") + 51 + 5
    struct.pack_into("<H", data, ids_at + 2 * 7, 4444)  # time/s -> an id nobody knows
    with pytest.raises(RecordingError, match="unknown column id 4444"):
        read_recording(_write(tmp_path, bytes(data)))


# New layout (PEIS without flags, Modulo Bat) and old layout (GCPL), 22-200 kB each.
_SMALL = (PEIS.read_bytes(), MB_GALVANO.read_bytes(), GCPL_CCCV.read_bytes())


@pytest.fixture(scope="module")
def original_recordings() -> tuple[Recording, ...]:
    return (read_recording(PEIS), read_recording(MB_GALVANO), read_recording(GCPL_CCCV))


def _outcome(path: Path) -> Recording | str:
    """The recording, or the RecordingError's message: any other exception escapes."""
    try:
        return read_recording(path)
    except RecordingError as err:
        return str(err)


def _same(a: Recording, b: Recording) -> bool:
    return all(
        np.array_equal(x, y)
        for x, y in (
            (a.t_s, b.t_s),
            (a.voltage_v, b.voltage_v),
            (a.current_a, b.current_a),
            (a.step, b.step),
            (a.cycle, b.cycle),
            (a.step_kind, b.step_kind),
        )
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from([0, 1, 2]), data=st.data())
def test_random_truncations_load_completely_or_raise_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    original_recordings: tuple[Recording, ...],
    which: int,
    data: st.DataObject,
) -> None:
    whole = _SMALL[which]
    cut = data.draw(st.integers(min_value=0, max_value=len(whole)), label="cut")
    path = tmp_path_factory.getbasetemp() / "cut.mpr"
    path.write_bytes(whole[:cut])
    rec = _outcome(path)
    if isinstance(rec, str):
        assert "\n" not in rec
        assert rec.startswith("cut.mpr: ")
    else:
        # Only a cut at the end of a module can leave a readable file: then every row
        # is there (a missing log or loop module loses no samples).
        assert _same(rec, original_recordings[which])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from([0, 1, 2]), data=st.data())
def test_random_byte_mutations_never_raise_anything_but_recording_error(
    tmp_path_factory: pytest.TempPathFactory, which: int, data: st.DataObject
) -> None:
    mutated = bytearray(_SMALL[which])
    # Half the edits land in the headers (file, settings, data module's column table).
    near = st.integers(min_value=0, max_value=min(len(mutated), 8_000) - 1)
    anywhere = st.integers(min_value=0, max_value=len(mutated) - 1)
    edits = data.draw(
        st.lists(st.tuples(st.one_of(near, anywhere), st.integers(0, 255)), min_size=1, max_size=8),
        label="edits",
    )
    for at, value in edits:
        mutated[at] = value
    path = tmp_path_factory.getbasetemp() / "mutated.mpr"
    path.write_bytes(bytes(mutated))
    rec = _outcome(path)
    if isinstance(rec, str):
        assert "\n" not in rec
    else:
        assert len(rec) > 0
        assert np.all(np.isfinite(rec.t_s))
        assert np.all(rec.t_s[1:] >= rec.t_s[:-1])


def test_parser_errors_are_cellguard_errors_with_one_line() -> None:
    with pytest.raises(MprFormatError) as info:
        parse_mpr(b"BIO-LOGIC MODULAR FILE\x1a".ljust(48) + bytes(4) + b"MODULX")
    assert "expected a module" in str(info.value)


def test_a_signalling_nan_in_a_damaged_file_is_one_clear_error(tmp_path: Path) -> None:
    # Found by the mutation test: a byte turning a float32 into a signalling NaN made
    # numpy warn while widening it, before the common NaN check could say so.
    damaged = bytearray(GCPL_CCCV.read_bytes())
    damaged[127644] = 127
    path = tmp_path / "snan.mpr"
    path.write_bytes(bytes(damaged))
    with pytest.raises(
        RecordingError, match=r"^snan\.mpr: 1 non-finite value\(s\) in voltage"
    ) as info:
        read_recording(path)
    assert "\n" not in str(info.value)
