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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from impasto.engine.features import VGGFeatures
from impasto.engine.params import RenderParams
from impasto.engine.sliced import SlicedHistogram, mask_rows, sliced_targets
from impasto.engine.targets import gram_share, style_targets
from impasto.engine.tiling.geometry import Geometry, Tile, TileSize, check_size, extractor_geometry
from impasto.engine.tiling.plan import plan_tiles
from impasto.engine.units import PIXEL_SCALE
from impasto.errors import ParamError

NORMALIZE_EPS = 1e-8  # as losses._NormalizeGradient


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
    check_size(height, width, geometry)
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
               masks: dict[str, torch.Tensor] | None = None,
               terms: Sequence[TiledTerm] = ()) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: Σ (mF)ᵀ(mF) over every tile's inner region for each of R masks (R×C×C),
    and their element counts C·Σm² (R values); without masks R = 1 and m = 1. Each of
    ``terms`` collects its own statistics from the same forwards (``TiledTerm.collect``)."""
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
            for term in terms:
                term.collect(feats, tile, geometry)
    return sums


class TiledTerm:
    """A style term of the tiled objective other than the Gram (sw, nnst): what each pass
    asks of it. ``weights`` per layer are its losses' weights (for ``normalize_gradients``)."""

    layers: list[str]
    weights: dict[str, float]

    def prepare(self, extractor: VGGFeatures, pixels: torch.Tensor, tiles: Sequence[Tile],
                geometry: Geometry) -> None:
        """Before the first pass: anything it needs a pass of its own for (once, or never)."""

    def start(self) -> None:
        """The first pass begins."""

    def collect(self, feats: dict[str, torch.Tensor], tile: Tile, geometry: Geometry) -> None:
        """The first pass: one tile's features (no grad)."""

    def finish(self) -> None:
        """The first pass has seen every tile."""

    def tile_grads(self, feats: dict[str, torch.Tensor], tile: Tile, geometry: Geometry
                   ) -> tuple[float, dict[str, torch.Tensor]]:
        """The second pass: this tile's share of the term's value, and per layer the global
        loss's gradient w.r.t. the tile's inner features (shaped as the inner crop)."""
        raise NotImplementedError


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
    check_size(*pixels.shape[-2:], geometry)
    tiles = plan_tiles(*pixels.shape[-2:], tile_size, geometry)
    return {name: total[0] / count[0]
            for name, (total, count) in _gram_sums(extractor, pixels, layers, tiles, geometry).items()}



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


