"""The face pass: which faces get a canvas of their own, and that setting one back changes the
face and nothing outside its canvas."""

from __future__ import annotations

import pytest
import torch

from impasto.engine import RenderParams, render
from impasto.engine.face_pass import MARGIN_TALL, MARGIN_WIDE, MIN_ZOOM, face_boxes, pass_iterations, planned
from impasto.engine.masks import Guide
from impasto.engine.features import VGGFeatures
from impasto.engine.multiscale import output_size
from impasto.engine.params import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from impasto.engine.weights import model_spec


@pytest.fixture(scope="module")
def extractor(vgg16_state) -> VGGFeatures:
    return VGGFeatures(model_spec("vgg16"), vgg16_state, [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS])


def _mask(height: int, width: int, *rects) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width)
    for top, left, h, w in rects:
        mask[..., top:top + h, left:left + w] = 1
    return mask


def test_face_boxes_are_the_faces_with_a_margin_largest_first_inside_the_image():
    mask = _mask(100, 200, (10, 20, 12, 10), (40, 100, 30, 20), (90, 190, 20, 20))
    boxes = face_boxes(mask)
    assert [box.face_width for box in boxes] == [20, 10, 10]
    big = boxes[0]
    # the margins (1.6 × 20 across, 1.35 × 30 down) rounded outwards
    assert (MARGIN_WIDE, MARGIN_TALL) == (1.6, 1.35)
    assert (big.right - big.left, big.bottom - big.top) == (32, 42)
    assert (big.left + big.right) / 2 == 110 and (big.top + big.bottom) / 2 == 55   # centred on the face
    corner = [box for box in boxes if box.left >= 180][0]
    assert corner.bottom == 100 and corner.right == 200                           # clipped, not wrapped


def test_a_pass_for_faces_narrower_than_the_face_size_and_only_in_portrait_mode():
    guide = Guide(likeness=_mask(400, 400, (100, 180, 50, 40)))
    params = RenderParams(portrait_face_size=64)
    (small,) = planned(guide, params, (200, 200))          # the face is 20 px there: drawn 64 px wide
    assert small.face_size == 64 and max(small.canvas) > 64
    assert planned(guide, params, (400, 400))[0].face_size == 64               # 40 px: still narrower
    assert planned(guide, RenderParams(portrait_face_size=32), (400, 400)) == []   # wider already
    assert planned(guide, RenderParams(portrait_face_size=0), (200, 200)) == []
    assert planned(guide, params.model_copy(update={"portrait": "off"}), (200, 200)) == []
    regions = Guide(likeness=guide.likeness, regions=torch.ones(1, 2, 400, 400) / 2)
    assert planned(regions, params, (200, 200)) == []
    assert planned(None, params, (200, 200)) == []


def test_a_small_render_gets_a_small_canvas_or_none():
    """The canvas has at most the output's pixels: a face filling most of a thumbnail cannot
    be enlarged by MIN_ZOOM inside that, so it keeps the whole render's painting."""
    guide = Guide(likeness=_mask(100, 100, (20, 20, 60, 60)))
    assert planned(guide, RenderParams(portrait_face_size=256), (100, 100)) == []
    face = planned(Guide(likeness=_mask(100, 100, (40, 45, 12, 10))), RenderParams(portrait_face_size=256),
                   (100, 100))[0]
    height, width = face.canvas
    assert height * width <= 100 * 100 * 1.02 and face.face_size >= MIN_ZOOM * 10


def _photo() -> torch.Tensor:
    """A 96×96 picture with structure everywhere (so every pixel's gradient is non-zero)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 6, 96), torch.linspace(0, 6, 96), indexing="ij")
    return torch.stack([(ys.sin() + 1) / 2, (xs.cos() + 1) / 2, ((ys + xs).sin() + 1) / 2])[None]


def test_the_pass_repaints_the_face_and_leaves_the_rest_of_the_picture(extractor):
    photo, style = _photo(), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    face = _mask(96, 96, (40, 40, 16, 14))
    base = {"image_size": 96, "num_iterations": 6, "start_size": 0, "device": "cpu"}
    whole = render(photo, [style], RenderParams(**base, portrait_face_size=0), extractor=extractor, face_mask=face)
    seen = []
    params = RenderParams(**base, portrait_face_size=40, portrait_face_iterations=12)
    (planned_pass,) = planned(Guide(likeness=face), params, output_size(photo, 96))
    painted = render(photo, [style], params, extractor=extractor, face_mask=face, callback=seen.append)
    box = planned_pass.box
    outside = torch.ones(96, 96, dtype=torch.bool)
    outside[box.top:box.bottom, box.left:box.right] = False
    assert torch.equal(painted[..., outside], whole[..., outside])
    assert (painted[..., 46:50, 45:50] - whole[..., 46:50, 45:50]).abs().mean() > 1e-3   # the face changed
    assert seen[-1].iteration == seen[-1].total == 6 + 12           # the pass's own iterations, counted
    assert seen[-1].fraction == 1.0 and seen[-1].image().shape == painted.shape   # the whole picture shown


def test_the_pass_takes_two_thirds_of_the_iterations_unless_told():
    assert pass_iterations(RenderParams(num_iterations=120)) == 80
    assert pass_iterations(RenderParams(num_iterations=6)) == 10          # at least 10 by default
    assert pass_iterations(RenderParams(num_iterations=120, portrait_face_iterations=7)) == 7


def test_a_bfloat16_render_paints_its_face_in_float32(monkeypatch, impasto_cache_dir):
    import impasto.engine.face_pass as face_pass
    from impasto.engine.features import build_extractor

    params = RenderParams(image_size=96, num_iterations=2, start_size=0, device="cpu", precision="bfloat16",
                          portrait_face_size=40)
    extractor = build_extractor("vgg16", [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], precision="bfloat16")
    seen = []
    real = face_pass.render_scale

    def spy(*args, **kwargs):
        seen.append((kwargs["extractor"].compute_dtype, args[2].precision))
        return real(*args, **kwargs)

    monkeypatch.setattr(face_pass, "render_scale", spy)
    face = _mask(96, 96, (40, 40, 16, 14))
    render(_photo(), [torch.rand(1, 3, 64, 64)], params, extractor=extractor, face_mask=face)
    assert seen == [(None, "float32")]                        # the pass: float32 convolutions
    assert extractor.compute_dtype is torch.bfloat16          # and the extractor as it was after
