"""The distribution installs as `cellguard.*` only, and the layers point one way."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_only_cellguard_namespace_is_importable_outside_the_checkout(tmp_path: Path) -> None:
    """`daemon`, `drivers` and `protocols` must not leak as top-level imports."""
    code = (
        "import importlib.util, json\n"
        "leaks = [n for n in ('daemon', 'drivers', 'protocols') if importlib.util.find_spec(n)]\n"
        "import cellguard.daemon, cellguard.drivers, cellguard.protocols\n"
        "import cellguard.drivers.neware, cellguard.drivers.sim, cellguard.daemon.cli\n"
        "print(json.dumps(leaks))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_code_folder_is_a_declared_package() -> None:
    """A new sub-package must be listed in pyproject.toml, or it is missing from wheels."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for part in ("drivers", "protocols", "daemon"):
        for init in (ROOT / part).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / part)
            found.add(".".join(("cellguard", part, *rel.parts)))
    assert found == declared


def test_lower_layers_never_import_higher_ones() -> None:
    """drivers/ imports nothing of protocols/ or daemon/; protocols/ nothing of daemon/.

    import-linter checks the same in CI; this keeps the rule in the test suite too.
    """
    forbidden = {
        "drivers": ("cellguard.protocols", "cellguard.daemon"),
        "protocols": ("cellguard.daemon",),
    }
    offenders = []
    for part, names in forbidden.items():
        for path in (ROOT / part).rglob("*.py"):
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n in text]
    assert offenders == []