class SlicedTerm(TiledTerm):
    """The sliced-Wasserstein loss of each style layer, tiled (``sliced.SlicedHistogram``):
    the first pass bins the projections, the second maps them through the global CDF."""

    def __init__(self, layers: dict[str, SlicedHistogram], weights: dict[str, float],
                 masks: dict[str, torch.Tensor] | None = None):
        self.histograms, self.weights, self.masks = layers, weights, masks
        self.layers = list(layers)

    def _rows(self, feats, tile: Tile, geometry: Geometry, name: str):
        stride = geometry.strides[name]
        crop = feats[name][(..., *tile.local(stride))]
        masks = _mask_crop(self.masks, name, tile, stride)
        return crop, self.histograms[name].project(crop), None if masks is None else mask_rows(masks)

    def prepare(self, extractor, pixels, tiles, geometry) -> None:
        if not any(h.needs_range for h in self.histograms.values()):
            return
        with torch.no_grad():   # the first evaluation: the projections' range, a pass of its own
            for tile in tiles:
                feats = extractor(pixels[(..., *tile.window)])
                for name, histogram in self.histograms.items():
                    histogram.observe(self._rows(feats, tile, geometry, name)[1])

    def start(self) -> None:
        for name, histogram in self.histograms.items():
            histogram.start(1 if self.masks is None else self.masks[name].shape[0])

    def collect(self, feats, tile, geometry) -> None:
        for name, histogram in self.histograms.items():
            _, x, m = self._rows(feats, tile, geometry, name)
            histogram.collect(x, m, key=tile)

    def finish(self) -> None:
        for histogram in self.histograms.values():
            histogram.finish()

    def tile_grads(self, feats, tile, geometry):
        value, grads = 0.0, {}
        for name, histogram in self.histograms.items():
            crop, x, m = self._rows(feats, tile, geometry, name)
            part, rows = histogram.value_and_grad(x, m, key=tile)
            value += part
            _, channels, height, width = crop.shape
            grads[name] = rows.to(crop.dtype).reshape(1, height, width, channels).permute(0, 3, 1, 2)
        return value, grads


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
                 anchor=None, terms: Sequence[TiledTerm] = ()):
        super().__init__()
        if set(style_weights) != set(style_grams):
            raise ParamError("style weights and style Grams must name the same layers")
        self.extractor = extractor
        self.content_targets = {name: t.detach() for name, t in content_targets.items()}
        self.style_grams = {name: g.detach() for name, g in style_grams.items()}
        self.content_weight, self.style_weights = content_weight, dict(style_weights)
        self.tv_weight, self.normalize = tv_weight, normalize
        self.anchor = anchor   # anchor.PreviewAnchor: keep the preview this print continues
        self.terms = list(terms)   # sw / nnst (TiledTerm), beside or instead of the Grams
        self.geometry = extractor_geometry(extractor, [*self.content_targets, *self.style_grams,
                                                       *(name for term in self.terms for name in term.layers)])
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
        check_size(height, width, self.geometry)
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
        content, term_style, grad = self._grad_pass(pixels, tiles, style_grads, scales)
        parts = {"content": content, "style": style + term_style,
                 "tv": _tv_into(pixels, self.tv_weight, grad) if self.tv_weight else 0.0}
        if self.anchor is not None:
            parts["preview"] = self.anchor.loss_into(pixels, grad)
        parts["total"] = sum(parts.values())
        return parts["total"], parts, grad

    def _style_pass(self, pixels: torch.Tensor, tiles: Sequence[Tile]
                    ) -> tuple[float, dict[str, tuple[torch.Tensor, int]]]:
        """Pass 1: the global style loss, and per layer dL/dG with the layer's C·H·W."""
        value, grads = 0.0, {}
        for term in self.terms:
            term.prepare(self.extractor, pixels, tiles, self.geometry)
            term.start()
        if not self.style_grams and not self.terms:
            return value, grads
        sums = _gram_sums(self.extractor, pixels, list(self.style_grams), tiles, self.geometry,
                          self.style_masks, self.terms)
        for term in self.terms:
            term.finish()
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
                for index, term in enumerate(self.terms):
                    for name, grad in term.tile_grads(feats, tile, self.geometry)[1].items():
                        norms[index, name] = norms.get((index, name), 0.0) + float(grad.abs().sum())
        weights = {("content", name): self.content_weight for name in self.content_targets}
        weights |= {("style", name): self.style_weights[name] for name in style_grads}
        weights |= {(index, name): w for index, term in enumerate(self.terms) for name, w in term.weights.items()}
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
                   scales: dict[tuple[str, str], float]) -> tuple[float, float, torch.Tensor]:
        """Pass 2: the content loss, the terms' style loss, and the gradient of the whole loss
        but TV, tile by tile."""
        grad, content, style = torch.zeros_like(pixels), 0.0, 0.0
        for tile in tiles:
            leaf = pixels[(..., *tile.window)].clone().requires_grad_(True)
            with torch.enable_grad():
                surrogate, tile_content, tile_style = self._surrogate(leaf, tile, style_grads, scales)
            content += tile_content
            style += tile_style
            if surrogate.requires_grad:
                surrogate.backward()
                grad[(..., *tile.window)] += leaf.grad
        return content, style, grad

    def _surrogate(self, leaf: torch.Tensor, tile: Tile, style_grads: dict[str, tuple[torch.Tensor, int]],
                   scales: dict[tuple[str, str], float]) -> tuple[torch.Tensor, float, float]:
        """A scalar whose gradient w.r.t. the tile's inner features is the global loss's,
        the tile's content loss and its share of the terms' style loss."""
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
        style = 0.0
        for index, term in enumerate(self.terms):
            if hasattr(term, "tile_loss"):   # a sum over positions (nnst): the tile's share itself
                value = term.tile_loss(feats, tile, self.geometry)
                style += float(value.detach())
                surrogate = surrogate + value
                continue
            with torch.no_grad():
                value, grads = term.tile_grads({n: f.detach() for n, f in feats.items()}, tile, self.geometry)
            style += value
            for name, g in grads.items():
                crop = feats[name][(..., *tile.local(self.geometry.strides[name]))]
                # ⟨g, F⟩ has gradient g in F: the term's own gradient, handed to autograd
                surrogate = surrogate + scales.get((index, name), 1.0) * (g * crop).sum()
        return surrogate, content, style


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
    regions = guide is not None and guide.regions is not None
    style_grams, style_weights = {}, {}
    if gram_share(params) > 0:
        per_style = [tiled_grams(extractor, style * PIXEL_SCALE, params.style_layers, tile_size=tile_size)
                     for style in styles]
        style_grams = style_targets(per_style, params, regions=regions)
        style_weights = dict(zip(params.style_layers, (params.style_weight * gram_share(params) * lw
                                                       for lw in params.layer_weights())))
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
    terms = _style_terms(extractor, content, styles, params, tile_size, guide, style_masks, region_weights)
    return TiledObjective(extractor, content_targets, style_grams, content_weight=params.content_weight,
                          style_weights=style_weights, tv_weight=params.tv_weight, tile_size=tile_size,
                          normalize=params.normalize_gradients, content_weights=content_weights,
                          style_masks=style_masks, region_weights=region_weights, anchor=anchor, terms=terms)


def _style_terms(extractor: VGGFeatures, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 params: RenderParams, tile_size: TileSize, guide, style_masks, region_weights) -> list[TiledTerm]:
    """The tiled objective's sw or nnst term (none for ``gram``), aiming at the same targets
    as the whole-image objective's."""
    weights = dict(zip(params.style_layers, (params.style_weight * lw for lw in params.layer_weights())))
    if params.style_loss == "sw":
        style_feats = [tiled_features(extractor, style * PIXEL_SCALE, params.style_layers, tile_size=tile_size)
                       for style in styles]
        regions = guide is not None and guide.regions is not None
        targets = sliced_targets(style_feats, params, None if regions else params.blend_weights(len(styles)))
        del style_feats
        geometry = extractor_geometry(extractor, params.style_layers)
        height, width = content.shape[-2:]
        histograms = {name: SlicedHistogram(*targets[name], weights[name], region_weights=region_weights,
                                            positions=(height // geometry.strides[name]) * (width // geometry.strides[name]))
                      for name in params.style_layers}
        return [SlicedTerm(histograms, weights, style_masks)]
    if params.style_loss == "nnst":
        from impasto.engine.nnst import build_tiled_nnst_term

        return [build_tiled_nnst_term(extractor, content, styles, params, tile_size=tile_size,
                                      tiled_features=tiled_features, guide=guide)]
    return []
