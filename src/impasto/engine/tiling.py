"""Tiled evaluation of the Gatys objective, with the exact gradient of the whole image.

A print too large to run through VGG at once is cut into tiles whose *inner* regions
partition the image. Each tile runs through the extractor with a halo of real neighbouring
pixels around its inner region; features at inner positions then equal the whole image's
features there, and halo positions are discarded. The loss is not a sum of per-tile losses
(a Gram is global), so one evaluation makes two passes:

1. no grad: accumulate Σ FᵀF of every style layer over the tiles' inner regions → the global
   Gram, the style loss and its derivative dL/dG (a C×C matrix per layer);
2. one tile at a time, with grad: a surrogate scalar whose gradient w.r.t. the tile's inner
   features equals the global loss's gradient there — ⟨dL/dG, FᵀF⟩/(C·H·W) for style,
   w·Σ(F − P)²/N for content — is backpropagated to the tile's pixels, halo included:
   inner regions partition the features, so the tiles' pixel gradients sum to the total.

Memory is bounded by one tile's activations, and there are no seams by construction: the
gradient is the untiled one up to rounding. Compute is about 1.5× an untiled evaluation
(an extra forward) plus the halo's share; with ``normalize_gradients`` one more forward
gives each loss's global gradient L1 norm, as ``losses._NormalizeGradient`` needs.

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

import torch
from torch import nn

from impasto.engine.features import VGGFeatures, check_layers, layer_names
from impasto.engine.params import MAX_IMAGE_SIZE, RenderParams
from impasto.engine.weights import conv_shapes, model_spec
from impasto.errors import ParamError

PIXEL_SCALE = 255.0  # as render.PIXEL_SCALE; not imported, so render may import this module
# Peak bytes of one tile's forward + backward per activation byte: conv backward keeps each
# conv's input, max pooling its int64 indices, and backward allocates gradients as large as
# the activations while the saved ones are alive. Measured on CPU through the tiled
# objective's own gradient pass (VmHWM, float32, VGG-16, default layers, windows of
# 640² to 1408×1152 px: `bench/prints.py tile-peak`): 1.98–2.05×.
ACTIVATION_FACTOR = 2.1
NORMALIZE_EPS = 1e-8  # as losses._NormalizeGradient


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


TileSize = int | tuple[int, int]   # a square tile's inner side, or its (rows, cols), px


def tile_shape(tile_size: TileSize) -> tuple[int, int]:
    """(rows, cols) of a tile size given as one side or as a shape."""
    return (tile_size, tile_size) if isinstance(tile_size, int) else (int(tile_size[0]), int(tile_size[1]))


def format_tile(tile_size: TileSize) -> str:
    rows, cols = tile_shape(tile_size)
    return f"{rows}" if rows == cols else f"{rows}×{cols}"


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


def _check_size(height: int, width: int, geometry: Geometry) -> None:
    if height < geometry.align or width < geometry.align:
        raise ParamError(f"an image of {height}×{width} px has no positions at layer "
                         f"{geometry.layers[-1].name} (stride {geometry.align} px)")


def _gram_sum(features: torch.Tensor) -> torch.Tensor:
    """Unnormalised Σ FᵀF over positions (C×C), for a crop of any memory layout."""
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    return rows.T @ rows


@torch.no_grad()
def tiled_features(extractor: VGGFeatures, pixels: torch.Tensor, layers: Sequence[str], *,
                   tile_size: TileSize, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """``extractor(pixels)`` at ``layers``, assembled tile by tile from inner regions
    (stored in ``dtype`` if given: a whole-image buffer is never made in the features')."""
    geometry = extractor_geometry(extractor, layers)
    height, width = pixels.shape[-2:]
    _check_size(height, width, geometry)
    out: dict[str, torch.Tensor] = {}
    for tile in plan_tiles(height, width, tile_size, geometry):
        feats = extractor(pixels[(..., *tile.window)])
        for name in layers:
            stride = geometry.strides[name]
            crop = feats[name][(..., *tile.local(stride))]
            if name not in out:
                out[name] = crop.new_zeros((*crop.shape[:2], height // stride, width // stride),
                                           dtype=dtype or crop.dtype)
            out[name][(..., *tile.at(stride))] = crop
    return out


def _gram_sums(extractor: VGGFeatures, pixels: torch.Tensor, layers: Sequence[str],
               tiles: Sequence[Tile], geometry: Geometry,
               masks: dict[str, torch.Tensor] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: Σ (mF)ᵀ(mF) over every tile's inner region for each of R masks (R×C×C),
    and their element counts C·Σm² (R values); without masks R = 1 and m = 1."""
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for tile in tiles:
            feats = extractor(pixels[(..., *tile.window)])
            for name in layers:
                stride = geometry.strides[name]
                crop = feats[name][(..., *tile.local(stride))]
                grams, counts = _masked_sums(crop, _mask_crop(masks, name, tile, stride))
                total, count = sums.get(name, (0, 0))
                sums[name] = (total + grams, count + counts)
    return sums


def _mask_crop(masks: dict[str, torch.Tensor] | None, name: str, tile: Tile, stride: int
               ) -> torch.Tensor | None:
    if masks is None:
        return None
    crop = masks[name][(..., *tile.at(stride))]
    # stored in float16 under a budget; their sums over a tile would overflow in it
    return crop.float() if crop.dtype == torch.float16 else crop


def _masked_sums(crop: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(R×C×C Σ (mF)ᵀ(mF), R counts C·Σm²) of one crop; R = 1 without masks."""
    if masks is None:
        return _gram_sum(crop)[None], crop.new_tensor([crop.numel()])
    channels = crop.shape[1]
    grams = torch.stack([_gram_sum(crop * mask[None]) for mask in masks])
    return grams, masks.pow(2).flatten(1).sum(1) * channels


def tiled_grams(extractor: VGGFeatures, pixels: torch.Tensor, layers: Sequence[str], *,
                tile_size: TileSize) -> dict[str, torch.Tensor]:
    """``losses.gram`` of ``extractor(pixels)`` at ``layers``, accumulated over tiles."""
    geometry = extractor_geometry(extractor, layers)
    _check_size(*pixels.shape[-2:], geometry)
    tiles = plan_tiles(*pixels.shape[-2:], tile_size, geometry)
    return {name: total[0] / count[0]
            for name, (total, count) in _gram_sums(extractor, pixels, layers, tiles, geometry).items()}


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


def largest_window(height: int, width: int, tile_size: TileSize, geometry: Geometry) -> tuple[int, int]:
    """(rows, cols) of the largest window ``plan_tiles`` makes: a border tile has a halo on
    its inner side only and a lone tile none, so two tiles a side need less than interior ones."""
    if not needs_tiles(height, width, tile_size):
        return height, width
    tile_rows, tile_cols = tile_shape(tile_size)
    return (_axis(height, tile_rows // geometry.align, geometry)[1],
            _axis(width, tile_cols // geometry.align, geometry)[1])


def _axis(length: int, per_tile: int, geometry: Geometry) -> tuple[int, int, int]:
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
        _, row_window, row_sum = _axis(height, rows, geometry)
        cols = _widest_fitting(row_window, width, min(col_units, limit), budget_bytes, layers, model, geometry)
        if not cols:
            continue
        col_count, _, col_sum = _axis(width, cols, geometry)
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
        window = _axis(width, units, geometry)[1]
        return estimate_window_bytes(row_window, window, layers, model=model) <= budget_bytes

    low, high = 0, most
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def _style_feature_grad(crop: torch.Tensor, dgram: torch.Tensor, count: torch.Tensor,
                        masks: torch.Tensor | None) -> torch.Tensor:
    """d/dF (rows of positions × C) of Σ_r ⟨D_r, Σ m²FFᵀ⟩/count_r = Σ_r m²·F(D_r + D_rᵀ)/count_r."""
    rows = crop.permute(0, 2, 3, 1).reshape(-1, crop.shape[1])
    grad = rows.new_zeros(rows.shape)
    for r in range(dgram.shape[0]):
        part = rows @ (dgram[r] + dgram[r].T) / count[r]
        if masks is not None:
            part = part * masks[r].permute(1, 2, 0).reshape(-1, 1).pow(2)
        grad += part
    return grad


TV_STRIPE_VALUES = 1 << 22   # pixels·channels per stripe of the striped TV loss


def _tv_into(pixels: torch.Tensor, weight: float, grad: torch.Tensor) -> float:
    """``losses.tv_loss`` of ``pixels``, its gradient added to ``grad``, stripe by stripe.

    Each stripe of rows owns its rows' horizontal differences and the vertical ones down to
    the next row, so the stripes' terms sum to the whole loss without full-size temporaries
    (at print size the whole-image version made four image-sized copies)."""
    height, width = pixels.shape[-2:]
    rows = max(1, TV_STRIPE_VALUES // max(1, pixels.shape[-3] * width))
    total = 0.0
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        leaf = pixels[..., top:min(height, bottom + 1), :].clone().requires_grad_(True)
        with torch.enable_grad():
            owned = leaf[..., : bottom - top, :]
            dx = owned[..., :, 1:] - owned[..., :, :-1]
            dy = leaf[..., 1:, :] - leaf[..., :-1, :]
            value = weight * 0.5 * (dx.pow(2).sum() + dy.pow(2).sum())
            value.backward()
        grad[..., top:min(height, bottom + 1), :] += leaf.grad
        total += float(value.detach())
    return total


class _InjectGradient(torch.autograd.Function):
    """A precomputed loss whose backward hands ``pixels`` the precomputed gradient."""

    @staticmethod
    def forward(ctx, pixels, total, grad):
        ctx.grad = grad
        return total.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.grad, None, None


class TiledObjective(nn.Module):
    """``render.Objective`` evaluated tile by tile, with the same loss and gradient.

    ``content_targets`` are whole-image features per content layer (``tiled_features``);
    ``style_grams`` the blended target Grams per style layer; ``style_weights`` the weight
    of each style layer (``style_weight × layer weight``). Calling it as ``Objective`` is
    called — ``total, parts = objective(pixels); total.backward()`` — runs both passes in
    the call; ``loss_and_grad`` returns the gradient directly. Targets are kept as given
    (not buffers): build it on the device it will run on, as ``build_tiled_objective`` does.
    """

    def __init__(self, extractor: VGGFeatures, content_targets: dict[str, torch.Tensor],
                 style_grams: dict[str, torch.Tensor], *, content_weight: float,
                 style_weights: dict[str, float], tv_weight: float, tile_size: TileSize,
                 normalize: bool = False, content_weights: dict[str, torch.Tensor] | None = None,
                 style_masks: dict[str, torch.Tensor] | None = None, region_weights: list[float] | None = None,
                 anchor=None):
        super().__init__()
        if set(style_weights) != set(style_grams):
            raise ParamError("style weights and style Grams must name the same layers")
        self.extractor = extractor
        self.content_targets = {name: t.detach() for name, t in content_targets.items()}
        self.style_grams = {name: g.detach() for name, g in style_grams.items()}
        self.content_weight, self.style_weights = content_weight, dict(style_weights)
        self.tv_weight, self.normalize = tv_weight, normalize
        self.anchor = anchor   # anchor.PreviewAnchor: keep the preview this print continues
        self.geometry = extractor_geometry(extractor, [*self.content_targets, *self.style_grams])
        self.tile_size = tile_size
        # masks.Guide at each layer's resolution: per-position content weights (1×1×h×w)
        # and region/face masks of the Grams (R×1×h×w, with R target Grams per layer)
        self.content_weights, self.style_masks = content_weights, style_masks
        self.region_weights = None if region_weights is None else torch.tensor(region_weights, dtype=torch.float64)
        self._tiles: dict[tuple[int, int], list[Tile]] = {}

    def tiles(self, height: int, width: int) -> list[Tile]:
        key = (height, width)
        if key not in self._tiles:
            self._check_shape(height, width)
            self._tiles[key] = plan_tiles(height, width, self.tile_size, self.geometry)
        return self._tiles[key]

    def _check_shape(self, height: int, width: int) -> None:
        _check_size(height, width, self.geometry)
        for name, target in self.content_targets.items():
            stride = self.geometry.strides[name]
            if tuple(target.shape[-2:]) != (height // stride, width // stride):
                raise ParamError(f"image of {height}×{width} px does not match the content "
                                 f"target of {name} ({tuple(target.shape[-2:])} at stride {stride})")

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts, grad = self.loss_and_grad(pixels)
        return _InjectGradient.apply(pixels, pixels.new_tensor(total), grad), parts

    def loss_and_grad(self, pixels: torch.Tensor) -> tuple[float, dict[str, float], torch.Tensor]:
        """Total loss, its parts (content, style, tv, total) and d(total)/d(pixels)."""
        pixels = pixels.detach()
        tiles = self.tiles(*pixels.shape[-2:])
        style, style_grads = self._style_pass(pixels, tiles)
        scales = self._norm_pass(pixels, tiles, style_grads) if self.normalize else {}
        content, grad = self._grad_pass(pixels, tiles, style_grads, scales)
        parts = {"content": content, "style": style,
                 "tv": _tv_into(pixels, self.tv_weight, grad) if self.tv_weight else 0.0}
        if self.anchor is not None:
            parts["preview"] = self.anchor.loss_into(pixels, grad)
        parts["total"] = sum(parts.values())
        return parts["total"], parts, grad

    def _style_pass(self, pixels: torch.Tensor, tiles: Sequence[Tile]
                    ) -> tuple[float, dict[str, tuple[torch.Tensor, int]]]:
        """Pass 1: the global style loss, and per layer dL/dG with the layer's C·H·W."""
        value, grads = 0.0, {}
        if not self.style_grams:
            return value, grads
        sums = _gram_sums(self.extractor, pixels, list(self.style_grams), tiles, self.geometry,
                          self.style_masks)
        for name, (total, count) in sums.items():
            diff = total / count[:, None, None] - self.style_grams[name]  # R×C×C
            weight, channels = self.style_weights[name], diff.shape[-1]
            regions = (torch.ones(len(diff), dtype=diff.dtype, device=diff.device) if self.region_weights is None
                       else self.region_weights.to(diff))
            # StyleLoss is weight·Σ_r w_r·mean((G_r − A_r)²) over the C² entries of each region's Gram.
            value += float(weight * (regions * diff.pow(2).mean(dim=(1, 2))).sum())
            grads[name] = (weight * 2 * regions[:, None, None] * diff / channels ** 2, count)
        return value, grads

    def _norm_pass(self, pixels: torch.Tensor, tiles: Sequence[Tile],
                   style_grads: dict[str, tuple[torch.Tensor, int]]) -> dict[tuple[str, str], float]:
        """Per loss, the factor ``_NormalizeGradient`` applies: weight / (‖dL/dF‖₁ + ε)."""
        norms: dict[tuple[str, str], float] = {}
        with torch.no_grad():
            for tile in tiles:
                feats = self.extractor(pixels[(..., *tile.window)])
                for name, target in self.content_targets.items():
                    crop, goal = self._crops(feats, target, tile, name)
                    grad = 2 * self.content_weight * self._content_weight(name, tile) * (crop - goal) / target.numel()
                    norms["content", name] = norms.get(("content", name), 0.0) + float(grad.abs().sum())
                for name, (dgram, count) in style_grads.items():
                    stride = self.geometry.strides[name]
                    crop = feats[name][(..., *tile.local(stride))]
                    grad = _style_feature_grad(crop, dgram, count, _mask_crop(self.style_masks, name, tile, stride))
                    norms["style", name] = norms.get(("style", name), 0.0) + float(grad.abs().sum())
        weights = {("content", name): self.content_weight for name in self.content_targets}
        weights |= {("style", name): self.style_weights[name] for name in style_grads}
        return {key: weights[key] / (norms.get(key, 0.0) + NORMALIZE_EPS) for key in weights}

    def _content_weight(self, name: str, tile: Tile) -> torch.Tensor | float:
        if self.content_weights is None:
            return 1.0
        return self.content_weights[name][(..., *tile.at(self.geometry.strides[name]))]

    def _crops(self, feats: dict[str, torch.Tensor], target: torch.Tensor, tile: Tile,
               name: str) -> tuple[torch.Tensor, torch.Tensor]:
        stride = self.geometry.strides[name]
        return feats[name][(..., *tile.local(stride))], target[(..., *tile.at(stride))]

    def _grad_pass(self, pixels: torch.Tensor, tiles: Sequence[Tile],
                   style_grads: dict[str, tuple[torch.Tensor, int]],
                   scales: dict[tuple[str, str], float]) -> tuple[float, torch.Tensor]:
        """Pass 2: the content loss, and the gradient of the whole loss but TV, tile by tile."""
        grad, content = torch.zeros_like(pixels), 0.0
        for tile in tiles:
            leaf = pixels[(..., *tile.window)].clone().requires_grad_(True)
            with torch.enable_grad():
                surrogate, tile_content = self._surrogate(leaf, tile, style_grads, scales)
            content += tile_content
            if surrogate.requires_grad:
                surrogate.backward()
                grad[(..., *tile.window)] += leaf.grad
        return content, grad

    def _surrogate(self, leaf: torch.Tensor, tile: Tile, style_grads: dict[str, tuple[torch.Tensor, int]],
                   scales: dict[tuple[str, str], float]) -> tuple[torch.Tensor, float]:
        """A scalar whose gradient w.r.t. the tile's inner features is the global loss's."""
        feats = self.extractor(leaf)
        surrogate, content = leaf.new_zeros(()), 0.0
        for name, target in self.content_targets.items():
            crop, goal = self._crops(feats, target, tile, name)
            # Σ over the tiles of this term is the content loss weight·mean((F − P)²).
            term = (self.content_weight * (self._content_weight(name, tile) * (crop - goal).pow(2)).sum()
                    / target.numel())
            content += float(term.detach())
            surrogate = surrogate + scales.get(("content", name), 1.0) * term
        for name, (dgram, count) in style_grads.items():
            stride = self.geometry.strides[name]
            crop = feats[name][(..., *tile.local(stride))]
            grams, _ = _masked_sums(crop, _mask_crop(self.style_masks, name, tile, stride))
            # d/dF of Σ_r ⟨dL/dG_r, (mF)ᵀ(mF)⟩/count_r is the global dL/dF on this region;
            # its value is not the loss.
            term = ((dgram * grams).sum(dim=(1, 2)) / count).sum()
            surrogate = surrogate + scales.get(("style", name), 1.0) * term
        return surrogate, content


def build_tiled_objective(extractor: VGGFeatures, content: torch.Tensor, styles: Sequence[torch.Tensor],
                          params: RenderParams, *, tile_size: TileSize, guide=None,
                          target_dtype: torch.dtype | None = None, anchor=None) -> TiledObjective:
    """``render.build_objective``'s tiled twin: same inputs (0..1 RGB), no whole-image VGG pass.

    Style images run tiled too (their Grams accumulate over tiles), so each may be as
    large as the content; ``tile_size`` is the inner side of a tile, or its (rows, cols), px. ``guide``
    (masks.Guide at the content's size) is taken to each layer's resolution once.
    ``target_dtype`` stores the content targets smaller (float16 under a memory budget:
    relu4_2 of a 4096² print is 537 MB in float32); the loss is still computed in float32.
    """
    if not styles:
        raise ParamError("at least one style image is needed")
    guide = guide if guide is not None and guide.active else None
    content_layers = (guide.content_layers(params.content_layers, extractor.wanted) if guide is not None
                      else params.content_layers)
    content_targets = tiled_features(extractor, content * PIXEL_SCALE, content_layers,
                                     tile_size=tile_size, dtype=target_dtype)
    per_style = [tiled_grams(extractor, style * PIXEL_SCALE, params.style_layers, tile_size=tile_size)
                 for style in styles]
    if guide is not None and guide.regions is not None:
        style_grams = {name: torch.stack([grams[name] for grams in per_style]) for name in params.style_layers}
    else:
        blend = params.blend_weights(len(styles))
        style_grams = {name: sum(w * grams[name] for w, grams in zip(blend, per_style))
                       for name in params.style_layers}
    style_weights = dict(zip(params.style_layers, (params.style_weight * lw for lw in params.layer_weights())))
    content_weights = style_masks = region_weights = None
    if guide is not None:
        geometry = extractor_geometry(extractor, [*content_layers, *params.style_layers])
        height, width = content.shape[-2:]

        def layer_size(name: str) -> tuple[int, int]:
            return height // geometry.strides[name], width // geometry.strides[name]

        # in the content's dtype: float32 mask sums would cost float64 renders their exactness
        if guide.likeness is not None:
            content_weights = {name: guide.content_weights(*layer_size(name), name).to(content)
                               for name in content_layers}
        # float16 under a budget (with the targets): a mask's values need no more
        mask_dtype = torch.float16 if target_dtype == torch.float16 else content.dtype
        style_masks = {name: guide.style_masks(*layer_size(name)).to(content.device, mask_dtype)
                       for name in params.style_layers}
        region_weights = guide.style_region_weights()
    return TiledObjective(extractor, content_targets, style_grams, content_weight=params.content_weight,
                          style_weights=style_weights, tv_weight=params.tv_weight, tile_size=tile_size,
                          normalize=params.normalize_gradients, content_weights=content_weights,
                          style_masks=style_masks, region_weights=region_weights, anchor=anchor)
