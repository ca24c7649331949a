"""Tile geometry: what the layers a render uses imply for cutting its image.

Halo and alignment. With 3×3 convs (padding 1) and 2×2/2 pools, a feature at layer L sees
input pixels [q·s − r, q·s + s − 1 + r], where s = 2^(pools up to and including L) and
r = Σ over the convs up to L of 2^(pools before that conv): a conv widens the window by one
position of its own resolution on each side, a pool doubles s and leaves r. Tile corners
are aligned to ``align`` = s of the deepest layer, so pooling windows coincide with the
whole image's, and the halo is r rounded up to that alignment:
``halo = ceil(r / align) · align`` (VGG-16: relu3_1 → r 10, halo 12; relu4_2 → r 34,
halo 40; relu5_1 → r 58, halo 64). At the image border there is no halo: the convs' own
zero padding is the whole image's padding there, and a tile ending at the border also
floors its pools as the whole image does, since its start is aligned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from impasto.engine.features import VGGFeatures, check_layers, layer_names
from impasto.engine.weights import conv_shapes, model_spec
from impasto.errors import ParamError


class LayerInfo(NamedTuple):
    name: str
    channels: int
    stride: int   # input pixels per position: 2^(pools up to and including this layer)
    radius: int   # receptive-field reach beyond the position's own stride×stride block, px


@dataclass(frozen=True)
class Geometry:
    """What tiling needs to know about the layers used."""

    layers: tuple[LayerInfo, ...]   # every layer the extractor runs, up to the deepest used
    strides: dict[str, int]         # of the used layers
    radius: int                     # of the deepest used layer
    align: int                      # tile corners are multiples of this
    halo: int                       # radius rounded up to ``align``


def _walk(names: Sequence[str], conv_channels: dict[str, int], used: Iterable[str]) -> Geometry:
    used = list(dict.fromkeys(used))
    if not used:
        raise ParamError("tiling needs at least one layer")
    last = max(names.index(name) for name in used)
    layers, stride, radius, channels = [], 1, 0, 3
    for name in names[: last + 1]:
        if name.startswith("conv"):
            radius += stride
            channels = conv_channels[name]
        elif name.startswith("pool"):
            stride *= 2
        layers.append(LayerInfo(name, channels, stride, radius))
    deepest = layers[-1]
    halo = math.ceil(deepest.radius / deepest.stride) * deepest.stride
    return Geometry(tuple(layers), {info.name: info.stride for info in layers if info.name in used},
                    deepest.radius, deepest.stride, halo)


def model_geometry(model: str, layers: Iterable[str]) -> Geometry:
    """Halo, alignment and per-layer strides for ``layers`` of ``model`` (no weights loaded)."""
    layers = list(layers)
    check_layers(model, layers)
    channels = {name: shape[0] for name, shape in conv_shapes(model_spec(model)).items()}
    return _walk(layer_names(model), channels, layers)


def extractor_geometry(extractor: VGGFeatures, layers: Iterable[str]) -> Geometry:
    """As ``model_geometry``, read from a built extractor (any VGG it was built from)."""
    layers = list(layers)
    missing = [name for name in layers if name not in extractor.wanted]
    if missing:
        raise ParamError(f"the extractor does not return layer(s) {', '.join(missing)}")
    channels = {name: op.out_channels for name, op in zip(extractor.names, extractor.ops)
                if isinstance(op, nn.Conv2d)}
    return _walk(extractor.names, channels, layers)


@dataclass(frozen=True)
class Span:
    """One axis of a tile: the inner region [start, stop) within the window [lo, hi), px."""

    start: int
    stop: int
    lo: int
    hi: int

    def local(self, stride: int) -> slice:
        """The inner region at a layer of ``stride``, in the tile's own feature map."""
        return slice((self.start - self.lo) // stride, (self.stop - self.lo) // stride)

    def at(self, stride: int) -> slice:
        """The inner region at a layer of ``stride``, in the whole image's feature map."""
        return slice(self.start // stride, self.stop // stride)


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span

    @property
    def window(self) -> tuple[slice, slice]:
        """The pixels this tile runs through the extractor (inner region and halo)."""
        return slice(self.rows.lo, self.rows.hi), slice(self.cols.lo, self.cols.hi)

    def local(self, stride: int) -> tuple[slice, slice]:
        return self.rows.local(stride), self.cols.local(stride)

    def at(self, stride: int) -> tuple[slice, slice]:
        return self.rows.at(stride), self.cols.at(stride)



TileSize = int | tuple[int, int]   # a square tile's inner side, or its (rows, cols), px


def tile_shape(tile_size: TileSize) -> tuple[int, int]:
    """(rows, cols) of a tile size given as one side or as a shape."""
    return (tile_size, tile_size) if isinstance(tile_size, int) else (int(tile_size[0]), int(tile_size[1]))


def format_tile(tile_size: TileSize) -> str:
    rows, cols = tile_shape(tile_size)
    return f"{rows}" if rows == cols else f"{rows}×{cols}"



def check_size(height: int, width: int, geometry: Geometry) -> None:
    if height < geometry.align or width < geometry.align:
        raise ParamError(f"an image of {height}×{width} px has no positions at layer "
                         f"{geometry.layers[-1].name} (stride {geometry.align} px)")

