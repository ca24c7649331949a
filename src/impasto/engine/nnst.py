"""Neural neighbours as the style loss (Kolkin, Kucera, Paris, Sykora, Shechtman and
Shakhnarovich, "Neural Neighbor Style Transfer", 2022).

Each position of the image, described by a hypercolumn of VGG-16 features (relu1_1 …
relu4_3, ``NNST_LAYERS``, at ¼ resolution), is matched to its nearest feature in a bank of
the style's hypercolumns by centred cosine — each side less its own mean, the queries the
whole image's and the bank the style's, so the photo's parts are matched by how they differ
from the photo, not by how the photo differs from the painting (centred by the bank's mean
alone, every flat bright patch of a photo pointed the same way and took the style's darkest
flat patches: a black sky and river at 512 px). The loss is
``weight · NNST_SCALE · Σ_i w_i (1 − cos(h_i, t_i)) / Σ_i w_i`` over positions i with
targets t (uncentred, as the paper's) — a sum over positions, so a tile's share needs only
its own positions and their targets (the tiled objective is exact: ``TiledNNST``).

Where this departs from the paper:

- **the targets are searched once per scale**, at the scale's first evaluation, on a blend
  of the current image's hypercolumns and the photo's (``BLEND``), then held: L-BFGS needs
  one function to minimise. The paper alternates searching and optimising several times
  per scale; here the coarse-to-fine schedule's scales search again;
- **the search runs in a random projection** of the centred hypercolumns to ``SEARCH_DIMS``
  dimensions (cosine is about preserved: Johnson–Lindenstrauss), the loss in the full ones:
  2688 dimensions would cost 10× the time on a CPU;
- **the bank** holds the style rotated by 0, 90, 180 and 270 degrees (the paper's
  augmentation, without its scales), at most ``BANK_SIZE`` hypercolumns, a seeded random
  subset beyond that; several styles share it by their blend weights;
- **each layer is normalised** by its mean feature norm on the style, measured per render
  (the Keras weights' activation scales differ from torchvision's by layer: the paper's
  constants would weigh one layer 100× another here); layers then weigh alike;
- the hypercolumn's deeper layers (stride 8) are enlarged to ¼ resolution by repetition
  (nearest), the shallower ones area-averaged: every grid position depends only on the
  feature blocks over it, so aligned tiles need no extra halo for the resampling;
- the output is optimised in pixels with our content and TV terms beside it (the paper's
  NNST-Opt optimises a Laplacian pyramid); the paper's final colour correction is
  ``--color-match`` applied to the style images (color.match_colors), not a new step;
- portrait mode weighs each position by the whole image's style mask (its face share,
  ``Guide.style_masks``); region styles restrict each position's matches to its region's
  style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from impasto.engine.units import PIXEL_SCALE
from impasto.errors import ParamError

NNST_LAYERS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3",
               "relu4_1", "relu4_2", "relu4_3")
GRID = 4                  # the hypercolumns' stride, px
DEEPEST = 8               # relu4_x's stride
BANK_SIZE = 16384         # hypercolumns kept of the style(s)
SEARCH_DIMS = 256         # the search's random projection
SEARCH_VALUES = 1 << 24   # scores computed at once (queries per chunk × bank)
BLEND = 0.5               # the search's query: BLEND × the current image + the rest × the photo
ROTATIONS = (0, 1, 2, 3)  # quarter turns of the style in the bank
# Sets the loss against the Gram loss: at a photo start (tubingen × starry night, 256 px,
# default weights) the Gram term's pixel gradient is 21.3 on average and this term's 22.0
# (1.47e-7 per unit of style weight × scale): both fall as 1/positions, so one constant holds
# at every size.
NNST_SCALE = 1.5e6


def layer_stride(name: str) -> int:
    return 2 ** (int(name[4]) - 1)    # relu<block>_<n>: VGG pools once per block


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """The hypercolumn grid of a ``height×width`` image: where relu4_x has positions."""
    ratio = DEEPEST // GRID
    return (height // DEEPEST) * ratio, (width // DEEPEST) * ratio


def hypercolumns(feats: dict[str, torch.Tensor], scales: dict[str, float]) -> torch.Tensor:
    """1×D×h×w: each layer's features over its scale, resampled to the ¼ grid (``GRID``),
    concatenated. ``feats`` may be a tile's inner crops: the grid is the deepest layer's."""
    deep = feats[NNST_LAYERS[-1]]
    rows, cols = deep.shape[-2] * (DEEPEST // GRID), deep.shape[-1] * (DEEPEST // GRID)
    blocks = []
    for name in NNST_LAYERS:
        f, stride = feats[name] / scales[name], layer_stride(name)
        if stride < GRID:
            f = F.avg_pool2d(f, GRID // stride)
        elif stride > GRID:
            f = f.repeat_interleave(stride // GRID, dim=-2).repeat_interleave(stride // GRID, dim=-1)
        blocks.append(f[..., :rows, :cols])
    return torch.cat(blocks, dim=1)


def rows_of(grid: torch.Tensor) -> torch.Tensor:
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])


def layer_scales(feats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer: its mean feature norm on the style, × √(layers), so every layer's block of
    a hypercolumn has about the same norm and the whole about 1."""
    return {name: float(feats[name].norm(dim=1).mean().clamp(min=1e-8)) * math.sqrt(len(NNST_LAYERS))
            for name in NNST_LAYERS}


