"""The drawing: the photo's fine luminance drawn over the features' lines, nothing else touched."""

from __future__ import annotations

import torch

from impasto import imaging
from impasto.engine import RenderParams, render
from impasto.engine import multiscale
from impasto.engine.drawing import LINE_SCALE, _fine, _luma, draw_features
from impasto.engine.features import VGGFeatures
from impasto.engine.masks import Guide, at_size, guide_for
from impasto.engine.params import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from impasto.engine.weights import model_spec


def _photo(size: int = 96) -> torch.Tensor:
    """Fine stripes (lines to draw) over a slow ramp, in colour."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    stripes = 0.25 * torch.sin(xs * size / 2)
    return torch.stack([0.5 + stripes + 0.1 * ys, 0.45 + stripes, 0.4 + stripes - 0.1 * xs])[None].clamp(0, 1)


def _guide(size: int = 96) -> Guide:
    features = torch.zeros(1, 1, size, size)
    k = size // 96
    features[..., 40 * k:56 * k, 20 * k:76 * k] = 1.0      # one line: a mouth, say
    return Guide(likeness=(features > 0).float(), features=features, face_width=60.0)


def test_the_lines_take_the_photos_fine_luminance_in_the_paintings_colours():
    photo, guide = _photo(), _guide()
    painted = torch.tensor([0.6, 0.5, 0.4]).view(1, 3, 1, 1).expand(1, 3, 96, 96).clone()   # a flat paint
    drawn = draw_features(painted, photo, guide, strength=0.5)
    sigma = LINE_SCALE * guide.face_width
    inside = (..., slice(44, 52), slice(28, 68))
    photo_lines = _fine(_luma(photo), sigma)[inside[1:]]
    drawn_lines = _fine(_luma(drawn), sigma)[inside[1:]]
    assert torch.allclose(drawn_lines, photo_lines, atol=0.02)        # the stripes drawn at strength 0.5…
    change = (drawn - painted)[inside]
    assert torch.allclose(change[:, 0], change[:, 1], atol=1e-5)        # … as a change of value, not of hue
    assert torch.allclose(change[:, 1], change[:, 2], atol=1e-5)
    outside = torch.ones(96, 96, dtype=torch.bool)
    outside[40:56, 20:76] = False
    assert torch.equal(drawn[..., outside], painted[..., outside])     # off the mask: untouched


def test_strength_scales_the_drawing_and_zero_or_no_features_leave_the_render_alone():
    photo, guide = _photo(), _guide()
    painted = torch.full((1, 3, 96, 96), 0.5)
    assert draw_features(painted, photo, guide, strength=0.0) is painted
    assert draw_features(painted, photo, Guide(likeness=guide.likeness, face_width=60.0), 0.5) is painted
    assert draw_features(painted, photo, None, 0.5) is painted
    light = (draw_features(painted, photo, guide, 0.25) - painted).abs().sum()
    full = (draw_features(painted, photo, guide, 0.5) - painted).abs().sum()
    assert 1.8 < float(full / light) < 2.2
    assert torch.equal(draw_features(painted, photo, guide, 1.0), draw_features(painted, photo, guide, 0.5))


def test_a_photo_larger_than_the_render_is_drawn_at_the_renders_size():
    """The masks and the photo are at the photo's size (a print's is larger than a preview's
    render): the crop under the lines is resized, the result has the render's size."""
    photo, guide = _photo(192), _guide(192)
    guide = Guide(likeness=guide.likeness, features=guide.features, face_width=120.0)
    painted = torch.full((1, 3, 96, 96), 0.5)
    drawn = draw_features(painted, photo, guide, 0.5)
    small = torch.nn.functional.interpolate(photo, size=(96, 96), mode="area")
    sigma = LINE_SCALE * 60
    corr = torch.corrcoef(torch.stack([_fine(_luma(drawn), sigma)[44:52, 28:68].flatten(),
                                       _fine(_luma(small), sigma)[44:52, 28:68].flatten()]))[0, 1]
    assert drawn.shape == painted.shape and corr > 0.95


def test_a_portrait_render_draws_its_features_and_changes_nothing_else(shared_images, vgg16_state, monkeypatch):
    """Grace Hopper painted by the real engine: the drawing is its last step; with it, the
    features' fine structure is nearer the photo's than without, and away from the lines the
    two renders are the same pixels."""
    photo = imaging.load(shared_images / "content" / "grace_hopper.jpg")
    style = imaging.load(shared_images / "style" / "the_scream.jpg")
    params = RenderParams(image_size=128, num_iterations=20, start_size=0, device="cpu", portrait_face_size=0)
    extractor = VGGFeatures(model_spec("vgg16"), vgg16_state, [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS])
    drawn = render(photo, [style], params, extractor=extractor)
    monkeypatch.setattr(multiscale, "draw_features", lambda image, *_: image)
    undrawn = render(photo, [style], params, extractor=extractor)
    guide = guide_for(photo, params, 1)
    lines = at_size(guide.features, *drawn.shape[-2:])[0, 0]
    small = torch.nn.functional.interpolate(photo, size=drawn.shape[-2:], mode="area")
    sigma = LINE_SCALE * guide.face_width * drawn.shape[-1] / photo.shape[-1]

    def agreement(image: torch.Tensor) -> float:
        on = lines > 0.5
        a, b = _fine(_luma(image), sigma)[on], _fine(_luma(small), sigma)[on]
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    assert 1 - agreement(drawn) < 0.5 * (1 - agreement(undrawn))      # the disagreement at least halved
    assert torch.equal(drawn[..., lines == 0], undrawn[..., lines == 0])
