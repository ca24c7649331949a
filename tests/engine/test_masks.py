"""Portrait mode and region styles: masks, their per-layer sizes, guided Grams, the exact
tiled gradient with guidance, and renders that keep faces and put each style in its region."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from impasto import imaging
from impasto.engine import render
from impasto.engine.features import VGGFeatures, build_extractor
from impasto.engine.losses import gram, masked_gram
from impasto.engine.masks import (
    CONTENT_BOOST,
    Face,
    Guide,
    at_size,
    detect_faces,
    face_mask,
    guide_for,
    region_masks,
)
from impasto.engine.params import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, RenderParams
from impasto.engine.tiling import build_tiled_objective
from impasto.engine.weights import model_spec
from impasto.errors import ParamError

render_module = importlib.import_module("impasto.engine.render")


# ---- masks ------------------------------------------------------------------------------------

def test_face_mask_is_one_on_the_face_soft_at_its_edge_and_zero_away():
    mask = face_mask(200, 160, [Face(50, 40, 60, 60, eyes=((60, 55, 14, 10),))])
    assert mask.shape == (1, 1, 200, 160)
    assert mask[0, 0, 75, 80] == 1.0                    # the face's middle
    assert mask[0, 0, 62, 67] > 1.5                     # an eye weighs (nearly) double
    assert mask[0, 0, 5, 5] == 0 and mask[0, 0, 195, 150] == 0
    edge = mask[0, 0, 73, 35:60]                        # from the left, into the face: a ramp
    assert (edge.diff() >= 0).all() and edge[0] == 0 and 0 < float(edge[11]) < 1 and edge[-1] == 1


def test_masks_reach_each_layer_area_averaged():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :24] = 1                                # 24 of 64 columns
    small = at_size(mask, 8, 8)                           # stride 8: columns 0-2 full, 3 = 0/8 ...
    assert small[0, 0, 0, :3].tolist() == [1, 1, 1] and small[0, 0, 0, 3] == 0
    assert float(small.mean()) == pytest.approx(24 / 64)
    odd = at_size(mask, 5, 5)                             # non-integer ratio: about the mass
    assert float(odd.mean()) == pytest.approx(24 / 64, abs=0.01)

    guide = Guide(likeness=mask, strength=0.5)
    weights = guide.content_weights(8, 8)
    assert weights[0, 0, 0, 0] == pytest.approx(1 + CONTENT_BOOST * 0.5)
    assert weights[0, 0, 0, 7] == 1
    assert guide.style_masks(8, 8).eq(1).all()          # up to 0.5 the face keeps all the style
    styles = Guide(likeness=mask, strength=0.75).style_masks(8, 8)
    assert styles.shape == (1, 1, 8, 8)
    assert styles[0, 0, 0, 0] == pytest.approx(0.5) and styles[0, 0, 0, 7] == 1
    assert Guide(likeness=mask, strength=1.0).style_masks(8, 8)[0, 0, 0, 0] == 0


def test_region_masks_pick_levels_and_need_every_region():
    labels = torch.zeros(1, 3, 4, 6)
    labels[..., 2:] = 0.52                                # mid grey (JPEG-ish, not exactly 0.5)
    labels[..., 4:] = 0.97
    regions = region_masks(labels, 3)
    assert regions.shape == (1, 3, 4, 6)
    assert regions.sum(1).eq(1).all()
    assert regions[0, :, 0, 0].tolist() == [1, 0, 0] and regions[0, :, 0, 3].tolist() == [0, 1, 0]
    assert regions[0, :, 0, 5].tolist() == [0, 0, 1]
    with pytest.raises(ParamError, match="no pixels for style 2"):
        region_masks(torch.zeros(1, 1, 4, 4).index_fill(-1, torch.tensor([3]), 1.0), 3)
    with pytest.raises(ParamError, match="at least two styles"):
        region_masks(labels, 1)


def test_masked_gram_is_the_gram_of_the_region():
    features = torch.randn(1, 8, 6, 10, dtype=torch.float64)
    ones = torch.ones(1, 1, 6, 10, dtype=torch.float64)
    torch.testing.assert_close(masked_gram(features, ones), gram(features))
    left = torch.zeros_like(ones)
    left[..., :4] = 1
    torch.testing.assert_close(masked_gram(features, left), gram(features[..., :4].contiguous()))
    # channels_last features (the extractor's layout) give the same
    torch.testing.assert_close(masked_gram(features.to(memory_format=torch.channels_last), left),
                               gram(features[..., :4].contiguous()))


# ---- faces ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "centre"), [("grace_hopper.jpg", (265, 215)), ("astronaut.png", (223, 113))])
def test_faces_found_in_the_shared_portraits(shared_images, name, centre):
    photo = imaging.load(shared_images / "content" / name)
    faces = detect_faces(photo)
    assert len(faces) == 1
    face = faces[0]
    assert face.x < centre[0] < face.x + face.w and face.y < centre[1] < face.y + face.h
    assert face.eyes, "at least one eye found inside the face"
    assert detect_faces(imaging.load(shared_images / "content" / "tubingen.jpg")) == []


def test_guide_follows_params(shared_images, tmp_path):
    photo = imaging.load(shared_images / "content" / "astronaut.png")
    assert guide_for(photo, RenderParams(portrait="off"), 1) is None
    assert guide_for(photo, RenderParams(), 1).likeness is not None          # portrait mode by default
    auto = guide_for(photo, RenderParams(portrait="auto", portrait_strength=0.3), 1)
    assert auto.likeness.shape == (1, 1, 512, 512) and auto.regions is None and auto.strength == 0.3
    painted = torch.zeros(1, 3, 100, 100)
    painted[..., 10:30, 10:30] = 1
    imaging.save(painted, tmp_path / "face.png")
    user = guide_for(photo, RenderParams(portrait="auto", face_mask=tmp_path / "face.png"), 1)
    assert float(user.likeness[0, 0, 100, 100]) == 1 and float(user.likeness[0, 0, 300, 300]) == 0
    assert guide_for(photo, RenderParams(portrait="off", face_mask=tmp_path / "face.png"), 1) is None


# ---- the tiled objective stays exact with guidance -------------------------------------------

def _image(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=generator, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(1, 3, height, width, generator=generator, dtype=torch.float64))


@pytest.mark.parametrize("normalize", [False, True])
def test_guided_tiled_gradient_equals_the_untiled_gradient(impasto_cache_dir, normalize):
    layers = {"content_layers": ["relu2_2"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}
    extractor = build_extractor("vgg16", ["relu2_2", "relu1_1", "relu2_1", "relu3_1"]).double()
    params = RenderParams(device="cpu", normalize_gradients=normalize, **layers)
    content, pixels = _image(96, 128, 1), _image(96, 128, 2) * 255
    styles = [_image(80, 72, 3), _image(64, 100, 4)]
    labels = torch.zeros(1, 1, 96, 128)
    labels[..., 50:] = 1
    guide = Guide(likeness=face_mask(96, 128, [Face(30, 20, 40, 40, eyes=((38, 30, 10, 8),))]),
                  regions=region_masks(labels, 2), strength=0.7)

    objective = render_module.build_objective(extractor, content, styles, params, guide)
    leaf = pixels.clone().requires_grad_(True)
    total, parts = objective(leaf)
    total.backward()

    tiled = build_tiled_objective(extractor, content, styles, params, tile_size=48, guide=guide)
    assert len(tiled.tiles(96, 128)) >= 4
    tiled_loss, tiled_parts, tiled_grad = tiled.loss_and_grad(pixels)
    difference = float((tiled_grad - leaf.grad).abs().max() / leaf.grad.abs().max())
    assert difference < 1e-4, f"max relative gradient difference {difference:.3g}"
    assert tiled_loss == pytest.approx(float(total.detach()), rel=1e-8)
    assert tiled_parts["style"] == pytest.approx(parts["style"], rel=1e-8)


# ---- renders ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def extractor(vgg16_state) -> VGGFeatures:
    return VGGFeatures(model_spec("vgg16"), vgg16_state, [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS])


def test_region_styles_put_each_style_in_its_region(shared_images, extractor):
    photo = imaging.load(shared_images / "content" / "tubingen.jpg")
    blue = imaging.load(shared_images / "style" / "starry_night.jpg")     # mean B − R ≈ +0.15
    orange = imaging.load(shared_images / "style" / "the_scream.jpg")     # mean B − R ≈ −0.23
    labels = torch.zeros(1, 1, 48, 64)
    labels[..., 32:] = 1                                   # left half: first style; right: second
    params = RenderParams(image_size=64, num_iterations=40, start_size=0, device="cpu")
    out = render(photo, [blue, orange], params, extractor=extractor, region_mask=labels)

    def blueness(region: torch.Tensor) -> float:
        return float(region[:, 2].mean() - region[:, 0].mean())

    left, right = blueness(out[..., 4:24]), blueness(out[..., 40:60])   # away from the boundary
    assert left > 0.08 and right < -0.08, (left, right)
    swapped = render(photo, [orange, blue], params, extractor=extractor, region_mask=labels)
    assert blueness(swapped[..., 4:24]) < -0.08 and blueness(swapped[..., 40:60]) > 0.08


def test_portrait_mode_keeps_the_face_closer_to_the_photo(shared_images, extractor):
    photo = imaging.load(shared_images / "content" / "grace_hopper.jpg")
    style = imaging.load(shared_images / "style" / "the_scream.jpg")
    base = {"image_size": 96, "num_iterations": 30, "start_size": 0, "device": "cpu"}
    plain = render(photo, [style], RenderParams(portrait="off", **base), extractor=extractor)
    kept = render(photo, [style], RenderParams(portrait="auto", portrait_strength=0.8, **base), extractor=extractor)
    face = detect_faces(photo)[0]
    scale = 96 / max(photo.shape[-2:])
    box = (..., slice(round(face.y * scale), round((face.y + face.h) * scale)),
           slice(round(face.x * scale), round((face.x + face.w) * scale)))
    small = F.interpolate(photo, size=plain.shape[-2:], mode="area")
    error_plain = float((plain[box] - small[box]).abs().mean())
    error_kept = float((kept[box] - small[box]).abs().mean())
    assert error_kept < 0.7 * error_plain, (error_kept, error_plain)
    # ... while the background is painted as much as without portrait mode
    corner = (..., slice(0, 20), slice(0, 20))
    assert float((kept[corner] - small[corner]).abs().mean()) > 0.8 * float((plain[corner] - small[corner]).abs().mean())


def test_bad_mask_options_are_clear(extractor):
    photo, style = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40)
    with pytest.raises(ParamError, match="blend"):
        render(photo, [style, style], RenderParams(mask="m.png", style_blend_weights=[1, 2], image_size=40),
               extractor=extractor)
    with pytest.raises(ParamError, match="at least two styles"):
        render(photo, [style], RenderParams(image_size=40, start_size=0), extractor=extractor,
               region_mask=torch.zeros(1, 1, 40, 40))
    with pytest.raises(ParamError, match="portrait-strength"):
        RenderParams.build(portrait_strength=1.5)


def test_a_print_looks_for_faces_once_on_the_whole_photo(shared_images, extractor, monkeypatch):
    """tubingen has no face; its square crop at 768 px shows the Haar cascade two. The
    print is cropped from the photo after the search: the crop is not searched again, so a
    preview and its print are guided alike."""
    masks_module = importlib.import_module("impasto.engine.masks")
    searched = []
    real = masks_module.detect_faces
    monkeypatch.setattr(masks_module, "detect_faces", lambda image: searched.append(image.shape) or real(image))
    photo = imaging.load(shared_images / "content" / "tubingen.jpg")
    style = imaging.load(shared_images / "style" / "starry_night.jpg")
    params = RenderParams(print_size="1x1in", dpi=64, num_iterations=2, start_size=0)
    out = render(photo, [style], params, extractor=extractor)
    assert out.shape[-2:] == (64, 64)
    assert searched == [photo.shape]


def test_the_memory_plan_counts_the_guide_masks():
    from impasto.engine.memory import guide_bytes, plan_memory
    from impasto.engine.tiling import tile_shape

    params = RenderParams(memory_budget="4GB", num_iterations=50)
    face = Guide(likeness=torch.zeros(1, 1, 64, 64))
    # at 4096²: the face plane (64 MB), relu1_1's mask (64 MB), the deeper layers' (~21 MB)
    assert 140 * 2**20 < guide_bytes(params, face, 4096, 4096) < 160 * 2**20
    assert guide_bytes(params, Guide(), 4096, 4096) == 0 and guide_bytes(params, None, 4096, 4096) == 0
    two_regions = Guide(regions=torch.zeros(1, 2, 64, 64))
    assert guide_bytes(params, two_regions, 4096, 4096) > guide_bytes(params, face, 4096, 4096)
    plain, guided = (plan_memory(params, 4096, 4096, guide=g) for g in (None, face))
    area = [rows * cols for rows, cols in (tile_shape(p.tile_size) for p in (plain, guided))]
    assert area[1] < area[0] or guided.lbfgs_history < plain.lbfgs_history
