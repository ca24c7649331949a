"""Coarse-to-fine schedule and rendering through several scales."""

from __future__ import annotations

import itertools

import pytest
import torch

from impasto.engine import RenderParams, render, schedule
from impasto.engine.features import build_extractor
from impasto.engine.multiscale import MAX_COARSE_FACTOR
from impasto.errors import ParamError


def test_one_scale_when_the_image_is_no_larger_than_the_start():
    plan = schedule(RenderParams(image_size=256, num_iterations=30))
    assert [(s.size, s.iterations) for s in plan] == [(256, 30)]
    assert len(schedule(RenderParams(image_size=1024, start_size=0))) == 1


def test_auto_scales_grow_evenly_to_the_image_size_and_share_the_iterations():
    params = RenderParams(image_size=1000, start_size=250, scale_step=2.0, num_iterations=300)
    plan = schedule(params)
    sizes = [s.size for s in plan]
    assert sizes == [250, 500, 1000]
    assert sum(s.iterations for s in plan) == pytest.approx(300, abs=len(plan))
    # equal pixel-work: iterations × size² about constant, up to the cap on coarse scales
    work = [s.iterations * s.size ** 2 for s in plan]
    assert work[1] == pytest.approx(work[2], rel=0.05)
    assert plan[0].iterations <= MAX_COARSE_FACTOR * plan[-1].iterations + 1


def test_sizes_never_step_by_more_than_the_scale_step():
    for size in (300, 513, 1448, 4096):
        plan = schedule(RenderParams(image_size=size, start_size=256))
        sizes = [s.size for s in plan]
        assert sizes[-1] == size and sizes == sorted(sizes)
        assert all(b / a <= 2 ** 0.5 + 0.01 for a, b in itertools.pairwise(sizes))


def test_explicit_scales_and_iterations():
    params = RenderParams(image_size=128, scales=[64, 128], scale_iterations=[5, 2])
    assert [(s.size, s.iterations) for s in schedule(params)] == [(64, 5), (128, 2)]


@pytest.mark.parametrize("options, words", [
    ({"image_size": 128, "scales": [64, 96]}, "last of --scales"),
    ({"image_size": 128, "scales": [64, 128], "scale_iterations": [5]}, "1 scale iterations for 2"),
    ({"image_size": 128, "scale_iterations": [5]}, "needs --scales"),
])
def test_inconsistent_scales_are_param_errors(options, words):
    with pytest.raises(ParamError, match=words):
        schedule(RenderParams(**options))


@pytest.mark.parametrize("scales", [[128, 64], [64, 64, 128], [16, 128], [0, 128]])
def test_bad_scale_lists_are_rejected(scales):
    with pytest.raises(ParamError):
        RenderParams.build(image_size=128, scales=scales)


def test_render_through_two_scales_reports_progress_over_the_whole_schedule():
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 60, 80), torch.rand(1, 3, 64, 64)
    params = RenderParams(image_size=80, scales=[48, 80], scale_iterations=[3, 2], seed=1)
    extractor = build_extractor(params.model, [*params.content_layers, *params.style_layers])
    reports = []
    out = render(content, [style], params, reports.append, extractor=extractor)
    assert out.shape == (1, 3, 60, 80)
    assert [r.iteration for r in reports] == [1, 2, 3, 4, 5]
    assert {r.total for r in reports} == {5}
    assert [r.scale_index for r in reports] == [0, 0, 0, 1, 1]
    assert [r.image().shape[-1] for r in reports] == [48, 48, 48, 80, 80]
    elapsed = [r.elapsed_seconds for r in reports]
    assert elapsed == sorted(elapsed)


def test_coarse_scales_hold_the_photo_more_firmly_from_a_fixed_size_down():
    from impasto.engine.multiscale import FULL_CONTENT_SIZE, content_weight_at

    params = RenderParams(image_size=512, content_weight=5.0, coarse_content=1.0)
    assert [content_weight_at(params, s.size) for s in schedule(params)] == pytest.approx([10.0, 5 * 512 / 362, 5.0])
    # a print's scales from 512 px up lay strokes no larger than a 512 px render's: as given
    big = params.model_copy(update={"image_size": 4096})
    assert content_weight_at(big, FULL_CONTENT_SIZE) == content_weight_at(big, 4096) == 5.0
    assert content_weight_at(big, 256) == pytest.approx(10.0)
    # a small render counts from its own last scale, which keeps the weight asked for
    small = params.model_copy(update={"image_size": 384, "coarse_content": 2.0})
    assert content_weight_at(small, 384) == 5.0 and content_weight_at(small, 192) == pytest.approx(20.0)
    assert content_weight_at(params.model_copy(update={"coarse_content": 0.0}), 256) == 5.0


def test_render_passes_each_scale_its_content_weight(monkeypatch):
    from impasto.engine import multiscale

    seen = []
    monkeypatch.setattr(multiscale, "render_scale",
                        lambda content, styles, stage, *a, **k: seen.append(stage.content_weight) or content)
    params = RenderParams(image_size=128, scales=[32, 64, 128], scale_iterations=[1, 1, 1],
                          content_weight=3.0, coarse_content=1.0, portrait="off")
    render(torch.rand(1, 3, 128, 128), [torch.rand(1, 3, 32, 32)], params, extractor=object())
    assert seen == pytest.approx([12.0, 6.0, 3.0])
