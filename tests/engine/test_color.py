"""YCbCr conversion and luminance-only transfer against PIL's (JPEG's) YCbCr."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from impasto.engine.color import match_colors, original_colors, rgb_to_ycbcr, ycbcr_to_rgb


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


def _stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = image[0].reshape(3, -1).double()
    return flat.mean(1), torch.cov(flat, correction=0)


def test_match_colors_moves_mean_and_covariance_to_the_target():
    # A dull bluish image recoloured with a warm, contrasty target (both inside 0..1, so
    # the final clamp does not bite).
    image = 0.3 + 0.2 * _random_image(1, (1, 3, 40, 50)) * torch.tensor([0.5, 0.8, 1.0]).view(1, 3, 1, 1)
    target = 0.25 + 0.5 * _random_image(2, (1, 3, 30, 30)) ** 1.5 * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)
    mean, cov = _stats(match_colors(image, target))
    want_mean, want_cov = _stats(target)
    assert torch.allclose(mean, want_mean, rtol=0.01)
    assert (cov - want_cov).abs().max() <= 0.01 * want_cov.abs().max()
    before_mean, _ = _stats(image)
    assert (before_mean - want_mean).abs().max() > 0.05  # the check above is not vacuous


def test_color_match_render_keeps_the_photo_palette():
    from impasto.engine import RenderParams, render

    content = torch.zeros(1, 3, 64, 64)
    content[:, 2] = 0.8                      # a blue photo
    content += 0.1 * _random_image(3, (1, 3, 64, 64))
    style = 0.1 * _random_image(4, (1, 3, 64, 64))
    style[:, 0] += 0.85                      # a red painting
    options = {"image_size": 64, "num_iterations": 20, "init": "image", "style_weight": 1000.0}
    plain = render(content, [style], RenderParams(**options))
    matched = render(content, [style], RenderParams(**options, color_match=True))
    photo_mean = _stats(content)[0]
    assert (_stats(matched)[0] - photo_mean).norm() < 0.5 * (_stats(plain)[0] - photo_mean).norm()
