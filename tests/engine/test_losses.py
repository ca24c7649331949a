"""Gram, content, style and TV losses against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impasto.engine.losses import ContentLoss, StyleLoss, gram, tv_loss


def _features(shape, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gram_loops(features: np.ndarray) -> np.ndarray:
    """Σ over batch and positions of F[c]·F[d], divided by C·H·W (neural-style's scaling)."""
    n, c, h, w = features.shape
    out = np.zeros((c, c))
    for i in range(c):
        for j in range(c):
            total = 0.0
            for b in range(n):
                for y in range(h):
                    for x in range(w):
                        total += features[b, i, y, x] * features[b, j, y, x]
            out[i, j] = total / (c * h * w)
    return out


@pytest.mark.parametrize("shape", [(1, 3, 2, 4), (1, 5, 3, 3), (2, 2, 3, 2)])
def test_gram_matches_explicit_loops(shape):
    feats = _features(shape)
    np.testing.assert_allclose(gram(feats).numpy(), _gram_loops(feats.numpy()), rtol=1e-12, atol=1e-12)


def test_gram_of_a_known_tensor():
    # Two channels over four positions: a = (1, 2, 0, -1), b = (0, 1, 1, 1); C·H·W = 2·2·2 = 8.
    feats = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]], [[0.0, 1.0], [1.0, 1.0]]]])
    expected = torch.tensor([[1 + 4 + 0 + 1, 0 + 2 + 0 - 1], [0 + 2 + 0 - 1, 0 + 1 + 1 + 1]]) / 8.0
    assert torch.allclose(gram(feats), expected)


def test_gram_is_normalised_by_channels_times_pixels():
    # Doubling the spatial size with the same statistics leaves the Gram unchanged;
    # an unnormalised (or N²M²-normalised) Gram would change by a factor 2 (or 1/2).
    feats = _features((1, 4, 3, 5))
    tiled = torch.cat([feats, feats], dim=-1)
    assert torch.allclose(gram(tiled), gram(feats))


def test_content_loss_is_weighted_mse():
    feats, target = _features((1, 3, 4, 5), 1), _features((1, 3, 4, 5), 2)
    loss = ContentLoss(target, weight=7.5)(feats)
    expected = 7.5 * np.mean((feats.numpy() - target.numpy()) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_style_loss_is_weighted_mse_of_grams():
    feats, other = _features((1, 4, 3, 3), 3), _features((1, 4, 5, 2), 4)
    target = torch.from_numpy(_gram_loops(other.numpy()))
    loss = StyleLoss(target, weight=12.0)(feats)
    expected = 12.0 * np.mean((_gram_loops(feats.numpy()) - target.numpy()) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_style_loss_is_zero_for_the_target_image_only():
    feats = _features((1, 4, 3, 3), 5)
    loss = StyleLoss(gram(feats), weight=1.0)
    assert loss(feats).item() == 0.0
    assert loss(feats * 1.1).item() > 0.0


def test_tv_loss_on_a_known_image():
    image = torch.tensor([[[[0.0, 1.0, 3.0],
                            [2.0, 2.0, 2.0]]]])
    # Horizontal differences: (1, 2) and (0, 0) → 1 + 4; vertical: (2, 1, -1) → 4 + 1 + 1.
    assert tv_loss(image, 1.0).item() == pytest.approx(0.5 * (5 + 6))
    assert tv_loss(image, 3.0).item() == pytest.approx(3.0 * 0.5 * 11)


def test_tv_loss_matches_loops_over_channels():
    image = _features((1, 3, 4, 5), 6)
    img = image.numpy()
    total = 0.0
    for c in range(3):
        for y in range(4):
            for x in range(5):
                if x + 1 < 5:
                    total += (img[0, c, y, x + 1] - img[0, c, y, x]) ** 2
                if y + 1 < 4:
                    total += (img[0, c, y + 1, x] - img[0, c, y, x]) ** 2
    assert tv_loss(image, 0.25).item() == pytest.approx(0.25 * 0.5 * total, rel=1e-12)


def test_tv_loss_of_a_flat_image_is_zero():
    assert tv_loss(torch.full((1, 3, 6, 6), 128.0), 1.0).item() == 0.0


@pytest.mark.parametrize("weight", [0.5, 100.0])
@pytest.mark.parametrize("kind", ["content", "style"])
def test_normalize_gradients_gives_l1_norm_equal_to_weight(kind, weight):
    feats = _features((1, 4, 3, 3), 7)
    target = _features((1, 4, 3, 3), 8)
    make = (lambda norm: ContentLoss(target, weight, norm)) if kind == "content" else \
           (lambda norm: StyleLoss(gram(target), weight, norm))

    plain_input = feats.clone().requires_grad_(True)
    plain_loss = make(False)(plain_input)
    plain_loss.backward()
    normed_input = feats.clone().requires_grad_(True)
    normed_loss = make(True)(normed_input)
    normed_loss.backward()

    assert normed_input.grad.abs().sum().item() == pytest.approx(weight, rel=1e-6)
    # Same direction as the plain gradient, and the reported loss value is unchanged.
    plain = plain_input.grad
    assert torch.allclose(normed_input.grad, plain / plain.abs().sum() * weight, rtol=1e-6, atol=1e-12)
    assert normed_loss.item() == pytest.approx(plain_loss.item(), rel=1e-12)
    assert plain.abs().sum().item() != pytest.approx(weight, rel=1e-3)  # so the check above means something
