"""Every configuration the docs show works as copied: alone, into an empty folder.

Each ```toml block of README.md, deploy/*.md and docs/**/*.md, and each deploy/*.toml
file, is written alone into an empty folder and judged by the real CLI in a
subprocess: a daemon configuration by `cellguard check`, a protocol script by
`cellguard protocol check`. A block that is an excerpt (a [influxdb]/[mqtt] pair, a
`steps = [...]` list) is completed with the least that makes it whole, and judged the
same way. Secrets named by `*_env` keys are set, as systemd's EnvironmentFile would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)
_CONFIG_TABLES = {"daemon", "influxdb", "mqtt", "instruments", "channels"}
_PROTOCOL_KEYS = {"name", "record_every", "limits", "steps"}

# What an excerpt of a daemon configuration lacks to run: a state_dir and an instrument.
_CONFIG_SKELETON = {
    "daemon": '[daemon]\nstate_dir = "state"\n',
    "instruments": (
        '[[instruments]]\nname = "ct4008-a"\ndriver = "neware"\nhost = "127.0.0.1"\n'
        "port = 502\npoll_interval_s = 1.0\n"
    ),
}
# What an excerpt of a protocol lacks: a cell (the README's) and the [protocol] header.
_PROTOCOL_HEADER = (
    '[cell]\ntype = "asymmetric"\ndiameter_mm = 10\nthick_li_um = 100\nthin_li_um = 20\n\n'
    '[protocol]\nname = "an excerpt of the docs"\nrecord_every = "10 s"\n'
)


def _documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "deploy").glob("*.md"))]
    return docs + sorted((ROOT / "docs").rglob("*.md"))


def _examples() -> list[pytest.ParameterSet]:
    found = []
    for doc in _documents():
        text = doc.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            name = f"{doc.relative_to(ROOT)}:{line}"
            found.append(pytest.param(match.group(1), id=name))
    for path in sorted((ROOT / "deploy").glob("*.toml")):
        found.append(pytest.param(path.read_text(encoding="utf-8"), id=str(path.relative_to(ROOT))))
    return found


EXAMPLES = _examples()


def _secret_env(data: object) -> dict[str, str]:
    """A value for every environment variable a `*_env` key names."""
    found: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if key.endswith("_env") and isinstance(value, str):
                found[value] = f"test-{value.lower()}"
            found |= _secret_env(value)
    elif isinstance(data, list):
        for item in data:
            found |= _secret_env(item)
    return found


def _complete(text: str) -> tuple[str, list[str]]:
    """The text to write and the command that judges it (a config or a protocol)."""
    data = tomllib.loads(text)
    if set(data) <= _CONFIG_TABLES:
        missing = [_CONFIG_SKELETON[t] for t in ("daemon", "instruments") if t not in data]
        return "\n".join([*missing, text]), ["check"]
    if set(data) <= {"cell", "protocol"} and "protocol" in data:
        return text, ["protocol", "check", "--host-driven"]
    if set(data) <= _PROTOCOL_KEYS:
        return _PROTOCOL_HEADER + text, ["protocol", "check", "--host-driven"]
    pytest.fail(f"a toml block that is neither a config nor a protocol: keys {sorted(data)}")


def test_the_docs_hold_the_examples_this_test_is_for() -> None:
    """The collection itself: the README's config and protocol, and the deploy example."""
    ids = [p.id for p in EXAMPLES]
    assert "deploy/cellguard.example.toml" in ids
    assert sum(i.startswith("README.md:") for i in ids) >= 3
    assert any(i.startswith("deploy/README.md:") for i in ids)


def _state_dir_for_this_user(body: str, tmp_path: Path) -> str:
    """The docs' state_dir is a service's (/var/lib/cellguard): where this user may not
    make it (a CI runner that is not root), a folder of the test's stands in for it."""
    state_dir = tomllib.loads(body).get("daemon", {}).get("state_dir")
    if not isinstance(state_dir, str) or not Path(state_dir).is_absolute():
        return body
    existing = Path(state_dir)
    while not existing.exists():
        existing = existing.parent
    if os.access(existing, os.W_OK | os.X_OK):
        return body
    return body.replace(f'"{state_dir}"', f'"{tmp_path / "state"}"')


@pytest.mark.parametrize("text", EXAMPLES)
def test_a_documented_config_passes_check_copied_alone(text: str, tmp_path: Path) -> None:
    body, command = _complete(text)
    body = _state_dir_for_this_user(body, tmp_path)
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "example.toml").write_text(body, encoding="utf-8")
    env = {**os.environ, **_secret_env(tomllib.loads(body))}
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", *command, "example.toml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    # Judged, and nothing started: the folder holds the copied file only.
    assert sorted(p.name for p in folder.iterdir()) == ["example.toml"]
