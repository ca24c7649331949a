"""The version, typed once: ``pyproject.toml``'s, read from the installed package's metadata.

A source tree that was never installed (``PYTHONPATH=src``) has no metadata of its own; it
reads ``pyproject.toml`` beside ``src/`` instead, and says ``0+unknown`` when that is absent.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

DIST = "impasto"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
UNKNOWN = "0+unknown"


def version() -> str:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return source_version()


def source_version(pyproject: Path = PYPROJECT) -> str:
    try:
        with open(pyproject, "rb") as file:
            project = tomllib.load(file).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return UNKNOWN
    return project.get("version", UNKNOWN) if project.get("name") == DIST else UNKNOWN
