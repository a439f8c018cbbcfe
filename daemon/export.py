"""``cellguard export``: recorded samples as Battery Data Format (BDF) tables.

From a recorded file (anything ``cellguard replay`` reads) or from the daemon's SQLite
store (one channel's test), to CSV or Parquet with the BDF column names and units, so
cellpy, the BDF tools, polars and pandas read it directly (and ``cellguard replay`` /
``analyze`` / ``plot`` read it back):

=====================  ===========================================================
``Test Time / s``      time since the start of the test
``Unix Time / s``      wall-clock UNIX time (only when known: the store has it)
``Voltage / V``        cell voltage
``Current / A``        current, sign as the instrument recorded it
``Cycle Count / 1``    the instrument's cycle number (when known)
``Step Index / 1``     the instrument's step number in its program (when known)
``Step Count / 1``     steps run so far: +1 at every change of step (when known)
``Net Capacity / Ah``  ``Σ I_k (t_k − t_{k−1})``: charge passed, signed
=====================  ===========================================================
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from cellguard.daemon.records import SampleRecord
from cellguard.daemon.store import STORE_FILENAME, Store
from cellguard.drivers.errors import ConfigError
from cellguard.drivers.files import FloatArray, IntArray, Recording, RecordingError, read_recording

ExportFormat = Literal["bdf-csv", "bdf-parquet"]
FORMATS: tuple[ExportFormat, ...] = ("bdf-csv", "bdf-parquet")

BDF_TEST_TIME = "Test Time / s"
BDF_UNIX_TIME = "Unix Time / s"
BDF_VOLTAGE = "Voltage / V"
BDF_CURRENT = "Current / A"
BDF_CYCLE_COUNT = "Cycle Count / 1"
BDF_STEP_INDEX = "Step Index / 1"
BDF_STEP_COUNT = "Step Count / 1"
BDF_NET_CAPACITY = "Net Capacity / Ah"
_S_PER_H = 3600.0


def bdf_frame(
    t_s: FloatArray,
    voltage_v: FloatArray,
    current_a: FloatArray,
    *,
    step: IntArray | None = None,
    cycle: IntArray | None = None,
    unix_s: FloatArray | None = None,
) -> pl.DataFrame:
    """The BDF table of one channel's samples (columns in the order of the module doc)."""
    columns: dict[str, object] = {BDF_TEST_TIME: t_s}
    if unix_s is not None:
        columns[BDF_UNIX_TIME] = unix_s
    columns[BDF_VOLTAGE] = voltage_v
    columns[BDF_CURRENT] = current_a
    if cycle is not None:
        columns[BDF_CYCLE_COUNT] = cycle
    if step is not None:
        columns[BDF_STEP_INDEX] = step
        changes = np.concatenate(([1], (np.diff(step) != 0).astype(np.int64)))
        columns[BDF_STEP_COUNT] = np.cumsum(changes)
    if len(t_s):
        dt_s = np.diff(t_s, prepend=t_s[0])
        columns[BDF_NET_CAPACITY] = np.cumsum(current_a * dt_s) / _S_PER_H
    else:
        columns[BDF_NET_CAPACITY] = np.zeros(0)
    return pl.DataFrame(columns)


def recording_frame(recording: Recording) -> pl.DataFrame:
    """A recorded file's samples as a BDF table."""
    return bdf_frame(
        recording.t_s,
        recording.voltage_v,
        recording.current_a,
        step=recording.step,
        cycle=recording.cycle,
    )


def samples_frame(samples: Sequence[SampleRecord]) -> pl.DataFrame:
    """Stored samples (one channel's test, in time order) as a BDF table."""
    return bdf_frame(
        np.array([s.test_time_s for s in samples], dtype=np.float64),
        np.array([s.voltage_v for s in samples], dtype=np.float64),
        np.array([s.current_a for s in samples], dtype=np.float64),
        step=np.array([s.step for s in samples], dtype=np.int64),
        cycle=np.array([s.cycle for s in samples], dtype=np.int64),
        unix_s=np.array([s.time_unix_s for s in samples], dtype=np.float64),
    )


def write_bdf(frame: pl.DataFrame, output: Path, fmt: ExportFormat) -> None:
    """Write ``frame`` as CSV or Parquet; the folder must exist."""
    if fmt not in FORMATS:
        raise ConfigError(field="--format", problem=f"must be one of {', '.join(FORMATS)}")
    if not output.parent.is_dir():
        raise ConfigError(field="-o", problem=f"folder {output.parent} does not exist")
    try:
        if fmt == "bdf-csv":
            frame.write_csv(output)
        else:
            frame.write_parquet(output)
    except OSError as err:
        raise ConfigError(field="-o", problem=f"cannot write {output}: {err}") from err


async def stored_samples(
    state_dir: Path, instrument: str, channel: str, test_id: str | None
) -> list[SampleRecord]:
    """One channel's test from the daemon's store: recorded samples (live ones only if
    the test has no recorded ones), in time order.

    Without ``test_id`` the channel must hold exactly one test; otherwise the error
    lists the tests to choose from.
    """
    if not (state_dir / STORE_FILENAME).is_file():
        raise ConfigError(
            field="--store", problem=f"no cellguard store ({STORE_FILENAME}) in {state_dir}"
        )
    async with Store(state_dir) as store:
        samples = await store.query_samples(instrument, channel)
    if not samples:
        raise ConfigError(
            field="--channel", problem=f"no samples of {instrument} {channel} in {state_dir}"
        )
    tests = sorted({s.tags.test_id for s in samples})
    if test_id is None:
        if len(tests) > 1:
            listed = ", ".join(repr(t) for t in tests)
            raise ConfigError(
                field="--test-id", problem=f"{instrument} {channel} holds several tests: {listed}"
            )
        test_id = tests[0]
    elif test_id not in tests:
        listed = ", ".join(repr(t) for t in tests)
        raise ConfigError(field="--test-id", problem=f"must be one of {listed}, got {test_id!r}")
    of_test = [s for s in samples if s.tags.test_id == test_id]
    recorded = [s for s in of_test if s.source == "recorded"]
    return recorded or of_test


async def run_export_cli(
    *,
    file: Path | None,
    store_dir: Path | None,
    instrument: str | None,
    channel: str | None,
    test_id: str | None,
    fmt: ExportFormat,
    output: Path,
) -> int:
    """``cellguard export``: 0 when written; 2 with one line on stderr if not."""
    if (file is None) == (store_dir is None):
        raise ConfigError(field="FILE", problem="give either a recorded FILE or --store STATE_DIR")
    if file is not None:
        try:
            frame = recording_frame(read_recording(file))
        except RecordingError as err:
            print(f"cellguard: {file}: {err.problem}", file=sys.stderr, flush=True)
            return 2
    else:
        assert store_dir is not None
        if instrument is None or channel is None:
            raise ConfigError(
                field="--instrument", problem="--store needs --instrument and --channel"
            )
        frame = samples_frame(await stored_samples(store_dir, instrument, channel, test_id))
    write_bdf(frame, output, fmt)
    print(f"wrote {output} ({fmt}, {frame.height:,} samples)")
    return 0
