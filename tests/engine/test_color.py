"""YCbCr conversion and luminance-only transfer against PIL's (JPEG's) YCbCr."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from impasto.engine.color import original_colors, rgb_to_ycbcr, ycbcr_to_rgb


def _random_image(seed: int = 0, size=(1, 3, 24, 32)) -> torch.Tensor:
    return torch.rand(size, generator=torch.Generator().manual_seed(seed))


def test_rgb_to_ycbcr_matches_pil():
    rgb = (_random_image() * 255).round() / 255
    ours = rgb_to_ycbcr(rgb).squeeze(0).permute(1, 2, 0).numpy() * 255
    array = (rgb.squeeze(0).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    pil = np.asarray(Image.fromarray(array, "RGB").convert("YCbCr"), dtype=np.float64)
    assert np.abs(ours - pil).max() <= 1.0   # PIL rounds to integers


def test_known_colours():
    # Pure red, white and black in full-range BT.601.
    rgb = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]).view(1, 3, 1, 3)
    ycc = rgb_to_ycbcr(rgb).view(3, 3).T
    assert torch.allclose(ycc[0], torch.tensor([0.299, 0.5 - 0.168736, 1.0]), atol=1e-6)
    assert torch.allclose(ycc[1], torch.tensor([1.0, 0.5, 0.5]), atol=1e-6)
    assert torch.allclose(ycc[2], torch.tensor([0.0, 0.5, 0.5]), atol=1e-6)


def test_ycbcr_round_trip():
    rgb = _random_image(1)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)


def test_original_colors_takes_luminance_from_one_and_chroma_from_the_other():
    # Mid-range luminance and mild chroma, so the mix stays in gamut (no clamping).
    content = _random_image(2) * 0.2 + 0.4
    stylised = _random_image(3) * 0.5 + 0.25
    mixed = original_colors(content, stylised)
    assert mixed.shape == content.shape
    ours, theirs, photo = rgb_to_ycbcr(mixed), rgb_to_ycbcr(stylised), rgb_to_ycbcr(content)
    assert torch.allclose(ours[:, 0], theirs[:, 0], atol=1e-5)
    assert torch.allclose(ours[:, 1:], photo[:, 1:], atol=1e-5)


def test_original_colors_stays_in_range():
    mixed = original_colors(_random_image(4), _random_image(5))
    assert mixed.min() >= 0 and mixed.max() <= 1
