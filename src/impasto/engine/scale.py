"""The Gatys optimisation loop at one scale: content + style images → stylised image.

``render_scale`` takes 0..1 RGB tensors and a ``RenderParams``, optimises an image in 0..255
pixel units (as neural-style does, so its weights and learning rates mean the same) and
reports every iteration through ``callback(Progress)``. It prints nothing and reads no
files other than the network weights.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from impasto.engine.anchor import PreviewAnchor
from impasto.engine.color import match_colors, original_colors
from impasto.engine.features import VGGFeatures, build_extractor
from impasto.engine.lbfgs import minimize
from impasto.engine.losses import ContentLoss, StyleLoss, gram, tv_loss
from impasto.engine.masks import DETAIL_LAYERS, Guide
from impasto.engine.memory import MemoryPlan, plan_memory
from impasto.engine.params import RenderParams
from impasto.engine.sliced import SlicedLoss, sliced_targets
from impasto.engine.targets import gram_share, style_targets
from impasto.engine.tiling import build_tiled_objective, format_tile, needs_tiles
from impasto.engine.units import PIXEL_SCALE
from impasto.errors import ParamError, RenderDiverged

log = logging.getLogger(__name__)
RANDOM_INIT_STD = 0.001 * PIXEL_SCALE  # neural-style: randn × 0.001 around the net's mean


@dataclass
class Progress:
    """One optimiser iteration: what a progress bar, a save-every or a job row needs."""

    iteration: int
    total: int
    losses: dict[str, float]
    elapsed_seconds: float
    _pixels: torch.Tensor = field(repr=False)
    scale_index: int = 0      # which scale of a coarse-to-fine schedule (0 = coarsest)
    scale_count: int = 1
    work: float | None = None  # share of the whole render's pixel-work done (None: iteration / total)

    @property
    def fraction(self) -> float:
        """How far the render is, by pixel-work: a coarse scale's iterations cost less."""
        return self.work if self.work is not None else self.iteration / max(self.total, 1)

    def image(self) -> torch.Tensor:
        """The current image as a 0..1 RGB tensor on the CPU (computed on request)."""
        return (self._pixels.detach() / PIXEL_SCALE).clamp(0, 1).cpu()


Callback = Callable[[Progress], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; asking for absent CUDA is a ParamError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamError(f"device {name!r} asked for, but CUDA is not available here")
    return torch.device(name)


def fitted_size(height: int, width: int, longest_side: int) -> tuple[int, int]:
    """(rows, cols) of a ``height×width`` image resized to ``longest_side`` (``fit_size``)."""
    scale = longest_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_size(image: torch.Tensor, longest_side: int) -> torch.Tensor:
    """Resize so the longest side is ``longest_side`` (antialiased when shrinking)."""
    h, w = image.shape[-2:]
    scale = longest_side / max(h, w)
    size = fitted_size(h, w, longest_side)
    if size == (h, w):
        return image
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False,
                         antialias=scale < 1).clamp_(0, 1)


class Objective(torch.nn.Module):
    """The total loss of an image: weighted content, style and TV terms (and, continuing
    a preview, the term that keeps it: anchor.PreviewAnchor). ``style_losses`` take their
    layer's features (Gram: losses.StyleLoss, sw: sliced.SlicedLoss); ``style_terms`` the
    whole dict of features (nnst's hypercolumns)."""

    def __init__(self, extractor: VGGFeatures, content_losses: dict[str, ContentLoss],
                 style_losses: dict[str, torch.nn.Module], tv_weight: float, anchor: PreviewAnchor | None = None,
                 style_terms: Sequence[torch.nn.Module] = ()):
        super().__init__()
        self.extractor = extractor
        self.content_losses = torch.nn.ModuleDict(content_losses)
        self.style_losses = torch.nn.ModuleDict(style_losses)
        self.style_terms = torch.nn.ModuleList(style_terms)
        self.tv_weight, self.anchor = tv_weight, anchor

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        feats = self.extractor(pixels)
        content = sum(loss(feats[name]) for name, loss in self.content_losses.items())
        # a key is "layer" or "kind:layer" (sw with the Gram term beside it)
        style = sum(loss(feats[name.rpartition(":")[2]]) for name, loss in self.style_losses.items())
        style = style + sum(term(feats) for term in self.style_terms)
        tv = tv_loss(pixels, self.tv_weight) if self.tv_weight else pixels.new_zeros(())
        parts = {"content": content, "style": style, "tv": tv}
        if self.anchor is not None:
            parts["preview"] = self.anchor.loss(pixels)
        total = parts["total"] = sum(parts.values())
        return total, {name: float(value.detach()) for name, value in parts.items()}


