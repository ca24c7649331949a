"""``--memory-budget``: how a render fits in a given amount of memory — the process's RSS.

A scale needs, besides the process itself (Python, torch, the VGG weights):

- **full-size buffers**, each 3·H·W float32 (201 MB at 4096²): the photo (or the previous
  scale's image) at this size; under a budget the lean L-BFGS (``lbfgs.py``) holds the image,
  its gradient and the previous gradient — torch's optimiser held five to seven;
- **portrait and region masks** (``guide_bytes``), when a face or a region mask guides
  the render: one plane per face mask and region at the scale's size, and one per layer;
- **content targets** at relu4_2: 512·(H/8)·(W/8) values, kept in float16 when tiled
  under a budget (268 MB at 4096² instead of 537);
- **the L-BFGS history**: one (s, y) pair per remembered step, in float16 under a budget
  (one image-sized float32 vector a step). It is never longer than the scale's iterations
  can fill (a pair from the third evaluation on), and shortened to at most
  ``HISTORY_SHARE`` of what the rest leaves when the full history would not fit — L-BFGS
  works with a few steps of history, only less well;
- **one tile's activations** for forward and backward (``tiling.estimate_window_bytes`` of
  the plan's largest window: a border tile has one halo less than an interior one):
  the tile gets whatever is left, as a rectangle if that covers the image with less compute
  than a square (``tiling.tile_shape_for_budget``), so a print uses its budget and is not
  slower than it must be (large tiles waste less on halos), and memory stays flat as the
  print grows — only the tile shrinks.

These are estimates from layer shapes and measured factors, not measurements; ``SAFETY``
leaves room for the allocator. ``bench/prints.py memory`` checks them (docs/benchmarks.md).
The style images at full size are a set-up cost (their Grams are taken, then they are
freed) and fit in what the optimiser takes later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from impasto.engine.masks import DETAIL_LAYERS
from impasto.engine.params import RenderParams
from impasto.engine.tiling import TileSize, estimate_window_bytes, model_geometry, tile_shape_for_budget
from impasto.engine.units import parse_bytes
from impasto.errors import ParamError

log = logging.getLogger(__name__)
PROCESS_BYTES = 256 * 2**20   # Python, torch and impasto loaded (measured VmRSS: ~230 MiB)
WEIGHTS_BYTES = 80 * 2**20    # VGG conv weights in float32, with slack
MIN_HISTORY = 5               # below this L-BFGS is hardly better than gradient descent
HISTORY_SHARE = 0.5           # at most this part of what is left goes to a shortened history
SAFETY = 0.95                 # plan within this part of the budget: allocator slack
UNACCOUNTED = 2               # image-sized buffers a print holds beyond those named below
LEAN_HISTORY_DTYPE = torch.float16
LEAN_TARGET_DTYPE = torch.float16


@dataclass(frozen=True)
class MemoryPlan:
    tile_size: TileSize                         # side or (rows, cols); 0: the whole image at once
    lbfgs_history: int
    lean: bool = False                          # the memory-lean L-BFGS (lbfgs.minimize)
    history_dtype: torch.dtype | None = None    # its history storage (None: the image's)
    target_dtype: torch.dtype | None = None     # tiled content targets (None: the features')


def plan_memory(params: RenderParams, height: int, width: int, guide=None) -> MemoryPlan:
    """Tile size, L-BFGS history and storage for a ``height``×``width`` scale in the budget
    (``guide``: the scale's masks.Guide, whose masks count too)."""
    if not params.memory_budget:
        return MemoryPlan(params.tile_size, params.lbfgs_num_correction)
    budget = parse_bytes(params.memory_budget)
    usable = int(budget * SAFETY)
    layers = [*params.content_layers, *params.style_layers]
    pixels = 3 * height * width * 4
    lbfgs = params.optimizer == "lbfgs"
    # the photo or previous scale at this size; lean L-BFGS: image, gradient, previous
    # gradient; Adam (torch's): image, gradient, its autograd copy, two moments, a temporary;
    # and UNACCOUNTED more: a 4096² print in 4 GB peaked 368 MiB (≈ 2 such buffers) above
    # its plan, whose tile estimate is measured — found, not yet explained (docs/benchmarks.md)
    buffers = pixels * (1 + (3 if lbfgs else 6) + UNACCOUNTED)
    # style masks in float16 when tiled (tiling.build_tiled_objective), float32 whole
    masks_tiled = guide_bytes(params, guide, height, width, mask_bytes=2)
    fixed = (PROCESS_BYTES + WEIGHTS_BYTES + buffers + full_size_bytes(params, height, width, tiled=True)
             + masks_tiled)
    step = pixels if lbfgs else 0          # an (s, y) pair in float16
    history = _history(params, usable - fixed, step, width, height) if lbfgs else 0
    left = usable - fixed - history * step
    whole = estimate_window_bytes(height, width, layers, model=params.model)
    lean = {"lean": lbfgs, "history_dtype": LEAN_HISTORY_DTYPE if lbfgs else None}
    # whole image: content targets in float32, counted above in float16
    if whole + full_size_bytes(params, height, width, tiled=True) + guide_bytes(params, guide, height, width) - masks_tiled <= left:
        return MemoryPlan(params.tile_size, max(history, 1), **lean,
                          target_dtype=LEAN_TARGET_DTYPE if params.tile_size else None)
    if left <= 0:
        raise ParamError(f"a {width}×{height} render needs more than the {params.memory_budget} "
                         f"memory budget for its buffers alone; raise --memory-budget")
    tile = tile_shape_for_budget(height, width, left, layers, model=params.model, max_side=params.tile_size)
    return MemoryPlan(tile, max(history, 1), **lean, target_dtype=LEAN_TARGET_DTYPE)


def _history(params: RenderParams, room: int, step: int, width: int, height: int) -> int:
    """Steps of L-BFGS history: as asked, never more than the scale can fill, and at most
    ``HISTORY_SHARE`` of ``room`` when all of it would not fit."""
    wanted = min(params.lbfgs_num_correction, max(1, params.num_iterations - 2))
    affordable = int(max(room, 0) * HISTORY_SHARE // step)
    if affordable >= wanted:
        return wanted
    if affordable < min(MIN_HISTORY, wanted):
        raise ParamError(f"a {width}×{height} render needs more than the {params.memory_budget} "
                         f"memory budget (L-BFGS alone: {_mib(min(MIN_HISTORY, wanted) * step)}); "
                         "raise --memory-budget or use --optimizer adam")
    log.info("L-BFGS history shortened to %d steps to fit %s", affordable, params.memory_budget)
    return affordable


def guide_bytes(params: RenderParams, guide, height: int, width: int, *, mask_bytes: int = 4) -> int:
    """Portrait mode's and region styles' masks at a scale: the face, features and region
    planes at its size, a content weight per content layer position (a small face's detail
    layer included, with its float16 target) and R masks per style layer position, of
    ``mask_bytes`` each (at 4096² one face costs its plane, 64 MB, and the whole image's and
    the face's own Gram masks, 2 × 85 MB in float32)."""
    if guide is None or not guide.active:
        return 0
    regions = guide.style_mask_count()
    planes = guide.planes()
    total = planes * height * width * 4
    detail = guide.detail_layer([name for name, _ in DETAIL_LAYERS])
    content_layers = [*params.content_layers, *([detail] if detail else [])]
    geometry = model_geometry(params.model, [*content_layers, *params.style_layers])
    for names, per_position in ((content_layers, 4), (params.style_layers, regions * mask_bytes)):
        for name in names:
            stride = geometry.strides[name]
            total += per_position * (height // stride) * (width // stride)
    if detail:  # a small face's lines held at a shallow layer: its content target, in float16
        total += _layer_bytes(params, detail, height, width) // 2
    return total


def full_size_bytes(params: RenderParams, height: int, width: int, *, tiled: bool) -> int:
    """Bytes of the content targets: float16 when tiled under a budget, else float32."""
    per_value = 2 if tiled else 4
    return sum(_layer_bytes(params, name, height, width) // 4 * per_value for name in params.content_layers)


def _layer_bytes(params: RenderParams, layer: str, height: int, width: int) -> int:
    geometry = model_geometry(params.model, [layer])
    info = next(i for i in geometry.layers if i.name == layer)
    return info.channels * (height // info.stride) * (width // info.stride) * 4


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"
