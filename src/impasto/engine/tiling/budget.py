"""What a tile costs in memory, and the tile shape that fits a budget."""

from __future__ import annotations

import math
from collections.abc import Iterable

from impasto.engine.params import MAX_IMAGE_SIZE
from impasto.engine.tiling.geometry import Geometry, TileSize, model_geometry, tile_shape
from impasto.engine.tiling.plan import axis_cut
from impasto.errors import ParamError

# Peak bytes of one tile's forward + backward per activation byte: conv backward keeps each
# conv's input, max pooling its int64 indices, and backward allocates gradients as large as
# the activations while the saved ones are alive. Measured on CPU through the tiled
# objective's own gradient pass (VmHWM, float32, VGG-16, default layers, windows of
# 640² to 1408×1152 px: `bench/prints.py tile-peak`): 1.98–2.05×.
ACTIVATION_FACTOR = 2.1


def estimate_window_bytes(rows: int, cols: int, layers: Iterable[str], *, model: str = "vgg16",
                          bytes_per_value: int = 4) -> int:
    """Memory of a forward and backward through a ``rows``×``cols`` window (halos included).

    Σ over every layer run (convs, ReLUs kept apart from their conv, pools) of
    C·h·w·bytes, times ``ACTIVATION_FACTOR``. Weights, the full-image buffers and
    allocator slack come on top.
    """
    geometry = model_geometry(model, layers)
    values = 3 * rows * cols
    for info in geometry.layers:
        if info.name.startswith("relu") and info.name.replace("relu", "conv") not in geometry.strides:
            continue  # in place on its conv's output (features.VGGFeatures)
        values += info.channels * (rows // info.stride) * (cols // info.stride)
    return int(values * bytes_per_value * ACTIVATION_FACTOR)


def estimate_tile_bytes(tile_size: TileSize, layers: Iterable[str], *, model: str = "vgg16",
                        bytes_per_value: int = 4) -> int:
    """``estimate_window_bytes`` of an interior tile of ``tile_size`` (side or shape): its
    inner region with a halo on both sides — the most any tile of that size can need."""
    halo = model_geometry(model, layers).halo
    rows, cols = (side + 2 * halo for side in tile_shape(tile_size))
    return estimate_window_bytes(rows, cols, layers, model=model, bytes_per_value=bytes_per_value)



def tile_size_for_budget(budget_bytes: int, layers: Iterable[str], *, model: str = "vgg16",
                         bytes_per_value: int = 4) -> int:
    """The largest aligned tile side whose ``estimate_tile_bytes`` fits ``budget_bytes``."""
    layers = list(layers)
    if not budget_bytes > 0:
        raise ParamError(f"memory budget must be positive, got {budget_bytes}")
    align = model_geometry(model, layers).align

    def fits(units: int) -> bool:
        return estimate_tile_bytes(units * align, layers, model=model,
                                   bytes_per_value=bytes_per_value) <= budget_bytes

    if not fits(1):
        need = estimate_tile_bytes(align, layers, model=model, bytes_per_value=bytes_per_value)
        raise ParamError(f"memory budget of {budget_bytes / 2**20:.1f} MiB is below the "
                         f"{need / 2**20:.1f} MiB one {align} px tile needs")
    low, high = 1, math.ceil(MAX_IMAGE_SIZE / align)  # fits(low); the estimate grows with the side
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low * align


def tile_shape_for_budget(height: int, width: int, budget_bytes: int, layers: Iterable[str], *,
                          model: str = "vgg16", max_side: int = 0) -> tuple[int, int]:
    """The (rows, cols) tile that covers a ``height×width`` image at the least compute
    within ``budget_bytes`` (and ``max_side``, if given).

    Compute grows with the pixels run through VGG — the inner regions plus every tile's
    halo — so fewer, larger tiles are cheaper. A square tile would be cut down to share
    the image evenly (976 px fits but a 1024² image then takes four 512² tiles); letting
    the tile be a rectangle — one band of 1024×512 tiles there — uses the budget the
    square leaves idle. Memory is that of the plan's largest window (``largest_window``):
    with two tiles a side, both are border tiles, a halo short of an interior one.
    """
    layers = list(layers)
    geometry = model_geometry(model, layers)
    align = geometry.align
    row_units, col_units = math.ceil(height / align), math.ceil(width / align)
    limit = (max_side // align) if max_side else max(row_units, col_units)
    best = None
    for row_count in range(1, row_units + 1):
        rows = math.ceil(row_units / row_count)          # units per tile, balanced
        if rows > limit or math.ceil(row_units / rows) != row_count:   # over the cap, or a count seen
            continue
        _, row_window, row_sum = axis_cut(height, rows, geometry)
        cols = _widest_fitting(row_window, width, min(col_units, limit), budget_bytes, layers, model, geometry)
        if not cols:
            continue
        col_count, _, col_sum = axis_cut(width, cols, geometry)
        cols = math.ceil(col_units / col_count)          # balanced, as plan_tiles splits
        cost = row_sum * col_sum
        if best is None or (cost, row_count * col_count) < best[0]:
            best = ((cost, row_count * col_count), (rows * align, cols * align))
    if best is None:
        side = tile_size_for_budget(budget_bytes, layers, model=model)  # raises: not even one unit fits
        return side, side
    return best[1]


def _widest_fitting(row_window: int, width: int, most: int, budget_bytes: int, layers: list[str],
                    model: str, geometry: Geometry) -> int:
    """Largest tile width in ``align`` units (≤ ``most``) whose largest window fits beside
    ``row_window`` rows; 0 if none does."""
    def fits(units: int) -> bool:
        window = axis_cut(width, units, geometry)[1]
        return estimate_window_bytes(row_window, window, layers, model=model) <= budget_bytes

    low, high = 0, most
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low

