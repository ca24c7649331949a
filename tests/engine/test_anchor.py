"""The keep-the-preview term: exact box averaging, striped gradient = autograd's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from impasto.engine import anchor
from impasto.engine.anchor import PreviewAnchor, area_matrix


@pytest.mark.parametrize(("size", "cells"), [(12, 4), (10, 3), (7, 7), (1000, 384)])
def test_area_matrix_rows_average_and_every_sample_counts_once(size, cells):
    matrix = area_matrix(size, cells)
    assert matrix.shape == (cells, size)
    torch.testing.assert_close(matrix.sum(1), torch.ones(cells, dtype=torch.float64))
    # each sample's weight over all cells is its share of a cell: nothing lost or doubled
    torch.testing.assert_close(matrix.sum(0), torch.full((size,), cells / size, dtype=torch.float64))


def test_an_integer_factor_is_average_pooling():
    image = torch.rand(1, 3, 24, 36, dtype=torch.float64)
    averaged = area_matrix(24, 8) @ image @ area_matrix(36, 12).T
    torch.testing.assert_close(averaged, F.avg_pool2d(image, 3))


def test_the_striped_gradient_is_autograds(monkeypatch):
    monkeypatch.setattr(anchor, "STRIPE_VALUES", 3 * 41 * 4)   # 4 rows a stripe, a short last one
    generator = torch.Generator().manual_seed(0)
    preview = torch.rand(1, 3, 7, 11, generator=generator, dtype=torch.float64)
    pixels = torch.rand(1, 3, 27, 41, generator=generator, dtype=torch.float64) * 255
    term = PreviewAnchor(preview, 27, 41, weight=0.3)
    leaf = pixels.clone().requires_grad_(True)
    expected = term.loss(leaf)
    expected.backward()
    grad = torch.zeros_like(pixels)
    assert term.loss_into(pixels, grad) == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-10, atol=1e-12)


def test_the_term_is_zero_for_the_preview_upsampled_by_whole_blocks():
    preview = torch.rand(1, 3, 5, 6, dtype=torch.float64)
    blocks = preview.repeat_interleave(4, -2).repeat_interleave(4, -1) * 255
    assert float(PreviewAnchor(preview, 20, 24, weight=1.0).loss(blocks)) == pytest.approx(0, abs=1e-20)
    assert float(PreviewAnchor(preview, 20, 24, weight=1.0).loss(blocks + 1)) == pytest.approx(1.0)
