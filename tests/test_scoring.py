"""impasto.scoring: the same numbers as ../shared/tools/score.py, without scikit-image."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impasto import imaging
from impasto.errors import ParamError
from impasto.scoring import Scorer, Scores, content_score, score, ssim

SCORE_PY = Path(__file__).resolve().parents[1] / ".." / "shared" / "tools" / "score.py"


def _images() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 1, 64 * 80, dtype=np.float32).reshape(64, 80)
    noise = rng.random((64, 80), dtype=np.float32)
    photo = imaging.sample_image("astronaut").convert("L").resize((96, 128))
    photo = np.asarray(photo, dtype=np.float32) / 255
    return [(smooth, noise), (noise, np.clip(noise + 0.1 * rng.standard_normal(noise.shape), 0, 1)),
            (smooth, smooth), (photo, photo[::-1].copy()), (photo, np.clip(photo * 0.8 + 0.1, 0, 1)),
            (np.zeros((9, 7)), np.ones((9, 7)))]


@pytest.mark.parametrize("index", range(6))
def test_ssim_matches_scikit_image(index):
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    a, b = _images()[index]
    expected = structural_similarity(a, b, data_range=1.0)
    assert abs(ssim(a, b) - expected) < 1e-3, (ssim(a, b), expected)


def test_ssim_of_an_image_with_itself_is_one_and_shapes_are_checked():
    a = np.random.default_rng(1).random((20, 30))
    assert ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(ParamError, match="one shape"):
        ssim(a, a[:10])
    with pytest.raises(ParamError, match="at least 7"):
        ssim(a[:5], a[:5])


@pytest.fixture(scope="module")
def scorer():
    return Scorer()


def test_the_photo_scores_zero_style_and_full_content(scorer):
    photo = imaging.load("sample:astronaut")
    style = imaging.load("sample:immunohistochemistry")
    result = scorer.score(photo, photo, style)
    assert isinstance(result, Scores)
    assert result.style == pytest.approx(0.0, abs=1e-9)
    assert result.content == pytest.approx(1.0)
    assert scorer.score(style, photo, style).style == pytest.approx(1.0, abs=1e-9)


def test_a_styled_image_scores_more_style_and_less_content_than_the_photo(scorer):
    from impasto.engine.quick import QuickStylizer

    photo = imaging.load("sample:astronaut")
    style = imaging.load("sample:immunohistochemistry")
    styled = scorer.score(QuickStylizer().stylize(photo, style, size=256), photo, style)
    unstyled = scorer.score(photo, photo, style)
    assert styled.style > unstyled.style + 0.3   # the photo scores 0 by definition
    assert styled.content < unstyled.content


def test_tensor_and_pil_inputs_agree(scorer):
    photo = imaging.load("sample:coffee")
    out = (photo + 0.05 * torch.randn_like(photo)).clamp(0, 1)
    as_pil = content_score(imaging.to_pil(out), imaging.to_pil(photo))
    assert content_score(out, photo) == pytest.approx(as_pil)
    assert content_score(out, photo) < 1.0


def _shared_score_module():
    pytest.importorskip("skimage")
    if not SCORE_PY.is_file():
        pytest.skip(f"shared score.py not found at {SCORE_PY.resolve()}")
    spec = importlib.util.spec_from_file_location("shared_score", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("output, content, style", [
    ("reference/neural-style_tubingen_starry.png", "content/tubingen.jpg", "style/starry_night.jpg"),
    ("reference/neural-style_golden_gate_scream.png", "content/golden_gate.jpg", "style/the_scream.jpg"),
])
def test_scores_match_the_shared_score_tool(shared_images, output, content, style):
    shared = _shared_score_module()
    paths = [shared_images / p for p in (output, content, style)]
    expected_style, expected_content = shared.score(*map(str, paths))
    result = score(*(Image.open(p) for p in paths))
    assert result.style == pytest.approx(expected_style, abs=1e-4)
    assert result.content == pytest.approx(expected_content, abs=1e-3)
