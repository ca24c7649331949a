"""Sliced-Wasserstein style loss (Heitz, Vanhoey, Chambon and Belcour, "A Sliced Wasserstein
Loss for Neural Texture Synthesis", CVPR 2021).

Per style layer the features (positions × C) are projected on P random unit directions;
along each direction the image's sorted projections are matched to the style's quantiles:

    L = weight · SW_SCALE · Σ_r w_r · Σ_{i,p} m_ri (x_ip − Q_rp(u_rip))² / (Σ_i m_ri · P · ν_r)

where x = F·D, u_rip is position i's quantile level along direction p — its mid cumulative
mask weight in sorted order, (rank + ½)/N without a mask — Q_rp the style's quantile
function there, and ν_r the style's mean squared projection. It holds the whole distribution
of each layer's features, which a Gram (second moments only) washes out.

Where this departs from the paper:

- the directions are **fixed within one scale** (seeded from ``seed`` and the scale's size,
  ``layer_seed``), not redrawn at every step: L-BFGS needs one function to minimise;
  they are redrawn between scales, so the coarse-to-fine schedule still sees many;
- the style's quantiles are **interpolated** (linearly, at most ``MAX_LEVELS`` levels), so
  image and style may have different sizes; the paper compares equal-sized sorts;
- each layer is **divided by ν** (the style's mean squared projection), so every layer
  weighs alike whatever the Keras weights' activation scale there, and ``SW_SCALE`` makes
  ``--style-weight`` mean about what it means for the Gram loss (measured: the two losses'
  pixel gradients of the same size at a photo start, tubingen × starry night at 256 px);
- several styles blend by **averaging their quantile functions** (the 1-D Wasserstein
  barycentre, along each direction); the paper has one style;
- with masks (portrait mode's face and region styles, ``masks.Guide.style_masks``) each
  position weighs ``m`` in its region's distribution — the guided Gram weighs m² —, so the
  face is matched to the painting's distribution on its own.

Tiling (``SlicedHistogram``): the loss's gradient in x_ip is 2·m_i·(x_ip − Q(u_ip))/…, so a
tile needs only each position's level u in the *global* distribution — its rank. The first
pass collects every tile's projections; a layer small enough (``EXACT_VALUES``) is sorted
whole, which is exact (the float64 test: 1e-15); a larger one — a print's shallow layers,
whose projections would not fit — is binned into per-direction histograms, and the second
pass maps each position through that global CDF (linear within a bin) and the style's
quantiles. Measured against an exact global sort (float64, tests/engine/test_sliced.py):
0.09 % relative L2 error of the style gradient, 0.32 % at its largest entry, the loss within
0.003 %, on a layer of 12 288 positions; the error falls as the positions grow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy
import torch
from torch import nn

from impasto.engine.losses import _NormalizeGradient

# Sets the loss against the Gram loss (module docstring): at a photo start (tubingen × starry
# night, 256 px, default weights) the Gram loss's pixel gradient is 21.3 on average, this
# loss's 1.1e-4 per unit of scale; both fall as 1/positions, so one constant holds at any size.
SW_SCALE = 2e5
MAX_LEVELS = 1 << 16      # quantile levels kept of a style's sorted projections
HISTOGRAM_BINS = 2048     # per direction, in the tiled objective's first pass
EXACT_VALUES = 1 << 24    # a tiled layer of at most this many positions × directions is sorted


def layer_seed(seed: int, size: int, index: int) -> int:
    """The directions' seed of style layer ``index`` at a scale of ``size`` px."""
    return (seed * 1_000_003 + size * 1009 + index) % (1 << 62)


