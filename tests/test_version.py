"""The version is typed once, in pyproject.toml: the package and ``impasto --version`` read it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from impasto import _version

ROOT = Path(__file__).resolve().parents[1]


def test_impasto_version_in_a_real_process_prints_the_metadata_version():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "impasto", "--version"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"impasto {importlib.metadata.version('impasto')}"


def test_an_uninstalled_tree_reads_pyproject(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with open(ROOT / "pyproject.toml", "rb") as file:
        expected = tomllib.load(file)["project"]["version"]
    assert _version.version() == expected


def test_no_pyproject_or_another_project_is_unknown(tmp_path):
    assert _version.source_version(tmp_path / "missing.toml") == _version.UNKNOWN
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "something-else"\nversion = "9.9"\n')
    assert _version.source_version(other) == _version.UNKNOWN
    other.write_text("not toml [")
    assert _version.source_version(other) == _version.UNKNOWN


def test_the_version_is_typed_in_pyproject_only():
    typed = [path for path in (ROOT / "src").rglob("*.py")
             if "__version__ = \"" in path.read_text() or "__version__ = '" in path.read_text()]
    assert typed == []