def _subset(count: int, keep: int, seed: int) -> torch.Tensor:
    if count <= keep:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:keep].sort().values


def style_bank(style_feats: Sequence[Sequence[dict[str, torch.Tensor]]], scales: dict[str, float],
               shares: Sequence[float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bank B×D, the style index of each row): per style, the hypercolumns of its rotations
    (``style_feats[k][r]``: style k's features turned r quarter turns), a seeded subset of
    ``shares[k] × BANK_SIZE`` of them."""
    banks, labels = [], []
    for k, (rotations, share) in enumerate(zip(style_feats, shares)):
        rows = torch.cat([rows_of(hypercolumns(feats, scales)) for feats in rotations])
        keep = _subset(len(rows), max(1, round(BANK_SIZE * share)), seed * 31 + k).to(rows.device)
        banks.append(rows[keep])
        labels.append(torch.full((len(keep),), k, dtype=torch.long, device=rows.device))
    return torch.cat(banks), torch.cat(labels)


class Search:
    """Nearest bank rows by centred cosine, in a seeded random projection, in chunks."""

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor | None, seed: int):
        self.mean = bank.mean(0)
        generator = torch.Generator().manual_seed(seed)
        dims = min(SEARCH_DIMS, bank.shape[1])
        self.projection = torch.randn(bank.shape[1], dims, generator=generator, dtype=torch.float64).to(bank)
        self.keys = F.normalize((bank - self.mean) @ self.projection, dim=1)
        self.labels = labels

    def __call__(self, queries: torch.Tensor, regions: torch.Tensor | None = None,
                 centre: torch.Tensor | None = None) -> torch.Tensor:
        """The bank row of each query row (n×D); ``regions`` (n, style indices): matches only
        among that style's rows; ``centre``: what the queries are centred by (the renders
        pass the whole query set's own mean; default the bank's)."""
        chunk = max(1, SEARCH_VALUES // len(self.keys))
        shift = (self.mean if centre is None else centre) @ self.projection
        found = []
        for start in range(0, len(queries), chunk):
            q = F.normalize(queries[start : start + chunk] @ self.projection - shift, dim=1)
            scores = q @ self.keys.T
            if regions is not None:
                other = regions[start : start + chunk, None] != self.labels[None, :]
                scores = scores.masked_fill(other, -2.0)
            found.append(scores.argmax(1))
        return torch.cat(found) if found else queries.new_zeros(0, dtype=torch.long)


def cosine_terms(h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 − cos(h, t) per row: uncentred, as the paper's loss (its search is centred). A loss
    centred by the bank's mean is indifferent to h = μ + ε(t − μ) for any small ε, a
    position that drifts to the style's average grey; ReLU hypercolumns are non-negative,
    so the uncentred cosine also asks for their magnitudes' pattern."""
    return 1 - F.cosine_similarity(h, targets, dim=1, eps=1e-8)


class NNSTLoss(nn.Module):
    """The whole-image nnst term: takes the extractor's dict of features."""

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor, scales: dict[str, float], weight: float,
                 photo: torch.Tensor, seed: int, weights: torch.Tensor | None = None,
                 regions: torch.Tensor | None = None):
        super().__init__()
        self.search = Search(bank, labels if regions is not None else None, seed)
        self.bank, self.scales, self.weight = bank, scales, weight
        self.photo = photo                       # n×D: the photo's hypercolumns
        self.weights = weights                   # n (None: every position alike)
        self.regions = regions                   # n style indices (region styles)
        self.index: torch.Tensor | None = None   # found at the first evaluation, then held

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        h = rows_of(hypercolumns(feats, self.scales))
        if self.index is None:
            with torch.no_grad():
                queries = BLEND * h.detach() + (1 - BLEND) * self.photo
                self.index = self.search(queries, self.regions, centre=queries.mean(0))
        terms = cosine_terms(h, self.bank[self.index])
        if self.weights is None:
            return self.weight * NNST_SCALE * terms.mean()
        return self.weight * NNST_SCALE * (self.weights * terms).sum() / self.weights.sum().clamp(min=1e-12)


