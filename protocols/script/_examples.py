"""The example protocols shipped inside the package (``examples/*.toml``).

A configuration copied onto a new lab PC should not need a source checkout to find
them: ``protocol_file = "symmetric-60C-soak"`` names a shipped example wherever
cellguard is installed (a wheel holds them as package data).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_SUFFIX = ".toml"


def _folder() -> Path:
    return Path(str(resources.files("cellguard.protocols.script").joinpath("examples")))


def example_names() -> tuple[str, ...]:
    """The shipped examples' names (file names without ``.toml``), sorted."""
    return tuple(sorted(p.stem for p in _folder().glob(f"*{_SUFFIX}")))


def example_path(name: str) -> Path | None:
    """The shipped example called ``name`` (with or without ``.toml``), or None.

    Only a bare name is looked up: anything with a folder in it is a path.
    """
    if not name or "/" in name or "\\" in name:
        return None
    path = _folder() / (name if name.endswith(_SUFFIX) else name + _SUFFIX)
    return path if path.is_file() else None
