"""Portrait mode and region styles: masks, their per-layer sizes, guided Grams, the exact
tiled gradient with guidance, and renders that keep faces and put each style in its region."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impasto import imaging
from impasto.engine import render
from impasto.engine.faces import EYES, MOUTH, Face, detect_faces
from impasto.engine.features import VGGFeatures, build_extractor
from impasto.engine.losses import gram, masked_gram
from impasto.engine.masks import (
    DETAIL_LAYERS,
    FACE_BOOST,
    FACE_STYLE,
    FEATURE_BOOST,
    Guide,
    at_size,
    face_mask,
    face_planes,
    guide_for,
    region_masks,
)
from impasto.engine.params import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, RenderParams
from impasto.engine.tiling import build_tiled_objective
from impasto.engine.weights import model_spec
from impasto.errors import ParamError

render_module = importlib.import_module("impasto.engine.scale")


# ---- masks ------------------------------------------------------------------------------------

def test_haar_face_mask_is_one_on_the_face_soft_at_its_edge_and_zero_away():
    """Without landmarks (dlib absent, or a Haar-only box): an ellipse, its eyes as features."""
    skin, features = face_planes(200, 160, [Face(50, 40, 60, 60, eyes=((60, 55, 14, 10),))])
    mask = face_mask(200, 160, [Face(50, 40, 60, 60, eyes=((60, 55, 14, 10),))])
    assert torch.equal(mask, skin) and mask.shape == (1, 1, 200, 160)
    assert mask[0, 0, 75, 80] == 1.0                    # the face's middle
    assert features[0, 0, 60, 67] > 0.9 and features[0, 0, 75, 80] == 0   # the eye, not the cheek
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
    assert weights[0, 0, 0, 0] == pytest.approx(1 + FACE_BOOST * 0.5)
    assert weights[0, 0, 0, 7] == 1
    lines = Guide(likeness=mask, features=mask, strength=0.5).content_weights(8, 8)
    assert lines[0, 0, 0, 0] == pytest.approx(1 + (FACE_BOOST + FEATURE_BOOST) * 0.5)
    assert Guide(likeness=mask, features=mask, strength=0.0).content_weights(8, 8).eq(1).all()
    whole, face = guide.style_masks(8, 8)            # the whole image's Gram, then the face's own
    assert whole.eq(1).all(), "up to 0.5 the face keeps all the whole image's style"
    torch.testing.assert_close(face[None], small)
    assert guide.style_region_weights() == [1.0, FACE_STYLE]
    styles = Guide(likeness=mask, strength=0.75).style_masks(8, 8)
    assert styles.shape == (2, 1, 8, 8)
    assert styles[0, 0, 0, 0] == pytest.approx(0.5) and styles[0, 0, 0, 7] == 1
    assert Guide(likeness=mask, strength=0.75).style_region_weights() == [1.0, FACE_STYLE * 0.5]
    assert Guide(likeness=mask, strength=1.0).style_masks(8, 8)[0, 0, 0, 0] == 0
    assert Guide(likeness=mask, strength=1.0).style_region_weights()[1] == 0


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

def synthetic_face(cx: float = 100, cy: float = 110, size: float = 80) -> Face:
    """68 landmarks in dlib's layout, drawn from circles: a U-shaped jaw, arched brows, a nose
    line, elliptic eyes and mouth."""
    def arc(n, x0, y0, rx, ry, start, stop):
        angles = np.linspace(start, stop, n)
        return [(x0 + rx * np.cos(a), y0 + ry * np.sin(a)) for a in angles]
    half = size / 2
    points = [(cx - (x - cx), y) for x, y in arc(17, cx, cy - 0.1 * size, half, 0.6 * size, 0, np.pi)]  # jaw
    for side in (-1, 1):                                                          # brows
        points += arc(5, cx + side * 0.22 * size, cy - 0.2 * size, 0.14 * size, 0.05 * size, -2.6, -0.5)[::side]
    points += [(cx, cy - 0.15 * size + k * 0.08 * size) for k in range(4)]         # nose bridge
    points += [(cx + k * 0.05 * size, cy + 0.12 * size) for k in range(-2, 3)]     # nose base
    for side in (-1, 1):                                                          # eyes
        points += arc(6, cx + side * 0.22 * size, cy - 0.08 * size, 0.09 * size, 0.035 * size, np.pi, 3 * np.pi)[:6]
    points += arc(12, cx, cy + 0.28 * size, 0.18 * size, 0.07 * size, np.pi, 3 * np.pi)   # mouth, outer
    points += arc(8, cx, cy + 0.28 * size, 0.12 * size, 0.03 * size, np.pi, 3 * np.pi)    # mouth, inner
    assert len(points) == 68
    return Face(round(cx - half), round(cy - 0.3 * size), round(size), round(size), landmarks=tuple(points))


def test_landmark_masks_land_on_the_features():
    face = synthetic_face()
    skin, features = face_planes(220, 200, [face])
    skin, features = skin[0, 0], features[0, 0]
    for eye in EYES:
        x, y = face.points(eye).mean(0)
        assert features[round(y), round(x)] > 0.9, "an eye is a feature"
    mx, my = face.points(MOUTH).mean(0)
    assert features[round(my), round(mx)] > 0.9, "the mouth is a feature"
    cx, cy = (face.points([36])[0] + face.points([48])[0]) / 2      # between eye and mouth corners
    cheek = (round(cy), round(cx))
    assert features[cheek] < 0.2 and skin[cheek] > 0.9, "a cheek is skin, free to take the strokes"
    assert skin[5, 5] == 0 and features[5, 5] == 0 and skin[215, 195] == 0
    assert float(features.max()) <= 1 and float(skin.max()) <= 1


@pytest.mark.parametrize("name", ["grace_hopper.jpg", "astronaut.png", "obama.jpg", "biden.jpg"])
def test_faces_found_with_landmarks_on_the_shared_portraits(shared_images, name):
    """One face each, 68 landmarks, and the features' mask on the eyes that OpenCV's eye
    cascade (another detector) finds there."""
    import cv2

    photo = imaging.load(shared_images / "content" / name)
    faces = detect_faces(photo)
    assert len(faces) == 1
    face = faces[0]
    assert len(face.landmarks) == 68
    eye_y = face.points(EYES[0]).mean(0)[1]
    assert face.y < eye_y < face.y + face.h / 2 + face.h / 8
    _, features = face_planes(*photo.shape[-2:], faces)
    gray = (photo[0].mul(255).round().byte().permute(1, 2, 0).numpy() @ np.array([0.299, 0.587, 0.114]))
    region = np.ascontiguousarray(gray[face.y:face.y + face.h // 2 + face.h // 8, face.x:face.x + face.w]).astype(np.uint8)
    cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_eye.xml")
    eyes = cascade.detectMultiScale(region, scaleFactor=1.1, minNeighbors=5,
                                    minSize=(max(8, face.w // 10),) * 2, maxSize=(face.w // 3,) * 2)
    assert len(eyes) >= 1
    for ex, ey, ew, eh in eyes:
        assert features[0, 0, face.y + ey + eh // 2, face.x + ex + ew // 2] > 0.5


def test_no_face_in_a_landscape(shared_images):
    assert detect_faces(imaging.load(shared_images / "content" / "tubingen.jpg")) == []


def test_two_faces_in_one_photo_both_get_masks(shared_images):
    left = imaging.load(shared_images / "content" / "astronaut.png")
    right = F.interpolate(imaging.load(shared_images / "content" / "grace_hopper.jpg"), size=(512, 437), mode="area")
    pair = torch.cat([left, right], dim=-1)                      # 512 × 949: two sitters
    faces = detect_faces(pair)
    assert len(faces) == 2 and all(len(f.landmarks) == 68 for f in faces)
    guide = guide_for(pair, RenderParams(), 1)
    for face in faces:
        x, y = face.points(EYES[1]).mean(0)
        assert guide.features[0, 0, round(y), round(x)] > 0.9
        nose = face.points([30])[0]
        assert guide.likeness[0, 0, round(nose[1]), round(nose[0])] > 0.9


@pytest.mark.parametrize("turn", [1, 2])
def test_a_turned_face_is_found_or_falls_back_without_a_crash(shared_images, extractor, turn):
    """A face on its side or upside down: dlib's frontal detector misses it; whatever the
    fallbacks find, the render runs (the whole image rendered alike when nothing is)."""
    photo = torch.rot90(imaging.load(shared_images / "content" / "grace_hopper.jpg"), turn, dims=(-2, -1))
    faces = detect_faces(photo)
    guide = guide_for(photo, RenderParams(), 1)
    assert (guide is None) == (not faces)
    out = render(photo, [torch.rand(1, 3, 64, 64)], RenderParams(image_size=64, num_iterations=3, start_size=0,
                                                                 device="cpu"), extractor=extractor)
    assert out.shape[-2:] == (64, 55) if turn % 2 == 0 else out.shape[-2:] == (55, 64)
    assert torch.isfinite(out).all()


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


@pytest.mark.parametrize(("normalize", "with_regions"), [(False, True), (True, True), (False, False), (True, False)])
def test_guided_tiled_gradient_equals_the_untiled_gradient(impasto_cache_dir, normalize, with_regions):
    """Regions with a face, or a face alone: then the face's own Gram term (region weights) and
    a small face's features held at the detail layer too."""
    layers = {"content_layers": ["relu2_2"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}
    extractor = build_extractor("vgg16", ["relu2_2", "relu1_1", "relu2_1", "relu3_1"]).double()
    params = RenderParams(device="cpu", normalize_gradients=normalize, **layers)
    content, pixels = _image(96, 128, 1), _image(96, 128, 2) * 255
    styles = [_image(80, 72, 3), _image(64, 100, 4)]
    labels = torch.zeros(1, 1, 96, 128)
    labels[..., 50:] = 1
    skin, features = face_planes(96, 128, [Face(30, 20, 40, 40, eyes=((38, 30, 10, 8),))])
    guide = Guide(likeness=skin, features=features, regions=region_masks(labels, 2) if with_regions else None,
                  strength=0.7 if with_regions else 0.4, face_width=40)
    if not with_regions:
        assert guide.detail_layer(extractor.wanted) == "relu2_1" and guide.style_mask_count() == 2

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


def _face_style(extractor, image: torch.Tensor, photo: torch.Tensor, style: torch.Tensor, box) -> float:
    """How far the face crop moved from the photo's towards the painting, in the engine's own
    Gram statistics (relu1_1…relu3_1): 0 = the photo's face, 1 = the painting's statistics.
    (The portrait judge, shared/tools/likeness.py, measures the same with another network.)"""
    def grams(x: torch.Tensor) -> torch.Tensor:
        feats = extractor(x * 255)
        return torch.cat([gram(feats[name]).flatten() / gram(feats[name]).norm()
                          for name in ("relu1_1", "relu2_1", "relu3_1")])
    with torch.no_grad():
        painted, original, target = grams(image[box]), grams(photo[box]), grams(style)
    return 1 - float((painted - target).norm() / (original - target).norm())


def test_portrait_mode_paints_the_face_and_holds_its_features(shared_images, extractor):
    """The default portrait mode moves the face's statistics towards the painting (most of
    the way that --portrait off does) while its features' lines stay nearer the photo's than
    with --portrait off; strength 1 keeps the face closest to the photo."""
    photo = imaging.load(shared_images / "content" / "grace_hopper.jpg")
    style = imaging.load(shared_images / "style" / "the_scream.jpg")
    base = {"image_size": 128, "num_iterations": 40, "start_size": 0, "device": "cpu"}
    renders = {name: render(photo, [style], RenderParams(**base, **options), extractor=extractor)
               for name, options in {"off": {"portrait": "off"}, "auto": {},
                                     "firm": {"portrait_strength": 1.0}}.items()}
    small = F.interpolate(photo, size=renders["off"].shape[-2:], mode="area")
    face = detect_faces(photo)[0]
    scale = small.shape[-1] / photo.shape[-1]
    box = (..., slice(round(face.y * scale), round((face.y + face.h) * scale)),
           slice(round(face.x * scale), round((face.x + face.w) * scale)))
    style_small = F.interpolate(style, size=(128, 128), mode="area")
    painted = {name: _face_style(extractor, image, small, style_small, box) for name, image in renders.items()}
    assert painted["auto"] > 0.5 * painted["off"] > 0, painted
    assert painted["auto"] > painted["firm"] + 0.05, painted
    _, features = face_planes(*photo.shape[-2:], [face])
    lines = at_size(features, *small.shape[-2:])[0, 0] > 0.5
    structure = {name: _line_structure(image, small, lines) for name, image in renders.items()}
    assert structure["auto"] > structure["off"] + 0.15, structure
    assert structure["firm"] > structure["auto"], structure


def _line_structure(image: torch.Tensor, photo: torch.Tensor, lines: torch.Tensor) -> float:
    """Correlation of the luminance of ``image`` and ``photo`` on the features' lines: the
    structure of eyes, brows, nose and mouth, whatever the palette."""
    weights = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    a, b = ((x[0] * weights).sum(0)[lines] for x in (image, photo))
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_no_face_renders_as_portrait_off(shared_images, extractor):
    photo = imaging.load(shared_images / "content" / "tubingen.jpg")
    style = imaging.load(shared_images / "style" / "starry_night.jpg")
    base = {"image_size": 64, "num_iterations": 10, "start_size": 0, "device": "cpu"}
    auto = render(photo, [style], RenderParams(**base), extractor=extractor)
    off = render(photo, [style], RenderParams(portrait="off", **base), extractor=extractor)
    assert torch.equal(auto, off)


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
    # at 4096²: the face plane (64 MB), two masks per style layer — the whole image's and
    # the face's own Gram — relu1_1's (2 × 64 MB) and the deeper layers' (2 × ~21 MB)
    assert 225 * 2**20 < guide_bytes(params, face, 4096, 4096) < 245 * 2**20
    assert guide_bytes(params, Guide(), 4096, 4096) == 0 and guide_bytes(params, None, 4096, 4096) == 0
    three_regions = Guide(regions=torch.zeros(1, 3, 64, 64))
    assert guide_bytes(params, three_regions, 4096, 4096) > guide_bytes(params, face, 4096, 4096)
    # a small face held at a shallow layer too: its float16 target and weights count
    small = Guide(likeness=torch.zeros(1, 1, 64, 64), features=torch.zeros(1, 1, 64, 64), face_width=100)
    detail = small.detail_layer([name for name, _ in DETAIL_LAYERS])
    assert detail == "relu3_1"     # a 100 px face: 12 positions across at relu4_2, 25 at relu3_1
    # relu3_1's target at 4096² in float16 (256 × 1024² × 2 B = 512 MiB) and its weights (4 MiB)
    extra = guide_bytes(params, small, 4096, 4096) - guide_bytes(params, face, 4096, 4096)
    assert 512 * 2**20 < extra - 64 * 2**20 < 520 * 2**20    # (and the features plane, 64 MiB)
    plain, guided = (plan_memory(params, 4096, 4096, guide=g) for g in (None, face))
    area = [rows * cols for rows, cols in (tile_shape(p.tile_size) for p in (plain, guided))]
    assert area[1] < area[0] or guided.lbfgs_history < plain.lbfgs_history


def test_the_engine_never_loads_the_judges_face_recognition_net():
    """dlib's face-recognition network (same package as the landmarks) judges portraits
    (shared/tools/likeness.py): optimising it would game the judge."""
    from pathlib import Path

    import impasto

    sources = Path(impasto.__file__).parent.rglob("*.py")
    for path in sources:
        text = path.read_text()
        for name in ("face_recognition_model_v1", "dlib_face_recognition_resnet", "face_recognition_model_location"):
            assert name not in text, f"{path} mentions {name}"