def build_objective(extractor: VGGFeatures, content: torch.Tensor, styles: Sequence[torch.Tensor],
                    params: RenderParams, guide: Guide | None = None,
                    anchor: PreviewAnchor | None = None) -> Objective:
    """Content features and style targets (Grams, sliced quantiles or a style bank), wrapped
    as losses.

    Without regions the styles' targets are blended into one; with ``guide.regions``
    style k is region k's target. ``guide`` (at the content's size) also weights the
    content term per position and masks the style statistics (portrait mode)."""
    with torch.no_grad():
        content_feats = extractor(content * PIXEL_SCALE)
        style_feats = [extractor(style * PIXEL_SCALE) for style in styles]
    guide = guide if guide is not None and guide.active else None
    regions = guide is not None and guide.regions is not None

    def size(name: str) -> tuple[int, int]:
        return tuple(content_feats[name].shape[-2:])

    norm = params.normalize_gradients
    layers = guide.content_layers(params.content_layers, extractor.wanted) if guide else params.content_layers
    content_losses = {name: ContentLoss(content_feats[name], params.content_weight, norm,
                                        weights=guide and guide.content_weights(*size(name), name))
                      for name in layers}
    region_weights = guide and guide.style_region_weights()
    style_losses, terms = {}, []
    if gram_share(params) > 0:
        with torch.no_grad():
            per_style = [{name: gram(feats[name]) for name in params.style_layers} for feats in style_feats]
            style_grams = style_targets(per_style, params, regions=regions)
        style_losses = {name: StyleLoss(style_grams[name], params.style_weight * gram_share(params) * lw, norm,
                                        masks=guide and guide.style_masks(*size(name)),
                                        region_weights=region_weights)
                        for name, lw in zip(params.style_layers, params.layer_weights())}
    if params.style_loss == "sw":
        with torch.no_grad():
            targets = sliced_targets(style_feats, params, None if regions else params.blend_weights(len(styles)))
        for name, lw in zip(params.style_layers, params.layer_weights()):
            style_losses[f"sw:{name}"] = SlicedLoss(*targets[name], params.style_weight * lw, norm,
                                                    masks=guide and guide.style_masks(*size(name)),
                                                    region_weights=region_weights)
    elif params.style_loss == "nnst":
        from impasto.engine.nnst import build_nnst_term

        terms.append(build_nnst_term(extractor, content, styles, params, guide))
    del style_feats
    return Objective(extractor, content_losses, style_losses, params.tv_weight, anchor, style_terms=terms)


def initial_pixels(content: torch.Tensor, params: RenderParams, extractor: VGGFeatures,
                   init_image: torch.Tensor | None = None) -> torch.Tensor:
    """The starting image in 0..255 units: the photo, a given image, or seeded noise."""
    if init_image is not None:
        start = fit_size(init_image.to(content), max(content.shape[-2:]))
        if start.shape != content.shape:
            start = F.interpolate(start, size=content.shape[-2:], mode="bicubic", align_corners=False)
        return start * PIXEL_SCALE   # a new tensor: no copy of a copy at print size
    if params.init == "image":
        return content * PIXEL_SCALE
    # Seeded on the CPU so the same seed gives the same start on every device.
    generator = torch.Generator().manual_seed(params.seed)
    noise = torch.randn(content.shape, generator=generator).to(content) * RANDOM_INIT_STD
    return _mean_pixels(extractor) + noise


def _mean_pixels(extractor: VGGFeatures) -> torch.Tensor:
    """The net's mean colour in 0..255 RGB: where its input is zero."""
    mean = extractor.mean.flip(1) if extractor.bgr else extractor.mean
    return mean.to(torch.float32)


def _check_finite(count: int, parts: dict[str, float], params: RenderParams) -> None:
    """Stop at the first NaN or infinite loss: every later step would be garbage."""
    if math.isfinite(parts["total"]):
        return
    if params.precision == "float16":
        hint = "float16 overflowed; use --precision bfloat16 or float32"
    elif params.precision != "float32":
        hint = "use --precision float32"
    elif params.optimizer == "adam":
        hint = "lower --learning-rate or the loss weights, or use --optimizer lbfgs"
    else:
        hint = "lower the loss weights"
    raise RenderDiverged(f"the loss became {parts['total']} at iteration {count}: {hint}")


