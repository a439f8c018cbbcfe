"""The shipped example protocols are package data: in a wheel, and named by file name."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

from cellguard.daemon.cli import main
from cellguard.protocols.script import example_names, example_path, load_protocol_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "protocols" / "script" / "examples"


def test_every_example_file_is_declared_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["cellguard.protocols.script"]
    files = sorted(p.relative_to(EXAMPLES.parent).as_posix() for p in EXAMPLES.iterdir())
    assert files, "no shipped examples"
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_each_example_is_found_by_its_name_and_parses() -> None:
    assert example_names() == tuple(sorted(p.stem for p in EXAMPLES.glob("*.toml")))
    for name in example_names():
        path = example_path(name)
        assert path is not None
        assert example_path(f"{name}.toml") == path
        assert load_protocol_file(path).steps
    # Only a bare name is looked up; anything with a folder is a path.
    assert example_path("examples/asymmetric-0.5-0.5") is None
    assert example_path("no-such-example") is None


def test_protocol_check_takes_a_shipped_example_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: no file of that name
    assert main(["protocol", "check", "--host-driven", "asymmetric-until-depletion"]) == 0
    assert "asymmetric 0.5/0.5 until depletion" in capsys.readouterr().out
