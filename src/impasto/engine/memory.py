"""``--memory-budget``: how a render fits in a given amount of memory — the process's RSS
(on CUDA: the device's caching allocator, its reserve included).

The plan starts from what the process holds when the scale begins, **measured**
(``resident.baseline_bytes``: Python, torch, the weights, the photo and styles as loaded,
the previous scale's image), and adds what the scale will allocate, phase by phase — the
peak is the largest phase, not their sum:

- **set-up**: the photo and each style image at this scale's size (3·H·W float32 each, 201 MB
  at 4096²), the content targets (relu4_2: 512·(H/8)·(W/8) values, float16 when tiled under a
  budget: 268 MB at 4096²), the masks of a portrait or of region styles (``guide_bytes``),
  and one tile's forward without grad (``FORWARD_SHARE`` of its forward and backward);
- **the start image**: the photo, the start upsampled and the start in 0..255 units;
- **an evaluation**: the lean L-BFGS's image, previous gradient and new gradient (Adam,
  torch's: six such buffers), the last step waiting for its gradient change (a float16
  image, from the third evaluation on), the stored history — one float16 (s, y) pair a step,
  never more than the scale's evaluations can fill (N evaluations store N − 2) and at most
  ``HISTORY_SHARE`` of what is left when all of it would not fit — the targets and masks,
  and the larger of one tile's forward and backward (``tiling.estimate_window_bytes`` of the
  plan's largest window) and the striped TV loss's temporaries (``TV_STRIPES`` stripes).

The tile gets what the largest phase leaves, as a rectangle where that covers the image
with less compute (``tiling.tile_shape_for_budget``), never smaller than ``MIN_TILE_HALOS``
halos a side (below that most of the work would be halo). A budget that cannot hold the
smallest tile is a ``BudgetTooSmall`` naming the smallest budget that can, raised before
anything renders (``multiscale.render`` checks every scale first). Each term was found by
measurement (``bench/phases.py``: VmHWM per phase, reset between them); ``SAFETY``
leaves the rest of the budget to page granularity and what malloc keeps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from impasto.engine.masks import DETAIL_LAYERS
from impasto.engine.params import RenderParams
from impasto.engine import resident
from impasto.engine.tiling import (
    TileSize,
    estimate_window_bytes,
    largest_window,
    needs_tiles,
    plan_tiles,
    model_geometry,
    tile_shape_for_budget,
)
from impasto.engine.tiling.objective import TV_STRIPE_VALUES
from impasto.engine.units import parse_bytes
from impasto.errors import BudgetTooSmall

log = logging.getLogger(__name__)
MIN_HISTORY = 5               # below this L-BFGS is hardly better than gradient descent
HISTORY_SHARE = 0.5           # at most this part of what is left goes to a shortened history
SAFETY = 0.95                 # plan within this part of the budget: pages, malloc's own keep
# A forward without grad (the targets, the style pass) peaks at this part of the window's
# forward-and-backward estimate: measured 0.48–0.50 (576² windows, bench/phases.py).
FORWARD_SHARE = 0.55
# The striped TV loss (tiling.objective._tv_into) holds about five stripes' temporaries:
# measured 84 MiB above the image and gradient for 16 MiB stripes.
TV_STRIPES = 6
# oneDNN keeps the kernels it made for each input shape it has seen: measured 1.6–1.7 MiB
# per new window shape after the first pass (whose one-time cost scale.warm_up puts in
# the baseline); a plan's tiles come in a few shapes (interior, border, corner).
SHAPE_BYTES = 2 * 2**20
WHOLE_TV_BUFFERS = 4          # torch's TV loss on a whole image: its differences and squares
MIN_TILE_HALOS = 2            # the smallest tile side the planner offers, in halos
LEAN_HISTORY_DTYPE = torch.float16
LEAN_TARGET_DTYPE = torch.float16


@dataclass(frozen=True)
class MemoryPlan:
    tile_size: TileSize                         # side or (rows, cols); 0: the whole image at once
    lbfgs_history: int
    lean: bool = False                          # the memory-lean L-BFGS (lbfgs.minimize)
    history_dtype: torch.dtype | None = None    # its history storage (None: the image's)
    target_dtype: torch.dtype | None = None     # tiled content targets (None: the features')
    peak_bytes: int = 0                         # the plan's peak: baseline and largest phase
    baseline_bytes: int = 0                     # what the process held when it was planned


@dataclass(frozen=True)
class Phases:
    """Bytes a scale allocates above its baseline in each phase, a tile's activations apart."""

    setup: int      # + FORWARD_SHARE × the window
    start: int
    evaluate: int   # + the larger of the window and the TV stripes

    def peak(self, window: int, tv: int) -> int:
        return max(self.setup + int(FORWARD_SHARE * window), self.start, self.evaluate + max(window, tv))

    def window_room(self, room: int, tv: int) -> int:
        """The largest window estimate whose peak fits in ``room`` (negative: none)."""
        if room < max(self.start, self.evaluate + tv):
            return -1
        return min(room - self.evaluate, int((room - self.setup) / FORWARD_SHARE))


