"""--memory-budget: parsing, and the tile size / L-BFGS history it picks."""

from __future__ import annotations

import importlib

import pytest
import torch

from impasto.engine import RenderParams, memory, render
from impasto.engine.memory import parse_bytes, plan_memory
from impasto.engine.tiling import tile_shape
from impasto.errors import ParamError


@pytest.mark.parametrize("text, expected", [
    ("4GB", 4 * 2**30), ("512 MiB", 512 * 2**20), ("2g", 2 * 2**30), ("1.5G", int(1.5 * 2**30)), ("1000", 1000),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "4 parsecs", "-1GB", "0GB", "4GBs"])
def test_bad_budgets_are_one_line_param_errors(text):
    with pytest.raises(ParamError) as info:
        RenderParams.build(memory_budget=text)
    assert "\n" not in str(info.value)


def test_no_budget_changes_nothing():
    plan = plan_memory(RenderParams(tile_size=256), 4096, 4096)
    assert (plan.tile_size, plan.lbfgs_history) == (256, 100)


def test_a_roomy_budget_renders_whole_and_a_tight_one_tiles():
    assert plan_memory(RenderParams(memory_budget="16GB"), 512, 512).tile_size == 0
    tight = plan_memory(RenderParams(memory_budget="4GB"), 4096, 4096)
    assert all(0 < side < 4096 for side in tile_shape(tight.tile_size))


def _area(tile_size) -> int:
    rows, cols = tile_shape(tile_size or 4096)
    return rows * cols


def test_tile_size_grows_with_the_budget_and_history_shrinks_only_when_it_must():
    plans = [plan_memory(RenderParams(memory_budget=b), 4096, 4096) for b in ("4GB", "6GB", "12GB")]
    tiles = [_area(p.tile_size) for p in plans]
    assert tiles == sorted(tiles)
    histories = [p.lbfgs_history for p in plans]
    assert histories == sorted(histories) and histories[0] < 100
    # a shortened history gets at most its share of what the fixed buffers leave;
    # a float16 (s, y) pair is one image-sized float32 vector
    pixels = 3 * 4096 * 4096 * 4
    assert histories[0] * pixels <= memory.HISTORY_SHARE * 4 * 2**30
    assert all(p.lean and p.history_dtype == torch.float16 for p in plans)


def test_the_history_is_never_longer_than_the_scale_can_fill():
    # with N evaluations L-BFGS stores N - 2 pairs: no room is kept for more
    assert plan_memory(RenderParams(memory_budget="4GB", num_iterations=3), 2048, 2048).lbfgs_history == 1
    assert plan_memory(RenderParams(memory_budget="4GB", num_iterations=12), 2048, 2048).lbfgs_history == 10
    few, many = (plan_memory(RenderParams(memory_budget="4GB", num_iterations=n), 2048, 2048) for n in (3, 400))
    assert _area(few.tile_size) > _area(many.tile_size)   # what the history does not need goes to the tile


def test_the_plan_counts_every_full_size_buffer():
    """Process + weights + buffers + targets + history + the largest window's estimate fit."""
    from impasto.engine.tiling import estimate_window_bytes, largest_window, model_geometry

    budget = 4 * 2**30
    for size in (1024, 2048, 4096):
        params = RenderParams(memory_budget="4GB", num_iterations=50)
        plan = plan_memory(params, size, size)
        pixels = 3 * size * size * 4
        tiled = bool(plan.tile_size)                               # 1024² fits whole in 4 GB
        targets = 512 * (size // 8) ** 2 * (2 if tiled else 4)     # relu4_2, float16 when tiled
        history = plan.lbfgs_history * pixels                       # float16 (s, y) pairs
        layers = [*params.content_layers, *params.style_layers]
        window = largest_window(size, size, plan.tile_size, model_geometry(params.model, layers))
        tile = estimate_window_bytes(*window, layers)
        used = memory.PROCESS_BYTES + memory.WEIGHTS_BYTES + 4 * pixels + targets + history + tile
        assert used <= memory.SAFETY * budget, size
        assert plan.target_dtype == (torch.float16 if tiled else None)
        assert tiled == (size > 1024)
    # the photo, the image and two gradients at 4096²: 805 MB; torch's L-BFGS alone held ~1.2 GB


def test_a_budget_too_small_for_the_render_is_a_clear_error():
    with pytest.raises(ParamError, match="raise --memory-budget"):
        plan_memory(RenderParams(memory_budget="200MB"), 4096, 4096)


def test_a_budget_that_forces_tiles_keeps_the_whole_image_gradient(monkeypatch):
    # Pretend the process takes almost all of 1 GB, so a small image must be tiled.
    from impasto.engine.features import build_extractor
    from impasto.engine.tiling import TiledObjective

    render_module = importlib.import_module("impasto.engine.scale")
    monkeypatch.setattr(memory, "PROCESS_BYTES", int(0.95 * 2**30) - memory.WEIGHTS_BYTES - 18 * 2**20)
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 72, 96), torch.rand(1, 3, 64, 64)
    params = RenderParams(image_size=96, content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1"],
                          memory_budget="1GB")
    extractor = build_extractor("vgg16", [*params.content_layers, *params.style_layers])
    tiled, used, plan = render_module._objective_for(extractor, content, [style], params)
    assert isinstance(tiled, TiledObjective) and used.lbfgs_num_correction == 100 and plan.lean
    whole = render_module.build_objective(extractor, content, [style], params)
    grads = []
    for objective in (tiled, whole):
        pixels = (content * 255).requires_grad_(True)
        objective(pixels)[0].backward()
        grads.append(pixels.grad)
    assert (grads[0] - grads[1]).abs().max() < 1e-4 * grads[1].abs().max()

    out = render(content, [style], params.model_copy(update={"num_iterations": 3}))
    assert out.shape == (1, 3, 72, 96)


def test_under_a_budget_the_lean_optimizer_renders_what_torchs_does():
    """Same start, same steps up to the float16 history's rounding (4 iterations: 2 pairs)."""
    torch.manual_seed(1)
    content, style = torch.rand(1, 3, 48, 64), torch.rand(1, 3, 48, 48)
    params = RenderParams(image_size=64, start_size=0, num_iterations=6, content_layers=["relu2_2"],
                          style_layers=["relu1_1", "relu2_1"])
    plain = render(content, [style], params)
    lean = render(content, [style], params.model_copy(update={"memory_budget": "2GB"}))
    assert plan_memory(params.model_copy(update={"memory_budget": "2GB"}), 48, 64).lean
    assert float((lean - plain).abs().max()) < 2 / 255
