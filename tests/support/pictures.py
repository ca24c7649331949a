"""Synthetic test pictures for the engine's exactness tests (float64, seeded)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def textured_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A 0..1 float64 picture: smooth shapes plus grain, so every layer has structure."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=generator, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    grain = torch.rand(1, 3, height, width, generator=generator, dtype=torch.float64)
    return (0.8 * smooth + 0.2 * grain).clamp(0, 1)