def plan_memory(params: RenderParams, height: int, width: int, guide=None, *, baseline: int | None = None,
                styles: Sequence[tuple[int, int]] | None = None, device: torch.device | str = "cpu"
                ) -> MemoryPlan:
    """Tile size, L-BFGS history and storage for a ``height``×``width`` scale in the budget.

    ``guide``: the scale's masks.Guide (its masks count); ``styles``: the style images'
    (rows, cols) at this scale (default: one of the content's size); ``baseline``: what the
    process holds already (default: measured now on ``device``). A budget that cannot hold
    the scale is a ``BudgetTooSmall`` naming the smallest that can."""
    if not params.memory_budget:
        return MemoryPlan(params.tile_size, params.lbfgs_num_correction)
    baseline = resident.baseline_bytes(device) if baseline is None else baseline
    styles = [(height, width)] if styles is None else list(styles)
    plan = _plan(params, height, width, guide, styles, baseline, parse_bytes(params.memory_budget))
    if plan is None:
        needed = smallest_budget(params, height, width, guide, baseline=baseline, styles=styles)
        raise BudgetTooSmall(
            f"a {width}×{height} render needs --memory-budget {format_budget(needed)} or more "
            f"(this process holds {_mib(baseline)} before it starts); {params.memory_budget} cannot hold it",
            needed=needed)
    return plan


def _plan(params: RenderParams, height: int, width: int, guide, styles: Sequence[tuple[int, int]],
          baseline: int, budget: int) -> MemoryPlan | None:
    """``plan_memory`` in ``budget`` bytes, or None if they cannot hold the scale."""
    room = int(budget * SAFETY) - baseline
    lbfgs = params.optimizer == "lbfgs"
    lean = {"lean": lbfgs, "history_dtype": LEAN_HISTORY_DTYPE if lbfgs else None, "baseline_bytes": baseline}
    history = min(params.lbfgs_num_correction, max(1, params.num_iterations - 2))
    if lbfgs:
        bare = _phases(params, height, width, guide, styles, tiled=True, history=0)
        history = _history(params, room - bare.evaluate, _pair_bytes(height, width), history)
        if history is None:
            return None
    whole = _phases(params, height, width, guide, styles, tiled=False, history=history)
    whole_peak = SHAPE_BYTES + whole.peak(_whole_window(params, height, width), 0)
    if whole_peak <= room:
        return MemoryPlan(params.tile_size, history, **lean, peak_bytes=baseline + whole_peak,
                          target_dtype=LEAN_TARGET_DTYPE if params.tile_size else None)
    phases = _phases(params, height, width, guide, styles, tiled=True, history=history)
    tv, shapes = _tv(params, height, width), 0
    for _ in range(2):   # the kernels' shapes are known once the tile is: plan again with them
        tile = _tile(params, height, width, phases.window_room(room - shapes, tv))
        if tile is None:
            return None
        shapes = _shape_bytes(params, height, width, tile)
        peak = shapes + phases.peak(_window_bytes(params, height, width, tile), tv)
        if peak <= room:
            return MemoryPlan(tile, history, **lean, target_dtype=LEAN_TARGET_DTYPE, peak_bytes=baseline + peak)
    return None