def _optimize(objective: torch.nn.Module, pixels: torch.Tensor, params: RenderParams,
              callback: Callback | None, plan: MemoryPlan | None = None) -> torch.Tensor:
    """Run ``params.num_iterations`` loss evaluations of L-BFGS or Adam on ``pixels``.

    Under a memory budget (``plan.lean``) L-BFGS is ``lbfgs.minimize``: the same steps as
    torch's optimiser with fewer image-sized buffers and a float16 history."""
    total = params.num_iterations
    started = time.perf_counter()
    if plan is not None and plan.lean and params.optimizer == "lbfgs":
        pixels = pixels.detach()

        def report(count: int, parts: dict[str, float]) -> None:
            _check_finite(count, parts, params)
            if callback is not None:
                callback(Progress(count, total, parts, time.perf_counter() - started, pixels))
        return minimize(_loss_and_grad(objective), pixels, iterations=total,
                        history_size=params.lbfgs_num_correction, history_dtype=plan.history_dtype,
                        on_eval=report)
    pixels = pixels.detach().requires_grad_(True)
    count = 0

    def closure() -> torch.Tensor:
        nonlocal count
        if pixels.grad is not None:
            pixels.grad = None
        loss, parts = objective(pixels)
        loss.backward()
        count += 1
        _check_finite(count, parts, params)
        if callback is not None:
            callback(Progress(count, total, parts, time.perf_counter() - started, pixels))
        return loss

    if params.optimizer == "lbfgs":
        # No line search and no tolerance stops, as neural-style: exactly `total` evaluations.
        optimizer = torch.optim.LBFGS([pixels], lr=1.0, max_iter=total, max_eval=total,
                                      tolerance_grad=-1, tolerance_change=-1,
                                      history_size=params.lbfgs_num_correction)
        optimizer.step(closure)
    else:
        optimizer = torch.optim.Adam([pixels], lr=params.learning_rate)
        for _ in range(total):
            optimizer.step(closure)
    return pixels.detach()


def _loss_and_grad(objective: torch.nn.Module):
    """(loss, parts, gradient) of ``objective``: the tiled one's own, or by autograd."""
    if hasattr(objective, "loss_and_grad"):
        return objective.loss_and_grad

    def evaluate(pixels: torch.Tensor) -> tuple[float, dict[str, float], torch.Tensor]:
        leaf = pixels.detach().requires_grad_(True)
        loss, parts = objective(leaf)
        loss.backward()
        return parts["total"], parts, leaf.grad
    return evaluate


def _objective_for(extractor: VGGFeatures, content_px: torch.Tensor, style_px: list[torch.Tensor],
                   params: RenderParams, guide: Guide | None = None, anchor: PreviewAnchor | None = None,
                   plan: MemoryPlan | None = None) -> tuple[torch.nn.Module, RenderParams, MemoryPlan]:
    """The whole-image objective, or its tiled twin (same gradient) when the scale is
    larger than the tile size — set, or chosen from ``memory_budget`` together with the
    L-BFGS history (returned in the params the optimiser must use) — and the memory plan
    (``plan``, or one made now from what the process holds)."""
    if plan is None:
        plan = plan_memory(params, *content_px.shape[-2:], guide=guide, device=content_px.device,
                           styles=[tuple(s.shape[-2:]) for s in style_px])
    params = params.model_copy(update={"lbfgs_num_correction": plan.lbfgs_history})
    if needs_tiles(*content_px.shape[-2:], plan.tile_size):
        log.info("tiles of %s px for a %s render", format_tile(plan.tile_size), tuple(content_px.shape[-2:]))
        return build_tiled_objective(extractor, content_px, style_px, params, tile_size=plan.tile_size,
                                     guide=guide, target_dtype=plan.target_dtype, anchor=anchor), params, plan
    return build_objective(extractor, content_px, style_px, params, guide, anchor), params, plan


_WARM: weakref.WeakSet = weakref.WeakSet()
WARM_UP_SIDE = 64   # px: the smallest pass that runs every layer (relu5_1 has stride 16)


def warm_up(extractor: VGGFeatures) -> None:
    """One small forward and backward, once per extractor, before a budget's baseline is
    measured: the first pass's one-time allocations (oneDNN's kernels, thread pools:
    26 MiB measured on the CPU) are then in the baseline instead of over the plan."""
    if extractor in _WARM or not isinstance(extractor, torch.nn.Module):
        return
    device = next(extractor.parameters()).device
    probe = torch.zeros(1, 3, WARM_UP_SIDE, WARM_UP_SIDE, device=device, requires_grad=True)
    with torch.enable_grad():
        sum(feats.sum() for feats in extractor(probe).values()).backward()
    _WARM.add(extractor)


