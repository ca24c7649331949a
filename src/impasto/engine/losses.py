"""Content, style (Gram) and total-variation losses, scaled as in neural-style.

Gram matrices are normalised by C·H·W (neural-style), not by the 4·N²·M² of Gatys 2015,
so style weights carry over from neural-style; content and style terms are mean squared
errors; TV is a sum over pixels in 0..255 units, as neural-style's TVLoss.
"""

from __future__ import annotations

import torch
from torch import nn


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of ``N×C×H×W`` features (summed over the batch), divided by C·H·W."""
    n, c, h, w = features.shape
    # bmm on views of whichever layout the features have: a reshape across the layout
    # (or einsum) would copy them — slower, and more memory at print size.
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        rows = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
        product = torch.bmm(rows.transpose(1, 2), rows)
    else:
        flat = features.reshape(n, c, h * w)
        product = torch.bmm(flat, flat.transpose(1, 2))
    return product.sum(0) / (c * h * w)


class _NormalizeGradient(torch.autograd.Function):
    """Identity forward; backward rescales the gradient to unit L1 norm times ``strength``.

    neural-style's ``-normalize_gradients``: the strength is applied after normalising,
    so every loss pushes equally hard per unit of weight. The weight still multiplies the
    reported loss value; normalising makes the gradient independent of that factor.
    """

    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / (grad.abs().sum() + 1e-8) * ctx.strength, None


class ContentLoss(nn.Module):
    """weight · mean((F − P)²), each position's term scaled by ``weights`` (1×1×H×W) if given:
    portrait mode holds the face closer to the photo than the rest."""

    def __init__(self, target: torch.Tensor, weight: float, normalize: bool = False,
                 weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("target", target.detach())
        self.register_buffer("weights", None if weights is None else weights.to(target))
        self.weight, self.normalize = weight, normalize

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            features = _NormalizeGradient.apply(features, self.weight)
        if self.weights is None:
            return self.weight * nn.functional.mse_loss(features, self.target)
        return self.weight * (self.weights * (features - self.target).pow(2)).mean()


def masked_gram(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The guided Gram of Gatys et al. 2017: Σ (m·F)(m·F)ᵀ / (C·Σm²), ``mask`` 1×1×H×W.

    Normalised by the mask's own mass, so a region's Gram is comparable with a whole
    style image's (and a mask of ones gives ``gram``)."""
    mass = mask.pow(2).sum() * features.shape[0]
    area = features.shape[-2] * features.shape[-1] * features.shape[0]
    return gram(features * mask) * (area / mass.clamp(min=1e-8))


class StyleLoss(nn.Module):
    """weight · mean((G − A)²); with ``masks`` (R×1×H×W) and R targets (R×C×C), the sum of
    that over regions, each with its guided Gram, region r's term times ``region_weights[r]``
    (default 1)."""

    def __init__(self, target_gram: torch.Tensor, weight: float, normalize: bool = False,
                 masks: torch.Tensor | None = None, region_weights: list[float] | None = None):
        super().__init__()
        self.register_buffer("target", target_gram.detach())
        self.register_buffer("masks", None if masks is None else masks.to(target_gram))
        self.weight, self.normalize = weight, normalize
        self.region_weights = region_weights or [1.0] * (0 if masks is None else len(masks))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            features = _NormalizeGradient.apply(features, self.weight)
        if self.masks is None:
            return self.weight * nn.functional.mse_loss(gram(features), self.target)
        targets = self.target if self.target.dim() == 3 else self.target.expand(len(self.masks), -1, -1)
        return self.weight * sum(w * nn.functional.mse_loss(masked_gram(features, mask[None]), target)
                                 for mask, target, w in zip(self.masks, targets, self.region_weights))


def tv_loss(image: torch.Tensor, weight: float) -> torch.Tensor:
    """Half the summed squared neighbour differences (neural-style's TVLoss gradient)."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return weight * 0.5 * (dx.pow(2).sum() + dy.pow(2).sum())
