"""The optimisation loop on the real VGG-16 weights: style transfer happens, colours,
seeds, progress reports and cancellation."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from impasto import imaging
from impasto.engine import render
from impasto.engine.features import VGGFeatures
from impasto.engine.params import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, RenderParams
from impasto.engine.scale import Progress, fit_size
from impasto.engine.weights import model_spec
from impasto.errors import RenderCancelled, RenderDiverged

render_module = importlib.import_module("impasto.engine.scale")

SIZE = 64
ITERATIONS = 30   # style loss is down ~95 % by here on this pair (90 % at ~22)


@pytest.fixture(scope="module")
def extractor(vgg16_state) -> VGGFeatures:
    """The default layers on the real weights, shared so each render skips the loading."""
    return VGGFeatures(model_spec("vgg16"), vgg16_state, [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS])


@pytest.fixture(scope="module")
def pair(shared_images):
    content = imaging.load(shared_images / "content" / "tubingen.jpg")
    style = imaging.load(shared_images / "style" / "starry_night.jpg")
    return content, style


def _params(**options) -> RenderParams:
    return RenderParams.build(**{"image_size": SIZE, "num_iterations": ITERATIONS, "device": "cpu",
                                 "print_iter": 0, **options})


@pytest.fixture(scope="module")
def stylised(pair, extractor):
    """One real render (tubingen × starry night, 64 px, init=image) and its progress reports."""
    content, style = pair
    reports: list[Progress] = []
    out = render(content, [style], _params(), reports.append, extractor=extractor)
    return out, reports


def _colour_stats(image: torch.Tensor) -> torch.Tensor:
    return torch.cat([image.mean(dim=(0, 2, 3)), image.std(dim=(0, 2, 3))])


def test_style_loss_falls_by_ninety_percent(stylised):
    _, reports = stylised
    first, last = reports[0].losses["style"], reports[-1].losses["style"]
    assert first > 0
    assert last <= 0.1 * first, f"style loss {first:.4g} → {last:.4g}"
    assert reports[-1].losses["total"] < reports[0].losses["total"]


def test_colours_move_towards_the_style(stylised, pair):
    out, _ = stylised
    content, style = pair
    content_px = fit_size(content, SIZE)
    style_px = fit_size(style, SIZE)
    assert out.shape == content_px.shape == (1, 3, 48, 64)
    target = _colour_stats(style_px)
    from_output = (_colour_stats(out) - target).norm().item()
    from_content = (_colour_stats(content_px) - target).norm().item()
    assert from_output < from_content, (from_output, from_content)


# --- original colours -----------------------------------------------------------------------

def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 Cb, Cr (as JPEG) of an H×W×3 array in 0..1."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cb = 0.5 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.stack([cb, cr], axis=-1)


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.squeeze(0).permute(1, 2, 0).double().numpy()


def test_original_colors_keep_the_content_chroma(stylised, pair, extractor, tmp_path):
    content, style = pair
    plain, _ = stylised
    kept = render(content, [style], _params(original_colors=True), extractor=extractor)
    content_chroma = _chroma(_hwc(fit_size(content, SIZE)))

    # Without the option the style does change the chroma, so the check below can fail.
    assert np.abs(_chroma(_hwc(plain)) - content_chroma).mean() > 4 / 255
    # Luminance still comes from the stylised render.
    assert not torch.allclose(kept, fit_size(content, SIZE), atol=4 / 255)

    diff = np.abs(_chroma(_hwc(kept)) - content_chroma).mean(axis=(0, 1))
    assert (diff < 2 / 255).all(), diff * 255

    path = imaging.save(kept, tmp_path / "kept.png")
    reloaded = np.asarray(Image.open(path).convert("YCbCr"), dtype=np.float64)[..., 1:] / 255
    diff_png = np.abs(reloaded - content_chroma).mean(axis=(0, 1))
    assert (diff_png < 2 / 255).all(), diff_png * 255


# --- seeds ----------------------------------------------------------------------------------

def test_same_seed_same_image_different_seed_different_image(pair, extractor):
    content, style = pair
    params = _params(init="random", num_iterations=4, seed=7)
    first = render(content, [style], params, extractor=extractor)
    torch.manual_seed(12345)      # the global RNG must not matter
    torch.rand(100)
    second = render(content, [style], params, extractor=extractor)
    assert torch.equal(first, second)

    other = render(content, [style], _params(init="random", num_iterations=4, seed=8), extractor=extractor)
    assert not torch.equal(first, other)
    assert (first - other).abs().mean() > 1e-4


def test_random_init_is_noise_around_the_net_mean(pair, extractor):
    content, _ = pair
    start = render_module.initial_pixels(fit_size(content, SIZE), _params(init="random", seed=3), extractor)
    mean_rgb = torch.tensor([123.68, 116.779, 103.939])   # the Keras BGR mean, in RGB order
    assert torch.allclose(start.mean(dim=(0, 2, 3)), mean_rgb, atol=0.05)
    assert start.std(dim=(0, 2, 3)).max() < 1.0           # randn × 0.001 × 255


# --- progress and cancellation --------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_progress_is_reported_every_iteration(pair, extractor, optimizer):
    content, style = pair
    n = 5
    reports: list[Progress] = []
    images: list[torch.Tensor] = []

    def callback(progress: Progress) -> None:
        reports.append(progress)
        images.append(progress.image())

    out = render(content, [style], _params(image_size=48, num_iterations=n, optimizer=optimizer),
                 callback, extractor=extractor)
    assert [p.iteration for p in reports] == list(range(1, n + 1))
    assert {p.total for p in reports} == {n}
    elapsed = [p.elapsed_seconds for p in reports]
    assert all(b > a for a, b in itertools.pairwise(elapsed)) and elapsed[0] >= 0
    for p, image in zip(reports, images):
        assert set(p.losses) == {"content", "style", "tv", "total"}
        assert p.losses["total"] == pytest.approx(p.losses["content"] + p.losses["style"] + p.losses["tv"],
                                                  rel=1e-5)
        assert image.device.type == "cpu" and image.dtype == torch.float32
        assert image.shape == out.shape == (1, 3, 36, 48)
        assert image.min() >= 0 and image.max() <= 1
    assert not torch.equal(images[0], images[-1])      # each report is a snapshot, and it moved


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_cancel_from_the_callback_stops_the_render(pair, extractor, optimizer):
    content, style = pair
    seen: list[int] = []

    def callback(progress: Progress) -> None:
        seen.append(progress.iteration)
        if progress.iteration == 2:
            raise RenderCancelled("stop")

    with pytest.raises(RenderCancelled, match="stop"):
        render(content, [style], _params(image_size=48, num_iterations=50, optimizer=optimizer),
               callback, extractor=extractor)
    assert seen == [1, 2]


def test_output_size_and_style_scale(pair, extractor):
    content, style = pair
    calls = []
    real = render_module.build_objective

    def spy(extractor, content_px, styles_px, params, guide=None, anchor=None):
        calls.append((tuple(content_px.shape), [tuple(s.shape) for s in styles_px]))
        return real(extractor, content_px, styles_px, params, guide, anchor)

    mp = pytest.MonkeyPatch()
    mp.setattr(render_module, "build_objective", spy)
    try:
        out = render(content, [style], _params(image_size=40, num_iterations=1, style_scale=2.0),
                     extractor=extractor)
    finally:
        mp.undo()
    assert out.shape == (1, 3, 30, 40)               # 768×1024 content → longest side 40
    assert calls == [((1, 3, 30, 40), [(1, 3, 50, 80)])]   # 640×1024 style → longest side 80


def test_a_bfloat16_render_reaches_the_float32_render(stylised, pair, vgg16_state):
    """Mixed precision (--precision bfloat16): the same loss drop within a few per cent and
    every loss finite (L-BFGS paths part at the pixel level, as they do in float32 from a
    photo changed by 1e-5)."""
    content, style = pair
    half = VGGFeatures(model_spec("vgg16"), vgg16_state, [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS],
                       precision="bfloat16")
    reports: list[Progress] = []
    render(content, [style], _params(precision="bfloat16"), reports.append, extractor=half)
    _, full_reports = stylised
    assert all(np.isfinite(r.losses["total"]) for r in reports)
    style, full_style = (r[-1].losses["style"] / r[0].losses["style"] for r in (reports, full_reports))
    assert style < full_style + 0.02          # float32: the style loss down to 5 % by here
    total, full_total = (r[-1].losses["total"] / r[0].losses["total"] for r in (reports, full_reports))
    assert total < 1.2 * full_total           # as low as float32 gets it (here lower)


def test_a_loss_that_stops_being_finite_stops_the_render_with_a_clear_error(pair, extractor, monkeypatch):
    content, style = pair
    real = render_module.build_objective

    def overflowing(*args, **kwargs):
        objective = real(*args, **kwargs)
        forward = objective.forward
        calls = []

        def forward_then_nan(pixels):
            calls.append(1)
            total, parts = forward(pixels)
            if len(calls) >= 3:
                return total * float("nan"), {**parts, "total": float("nan")}
            return total, parts
        objective.forward = forward_then_nan
        return objective

    monkeypatch.setattr(render_module, "build_objective", overflowing)
    reports: list[Progress] = []
    with pytest.raises(RenderDiverged, match=r"nan at iteration 3: float16 overflowed; use --precision bfloat16"):
        render(content, [style], _params(precision="float16", start_size=0), reports.append, extractor=extractor)
    assert len(reports) == 2
