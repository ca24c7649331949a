"""The face pass: a small face painted again on a canvas of its own, then set back.

The style's strokes have a size in pixels (the painting is sized to the render), so on a
face 120 px wide one stroke covers an eye: the features either hold the photo (a photo
sticker) or go (no longer the person). A portrait painter takes a finer brush for the face.
So does portrait mode: after the whole render, each face narrower than
``portrait_face_size`` px is cut out with a margin (hair, ears, a little background), from
the *photo at its own resolution*, enlarged so the face is that wide, and optimised again —
the same losses and masks (masks.Guide, cropped), the painting sized to this canvas, the
whole render's crop as the start — then shrunk and blended back over the face's mask, faded
out before the canvas's edge. The face gets the painting's strokes at a scale where its
features are many strokes across: the likeness is held by more, finer structure, and the
face's crop carries as many strokes as the painting does (bench/portraits.py: Grace Hopper ×
The Scream, identity 0.362 → 0.262 and face_style 0.238 → 0.376 at 384 px).

Not in Selim et al. 2016 or Gatys et al. 2017: our own, measured in docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from impasto.engine.features import VGGFeatures
from impasto.engine.masks import Guide, at_size
from impasto.engine.params import RenderParams
from impasto.engine.scale import Callback, Progress, render_scale
from impasto.engine.units import PIXEL_SCALE

log = logging.getLogger(__name__)

MARGIN_WIDE = 1.6          # the canvas: the face's box × this across (ears, hair, background)…
MARGIN_TALL = 1.35         # … and × this down (the box already holds the forehead)
PASS_SHARE = 2 / 3         # the pass's iterations, × num_iterations (it starts from a painted face)
MIN_PASS_ITERATIONS = 10
MAX_FACES = 4              # the largest faces get a pass; a crowd's smaller ones keep the whole render's
MAX_CANVAS_SHARE = 1.0     # a canvas has at most the output's pixel count (a pass costs ≤ the render)
MIN_ZOOM = 1.25            # a face enlarged less than this keeps the whole render's painting
FACE_LEVEL = 0.5           # the likeness mask above this is the face
GROW = 1.6                 # the blend: the face's mask, blurred and × this (covers its soft edge)…
FADE = 0.1                 # … and faded to 0 over this share of the canvas at its border


@dataclass(frozen=True)
class Box:
    """A face's canvas in the photo's pixels: rows top:bottom, columns left:right."""

    top: int
    bottom: int
    left: int
    right: int
    face_width: float      # the face's width in the photo's pixels

    def scaled(self, ratio: float) -> Box:
        return Box(round(self.top * ratio), round(self.bottom * ratio), round(self.left * ratio),
                   round(self.right * ratio), self.face_width * ratio)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        return image[..., self.top:self.bottom, self.left:self.right]

    def canvas(self, face_size: float) -> tuple[int, int]:
        """(height, width) of the canvas on which the face is ``face_size`` px wide."""
        zoom = face_size / self.face_width
        return round((self.bottom - self.top) * zoom), round((self.right - self.left) * zoom)


@dataclass(frozen=True)
class Pass:
    """One face's pass: its canvas in the photo and how wide the face is on it, px."""

    box: Box
    face_size: float

    @property
    def canvas(self) -> tuple[int, int]:
        return self.box.canvas(self.face_size)


def face_boxes(likeness: torch.Tensor) -> list[Box]:
    """The canvases of the faces in a 1×1×H×W likeness mask, largest face first, at most MAX_FACES."""
    import cv2

    mask = (likeness[0, 0] > FACE_LEVEL).numpy().astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    height, width = mask.shape
    boxes = []
    for x, y, w, h, _area in sorted(stats[1:count].tolist(), key=lambda s: -s[2]):
        cx, cy = x + w / 2, y + h / 2
        half_w, half_h = MARGIN_WIDE * w / 2, MARGIN_TALL * h / 2
        boxes.append(Box(max(0, math.floor(cy - half_h)), min(height, math.ceil(cy + half_h)),
                         max(0, math.floor(cx - half_w)), min(width, math.ceil(cx + half_w)), float(w)))
    return boxes[:MAX_FACES]


