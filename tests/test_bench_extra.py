"""`cellguard bench` without its extra says in one line which extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_bench_without_aurora_neware_names_the_extra(tmp_path: Path) -> None:
    # A package of that name that cannot be imported, ahead of the installed one on
    # sys.path: as after `pip install -e .` without the extra.
    hidden = tmp_path / "aurora_neware"
    hidden.mkdir()
    (hidden / "__init__.py").write_text(
        "raise ImportError(\"No module named 'aurora_neware'\")\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "bench", "--smoke"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "cellguard: error: `cellguard bench` compares against aurora-neware: "
        "pip install -e '.[bench]'"
    ]