def _rotations(style: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(style, turns, dims=(-2, -1)) for turns in ROTATIONS]


def _position_guidance(guide, rows: int, cols: int):
    """(weights, regions) per grid position from a Guide, or Nones."""
    if guide is None or not guide.active:
        return None, None
    from impasto.engine.masks import at_size

    weights = guide.style_masks(rows, cols)[0].reshape(-1)
    regions = None
    if guide.regions is not None:
        regions = at_size(guide.regions, rows, cols).argmax(1).reshape(-1)
        weights = None
    return weights, regions


def check_params(params) -> None:
    if params.normalize_gradients:
        raise ParamError("--normalize-gradients does not apply with --style-loss nnst")


def _bank_for(feature_fn, styles, params, regions: bool):
    per_style = [[feature_fn(turned * PIXEL_SCALE) for turned in _rotations(style)] for style in styles]
    scales = layer_scales(per_style[0][0])
    shares = [1 / len(styles)] * len(styles) if regions else params.blend_weights(len(styles))
    bank, labels = style_bank(per_style, scales, shares, params.seed)
    return bank, labels, scales


def build_nnst_term(extractor, content: torch.Tensor, styles: Sequence[torch.Tensor], params, guide=None
                    ) -> NNSTLoss:
    """The whole image's nnst term (``scale.build_objective``); the search waits for the
    first evaluation's image."""
    check_params(params)
    regions = guide is not None and guide.active and guide.regions is not None
    with torch.no_grad():
        bank, labels, scales = _bank_for(extractor, styles, params, regions)
        photo = rows_of(hypercolumns(extractor(content * PIXEL_SCALE), scales))
    weights, positions = _position_guidance(guide, *grid_shape(*content.shape[-2:]))
    return NNSTLoss(bank, labels, scales, params.style_weight, photo, params.seed + params.image_size,
                    weights=None if weights is None else weights.to(bank), regions=positions)


def _grid_slices(tile) -> tuple[slice, slice]:
    """A tile's inner region on the whole image's hypercolumn grid."""
    ratio = DEEPEST // GRID
    rows, cols = tile.at(DEEPEST)
    return slice(rows.start * ratio, rows.stop * ratio), slice(cols.start * ratio, cols.stop * ratio)


def _tile_hypercolumns(feats, tile, geometry, scales) -> torch.Tensor:
    crops = {name: feats[name][(..., *tile.local(geometry.strides[name]))] for name in NNST_LAYERS}
    return rows_of(hypercolumns(crops, scales))