def directions(channels: int, count: int, seed: int, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """C×P random unit directions (P = ``count``, or C if 0), drawn on the CPU so a seed gives
    the same directions on every device."""
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randn(channels, count or channels, generator=generator, dtype=torch.float64)
    return (drawn / drawn.norm(dim=0, keepdim=True)).to(device, dtype)


def feature_rows(features: torch.Tensor) -> torch.Tensor:
    """N×C×H×W features as (N·H·W)×C rows, one per position."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def mask_rows(masks: torch.Tensor) -> torch.Tensor:
    """R×1×H×W masks as (H·W)×R, in the features' row order."""
    return masks.flatten(1).T


def resample(sorted_values: torch.Tensor, levels: int) -> torch.Tensor:
    """``levels``×P quantiles, at (k + ½)/levels, of columns sorted along dim 0."""
    if sorted_values.shape[0] == levels:
        return sorted_values
    at = (torch.arange(levels, dtype=sorted_values.dtype, device=sorted_values.device) + 0.5) / levels
    return quantile(sorted_values, at[:, None].expand(levels, sorted_values.shape[1]))


def quantile(table: torch.Tensor, levels: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The quantiles at ``levels`` (n×P in 0..1) of a table of L×P sorted values, whose
    row k is the level (k + ½)/L: linear between rows, the end rows beyond them. ``dim=1``:
    the same with both transposed (P×L table, P×n levels)."""
    count = table.shape[dim]
    if count == 1:
        return table.expand_as(levels)
    position = (levels * count - 0.5).clamp(0, count - 1)
    low = position.floor().long().clamp(max=count - 2)
    frac = (position - low).to(table.dtype)
    below, above = table.gather(dim, low), table.gather(dim, low + 1)
    return below + frac * (above - below)


def style_table(features: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The sorted projections of one style's features (L×P, L ≤ MAX_LEVELS)."""
    values = (feature_rows(features) @ dirs).sort(dim=0).values
    return resample(values, min(MAX_LEVELS, values.shape[0]))


def blend_tables(tables: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The weighted mean of quantile functions: the 1-D Wasserstein barycentre per direction."""
    levels = max(table.shape[0] for table in tables)
    return sum(w * resample(table, levels) for w, table in zip(weights, tables))


def sort_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``x`` sorted, and the order that sorts it. On the CPU NumPy sorts: its
    vectorised quicksort (AVX-512 or AVX2 where the CPU has them) sorted the projections of
    a 512² render's five style layers in 0.45 s against torch.sort's 1.18 s on two threads.
    (Starting each sort from the last evaluation's order did not pay: an L-BFGS step
    reorders too much, 1.26 s.) Ties are ordered arbitrarily, which the loss does not see."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return x.sort(dim=1)
    rows = x.contiguous().numpy()
    return torch.from_numpy(numpy.sort(rows, axis=1)), torch.from_numpy(numpy.argsort(rows, axis=1))


class _SortedDistance(torch.autograd.Function):
    """A loss computed in each direction's sorted order, whose gradient in sorted order
    (``grad_sorted``) is scattered back to the positions by ``order``: the sort is a
    permutation, held fixed, so autograd need not go through it or keep its temporaries."""

    @staticmethod
    def forward(ctx, x, order, value, grad_sorted):
        ctx.save_for_backward(order, grad_sorted)
        return value

    @staticmethod
    def backward(ctx, grad_output):
        order, grad_sorted = ctx.saved_tensors
        return torch.empty_like(grad_sorted).scatter_(1, order, grad_sorted) * grad_output, None, None, None


class SlicedLoss(nn.Module):
    """The sliced-Wasserstein loss of one layer, whole image.

    ``tables`` R×L×P: each region's target quantiles (R = 1: one target for every mask);
    ``masks`` R'×1×H×W (``Guide.style_masks``) with ``region_weights``, or None.

    Each evaluation sorts every direction's projections (without autograd) and compares
    them, in sorted order, with the target quantiles; the gradient, 2·(x − target) per
    value, is scattered back to the positions (``_SortedDistance``), which is the gradient
    through the sort (a permutation where values are distinct). The projections are held
    P×n, one direction a row, so each sort runs over contiguous memory: sorting n×P along
    its columns took 2.7× as long (262 144 × 64, relu1_1 at 512², one thread). Unmasked, the
    sorted targets depend only on the count of positions, so they are computed once.
    """

    def __init__(self, dirs: torch.Tensor, tables: torch.Tensor, weight: float, normalize: bool = False,
                 masks: torch.Tensor | None = None, region_weights: list[float] | None = None):
        super().__init__()
        self.register_buffer("dirs_t", dirs.detach().T.contiguous())               # P×C
        self.register_buffer("tables_t", tables.detach().transpose(1, 2).contiguous())  # R×P×L
        self.register_buffer("norms", tables.detach().pow(2).mean(dim=(1, 2)).clamp(min=1e-12))
        self.register_buffer("masks", None if masks is None else masks.to(tables))
        self.weight, self.normalize = weight, normalize
        self.region_weights = region_weights or [1.0] * (1 if masks is None else len(masks))
        self._targets: torch.Tensor | None = None        # P×n, unmasked: the sorted targets

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            features = _NormalizeGradient.apply(features, self.weight)
        x = self.dirs_t @ features.transpose(0, 1).reshape(features.shape[1], -1)   # P×n
        with torch.no_grad():
            values, order = sort_rows(x.detach())
            value, grad_sorted = (self._unmasked(values) if self.masks is None else self._masked(values, order))
            factor = self.weight * SW_SCALE
        return _SortedDistance.apply(x, order, factor * value, grad_sorted.mul_(factor))

    def _unmasked(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ (x − t)² / (n·P·ν), its gradient) in sorted order."""
        diff = values.sub_(self._unmasked_targets(values))
        scale = 1.0 / (diff.numel() * self.norms[0])
        return scale * torch.dot(diff.view(-1), diff.view(-1)), diff.mul_(2 * scale)

    def _masked(self, values: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each region's loss over its mask-weighted distribution, and the sum's gradient, in sorted order."""
        weights = self.masks.flatten(1).to(values.dtype)                            # R'×n
        total, grad = values.new_zeros(()), torch.zeros_like(values)
        for r, w in enumerate(self.region_weights):
            t = min(r, len(self.tables_t) - 1)
            m = weights[r][order]                         # each direction's weights in its sorted order
            mass = m.sum(1, keepdim=True)
            levels = (m.cumsum(1) - m / 2) / mass.clamp(min=1e-12)
            diff = values - quantile(self.tables_t[t], levels, dim=1)
            scale = w / (mass.sum().clamp(min=1e-12) * self.norms[t])
            weighted = m.mul_(diff)
            total = total + scale * torch.dot(weighted.view(-1), diff.view(-1))
            grad.add_(2 * scale * weighted)
        return total, grad

    def _unmasked_targets(self, x: torch.Tensor) -> torch.Tensor:
        count = x.shape[1]
        cached = self._targets
        if cached is None or (cached.shape, cached.dtype, cached.device) != (x.shape, x.dtype, x.device):
            levels = (torch.arange(count, dtype=x.dtype, device=x.device) + 0.5) / count
            self._targets = quantile(self.tables_t[0].to(x.dtype), levels.expand_as(x).contiguous(), dim=1)
        return self._targets


class SlicedHistogram:
    """One layer's sliced-Wasserstein term, tiled: the first pass ``collect``s every tile's
    projections, the second asks ``value_and_grad`` of each tile's rows, which maps each
    position to its level in the global distribution.

    A layer of at most ``EXACT_VALUES`` positions × directions keeps the projections and
    sorts them (exact: the whole-image loss up to rounding); a larger one (a print's
    shallow layers) bins them into per-direction histograms (R weighted ones with masks):
    ``bins`` equal bins over the range the previous evaluation saw (the first evaluation
    measures it in a pass of its own: ``needs_range``) and one bin each side out to the
    values this evaluation reaches, linear within a bin.
    """

    def __init__(self, dirs: torch.Tensor, tables: torch.Tensor, weight: float,
                 region_weights: list[float] | None = None, bins: int | None = None, positions: int = 0):
        self.dirs, self.tables, self.weight = dirs, tables, weight
        self.bins = bins or HISTOGRAM_BINS
        self.norms = tables.pow(2).mean(dim=(1, 2)).clamp(min=1e-12)
        self.region_weights = region_weights
        self.exact = positions * dirs.shape[1] <= EXACT_VALUES
        self.range: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def needs_range(self) -> bool:
        return self.range is None and not self.exact

    def project(self, crop: torch.Tensor) -> torch.Tensor:
        return feature_rows(crop).to(self.dirs.dtype) @ self.dirs

    def observe(self, x: torch.Tensor) -> None:
        """A range-only pass (the first evaluation): the min and max of each direction."""
        low, high = x.min(0).values, x.max(0).values
        if self.range is not None:
            low, high = torch.minimum(low, self.range[0]), torch.maximum(high, self.range[1])
        self.range = (low, high)

    def start(self, regions: int) -> None:
        self.regions, self.seen, self.offsets = regions, [], {}
        if self.exact:
            return
        lo, hi = self.range
        span = (hi - lo).clamp(min=1e-6)
        self.lo, self.width = lo - 0.01 * span, 1.02 * span / self.bins
        projections = self.dirs.shape[1]
        self.mass = torch.zeros(regions, projections * (self.bins + 2), dtype=torch.float64, device=self.dirs.device)
        self.low, self.high = lo.clone(), hi.clone()

    def _bin(self, x: torch.Tensor) -> torch.Tensor:
        inner = ((x - self.lo) / self.width).floor().clamp(-1, self.bins)
        return (inner + 1).long()          # 0: below the range, bins + 1: above it

    def collect(self, x: torch.Tensor, m: torch.Tensor | None, key=None) -> None:
        """Add one tile's projections (n×P) with their mask weights (n×R, None: 1); ``key``
        names the tile again in ``value_and_grad``."""
        if self.exact:
            start = sum(len(rows) for rows, _ in self.seen)
            self.offsets[key] = slice(start, start + len(x))
            self.seen.append((x, m))
            return
        self.low = torch.minimum(self.low, x.min(0).values)
        self.high = torch.maximum(self.high, x.max(0).values)
        flat = (self._bin(x) + torch.arange(x.shape[1], device=x.device) * (self.bins + 2)).reshape(-1)
        for r in range(self.regions):
            weights = (torch.ones_like(x) if m is None else m[:, r : r + 1].to(x.dtype).expand_as(x))
            self.mass[r].index_add_(0, flat, weights.reshape(-1).double())

    def finish(self) -> None:
        """The global levels (exact) or CDF; the next evaluation bins over this one's range."""
        if self.exact:
            self._sort()
            return
        projections = self.dirs.shape[1]
        self.mass = self.mass.view(-1, projections, self.bins + 2)
        self.below = self.mass.cumsum(-1) - self.mass       # mass in the bins before each
        self.total = self.mass.sum(-1)                        # R×P
        self.range = (self.low, self.high)

    def _sort(self) -> None:
        x = torch.cat([rows for rows, _ in self.seen])
        masks = None if self.seen[0][1] is None else torch.cat([m for _, m in self.seen]).to(x.dtype)
        rows = x.T.contiguous()               # P×n: each direction's sort over contiguous memory
        order = sort_rows(rows)[1]
        self.levels, totals = [], []
        for r in range(self.regions):
            m = torch.ones_like(rows) if masks is None else masks[:, r][order]
            mass = m.sum(1)
            levels = torch.empty_like(rows).scatter_(1, order, (m.cumsum(1) - m / 2) / mass[:, None].clamp(min=1e-12))
            self.levels.append(levels.T.contiguous())
            totals.append(mass)
        self.total, self.seen = torch.stack(totals), []

    def _levels(self, x: torch.Tensor, r: int, key) -> torch.Tensor:
        if self.exact:
            return self.levels[r][self.offsets[key]]
        bins = self._bin(x)
        left = self.lo + (bins - 1).clamp(min=0) * self.width
        width = self.width.expand_as(x)
        # the end bins run from the range to the extreme values this evaluation reached
        left = torch.where(bins == 0, self.low.expand_as(x), left)
        width = torch.where(bins == 0, (self.lo - self.low).expand_as(x), width)
        width = torch.where(bins == self.bins + 1, (self.high - left).expand_as(x), width)
        frac = ((x - left) / width.clamp(min=1e-12)).clamp(0, 1).double()
        index = bins.T                                         # P×n
        below = self.below[r].gather(1, index).T
        mass = self.mass[r].gather(1, index).T
        return ((below + frac * mass) / self.total[r].clamp(min=1e-12)).to(x.dtype)

    def value_and_grad(self, x: torch.Tensor, m: torch.Tensor | None, key=None) -> tuple[float, torch.Tensor]:
        """This tile's share of the loss, and dL/dF of its rows (n×C)."""
        value, grad = 0.0, torch.zeros_like(x)
        weights = self.region_weights or [1.0] * self.regions
        for r, w in enumerate(weights):
            t = min(r, len(self.tables) - 1)
            diff = x - quantile(self.tables[t], self._levels(x, r, key))
            scale = w / (float(self.total[r].sum()) * float(self.norms[t]))   # Σ over P of Σm: Σm·P
            pos = 1.0 if m is None else m[:, r : r + 1].to(x.dtype)
            value += scale * float((pos * diff.pow(2)).sum())
            grad += 2 * scale * pos * diff
        factor = self.weight * SW_SCALE
        return factor * value, factor * grad @ self.dirs.T


def sliced_targets(style_feats: Sequence[dict[str, torch.Tensor]], params, blend: Sequence[float] | None, *,
                   dtype: torch.dtype | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per style layer: (directions C×P, target tables R×L×P) of the style images' features
    (one dict per style): blended by ``blend`` into R = 1, or (``blend`` None: region styles)
    one table per style. Directions are drawn for this scale (``layer_seed``)."""
    out = {}
    for index, name in enumerate(params.style_layers):
        first = style_feats[0][name]
        dirs = directions(first.shape[1], params.sw_projections,
                          layer_seed(params.seed, params.image_size, index),
                          dtype=dtype or first.dtype, device=first.device)
        tables = [style_table(feats[name].to(dirs.dtype), dirs) for feats in style_feats]
        if blend is None:
            levels = max(table.shape[0] for table in tables)
            stacked = torch.stack([resample(table, levels) for table in tables])
        else:
            stacked = blend_tables(tables, blend)[None]
        out[name] = (dirs, stacked)
    return out
