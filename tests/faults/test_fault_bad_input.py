"""Fault suite, bad input at the edges: a table of broken config files, impossible
protocols and corrupt data files. Each is refused before anything starts, with exit
code 2 and one line on stderr naming the key (or file) at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared import EXAMPLE_PROTOCOL

from cellguard.daemon.cli import main
from cellguard.daemon.config import parse_config

GOOD = """\
[daemon]
state_dir = "state"
[[instruments]]
name = "ct4008-a"
driver = "neware"
host = "127.0.0.1"
port = 502
poll_interval_s = 1.0
[[channels]]
instrument = "ct4008-a"
channel = "1-1-1"
mode = "run"
cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100, thin_li_um = 100 }
protocol = { kind = "galvanostatic", current_density_ma_cm2 = 0.5, \
areal_capacity_mah_cm2 = 0.5, cycles = 10 }
"""

# (what is wrong, replace this, with this, the key the message must name)
BAD_CONFIGS = [
    ("misspelt key", "poll_interval_s", "poll_intervall_s", "instruments[0].poll_intervall_s"),
    ("misspelt section", "[daemon]", "[deamon]", "deamon"),
    ("wrong type", "port = 502", 'port = "502x"', "instruments[0].port"),
    ("wrong type (bool)", "poll_interval_s = 1.0", "poll_interval_s = true", "poll_interval_s"),
    ("missing value", 'host = "127.0.0.1"\n', "", "instruments[0].host"),
    ("missing cell", "cell = {", "cel = {", "channels[0].cel"),
    ("impossible port", "port = 502", "port = 70000", "instruments[0].port"),
    ("negative poll", "poll_interval_s = 1.0", "poll_interval_s = -1.0", "poll_interval_s"),
    ("zero area", "area_cm2 = 0.785", "area_cm2 = 0", "channels[0].cell.area_cm2"),
    ("NaN area", "area_cm2 = 0.785", "area_cm2 = nan", "channels[0].cell.area_cm2"),
    ("zero cycles", "cycles = 10", "cycles = 0", "channels[0].protocol.cycles"),
    ("unknown driver", 'driver = "neware"', 'driver = "newarre"', "instruments[0].driver"),
    ("bad channel id", 'channel = "1-1-1"', 'channel = "1-1"', "channels[0].channel"),
    ("unknown instrument", 'instrument = "ct4008-a"', 'instrument = "ct4008-b"', "instrument"),
    ("thin symmetric", "thin_li_um = 100", "thin_li_um = 20", "channels[0].cell.thin_li_um"),
    ("not TOML", "port = 502", "port = = 502", "not valid TOML"),
    ("secret env unset", 'host = "127.0.0.1"\n',
     'host = "127.0.0.1"\nusername = "u"\npassword_env = "CELLGUARD_UNSET_PW"\n',
     "instruments[0].password_env"),
]  # fmt: skip


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("old", "new", "key"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_a_bad_config_exits_2_with_one_line_naming_the_key(
    old: str, new: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert GOOD.count(old) >= 1
    path = tmp_path / "cellguard.toml"
    path.write_text(GOOD.replace(old, new, 1))
    assert main(["run", str(path)]) == 2
    line = _one_line(capsys)
    print(f"\nbad config: injected {old!r} -> {new!r}; counted 1 line: {line}")
    assert line.startswith("cellguard: error: ")
    assert key in line
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_the_good_config_of_the_table_is_accepted() -> None:
    assert parse_config(GOOD).channels[0].protocol is not None


BAD_PROTOCOLS = [
    ("current beyond the range", "0.5 mA/cm2 for 0.5 mAh", "5000 mA/cm2 for 0.5 mAh"),
    ("thin Li emptied in one half cycle", "for 0.5 mAh/cm2", "for 50 mAh/cm2"),
    ("unit mix-up", "0.5 mA/cm2 for 0.5 mAh/cm2", "0.5 mAh/cm2 for 0.5 mA/cm2"),
    ("unknown step", "Rest for 10 min", "Relax for 10 min"),
]


@pytest.mark.parametrize(
    ("old", "new"), [c[1:] for c in BAD_PROTOCOLS], ids=[c[0] for c in BAD_PROTOCOLS]
)
def test_an_impossible_protocol_is_refused_before_anything_starts(
    old: str, new: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert old in EXAMPLE_PROTOCOL
    path = tmp_path / "p.toml"
    path.write_text(EXAMPLE_PROTOCOL.replace(old, new, 1))
    out = tmp_path / "p.xml"
    assert main(["protocol", "compile", str(path), "-o", str(out)]) == 2
    line = _one_line(capsys)
    print(f"\nbad protocol: injected {new!r}; counted 1 line: {line}")
    assert not out.exists()
    assert line.startswith("cellguard: error: ")


CORRUPT_FILES = [
    ("garbage.csv", b"\x00\xff\xfe garbage \x00" * 50),
    ("empty.csv", b""),
    ("columns.csv", b"a,b,c\n1,2,3\n"),
    ("numbers.csv", b"Test Time / s,Voltage / V,Current / A\n0,abc,0.001\n"),
    ("truncated.ndax", b"PK\x03\x04" + b"\x00" * 20),
    ("random.nda", bytes(range(256)) * 8),
    ("bad.parquet", b"PAR1" + b"\x01" * 100),
]


@pytest.mark.parametrize(("name", "content"), CORRUPT_FILES, ids=[c[0] for c in CORRUPT_FILES])
def test_a_corrupt_data_file_is_one_clear_line(
    name: str, content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["replay", str(path), "--cell", "symmetric"]) == 2
    line = _one_line(capsys)
    print(f"\ncorrupt file: injected {name} ({len(content)} B); counted 1 line: {line}")
    assert name in line
    assert "Traceback" not in line
