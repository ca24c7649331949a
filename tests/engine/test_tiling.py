"""Tiled evaluation: the exact whole-image loss and gradient, tile geometry, memory budget.

The gradient tests run the real VGG-16 weights in float64 against ``render.build_objective``
on the whole image, with shallow layers so a 128 px image still cuts into several tiles.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

from impasto.engine.features import VGGFeatures, build_extractor
from impasto.engine.losses import gram
from impasto.engine.params import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, RenderParams
from impasto.engine.tiling import (
    TiledObjective,
    build_tiled_objective,
    estimate_tile_bytes,
    estimate_window_bytes,
    extractor_geometry,
    largest_window,
    model_geometry,
    plan_tiles,
    tile_shape,
    tile_shape_for_budget,
    tile_size_for_budget,
    tiled_features,
    tiled_grams,
)
from impasto.engine.weights import model_spec
from impasto.errors import ParamError
from support.pictures import textured_image

render_module = importlib.import_module("impasto.engine.scale")  # engine.render is the function

CONTENT_LAYERS = ["relu2_2"]
STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1"]
LAYERS = [*CONTENT_LAYERS, *STYLE_LAYERS]


@pytest.fixture(scope="module")
def extractor(impasto_cache_dir) -> VGGFeatures:
    return build_extractor("vgg16", LAYERS).double()


_image = textured_image


def _params(**options) -> RenderParams:
    return RenderParams(content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, device="cpu", **options)


def _untiled(extractor, content, styles, params, pixels):
    objective = render_module.build_objective(extractor, content, styles, params)
    leaf = pixels.clone().requires_grad_(True)
    total, parts = objective(leaf)
    total.backward()
    return float(total.detach()), parts, leaf.grad


# ---- the gradient of the whole image --------------------------------------------------------

@pytest.mark.parametrize(("size", "tile_size", "options"), [
    ((96, 128), 48, {}),
    # off the alignment and the tile size, two styles blended, weighted layers, no TV
    ((90, 125), 32, {"style_blend_weights": [1.0, 3.0], "style_layer_weights": [1.0, 2.0, 0.5],
                     "tv_weight": 0.0}),
    # each loss's gradient L1-normalised over the whole image, not per tile
    ((96, 128), 40, {"normalize_gradients": True, "content_weight": 2.0}),
    # rectangular tiles, as a memory budget plans them
    ((96, 128), (64, 40), {}),
])
def test_tiled_gradient_equals_the_untiled_gradient(extractor, size, tile_size, options):
    content, pixels = _image(*size, seed=1), _image(*size, seed=2) * 255
    styles = [_image(80, 72, seed=3), _image(64, 100, seed=4)][: 2 if "style_blend_weights" in options else 1]
    params = _params(**options)
    loss, parts, grad = _untiled(extractor, content, styles, params, pixels)

    tiled = build_tiled_objective(extractor, content, styles, params, tile_size=tile_size)
    assert len(tiled.tiles(*size)) >= 4
    tiled_loss, tiled_parts, tiled_grad = tiled.loss_and_grad(pixels)

    difference = float((tiled_grad - grad).abs().max() / grad.abs().max())
    assert difference < 1e-4, f"max relative gradient difference {difference:.3g}"
    assert tiled_loss == pytest.approx(loss, rel=1e-8)
    for name in ("content", "style", "tv", "total"):
        assert tiled_parts[name] == pytest.approx(parts[name], rel=1e-8, abs=1e-12)


def test_with_a_preview_to_keep_the_tiled_gradient_is_still_the_untiled_one(extractor):
    from impasto.engine.anchor import PreviewAnchor

    content, pixels = _image(90, 125, seed=1), _image(90, 125, seed=2) * 255
    styles, params = [_image(80, 72, seed=3)], _params()
    term = PreviewAnchor(_image(34, 47, seed=4), 90, 125, weight=0.5)
    whole = render_module.build_objective(extractor, content, styles, params, anchor=term)
    leaf = pixels.clone().requires_grad_(True)
    total, parts = whole(leaf)
    total.backward()
    tiled = build_tiled_objective(extractor, content, styles, params, tile_size=40, anchor=term)
    tiled_loss, tiled_parts, tiled_grad = tiled.loss_and_grad(pixels)
    assert parts["preview"] > 0 and tiled_parts["preview"] == pytest.approx(parts["preview"], rel=1e-10)
    assert tiled_loss == pytest.approx(float(total.detach()), rel=1e-8)
    difference = float((tiled_grad - leaf.grad).abs().max() / leaf.grad.abs().max())
    assert difference < 1e-4, f"max relative gradient difference {difference:.3g}"


def test_a_halo_short_of_the_receptive_field_would_show(extractor):
    """The comparison above can fail: with a 4 px halo relu3_1 (reach 10 px) sees seams."""
    content, pixels = _image(64, 64, seed=5), _image(64, 64, seed=6) * 255
    params = _params()
    _, _, grad = _untiled(extractor, content, [content], params, pixels)
    tiled = build_tiled_objective(extractor, content, [content], params, tile_size=32)
    tiled.geometry = dataclasses.replace(tiled.geometry, halo=4)
    _, _, short = tiled.loss_and_grad(pixels)
    assert float((short - grad).abs().max() / grad.abs().max()) > 1e-3


def test_called_like_objective_it_hands_backward_the_tiled_gradient(extractor):
    content, pixels = _image(64, 64, seed=7), _image(64, 64, seed=8) * 255
    params = _params(num_iterations=4)
    tiled = build_tiled_objective(extractor, content, [content.flip(-1)], params, tile_size=32)
    leaf = pixels.clone().requires_grad_(True)
    total, parts = tiled(leaf)
    total.backward()
    loss, _, grad = tiled.loss_and_grad(pixels)
    assert float(total.detach()) == pytest.approx(loss, rel=1e-12) and parts["total"] == pytest.approx(loss)
    torch.testing.assert_close(leaf.grad, grad, rtol=1e-12, atol=0)

    # and the render loop's L-BFGS takes the same steps with it as with the untiled objective
    untiled = render_module.build_objective(extractor, content, [content.flip(-1)], params)
    ours = render_module._optimize(tiled, pixels, params, None)
    theirs = render_module._optimize(untiled, pixels, params, None)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_tiled_targets_equal_whole_image_features_and_grams(extractor):
    pixels = _image(90, 125, seed=9) * 255
    with torch.no_grad():
        whole = extractor(pixels)
    feats = tiled_features(extractor, pixels, LAYERS, tile_size=32)
    grams = tiled_grams(extractor, pixels, LAYERS, tile_size=32)
    for name in LAYERS:
        torch.testing.assert_close(feats[name], whole[name], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(grams[name], gram(whole[name]), rtol=1e-12, atol=1e-9)


# ---- geometry -------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "layers", "radius", "align", "halo"), [
    ("vgg16", ["conv1_1"], 1, 1, 1),
    ("vgg16", ["relu1_1"], 1, 1, 1),
    ("vgg16", ["pool1"], 2, 2, 2),               # a pool moves the stride, not the reach
    ("vgg16", LAYERS, 10, 4, 12),                # 1+1 + 2+2 + 4
    ("vgg16", ["pool2", "relu1_2"], 6, 4, 8),
    ("vgg16", DEFAULT_CONTENT_LAYERS, 34, 8, 40),   # 2 + 4 + 3·4 + 2·8
    ("vgg16", [*DEFAULT_STYLE_LAYERS, *DEFAULT_CONTENT_LAYERS], 58, 16, 64),  # … + 3·8 + 16
    ("vgg19", ["relu5_1"], 70, 16, 80),          # four convs in blocks 3 and 4
])
def test_halo_and_alignment_by_hand(model, layers, radius, align, halo):
    geometry = model_geometry(model, layers)
    assert (geometry.radius, geometry.align, geometry.halo) == (radius, align, halo)


def test_strides_per_layer_and_the_extractor_agrees(random_state):
    geometry = model_geometry("vgg16", LAYERS)
    assert geometry.strides == {"relu2_2": 2, "relu1_1": 1, "relu2_1": 2, "relu3_1": 4}
    built = VGGFeatures(model_spec("vgg16"), random_state("vgg16"), LAYERS)
    assert extractor_geometry(built, LAYERS) == geometry
    with pytest.raises(ParamError, match="relu4_1"):
        extractor_geometry(built, ["relu4_1"])


@pytest.mark.parametrize(("height", "width", "tile_size", "layers"), [
    (96, 128, 48, LAYERS),
    (90, 125, 32, LAYERS),
    (130, 61, 50, LAYERS),                      # tile size off the alignment: rounded down
    (3, 200, 8, LAYERS),                        # thinner than one alignment unit
    (517, 300, 128, [*DEFAULT_STYLE_LAYERS, *DEFAULT_CONTENT_LAYERS]),
    (33, 47, 1, ["relu1_1"]),
    (130, 61, (72, 24), LAYERS),                # rectangular
])
def test_inner_regions_partition_the_image_at_every_stride(height, width, tile_size, layers):
    geometry = model_geometry("vgg16", layers)
    tiles = plan_tiles(height, width, tile_size, geometry)
    steps = [side // geometry.align * geometry.align for side in tile_shape(tile_size)]
    for stride in (1, *sorted(set(geometry.strides.values()))):
        cover = torch.zeros(height // stride, width // stride, dtype=torch.int32)
        for tile in tiles:
            cover[tile.at(stride)] += 1
        assert bool((cover == 1).all()), f"stride {stride}: each position in exactly one tile"
    for tile in tiles:
        for span, length, step in ((tile.rows, height, steps[0]), (tile.cols, width, steps[1])):
            assert 0 < span.stop - span.start <= step
            assert span.start % geometry.align == 0 and span.lo % geometry.align == 0
            assert (span.stop % geometry.align == 0) or span.stop == length
            assert span.lo == max(0, span.start - geometry.halo)
            assert span.hi == min(length, span.stop + geometry.halo)


def test_tiles_are_balanced_rather_than_leaving_a_sliver():
    geometry = model_geometry("vgg16", LAYERS)
    widths = [t.cols.stop - t.cols.start for t in plan_tiles(4, 130, 64, geometry)]
    assert widths == [44, 44, 42]


def test_bad_tile_sizes_and_images_are_param_errors(extractor):
    geometry = model_geometry("vgg16", LAYERS)
    with pytest.raises(ParamError, match="alignment"):
        plan_tiles(64, 64, 3, geometry)
    with pytest.raises(ParamError, match="no positions"):
        tiled_grams(extractor, torch.zeros(1, 3, 3, 64, dtype=torch.float64), LAYERS, tile_size=32)
    content = _image(64, 64, seed=10)
    tiled = build_tiled_objective(extractor, content, [content], _params(), tile_size=32)
    with pytest.raises(ParamError, match="does not match"):
        tiled.loss_and_grad(torch.zeros(1, 3, 64, 72, dtype=torch.float64))
    with pytest.raises(ParamError, match="style image"):
        build_tiled_objective(extractor, content, [], _params(), tile_size=32)
    with pytest.raises(ParamError, match="same layers"):
        TiledObjective(extractor, {}, {"relu1_1": torch.eye(64)}, content_weight=1.0, style_weights={},
                       tv_weight=0.0, tile_size=32)


# ---- memory budget --------------------------------------------------------------------------

@pytest.mark.parametrize("layers", [LAYERS, [*DEFAULT_STYLE_LAYERS, *DEFAULT_CONTENT_LAYERS]])
def test_tile_size_for_budget_is_the_largest_aligned_tile_that_fits(layers):
    align = model_geometry("vgg16", layers).align
    budgets = [2**26, 2**27, 3 * 2**27, 2**29, 2**31, 2**33]
    sizes = [tile_size_for_budget(b, layers) for b in budgets]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    for budget, size in zip(budgets, sizes):
        assert size % align == 0
        assert estimate_tile_bytes(size, layers) <= budget < estimate_tile_bytes(size + align, layers)
    assert tile_size_for_budget(2**29, layers, bytes_per_value=2) > tile_size_for_budget(2**29, layers)


@pytest.mark.parametrize(("height", "width"), [(1024, 1024), (2048, 2048), (4096, 4096), (3000, 4500)])
def test_a_budget_tile_may_be_a_rectangle_that_covers_the_image_with_less_compute(height, width):
    """A square tile is cut down to share the image evenly (976 px fits a budget, a 1024²
    image then takes four 512² tiles); a rectangle can use the budget the square leaves."""
    layers = [*DEFAULT_STYLE_LAYERS, *DEFAULT_CONTENT_LAYERS]
    geometry = model_geometry("vgg16", layers)
    budget = 3 * 2**30

    def compute(tile_size) -> int:   # pixels run through VGG, halos included
        return sum((t.rows.hi - t.rows.lo) * (t.cols.hi - t.cols.lo)
                   for t in plan_tiles(height, width, tile_size, geometry))

    shape = tile_shape_for_budget(height, width, budget, layers)
    assert estimate_window_bytes(*largest_window(height, width, shape, geometry), layers) <= budget
    assert all(side % geometry.align == 0 for side in shape)
    square = tile_size_for_budget(budget, layers)
    assert compute(shape) <= compute(square)
    if (height, width) == (2048, 2048):   # squares: 9 of 688² (interior-sized); border tiles: 4 of 1024²
        assert len(plan_tiles(height, width, square, geometry)) == 9
        assert len(plan_tiles(height, width, shape, geometry)) == 4
    capped = tile_shape_for_budget(height, width, budget, layers, max_side=256)
    assert max(capped) <= 256


@pytest.mark.parametrize(("height", "width", "tile_size"), [
    (2048, 2048, 1024), (2048, 2048, (1024, 688)), (4096, 4096, (832, 688)), (1000, 700, 512),
    (600, 900, (600, 304)), (96, 128, 40), (4096, 4096, 4096), (1000, 1000, 48), (4000, 3000, (1024, 688))])
def test_largest_window_is_the_plans_largest(height, width, tile_size):
    geometry = model_geometry("vgg16", [*DEFAULT_STYLE_LAYERS, *DEFAULT_CONTENT_LAYERS])
    tiles = plan_tiles(height, width, tile_size, geometry)
    rows = max(t.rows.hi - t.rows.lo for t in tiles)
    cols = max(t.cols.hi - t.cols.lo for t in tiles)
    assert largest_window(height, width, tile_size, geometry) == (rows, cols)


def test_a_budget_below_one_tile_or_not_positive_is_a_param_error():
    deep = [*DEFAULT_STYLE_LAYERS, *DEFAULT_CONTENT_LAYERS]
    with pytest.raises(ParamError, match=r"MiB") as info:
        tile_size_for_budget(estimate_tile_bytes(16, deep) - 1, deep)
    assert "\n" not in str(info.value)
    with pytest.raises(ParamError, match=r"MiB"):
        tile_shape_for_budget(2048, 2048, estimate_tile_bytes(16, deep) - 1, deep)
    for budget in (0, -1, float("nan")):
        with pytest.raises(ParamError, match="positive"):
            tile_size_for_budget(budget, deep)


def test_the_estimate_covers_the_activations_backward_keeps(random_state):
    """Bytes autograd saves for one tile's backward, weights aside, stay within the estimate."""
    built = VGGFeatures(model_spec("vgg16"), random_state("vgg16"), LAYERS)
    weights = {p.untyped_storage().data_ptr() for p in built.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    for tile_size in (16, 48):
        saved.clear()
        side = tile_size + 2 * model_geometry("vgg16", LAYERS).halo
        pixels = torch.rand(1, 3, side, side, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            built(pixels * 255)
        assert 0 < sum(saved.values()) <= estimate_tile_bytes(tile_size, LAYERS)


def test_render_with_tile_size_follows_the_whole_image_render():
    # The gradients are equal (tests above); over L-BFGS steps float32 rounding in a
    # different summation order grows a little, so the images agree closely, not exactly.
    from impasto.engine import render

    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 72, 96), torch.rand(1, 3, 64, 64)
    options = {"image_size": 96, "num_iterations": 4, "content_layers": ["relu2_2"],
                   "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}
    whole = render(content, [style], RenderParams(**options))
    tiled = render(content, [style], RenderParams(**options, tile_size=32))
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 0.02


# --- memory at print size (issue 3) ---------------------------------------------------------

def test_striped_tv_is_the_whole_image_tv(monkeypatch):
    from impasto.engine.tiling import objective as tiling
    from impasto.engine.losses import tv_loss

    monkeypatch.setattr(tiling, "TV_STRIPE_VALUES", 3 * 37 * 5)   # 5 rows a stripe, a short last one
    pixels = _image(23, 37, seed=21) * 255
    leaf = pixels.clone().requires_grad_(True)
    expected = tv_loss(leaf, 0.01)
    expected.backward()
    grad = torch.zeros_like(pixels)
    value = tiling._tv_into(pixels, 0.01, grad)
    assert value == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-12, atol=1e-12)


def test_float16_content_targets_change_the_loss_and_gradient_little(extractor):
    # the budget's float16 relu targets: float32 renders, as prints run
    content, style = _image(96, 96, seed=22).float(), _image(64, 64, seed=23).float()
    pixels = _image(96, 96, seed=24).float() * 255
    params = _params()
    extractor32 = build_extractor("vgg16", LAYERS)
    full = build_tiled_objective(extractor32, content, [style], params, tile_size=48)
    half = build_tiled_objective(extractor32, content, [style], params, tile_size=48, target_dtype=torch.float16)
    assert all(t.dtype == torch.float16 for t in half.content_targets.values())
    (_, parts, grad), (_, parts16, grad16) = full.loss_and_grad(pixels), half.loss_and_grad(pixels)
    assert parts16["content"] == pytest.approx(parts["content"], rel=1e-3)
    assert float((grad16 - grad).norm() / grad.norm()) < 1e-3
