"""Print sizes: ``8x10in`` at 300 dpi → pixels, and the photo cropped to the print's shape.

Policy: the print takes the photo's orientation (a landscape photo makes a landscape
print) and the photo is centre-cropped to the print's aspect ratio — nothing is padded,
so the whole sheet is painted.
"""

from __future__ import annotations

import re

import torch

from impasto.errors import ParamError

CM_PER_INCH = 2.54
_PRINT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[x×]\s*(\d+(?:\.\d+)?)\s*(in|cm)\s*$", re.IGNORECASE)


def parse_print_size(text: str) -> tuple[float, float]:
    """``"8x10in"`` / ``"20x25cm"`` → (short, long) side in inches."""
    match = _PRINT.match(text)
    if not match:
        raise ParamError(f"print size {text!r}: use WIDTHxHEIGHT with in or cm, e.g. 8x10in or 20x25cm")
    a, b, unit = float(match[1]), float(match[2]), match[3].lower()
    if a <= 0 or b <= 0:
        raise ParamError(f"print size {text!r}: sides must be positive")
    scale = 1 / CM_PER_INCH if unit == "cm" else 1.0
    return min(a, b) * scale, max(a, b) * scale


def print_pixels(text: str, dpi: int, content_height: int, content_width: int) -> tuple[int, int]:
    """(height, width) in pixels of a print of ``text`` at ``dpi``, oriented like the photo."""
    short, long = parse_print_size(text)
    short_px, long_px = round(short * dpi), round(long * dpi)
    if content_width > content_height:
        return short_px, long_px
    return long_px, short_px


def crop_to_aspect(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre crop of ``image`` (…×H×W) with the aspect ratio ``width / height``."""
    h, w = image.shape[-2:]
    if w * height > h * width:          # too wide: trim the sides
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return image[..., :, left:left + new_w]
    new_h = max(1, round(w * height / width))
    top = (h - new_h) // 2
    return image[..., top:top + new_h, :]
