"""Keep a print the preview it continues: a pixel term at the preview's resolution.

A print resumed from a preview (``--resume``) refines it through larger scales; each of
them lays finer strokes, and left alone those also move the preview's shapes and tones
(the customer's chosen picture drifts: SSIM 0.80 at the preview's size after the shop's
three scales). ``PreviewAnchor`` adds ``keep_preview × mean((A(x) − preview)²)``, where
``A`` averages the image over each preview pixel's area (an exact box filter, in 0..255
units as the other terms): the print stays the preview at the preview's size, while
everything finer than a preview pixel — the print's detail — is free.

``A`` is separable, ``rows @ x @ colsᵀ`` with two small averaging matrices, so the term
and its gradient are computed in stripes of rows without image-sized temporaries (the
tiled objective's way; a whole-image render differentiates ``loss`` directly).
"""

from __future__ import annotations

import torch

STRIPE_VALUES = 1 << 22   # pixels·channels per stripe


def area_matrix(size: int, cells: int) -> torch.Tensor:
    """``cells``×``size`` float64 matrix: row i averages the samples under cell i, cells
    of equal width ``size / cells`` (a sample split by a cell edge counts by its share)."""
    edges = torch.arange(cells + 1, dtype=torch.float64) * (size / cells)
    first, last = edges[:-1, None], edges[1:, None]
    position = torch.arange(size, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(last, position + 1) - torch.maximum(first, position)).clamp(min=0)
    return overlap / (size / cells)


class PreviewAnchor:
    """The keep-the-preview term for ``height``×``width`` images; ``preview`` 1×3×h×w, 0..1."""

    def __init__(self, preview: torch.Tensor, height: int, width: int, weight: float,
                 like: torch.Tensor | None = None):
        like = preview if like is None else like
        self.target = (preview * 255.0).to(like)
        self.rows = area_matrix(height, preview.shape[-2]).to(like)
        self.cols = area_matrix(width, preview.shape[-1]).to(like)
        self.weight = weight

    def loss(self, pixels: torch.Tensor) -> torch.Tensor:
        """The term of ``pixels`` (0..255), differentiable."""
        averaged = self.rows @ (pixels @ self.cols.T)
        return self.weight * (averaged - self.target).pow(2).mean()

    def loss_into(self, pixels: torch.Tensor, grad: torch.Tensor) -> float:
        """The term of ``pixels``; its gradient added to ``grad``, stripe by stripe."""
        stripes = self._stripes(pixels)
        averaged = sum(self.rows[:, rows] @ (pixels[..., rows, :] @ self.cols.T) for rows in stripes)
        residual = averaged - self.target
        scale = 2 * self.weight / residual.numel()
        back = residual @ self.cols * scale            # 1×3×h×W: the gradient before the rows
        for rows in stripes:
            grad[..., rows, :] += self.rows[:, rows].T @ back
        return float(self.weight * residual.pow(2).mean())

    def _stripes(self, pixels: torch.Tensor) -> list[slice]:
        height, width = pixels.shape[-2:]
        step = max(1, STRIPE_VALUES // max(1, pixels.shape[-3] * width))
        return [slice(top, min(height, top + step)) for top in range(0, height, step)]