def planned(guide: Guide | None, params: RenderParams, output: tuple[int, int]) -> list[Pass]:
    """The passes of a render ``output`` (height, width) px: for each face narrower there than
    ``params.portrait_face_size``, a canvas where it is that wide — or as wide as a canvas of
    the output's pixel count allows (a small render's pass stays small) — if that enlarges it
    by MIN_ZOOM at least. Region styles get none (the face's style is its region's)."""
    if (guide is None or guide.likeness is None or guide.regions is not None or params.portrait == "off"
            or params.portrait_face_size <= 0):
        return []
    ratio = output[1] / guide.likeness.shape[-1]
    passes = []
    for box in face_boxes(guide.likeness):
        placed = box.scaled(ratio)
        room = (MAX_CANVAS_SHARE * output[0] * output[1]
                / max(1, (placed.bottom - placed.top) * (placed.right - placed.left))) ** 0.5
        face_size = min(float(params.portrait_face_size), placed.face_width * room)
        if face_size >= MIN_ZOOM * placed.face_width:
            passes.append(Pass(box, face_size))
    return passes


def pass_iterations(params: RenderParams) -> int:
    if params.portrait_face_iterations is not None:
        return params.portrait_face_iterations
    return max(MIN_PASS_ITERATIONS, round(PASS_SHARE * params.num_iterations))


def paint_faces(image: torch.Tensor, content: torch.Tensor, styles: Sequence[torch.Tensor],
                params: RenderParams, guide: Guide, passes: list[Pass], *, extractor: VGGFeatures,
                report: Callable[[int], Callback | None]) -> torch.Tensor:
    """``image`` (the whole render, 1×3×h×w) with each face of ``passes`` painted again on its
    own canvas from ``content`` (the photo at its size, as ``guide``'s masks are).
    ``report(k)`` gives the progress callback of the k-th pass (or None)."""
    ratio = image.shape[-1] / content.shape[-1]
    for index, face in enumerate(passes):
        image = _paint_face(image, content, styles, params, guide, face, ratio, extractor=extractor,
                            callback=report(index))
    return image


def _paint_face(image, content, styles, params, guide, face: Pass, ratio: float, *, extractor,
                callback) -> torch.Tensor:
    box, size = face.box, face.canvas
    canvas = resized(box.crop(content), size)
    placed = box.scaled(ratio)
    start = resized(placed.crop(image), size)
    # the face's width at the masks' size; Guide.resized scales it to the canvas
    local = replace(guide.cropped(box.crop), face_width=box.face_width)
    stage = params.model_copy(update={"image_size": max(size), "num_iterations": pass_iterations(params)})
    log.info("face pass: a %.0f px face painted on a %d×%d canvas", box.face_width * ratio, size[1], size[0])
    alpha = _blend_mask(local.likeness, (placed.bottom - placed.top, placed.right - placed.left))
    # the likeness is decided here: a reduced-precision render (a preview's bfloat16) paints
    # its face in float32, where rounding noise would cost the features' lines
    with extractor.in_float32():
        painted = render_scale(canvas, styles, stage.model_copy(update={"precision": "float32"}),
                               _composed(callback, image, placed, alpha), init_image=start,
                               extractor=extractor, guide=local)
    return _set_back(image, painted, placed, alpha)


def resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image`` at ``size`` (height, width): bicubic, antialiased when shrinking, in 0..1."""
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def _blend_mask(likeness: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """1×1×h×w: the face's mask at the placed size, grown over its soft edge and faded out
    before the canvas's border (so the hair and background meet the whole render smoothly)."""
    import cv2

    face = at_size(likeness, *size)[0, 0].numpy()
    grown = np.clip(cv2.GaussianBlur(face, (0, 0), max(1.0, 0.06 * size[1])) * GROW, 0, 1)
    rows, cols = (np.minimum(np.arange(n), n - 1 - np.arange(n)) / max(1.0, FADE * n) for n in size)
    fade = np.clip(rows, 0, 1)[:, None] * np.clip(cols, 0, 1)[None]
    return torch.from_numpy(grown * fade)[None, None].float()


def _set_back(image: torch.Tensor, painted: torch.Tensor, placed: Box, alpha: torch.Tensor) -> torch.Tensor:
    out = image.clone()
    region = placed.crop(out)
    small = resized(painted, tuple(region.shape[-2:]))
    region.copy_(region * (1 - alpha) + small * alpha)
    return out


def _composed(callback: Callback | None, image: torch.Tensor, placed: Box, alpha: torch.Tensor) -> Callback | None:
    """The pass's progress, its image the whole picture with the canvas set in (a live
    preview shows the portrait, not a zoomed face)."""
    if callback is None:
        return None

    def report(progress: Progress) -> None:
        whole = _set_back(image, progress.image(), placed, alpha) * PIXEL_SCALE
        callback(Progress(progress.iteration, progress.total, progress.losses, progress.elapsed_seconds, whole,
                          progress.scale_index, progress.scale_count, progress.work))
    return report