def _phases(params: RenderParams, height: int, width: int, guide, styles: Sequence[tuple[int, int]], *,
            tiled: bool, history: int) -> Phases:
    """Each phase's bytes but the tile's (module docstring), ``history`` pairs stored."""
    image = 3 * height * width * 4
    # style masks in float16 when tiled (tiling.build_tiled_objective), float32 whole
    held = full_size_bytes(params, height, width, tiled=tiled) + guide_bytes(
        params, guide, height, width, mask_bytes=2 if tiled else 4)
    style_images = sum(3 * rows * cols * 4 for rows, cols in styles)
    if params.optimizer == "lbfgs":
        # image, previous and new gradient; the last step (float16) from the third evaluation
        stored = min(history, max(0, params.num_iterations - 2))
        optimiser = 3 * image + (image // 2 if params.num_iterations >= 3 else 0) + stored * _pair_bytes(height, width)
    else:
        optimiser = 6 * image   # image, its grad, two moments, the tiled gradient and its product
    photo = image if params.original_colors else 0
    kept, built, evaluated = style_term_bytes(params, height, width, guide, styles, tiled=tiled)
    held += kept
    return Phases(setup=image + style_images + held + built, start=3 * image + held,
                  evaluate=optimiser + photo + held + evaluated)


# sw on the whole image (sliced.SlicedLoss), per projected value: kept for the whole scale,
# (unmasked) the sorted targets; in one evaluation, at its peak, the projections, their
# sorted copy (becoming the gradient in sorted order, held until backward), the int64
# order, and the backward's scatter (or, masked, the weights in sorted order, the levels
# and the quantile's temporaries). Estimated from the tensors' sizes, not measured:
# bench/phases.py does not cover sw yet.
SW_WHOLE_KEPT_BYTES = 4
SW_WHOLE_BYTES = 28


def style_term_bytes(params: RenderParams, height: int, width: int, guide, styles: Sequence[tuple[int, int]], *,
                     tiled: bool) -> tuple[int, int, int]:
    """(kept, set-up, evaluation) bytes of the sw or nnst style term: what it holds for the
    whole scale (sw: the style's quantile tables and, tiled, each sorted layer's projections
    and levels, or the binned layers' histograms; nnst: the style bank and the index map),
    what building it adds (the style's features), and what one evaluation adds."""
    if params.style_loss == "nnst":
        from impasto.engine.nnst import NNST_LAYERS, nnst_bytes

        return nnst_bytes(params, height, width, guide, styles, tiled=tiled,
                          geometry=model_geometry(params.model, list(NNST_LAYERS)))
    if params.style_loss != "sw":
        return 0, 0, 0
    from impasto.engine import sliced

    geometry = model_geometry(params.model, params.style_layers)
    regions = 1 if guide is None or not guide.active else guide.style_mask_count()
    kept = built = evaluated = 0
    for info in geometry.layers:
        if info.name not in params.style_layers:
            continue
        projections = params.sw_projections or info.channels
        positions = (height // info.stride) * (width // info.stride)
        style_positions = [(rows // info.stride) * (cols // info.stride) for rows, cols in styles]
        kept += sum(min(sliced.MAX_LEVELS, n) for n in style_positions) * projections * 4
        built += sum(style_positions) * info.channels * 4
        values = positions * projections
        if not tiled:
            kept += values * SW_WHOLE_KEPT_BYTES
            evaluated += values * SW_WHOLE_BYTES
        elif values <= sliced.EXACT_VALUES:
            kept += values * (4 + 4 * regions)
            evaluated += values * 8            # the argsort's order
        else:
            kept += regions * projections * (sliced.HISTOGRAM_BINS + 2) * 8 * 3   # mass, below, a copy
    return kept, built, evaluated


def _pair_bytes(height: int, width: int) -> int:
    return 3 * height * width * 4   # an (s, y) pair in float16: one float32 image


def _tv(params: RenderParams, height: int, width: int) -> int:
    """The striped TV loss's temporaries: ``TV_STRIPES`` stripes of float32 rows."""
    rows = min(height, max(1, TV_STRIPE_VALUES // (3 * width)) + 1)
    return TV_STRIPES * 3 * rows * width * 4 if params.tv_weight else 0


def _whole_window(params: RenderParams, height: int, width: int) -> int:
    """One whole-image forward and backward, with torch's TV loss beside it."""
    layers = [*params.content_layers, *params.style_layers]
    tv = WHOLE_TV_BUFFERS * 3 * height * width * 4 if params.tv_weight else 0
    return estimate_window_bytes(height, width, layers, model=params.model) + tv


def _window_bytes(params: RenderParams, height: int, width: int, tile: TileSize) -> int:
    layers = [*params.content_layers, *params.style_layers]
    window = largest_window(height, width, tile, model_geometry(params.model, layers))
    return estimate_window_bytes(*window, layers, model=params.model)


def _shape_bytes(params: RenderParams, height: int, width: int, tile: TileSize) -> int:
    """oneDNN's kernels for the plan's window shapes (``SHAPE_BYTES`` each)."""
    geometry = model_geometry(params.model, [*params.content_layers, *params.style_layers])
    windows = {(t.rows.hi - t.rows.lo, t.cols.hi - t.cols.lo) for t in plan_tiles(height, width, tile, geometry)}
    return SHAPE_BYTES * len(windows)


def min_tile_side(params: RenderParams) -> int:
    """The smallest tile side the planner offers: ``MIN_TILE_HALOS`` halos, aligned."""
    geometry = model_geometry(params.model, [*params.content_layers, *params.style_layers])
    return max(geometry.align, math.ceil(MIN_TILE_HALOS * geometry.halo / geometry.align) * geometry.align)


def _tile(params: RenderParams, height: int, width: int, window_room: int) -> tuple[int, int] | None:
    """The tile for ``window_room`` bytes of activations, or None if the smallest won't fit."""
    smallest = min_tile_side(params)
    if window_room <= 0 or _window_bytes(params, height, width, smallest) > window_room:
        return None
    layers = [*params.content_layers, *params.style_layers]
    # the cheapest cover within the room: no cheaper than the smallest tile, so never a sliver
    tile = tile_shape_for_budget(height, width, window_room, layers, model=params.model, max_side=params.tile_size)
    if not needs_tiles(height, width, tile):   # one tile is the whole-image objective, which did not fit
        longest = max(height, width) - 1
        tile = tile_shape_for_budget(height, width, window_room, layers, model=params.model,
                                     max_side=min(params.tile_size or longest, longest))
    return tile


def _history(params: RenderParams, room: int, step: int, wanted: int) -> int | None:
    """Steps of L-BFGS history: as asked, never more than the scale can fill, and at most
    ``HISTORY_SHARE`` of ``room`` when all of it would not fit (None: not even a few)."""
    stored = max(0, params.num_iterations - 2)   # pairs the scale can fill
    if min(wanted, stored) == 0:
        return wanted
    affordable = int(max(room, 0) * HISTORY_SHARE // step)
    if affordable >= min(wanted, stored):
        return wanted
    if affordable < min(MIN_HISTORY, wanted):
        return None
    log.info("L-BFGS history shortened to %d steps to fit %s", affordable, params.memory_budget)
    return affordable


def smallest_budget(params: RenderParams, height: int, width: int, guide=None, *, baseline: int,
                    styles: Sequence[tuple[int, int]] | None = None) -> int:
    """The smallest budget, in tenths of a GiB, that ``plan_memory`` accepts for the scale."""
    styles = [(height, width)] if styles is None else list(styles)
    tenths = math.ceil(baseline / SAFETY * 10 / 2**30)   # below it not even the process fits
    while _plan(params, height, width, guide, styles, baseline, tenths * 2**30 // 10) is None:
        tenths += 1   # a plan's need grows smoothly: a few steps from the process's own size
    return tenths * 2**30 // 10


def format_budget(value: int) -> str:
    return f"{value / 2**30:.1f}GB"


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
