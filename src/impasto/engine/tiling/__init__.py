"""Tiled evaluation of the Gatys objective, with the exact gradient of the whole image.

A print too large to run through VGG at once is cut into tiles whose *inner* regions
partition the image; each runs through the network with a halo of real neighbours, so
features at inner positions are the whole image's, and the loss and gradient are the
untiled ones up to rounding. Four parts, each depending only on those above it:

- ``geometry``: what the layers imply — strides, receptive-field radius, halo, alignment —
  and the Span/Tile records;
- ``plan``: cutting an image into tiles (``plan_tiles``) and the windows a cut makes;
- ``budget``: a window's memory and the tile shape that fits a byte budget;
- ``objective``: the tiled features, Grams and ``TiledObjective`` (two passes per evaluation).

The names below are the package's surface; import from here.
"""

from impasto.engine.tiling.budget import (
    ACTIVATION_FACTOR,
    estimate_tile_bytes,
    estimate_window_bytes,
    tile_shape_for_budget,
    tile_size_for_budget,
)
from impasto.engine.tiling.geometry import (
    Geometry,
    LayerInfo,
    Span,
    Tile,
    TileSize,
    extractor_geometry,
    format_tile,
    model_geometry,
    tile_shape,
)
from impasto.engine.tiling.objective import TiledObjective, build_tiled_objective, tiled_features, tiled_grams
from impasto.engine.tiling.plan import largest_window, needs_tiles, plan_tiles

__all__ = [
    "ACTIVATION_FACTOR", "Geometry", "LayerInfo", "Span", "Tile", "TileSize", "TiledObjective",
    "build_tiled_objective", "estimate_tile_bytes", "estimate_window_bytes", "extractor_geometry",
    "format_tile", "largest_window", "model_geometry", "needs_tiles", "plan_tiles", "tile_shape",
    "tile_shape_for_budget", "tile_size_for_budget", "tiled_features", "tiled_grams",
]
