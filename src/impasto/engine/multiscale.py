"""Coarse-to-fine rendering: most of the optimisation happens at low resolution.

Each scale starts from the previous scale's result, upsampled; the style images are
re-sized for every scale (``render`` does that from ``image_size × style_scale``), so
brush strokes keep their size relative to the picture. The schedule spends about the
same time at every scale: iterations fall with the pixel count.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from impasto.engine import face_pass
from impasto.engine.drawing import draw_features
from impasto.engine.features import VGGFeatures
from impasto.engine.masks import Guide, guide_for
from impasto.engine.params import MAX_IMAGE_SIZE, RenderParams
from impasto.engine.prints import crop_to_aspect, print_pixels
from impasto.engine import resident
from impasto.engine.scale import (
    Callback,
    Progress,
    check_styles,
    extractor_for,
    fitted_size,
    plan_scale,
    render_scale,
    resolve_device,
    warm_up,
)
from impasto.errors import BudgetTooSmall, ParamError

log = logging.getLogger(__name__)


ScaleDone = Callable[[int, torch.Tensor], None]
MAX_COARSE_FACTOR = 4   # no scale gets more than 4× the final scale's share of iterations
FULL_CONTENT_SIZE = 512  # scales this large take --content-weight as given (neural-style's size)


@dataclass(frozen=True)
class Scale:
    size: int          # longest side, px
    iterations: int


def schedule(params: RenderParams) -> list[Scale]:
    """The scales a render runs through, coarsest first; one scale when multi-scale is off.

    Sizes grow by ``scale_step`` from ``start_size`` to ``image_size``. ``num_iterations``
    is the total over all scales, shared in proportion to (final / size)² — the same
    pixel-work at every scale — with no scale given more than ``MAX_COARSE_FACTOR`` times
    the final scale's share. ``scale_iterations`` sets the split by hand.
    """
    if params.scale_iterations is not None and not params.scales:
        raise ParamError("scale-iterations needs --scales")
    sizes = params.scales or _auto_sizes(params.image_size, params.start_size, params.scale_step)
    if sizes[-1] != params.image_size:
        raise ParamError(f"the last of --scales must be --image-size ({params.image_size}), got {sizes[-1]}")
    if params.scale_iterations is not None:
        if len(params.scale_iterations) != len(sizes):
            raise ParamError(f"{len(params.scale_iterations)} scale iterations for {len(sizes)} scales")
        return [Scale(s, n) for s, n in zip(sizes, params.scale_iterations)]
    shares = [min((sizes[-1] / s) ** 2, MAX_COARSE_FACTOR) for s in sizes]
    total = params.num_iterations
    return [Scale(s, max(1, round(total * share / sum(shares)))) for s, share in zip(sizes, shares)]


def content_weight_at(params: RenderParams, size: int) -> float:
    """The content weight of a scale: ``content_weight`` from the last scale or
    ``FULL_CONTENT_SIZE`` (the smaller) up, × k^``coarse_content`` at a scale k times
    smaller. VGG sees a coarse scale's picture through the same 3×3 windows, so the style
    it lays there is large against the picture — and the photo's structure goes unless
    that scale holds it more firmly (bench/prints.py time-to-quality). Measured from a
    fixed size, not from a print's: a 4096 px print's 512 px scale lays no larger strokes
    than a 512 px render does, and must not be held 8× harder than it."""
    reference = min(params.image_size, FULL_CONTENT_SIZE)
    return params.content_weight * max(1.0, reference / size) ** params.coarse_content


def output_size(content: torch.Tensor, image_size: int) -> tuple[int, int]:
    """(height, width) of ``content`` fitted to ``image_size`` on its longest side."""
    height, width = content.shape[-2:]
    ratio = image_size / max(height, width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def _auto_sizes(image_size: int, start_size: int, step: float) -> list[int]:
    if not start_size or start_size >= image_size:
        return [image_size]
    count = max(1, math.ceil(math.log(image_size / start_size) / math.log(step) - 1e-9))
    ratio = (image_size / start_size) ** (1 / count)  # even steps ending exactly at image_size
    return [round(start_size * ratio ** k) for k in range(count)] + [image_size]


def render(content: torch.Tensor, styles: Sequence[torch.Tensor], params: RenderParams,
           callback: Callback | None = None, *, init_image: torch.Tensor | None = None,
           extractor: VGGFeatures | None = None, resume: torch.Tensor | None = None,
           on_scale: ScaleDone | None = None, face_mask: torch.Tensor | None = None,
           region_mask: torch.Tensor | None = None, guide: Guide | None = None) -> torch.Tensor:
    """Stylise ``content`` (1×3×H×W, 0..1 RGB) with ``styles`` through ``schedule(params)``.

    Returns 1×3×h×w on the CPU, longest side ``params.image_size``. Progress counts over
    all scales. ``extractor`` may be passed to reuse loaded weights across renders.
    ``on_scale(size, image)`` receives each finished scale (to store a resumable state);
    ``resume`` is such an image: scales up to its size are skipped and it starts the next
    one — a preview continued to a print, every later scale held to it at its own size
    (``keep_preview``, anchor.py), so the print is the picture the customer chose.
    Portrait mode and region styles (masks.guide_for) are found on the whole photo once;
    ``face_mask``/``region_mask`` override the files ``params`` name, and a ready
    ``guide`` overrides both.
    """
    check_styles(styles, params)
    if guide is None:
        # an inactive Guide, not None, when nothing was found: a print's cropped photo
        # must not be searched again (a crop at another size can show a "face" the whole
        # photo did not: tubingen's square crop has two), so preview and print agree
        guide = guide_for(content, params, len(styles), face_mask=face_mask,
                          region_mask=region_mask) or Guide()
    options = {"init_image": init_image, "extractor": extractor, "resume": resume, "on_scale": on_scale,
               "guide": guide}
    if params.print_size:
        return _render_print(content, styles, params, callback, **options)
    plan = schedule(params)
    if resume is not None:
        plan = [scale for scale in plan if scale.size > max(resume.shape[-2:])]
        if not plan:  # nothing left to refine: the stored image is the result
            return resume
        init_image = resume
        log.info("resuming from a %s image at the %d px scale", tuple(resume.shape[-2:]), plan[0].size)
    elif init_image is None and params.init == "quick":
        from impasto.engine.quick import quick_start

        init_image = quick_start(content, styles, params, likeness=getattr(guide, "likeness", None))
    extractor = extractor if extractor is not None else extractor_for(params)
    if params.memory_budget:
        # the face pass needs no look-ahead: its canvas has at most the last scale's pixels
        # (face_pass.MAX_CANVAS_SHARE) and is planned under the same budget when it runs
        warm_up(extractor)
        check_budget(content, styles, params, plan, guide)
    faces = face_pass.planned(guide, params, output_size(content, params.image_size))
    passes = [Scale(max(face.canvas), face_pass.pass_iterations(params)) for face in faces]
    drawn = params.portrait != "off" and guide.features is not None and params.portrait_strength > 0
    finishing = bool(faces) or drawn           # steps after the last scale: it is stored after them
    total = sum(scale.iterations for scale in plan + passes)
    done, image, started = 0, init_image, time.perf_counter()
    work = _Work(plan + passes)
    for index, scale in enumerate(plan):
        stage = _stage(params, plan, index)
        image = render_scale(content, styles, stage, _offset(callback, done, total, started, index, work),
                             init_image=image, extractor=extractor, guide=guide, preview=resume)
        done += scale.iterations
        if on_scale is not None and not (finishing and index == len(plan) - 1):
            on_scale(scale.size, image)
    if faces:
        final = params.model_copy(update={"content_weight": content_weight_at(params, params.image_size)})
        image = face_pass.paint_faces(
            image, content, styles, final, guide, faces, extractor=extractor,
            report=lambda k: _offset(callback, done + sum(p.iterations for p in passes[:k]), total, started,
                                     len(plan) + k, work))
    if drawn:
        image = draw_features(image, content, guide, params.portrait_strength)
    if finishing and on_scale is not None:
        on_scale(params.image_size, image)
    return image


def _stage(params: RenderParams, plan: list[Scale], index: int) -> RenderParams:
    """The options of scale ``index`` of ``plan``."""
    scale = plan[index]
    return params.model_copy(update={"image_size": scale.size, "num_iterations": scale.iterations,
                                     "content_weight": content_weight_at(params, scale.size),
                                     # colours are restored once, at the end
                                     "original_colors": params.original_colors and index == len(plan) - 1})


def check_budget(content: torch.Tensor, styles: Sequence[torch.Tensor], params: RenderParams,
                 plan: list[Scale], guide: Guide | None = None) -> None:
    """Plan every scale's memory before the first renders, from what the process holds now
    (weights loaded) and the previous scale's image each one carries: a budget too small for
    any fails here — hours before that scale would have started — naming the smallest budget
    that holds them all."""
    baseline = resident.baseline_bytes(resolve_device(params.device))
    worst, carried = None, 0
    for index, scale in enumerate(plan):
        try:
            plan_scale(_stage(params, plan, index), content.shape, [s.shape for s in styles], guide,
                       baseline=baseline + carried)
        except BudgetTooSmall as exc:
            worst = exc if worst is None or exc.needed > worst.needed else worst
        carried = 3 * 4 * math.prod(fitted_size(*content.shape[-2:], scale.size))   # float32 RGB
    if worst is not None:
        raise worst


def _render_print(content: torch.Tensor, styles: Sequence[torch.Tensor], params: RenderParams,
                  callback: Callback | None, **options) -> torch.Tensor:
    """A render at ``print_size`` × ``dpi``: the photo cropped to the sheet, exact pixel size."""
    height, width = print_pixels(params.print_size, params.dpi, *content.shape[-2:])
    if max(height, width) > MAX_IMAGE_SIZE:
        raise ParamError(f"{params.print_size} at {params.dpi} dpi is {width}×{height} px, "
                         f"over the {MAX_IMAGE_SIZE} px limit")
    sized = params.model_copy(update={"print_size": None, "image_size": max(height, width)})
    if options["guide"] is not None:  # found on the whole photo: cropped as the photo is
        options["guide"] = options["guide"].cropped(lambda mask: crop_to_aspect(mask, height, width))
    image = render(crop_to_aspect(content, height, width), styles, sized, callback, **options)
    if image.shape[-2:] != (height, width):  # rounding of the longest-side fit: a pixel at most
        image = F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    return image


@dataclass(frozen=True)
class _Work:
    """Pixel-work of a schedule: an iteration at a scale costs about its pixel count."""

    plan: list[Scale]

    def done(self, index: int, iteration: int) -> float:
        before = sum(scale.iterations * scale.size ** 2 for scale in self.plan[:index])
        total = sum(scale.iterations * scale.size ** 2 for scale in self.plan)
        return (before + iteration * self.plan[index].size ** 2) / total


def _offset(callback: Callback | None, done: int, total: int, started: float, index: int,
            work: _Work) -> Callback | None:
    """Re-number a stage's progress as part of the whole schedule."""
    if callback is None:
        return None

    def report(progress: Progress) -> None:
        callback(Progress(done + progress.iteration, total, progress.losses, time.perf_counter() - started,
                          progress._pixels, scale_index=index, scale_count=len(work.plan),
                          work=work.done(index, min(progress.iteration, work.plan[index].iterations))))
    return report