def plan_scale(params: RenderParams, content_shape: Sequence[int], style_shapes: Sequence[Sequence[int]],
               guide: Guide | None = None, *, baseline: int | None = None) -> MemoryPlan:
    """The memory plan of a scale of ``params`` for a photo and styles of these shapes, from
    what the process holds now (or ``baseline``), before the scale allocates anything."""
    size = fitted_size(*content_shape[-2:], params.image_size)
    style_size = max(32, round(params.image_size * params.style_scale))
    styles = [fitted_size(*shape[-2:], style_size) for shape in style_shapes]
    return plan_memory(params, *size, guide=guide, baseline=baseline, styles=styles,
                       device=resolve_device(params.device))


def extractor_for(params: RenderParams) -> VGGFeatures:
    """The truncated VGG that ``params``' layers, model, weights and device call for."""
    # portrait mode may hold a small face's features at a shallower layer (masks.detail_layer)
    detail = [name for name, _ in DETAIL_LAYERS] if params.portrait != "off" else []
    if params.style_loss == "nnst":
        from impasto.engine.nnst import NNST_LAYERS

        detail += NNST_LAYERS
    return build_extractor(params.model, [*params.content_layers, *params.style_layers, *detail],
                           pooling=params.pooling, weights=params.weights, allow_download=params.download,
                           device=resolve_device(params.device), precision=params.precision)


def check_styles(styles: Sequence[torch.Tensor], params: RenderParams) -> None:
    """Fail before any heavy work: no style, or a blend weight count that does not match."""
    if not styles:
        raise ParamError("at least one style image is needed")
    if params.mask is not None and params.style_blend_weights is not None:
        raise ParamError("--style-blend-weights does not apply with --mask: each region takes one style")
    params.blend_weights(len(styles))


def render_scale(content: torch.Tensor, styles: Sequence[torch.Tensor], params: RenderParams,
                 callback: Callback | None = None, *, init_image: torch.Tensor | None = None,
                 extractor: VGGFeatures | None = None, guide: Guide | None = None,
                 preview: torch.Tensor | None = None) -> torch.Tensor:
    """One scale: stylise ``content`` (1×3×H×W, 0..1 RGB); returns 1×3×h×w on the CPU.

    The output's longest side is ``params.image_size``; each style image is sized to
    ``image_size × style_scale``. ``extractor`` may be passed to reuse loaded weights;
    ``guide`` (masks.Guide, any size) steers faces and regions; ``preview`` (a smaller
    render this one continues) is kept at its own size with weight ``keep_preview``.
    """
    check_styles(styles, params)
    device = resolve_device(params.device)
    extractor = extractor if extractor is not None else extractor_for(params)
    # planned first: what the process holds before the scale allocates is its baseline
    if params.memory_budget:
        warm_up(extractor)
    plan = plan_scale(params, content.shape, [s.shape for s in styles], guide)
    content_px = fit_size(content.to(device, torch.float32), params.image_size)
    style_size = max(32, round(params.image_size * params.style_scale))
    style_px = [fit_size(s.to(device, torch.float32), style_size) for s in styles]
    if params.color_match:  # Gatys et al. 2017: the style's textures in the photo's palette
        style_px = [match_colors(s, content_px) for s in style_px]
    if guide is not None:
        guide = guide.resized(*content_px.shape[-2:]).to(device)
    anchor = None
    if preview is not None and params.keep_preview > 0:
        anchor = PreviewAnchor(preview.to(device, torch.float32), *content_px.shape[-2:], params.keep_preview)
    objective, params, plan = _objective_for(extractor, content_px, style_px, params, guide, anchor, plan)
    del style_px  # their Grams are taken; at print size each is an image-sized buffer
    start = initial_pixels(content_px, params, extractor, init_image)
    photo = content_px if params.original_colors else None
    del content_px, init_image
    log.debug("render %s on %s", tuple(start.shape), device)
    result = _optimize(objective, start, params, callback, plan)
    del objective, start
    result = result.div_(PIXEL_SCALE).clamp_(0, 1)   # in place: the optimiser's buffer is ours
    if photo is not None:
        result = original_colors(photo, result)
    return result.cpu()
