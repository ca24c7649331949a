"""The style catalog: a style is a painting, a name and a tuned RenderParams preset.

Stored as readable files, one folder per style, so an artist can look, copy and back up:

    <catalog>/<name>/style.jpg      the painting (as given, re-encoded)
    <catalog>/<name>/preset.json    {"name": …, "title": …, "params": {…RenderParams fields…}}

The catalog folder is ``$IMPASTO_CATALOG_DIR``, else the user data dir's ``styles``. The
CLI (``impasto styles``, ``render --preset``, ``preview --catalog``) and the shop read it.

Below the artist's own styles lie the starter styles (``impasto.starter``: made by the
project at first use, so a fresh install has something to sell), unless
``IMPASTO_STARTER_STYLES=0``; an own style of the same name hides the starter one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from impasto import imaging
from impasto.engine.params import RenderParams
from impasto.errors import CatalogError, ImageError, ParamError

if TYPE_CHECKING:
    from impasto.starter import StarterSet

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PRESET_FILE = "preset.json"


def catalog_dir() -> Path:
    from impasto.config import Locations, load_settings

    return load_settings(Locations).resolved_catalog_dir()


@dataclass(frozen=True)
class Style:
    name: str
    title: str
    image_path: Path
    preset: dict          # the RenderParams fields the preset sets (validated)
    provenance: str = ""  # where the painting comes from, one line (the starter styles say)
    starter: bool = False

    def params(self, **overrides) -> RenderParams:
        """The preset's options, with ``overrides`` (e.g. flags given on the command line)."""
        return RenderParams.build(**{**self.preset, **overrides})

    def image(self) -> torch.Tensor:
        return imaging.load(self.image_path)


def starter_enabled() -> bool:
    from impasto.config import get_settings

    return get_settings().starter_styles


class Catalog:
    """The artist's styles in ``root``, over ``starter`` (default: the starter set when
    ``IMPASTO_STARTER_STYLES`` allows it and ``root`` is the default folder; none otherwise)."""

    def __init__(self, root: Path | str | None = None, *, starter: StarterSet | None | bool = None):
        self.root = Path(root) if root is not None else catalog_dir()
        if starter is None:
            starter = root is None and starter_enabled()
        if starter is True:
            from impasto.starter import StarterSet

            starter = StarterSet()
        self.starter: StarterSet | None = starter or None

    def own_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / PRESET_FILE).is_file())

    def names(self) -> list[str]:
        own = self.own_names()
        return sorted(set(own) | set(self.starter.names() if self.starter else ()))

    def get(self, name: str) -> Style:
        folder = self.root / _checked_name(name)
        if not (folder / PRESET_FILE).is_file():
            if self.starter is not None and name in self.starter.names():
                return _read(name, self.starter.folder(name))
            known = ", ".join(self.names()) or "none yet"
            raise CatalogError(f"no style {name!r} in the catalog {self.root} (styles: {known})")
        return _read(name, folder)

    def all(self) -> list[Style]:
        return [self.get(name) for name in self.names()]

    def add(self, name: str, image: Path | str, preset: dict, *, title: str | None = None,
            replace: bool = False) -> Style:
        """Check the painting and the preset, then store both (atomically, as a folder)."""
        folder = self.root / _checked_name(name)
        if folder.exists() and not replace:
            raise CatalogError(f"style {name!r} already exists (remove it first, or replace it)")
        RenderParams.build(**preset)
        picture = imaging.open_image(image)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}."))
        try:
            imaging.save(picture, staging / "style.png")
            record = {"name": name, "title": title or name, "image": "style.png", "params": preset}
            (staging / PRESET_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return self.get(name)

    def remove(self, name: str) -> None:
        folder = self.root / _checked_name(name)
        if not (folder / PRESET_FILE).is_file():
            if self.starter is not None and name in self.starter.names():
                raise CatalogError(f"{name!r} is a starter style: IMPASTO_STARTER_STYLES=0 turns them off")
            raise CatalogError(f"no style {name!r} in the catalog {self.root}")
        shutil.rmtree(folder)


def _read(name: str, folder: Path) -> Style:
    try:
        data = json.loads((folder / PRESET_FILE).read_text())
        preset, title, image_name = data["params"], data.get("title", name), data["image"]
        provenance, starter = str(data.get("provenance", "")), bool(data.get("starter", False))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"style {name!r}: unreadable {PRESET_FILE} ({exc})") from None
    RenderParams.build(**preset)  # a hand-edited preset fails here, with the field's name
    image_path = folder / image_name
    if not image_path.is_file():
        raise ImageError(f"style {name!r}: its image {image_path} is missing")
    return Style(name, title, image_path, preset, provenance, starter)


def _checked_name(name: str) -> str:
    if not NAME.match(name):
        raise ParamError(f"style name {name!r}: use lower-case letters, digits, '-' and '_' (max 64)")
    return name
