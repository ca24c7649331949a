"""Tile plans: an image cut into aligned tiles whose inner regions partition it."""

from __future__ import annotations

import math

from impasto.engine.tiling.geometry import Geometry, Span, Tile, TileSize, format_tile, tile_shape
from impasto.errors import ParamError


def _split_axis(length: int, tile_size: int, align: int, halo: int) -> list[Span]:
    """Aligned inner spans of at most ``tile_size`` covering [0, length), balanced in size.

    The axis is cut into ``align``-px units (the last one may be partial) shared as evenly as
    possible, so no tile is a sliver; only the last span ends off the alignment, at the border.
    """
    units, per_tile = math.ceil(length / align), tile_size // align
    count = math.ceil(units / per_tile)
    spans, start = [], 0
    for index in range(count):
        stop = min(length, start + align * (units // count + (index < units % count)))
        spans.append(Span(start, stop, max(0, start - halo), min(length, stop + halo)))
        start = stop
    return spans



def needs_tiles(height: int, width: int, tile_size: TileSize) -> bool:
    """Whether an image of ``height×width`` is larger than one tile (0: never tiled)."""
    if not tile_size:
        return False
    rows, cols = tile_shape(tile_size)
    return height > rows or width > cols


def plan_tiles(height: int, width: int, tile_size: TileSize, geometry: Geometry) -> list[Tile]:
    """Tiles whose inner regions partition a ``height×width`` image, row by row.

    ``tile_size`` (the inner side, or (rows, cols), px) is rounded down to a multiple of
    ``geometry.align``.
    """
    if height < 1 or width < 1:
        raise ParamError(f"cannot tile an image of {height}×{width} px")
    tile_rows, tile_cols = tile_shape(tile_size)
    if min(tile_rows, tile_cols) < geometry.align:
        raise ParamError(f"tile size {format_tile(tile_size)} px is below the {geometry.align} px "
                         f"alignment of layer {geometry.layers[-1].name}")
    rows = _split_axis(height, tile_rows, geometry.align, geometry.halo)
    cols = _split_axis(width, tile_cols, geometry.align, geometry.halo)
    return [Tile(r, c) for r in rows for c in cols]



def largest_window(height: int, width: int, tile_size: TileSize, geometry: Geometry) -> tuple[int, int]:
    """(rows, cols) of the largest window ``plan_tiles`` makes: a border tile has a halo on
    its inner side only and a lone tile none, so two tiles a side need less than interior ones."""
    if not needs_tiles(height, width, tile_size):
        return height, width
    tile_rows, tile_cols = tile_shape(tile_size)
    return (axis_cut(height, tile_rows // geometry.align, geometry)[1],
            axis_cut(width, tile_cols // geometry.align, geometry)[1])


def axis_cut(length: int, per_tile: int, geometry: Geometry) -> tuple[int, int, int]:
    """For an axis cut as ``_split_axis`` cuts it: the tile count, the largest window and
    all windows' sum — computed, not listed (the planner asks for thousands of cuts)."""
    align, halo = geometry.align, geometry.halo
    units = math.ceil(length / align)
    count = math.ceil(units / per_tile)
    if count == 1:
        return 1, length, length
    base, extra = divmod(units, count)      # the first ``extra`` spans get one more unit
    first = (base + (extra > 0)) * align + halo
    middle = (base + (extra > 1)) * align + 2 * halo if count > 2 else 0
    last = length - align * ((count - 1) * base + min(extra, count - 1)) + halo
    return count, min(length, max(first, middle, last)), length + 2 * halo * (count - 1)

