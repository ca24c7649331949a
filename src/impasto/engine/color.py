"""Colour control: luminance-only transfer (``--original-colors``).

YCbCr is full-range BT.601 (as in JPEG), on 0..1 RGB tensors ``N×3×H×W``.
"""

from __future__ import annotations

import torch

_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114],
                              [-0.168736, -0.331264, 0.5],
                              [0.5, -0.418688, -0.081312]])
_CHROMA_OFFSET = torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    matrix = _RGB_TO_YCBCR.to(rgb)
    return torch.einsum("ij,njhw->nihw", matrix, rgb) + _CHROMA_OFFSET.to(rgb)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    matrix = torch.linalg.inv(_RGB_TO_YCBCR.double()).to(ycbcr)
    return torch.einsum("ij,njhw->nihw", matrix, ycbcr - _CHROMA_OFFSET.to(ycbcr))


def original_colors(content: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
    """The stylised image's luminance with the content's chroma (same size tensors)."""
    y = rgb_to_ycbcr(stylised)[:, :1]
    chroma = rgb_to_ycbcr(content)[:, 1:]
    return ycbcr_to_rgb(torch.cat([y, chroma], dim=1)).clamp(0, 1)


def _sym_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(1e-8) ** power) @ vectors.T


def match_colors(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Map ``image``'s RGB mean and covariance onto ``target``'s (Gatys et al. 2017).

    Uses the symmetric square root of the covariances (the "PCA" transfer), which keeps
    hues more natural than a Cholesky factor; works in float64 for a stable eigh.
    """
    def stats(x):
        flat = x.double().reshape(3, -1)
        mean = flat.mean(1, keepdim=True)
        centred = flat - mean
        return flat, mean, centred @ centred.T / flat.shape[1] + 1e-6 * torch.eye(3, dtype=torch.float64)

    flat, mean, cov = stats(image[0])
    _, target_mean, target_cov = stats(target[0])
    transform = _sym_power(target_cov, 0.5) @ _sym_power(cov, -0.5)
    mapped = transform @ (flat - mean) + target_mean
    return mapped.reshape(image.shape).to(image.dtype).clamp(0, 1)