class TiledNNST:
    """The nnst term of the tiled objective (a ``tiling.objective.TiledTerm``): the search
    runs tile by tile at the first evaluation (the photo's window beside the image's) into
    a whole-image index map; each tile's share is then its positions' terms over the whole
    image's Σw — the loss is a sum over positions, so the tiles' shares are the loss."""

    def __init__(self, bank, labels, scales, weight: float, photo_pixels: torch.Tensor, seed: int,
                 weights: torch.Tensor | None, regions: torch.Tensor | None, grid: tuple[int, int]):
        self.search = Search(bank, labels if regions is not None else None, seed)
        self.bank, self.scales, self.weight, self.photo_pixels = bank, scales, weight, photo_pixels
        self.grid = grid
        self.position_weights = None if weights is None else weights.view(*grid)
        self.regions = None if regions is None else regions.view(*grid)
        self.total = (float(self.position_weights.sum()) if self.position_weights is not None
                      else float(grid[0] * grid[1]))
        self.index: torch.Tensor | None = None     # the whole grid's bank rows (int64)
        self.layers = list(NNST_LAYERS)
        self.weights: dict[str, float] = {}        # no normalize_gradients (check_params)

    def prepare(self, extractor, pixels, tiles, geometry) -> None:
        if self.index is not None:
            return
        self.index = torch.zeros(self.grid, dtype=torch.long, device=pixels.device)

        def queries(tile) -> torch.Tensor:
            here = _tile_hypercolumns(extractor(pixels[(..., *tile.window)]), tile, geometry, self.scales)
            photo = _tile_hypercolumns(extractor(self.photo_pixels[(..., *tile.window)]), tile, geometry,
                                       self.scales)
            return BLEND * here + (1 - BLEND) * photo

        with torch.no_grad():
            # the queries are centred by the whole image's mean, as the whole-image term's
            # are: a first pass sums them (a tile's rows are not kept: at 4096² they would
            # take a GiB), the second searches
            centre = sum(queries(tile).sum(0) for tile in tiles) / (self.grid[0] * self.grid[1])
            for tile in tiles:
                at = _grid_slices(tile)
                regions = None if self.regions is None else self.regions[at].reshape(-1)
                found = self.search(queries(tile), regions, centre=centre)
                self.index[at] = found.view(at[0].stop - at[0].start, at[1].stop - at[1].start)

    def start(self) -> None:
        pass

    def collect(self, feats, tile, geometry) -> None:
        pass

    def finish(self) -> None:
        pass

    def tile_loss(self, feats, tile, geometry) -> torch.Tensor:
        """This tile's share of the loss, differentiable in its features."""
        h = _tile_hypercolumns(feats, tile, geometry, self.scales)
        at = _grid_slices(tile)
        terms = cosine_terms(h, self.bank[self.index[at].reshape(-1)])
        if self.position_weights is not None:
            terms = terms * self.position_weights[at].reshape(-1)
        return self.weight * NNST_SCALE * terms.sum() / max(self.total, 1e-12)


def build_tiled_nnst_term(extractor, content: torch.Tensor, styles: Sequence[torch.Tensor], params, *,
                          tile_size, tiled_features, guide=None) -> TiledNNST:
    """``build_nnst_term``'s tiled twin: the style's features tiled (``tiled_features``, passed
    in by the tiled objective: this module imports nothing of tiling's), the photo kept as
    pixels (its hypercolumns are taken tile by tile at the search)."""
    check_params(params)
    regions = guide is not None and guide.active and guide.regions is not None

    def features(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return tiled_features(extractor, pixels, list(NNST_LAYERS), tile_size=tile_size)

    with torch.no_grad():
        bank, labels, scales = _bank_for(features, styles, params, regions)
    grid = grid_shape(*content.shape[-2:])
    weights, positions = _position_guidance(guide, *grid)
    return TiledNNST(bank, labels, scales, params.style_weight, content * PIXEL_SCALE,
                     params.seed + params.image_size, None if weights is None else weights.to(bank),
                     positions, grid)


def nnst_bytes(params, height: int, width: int, guide, styles: Sequence[tuple[int, int]], *,
               tiled: bool, geometry) -> tuple[int, int, int]:
    """(kept, set-up, evaluation) bytes of the nnst term (memory.style_term_bytes): the bank
    (and its projected keys), the photo's hypercolumns (whole image) or pixels (tiled), the
    index map; building it holds one rotated style's features; an evaluation gathers the
    targets and, on the whole image, keeps the hypercolumns for backward."""
    # geometry: tiling.model_geometry of NNST_LAYERS, passed in by memory (no import cycle)
    depth = sum(info.channels for info in geometry.layers if info.name in NNST_LAYERS)
    rows, cols = grid_shape(height, width)
    positions = rows * cols
    bank = min(BANK_SIZE, sum(len(ROTATIONS) * (r // GRID) * (c // GRID) for r, c in styles))
    kept = bank * (depth + SEARCH_DIMS) * 4 + positions * 8 + (positions * 4 if guide is not None else 0)
    kept += 3 * height * width * 4 if tiled else positions * depth * 4
    largest = max((r * c for r, c in styles), default=height * width)
    built = largest * sum(info.channels / info.stride ** 2 for info in geometry.layers
                          if info.name in NNST_LAYERS) * 4 * len(ROTATIONS)
    search = SEARCH_VALUES * 4
    evaluated = search if tiled else max(search, 4 * positions * depth * 4)
    return int(kept), int(built), int(evaluated)
