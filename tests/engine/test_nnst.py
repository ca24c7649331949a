"""The neural-neighbour style loss: the hypercolumn grid, the chunked search against a brute
force one, the whole-image term and its tiled twin in float64, region-restricted matches,
and a tiny render that lowers it."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from impasto.engine import nnst
from impasto.engine.features import build_extractor
from impasto.engine.masks import Guide
from impasto.engine.params import RenderParams
from impasto.engine.tiling import build_tiled_objective
from impasto.errors import ParamError
from support.pictures import textured_image

scale_module = importlib.import_module("impasto.engine.scale")

CONTENT_LAYERS = ["relu2_2"]
STYLE_LAYERS = ["relu1_1", "relu2_1"]


@pytest.fixture(scope="module")
def extractor(impasto_cache_dir):
    return build_extractor("vgg16", [*CONTENT_LAYERS, *STYLE_LAYERS, *nnst.NNST_LAYERS]).double()


_image = textured_image


def _params(**options) -> RenderParams:
    return RenderParams(content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, device="cpu",
                        style_loss="nnst", portrait="off", **options)


def test_the_grid_is_a_quarter_where_relu4_has_positions_and_each_layer_weighs_alike(extractor):
    feats = extractor(_image(72, 100, seed=1) * 255)
    scales = nnst.layer_scales(feats)
    grid = nnst.hypercolumns(feats, scales)
    assert grid.shape == (1, 2688, 18, 24) and nnst.grid_shape(72, 100) == (18, 24)
    # measured per layer: each block's mean norm is the same (1/√10), whatever the weights' scale
    start = 0
    for name in nnst.NNST_LAYERS:
        channels = feats[name].shape[1]
        block = grid[:, start : start + channels]
        start += channels
        assert float(block.norm(dim=1).mean()) == pytest.approx(10 ** -0.5, rel=0.35), name


def test_the_chunked_search_is_the_brute_force_nearest_in_its_projection(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(300, 40, generator=generator, dtype=torch.float64)
    queries = torch.randn(77, 40, generator=generator, dtype=torch.float64)
    search = nnst.Search(bank, None, seed=3)
    keys = F.normalize((bank - bank.mean(0)) @ search.projection, dim=1)
    brute = (F.normalize((queries - bank.mean(0)) @ search.projection, dim=1) @ keys.T).argmax(1)
    monkeypatch.setattr(nnst, "SEARCH_VALUES", 300 * 10)   # 10 queries a chunk
    assert torch.equal(search(queries), brute)
    # region styles: a query only matches rows of its own style
    labels = torch.arange(300) % 3
    restricted = nnst.Search(bank, labels, seed=3)(queries, torch.arange(77) % 3)
    assert torch.equal(labels[restricted], torch.arange(77) % 3)


def test_queries_are_centred_by_their_own_mean_so_a_shift_of_them_all_matches_alike():
    # a photo differs from a painting everywhere by about the same offset; centred by the
    # bank's mean that offset decided every match (issue 18: a black sky at 512 px)
    generator = torch.Generator().manual_seed(1)
    bank = torch.randn(300, 40, generator=generator, dtype=torch.float64)
    queries = torch.randn(77, 40, generator=generator, dtype=torch.float64)
    shifted = queries + 4 * torch.randn(40, generator=generator, dtype=torch.float64)
    search = nnst.Search(bank, None, seed=3)
    found = search(queries, centre=queries.mean(0))
    assert torch.equal(search(shifted, centre=shifted.mean(0)), found)
    assert not torch.equal(search(shifted), found)          # the bank's mean: the offset decides


def test_the_loss_is_uncentred_cosine():
    generator = torch.Generator().manual_seed(2)
    h = torch.rand(5, 12, generator=generator, dtype=torch.float64)
    assert torch.allclose(nnst.cosine_terms(h, 3 * h), torch.zeros(5, dtype=torch.float64))
    other = torch.rand(5, 12, generator=generator, dtype=torch.float64)
    expected = 1 - (h * other).sum(1) / (h.norm(dim=1) * other.norm(dim=1))
    assert torch.allclose(nnst.cosine_terms(h, other), expected)


def test_the_loss_is_zero_where_each_position_has_its_own_target(extractor):
    style = _image(64, 64, seed=2)
    params = _params()
    term = nnst.build_nnst_term(extractor, style, [style], params)
    feats = extractor(style * 255)
    assert len(term.bank) == 4 * 16 * 16       # four rotations of a 16×16 grid, under BANK_SIZE
    h = nnst.rows_of(nnst.hypercolumns(feats, term.scales))
    term.index = torch.arange(len(h))          # the unrotated style comes first in the bank
    unit = params.style_weight * nnst.NNST_SCALE
    assert abs(float(term(feats))) < 1e-12 * unit
    term.index = None
    assert float(term(feats)) < 1e-6 * unit    # the search finds them (or rows as near)
    other = extractor(_image(64, 64, seed=9) * 255)
    term.index = None
    assert float(term(other)) > 1e-2 * unit


@pytest.mark.parametrize("options", [{}, {"portrait": True}, {"style_gram": 0.3, "regions": True}])
def test_tiled_nnst_is_the_whole_image_nnst(extractor, options):
    content, pixels = _image(96, 128, seed=1), _image(96, 128, seed=2) * 255
    styles = [_image(64, 80, seed=3), _image(48, 64, seed=4)][: 2 if "regions" in options else 1]
    guide = None
    if options.get("portrait"):
        likeness = torch.zeros(1, 1, 96, 128, dtype=torch.float64)
        likeness[..., 24:72, 40:88] = 1
        guide = Guide(likeness=likeness, strength=0.8, face_width=48)
    if options.get("regions"):
        labels = torch.zeros(1, 2, 96, 128, dtype=torch.float64)
        labels[:, 0, :, :64], labels[:, 1, :, 64:] = 1, 1
        guide = Guide(regions=labels)
    params = _params(**{k: v for k, v in options.items() if k == "style_gram"})
    whole = scale_module.build_objective(extractor, content, styles, params, guide)
    leaf = pixels.clone().requires_grad_(True)
    total, parts = whole(leaf)
    total.backward()
    tiled = build_tiled_objective(extractor, content, styles, params, tile_size=48, guide=guide)
    assert len(tiled.tiles(96, 128)) >= 4
    tiled_loss, tiled_parts, tiled_grad = tiled.loss_and_grad(pixels)
    assert torch.equal(tiled.terms[0].index.reshape(-1), whole.style_terms[0].index)
    assert tiled_parts["style"] == pytest.approx(parts["style"], rel=1e-9)
    assert float((tiled_grad - leaf.grad).abs().max() / leaf.grad.abs().max()) < 1e-9
    if options.get("regions"):
        rows = whole.style_terms[0].search.labels[whole.style_terms[0].index].view(24, 32)
        assert bool((rows[:, :16] == 0).all()) and bool((rows[:, 16:] == 1).all())


def test_a_tiny_nnst_render_lowers_its_loss(impasto_cache_dir):
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 48, 48, generator=generator)
    style = F.interpolate(torch.rand(1, 3, 6, 6, generator=generator), size=(48, 48), mode="nearest")
    params = RenderParams(image_size=48, num_iterations=10, start_size=0, style_loss="nnst", device="cpu",
                          portrait="off", style_layers=["relu1_1"], content_weight=1.0)
    seen = []
    from impasto.engine import render

    image = render(content, [style], params, callback=lambda p: seen.append(p.losses["style"]))
    assert image.shape == (1, 3, 48, 48) and len(seen) == 10
    assert seen[-1] < 0.7 * seen[0]


def test_nnst_refuses_normalized_gradients():
    with pytest.raises(ParamError, match="normalize-gradients"):
        nnst.check_params(_params(normalize_gradients=True))
