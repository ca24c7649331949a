"""Faces and regions → the spatial guidance of a render (Gatys et al. 2017, "Controlling
Perceptual Factors in Neural Style Transfer", section 3).

Two kinds of guidance, both image-space masks in 0..1 that every layer sees at its own
resolution (``at_size``: area-averaged, so a feature's weight is the share of its stride
block the mask covers):

- **likeness** (portrait mode): the face is painted like the rest and keeps the sitter's
  likeness by the structure of its features, as a portrait painter does (issue 13; Selim et
  al. 2016 is the nearest published method, whose gain maps need a painted *portrait* as the
  style — ours are any paintings). From dlib's 68 landmarks (faces.py): a ``likeness`` mask
  (the face's hull, forehead included) and a ``features`` mask (soft lines along eyes, brows,
  nose, mouth, jaw and hair line). The content weight is ``1 + strength × (FACE_BOOST × face
  + FEATURE_BOOST × features)`` (×3 on the skin, ×31 on the lines at the default 0.5); a face
  with fewer than MIN_FACE_POSITIONS positions across relu4_2 holds its lines at a shallower
  ``detail_layer`` too; and the face's own guided Gram joins the whole image's (FACE_STYLE),
  so the face takes the painting's statistics rather than borrowing them from the background.
  Above strength 0.5 the style's share in the face falls, to none at 1 (the photo's face).
  The earlier mode (content ×41 over a face ellipse, no face Gram) kept the likeness by not
  painting the face: face_style 0.00–0.19 on the shop's previews (bench/portraits.py).
  Without dlib, Haar boxes give an ellipse with the eyes as features; a user's
  ``--face-mask`` gives the likeness mask alone.
- **regions** (``--mask``): a label image whose grey levels pick one style each; each
  region's Gram is the *guided* Gram of its masked features, compared with its own style's
  Gram (neural-style never had this; see its issue #400).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from impasto.engine.faces import BROWS, EYES, JAW, MOUTH, NOSE_BASE, NOSE_BRIDGE, Face, detect_faces
from impasto.errors import ParamError

log = logging.getLogger(__name__)

FACE_BOOST = 4.0           # content weight × (1 + 4·strength) over the face's skin
FEATURE_BOOST = 60.0       # … and × (1 + 60·strength) on the features' lines
FACE_STYLE_WIDTH = 120.0   # faces narrower than this (px, at the scale) get less of the face term
FACE_STYLE = 0.3           # the face's own Gram term, × the whole image's (× style share)
DETAIL_BOOST = 40.0        # the detail layer's content weight on the features' lines (× strength)
CONTENT_STRIDE = 8         # relu4_2's, the default content layer's
DETAIL_LAYERS = (("relu3_1", 4), ("relu2_1", 2))   # (layer, stride), for ever smaller faces
MIN_FACE_POSITIONS = 24    # a face this many positions across a layer's grid keeps its features there
FEATURE_WIDTH = 0.05       # a feature line's width, × the face's width
FOREHEAD = 0.5             # the forehead above the brows, × the brows-to-chin height


def _canvas_points(points: np.ndarray) -> np.ndarray:
    # cv2 draws on integer pixels; 4 fractional bits keep sub-pixel landmark positions
    return np.round((points - 0.5) * 16).astype(np.int32).reshape(-1, 1, 2)


def _draw(canvas: np.ndarray, points: np.ndarray, thickness: float, *, closed: bool = False,
          filled: bool = False, value: float = 1.0) -> None:
    import cv2

    pts = _canvas_points(points)
    if filled:
        cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_AA, shift=4)
    cv2.polylines(canvas, [pts], closed, value, thickness=max(1, round(thickness)), lineType=cv2.LINE_AA,
                  shift=4)


def _forehead(face: Face) -> np.ndarray:
    """Points above the brows, where the hair line runs: the brows moved up along the face's
    axis (chin → nose bridge) by FOREHEAD × the brows-to-chin height."""
    chin, bridge = face.points([8])[0], face.points([27])[0]
    up = bridge - chin
    brows = np.concatenate([face.points(BROWS[0]), face.points(BROWS[1])])
    return brows + FOREHEAD * up


def _landmark_planes(height: int, width: int, face: Face) -> tuple[np.ndarray, np.ndarray]:
    """(skin, features) of one face, H×W in 0..1: the face's hull (jaw, brows, forehead), soft
    at its edge, and soft lines along the eyes, brows, nose, mouth, jaw and hair line."""
    import cv2

    size = face.width
    skin = np.zeros((height, width), np.float32)
    hull = cv2.convexHull(np.concatenate([face.points(JAW), _forehead(face)]).astype(np.float32))
    _draw(skin, hull.reshape(-1, 2), 1, closed=True, filled=True)
    features = np.zeros((height, width), np.float32)
    line = FEATURE_WIDTH * size
    for eye in EYES:
        _draw(features, face.points(eye), line, closed=True, filled=True)
    for brow in BROWS:
        _draw(features, face.points(brow), line)
    _draw(features, face.points(NOSE_BRIDGE), line)
    _draw(features, face.points(NOSE_BASE), line)
    _draw(features, face.points(MOUTH), line, closed=True, filled=True)
    _draw(features, face.points(JAW), line, value=0.6)
    _draw(features, _forehead(face), line, value=0.4)          # the hair line, roughly
    soft = max(1.0, 0.04 * size)
    skin = cv2.GaussianBlur(skin, (0, 0), 2 * soft)
    features = cv2.GaussianBlur(features, (0, 0), soft / 2)
    return skin, np.minimum(features, 1.0)


def face_planes(height: int, width: int, faces: list[Face]) -> tuple[torch.Tensor, torch.Tensor]:
    """(likeness, features), each 1×1×H×W in 0..1: where the faces are, and their features'
    lines — from landmarks, or (Haar fallback) an ellipse per face with its eyes as features."""
    skin = np.zeros((height, width), np.float32)
    features = np.zeros((height, width), np.float32)
    for face in faces:
        if face.landmarks:
            face_skin, face_features = _landmark_planes(height, width, face)
        else:
            face_skin, face_features = _ellipse_planes(height, width, face)
        np.maximum(skin, face_skin, out=skin)
        np.maximum(features, face_features, out=features)
    return torch.from_numpy(skin)[None, None], torch.from_numpy(features)[None, None]


def _ellipse(height: int, width: int, cx: float, cy: float, rx: float, ry: float,
             softness: float) -> torch.Tensor:
    """An ellipse of 1 fading to 0 over ``softness`` × its radius, H×W."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 - cy) / ry
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - cx) / rx
    radius = (ys[:, None] ** 2 + xs[None, :] ** 2).sqrt()
    return ((1 + softness - radius) / softness).clamp(0, 1)


def _ellipse_planes(height: int, width: int, face: Face) -> tuple[np.ndarray, np.ndarray]:
    """A soft ellipse over a Haar box (chin and forehead included, as the box stops at the
    brows and the mouth), and its eyes as the features."""
    skin = _ellipse(height, width, face.x + face.w / 2, face.y + face.h * 0.55,
                    face.w * 0.5, face.h * 0.68, softness=0.25)
    features = torch.zeros(height, width)
    for ex, ey, ew, eh in face.eyes:
        eye = _ellipse(height, width, ex + ew / 2, ey + eh / 2, ew * 0.6, eh * 0.45, softness=0.5)
        features = torch.maximum(features, eye)
    return skin.numpy(), features.numpy()


def face_mask(height: int, width: int, faces: list[Face]) -> torch.Tensor:
    """1×1×H×W: the faces' likeness mask (skin), as a user's ``--face-mask`` would be."""
    return face_planes(height, width, faces)[0]

def region_masks(labels: torch.Tensor, count: int) -> torch.Tensor:
    """1×count×H×W one-hot regions from a label image: region k is where the grey level is
    nearest to k/(count−1) — black the first style, white the last, greys between.

    Levels, not exact colours, so an antialiased or JPEG-saved mask still works.
    """
    if count < 2:
        raise ParamError("--mask needs at least two styles, one per region")
    grey = labels.mean(dim=1, keepdim=True) if labels.shape[1] > 1 else labels
    index = (grey * (count - 1)).round().long().clamp(0, count - 1)
    regions = torch.zeros(labels.shape[0], count, *labels.shape[-2:])
    regions.scatter_(1, index, 1.0)
    empty = [k + 1 for k in range(count) if regions[:, k].sum() == 0]
    if empty:
        raise ParamError(f"--mask has no pixels for style {empty[0]} (grey level "
                         f"{round(255 * (empty[0] - 1) / (count - 1))}): one region per style")
    return regions


@dataclass(frozen=True)
class Guide:
    """Image-space guidance of one render; ``None`` parts mean "everywhere alike".

    ``likeness`` 1×1×H×W (0..1: where the faces are), ``features`` 1×1×H×W (0..1: the lines
    of their eyes, brows, nose, mouth, jaw and hair line) and ``regions`` 1×R×H×W, all at the
    photo's size; ``at_size`` gives them at a scale's or a layer's size.
    """

    likeness: torch.Tensor | None = None
    regions: torch.Tensor | None = None
    strength: float = 0.5
    features: torch.Tensor | None = None
    face_width: float = 0.0     # the largest face's width at the masks' size, px (0: unknown)

    @property
    def active(self) -> bool:
        return self.likeness is not None or self.regions is not None

    def region_count(self) -> int:
        return 1 if self.regions is None else self.regions.shape[1]

    def style_mask_count(self) -> int:
        """How many masks each style layer holds (``style_masks``' R)."""
        return self.region_count() + int(self._face_gram())

    def planes(self) -> int:
        """How many image-sized masks the guide holds (for the memory plan)."""
        return sum(m.shape[1] for m in (self.likeness, self.features, self.regions) if m is not None)

    def _map(self, fn) -> Guide:
        return replace(self, **{name: None if getattr(self, name) is None else fn(getattr(self, name))
                                for name in ("likeness", "features", "regions")})

    def resized(self, height: int, width: int) -> Guide:
        masks = next((m for m in (self.likeness, self.regions) if m is not None), None)
        ratio = 1.0 if masks is None else width / masks.shape[-1]
        return replace(self._map(lambda mask: at_size(mask, height, width)), face_width=self.face_width * ratio)

    def detail_layer(self, available) -> str | None:
        """The shallow layer that holds the features' lines when the face is too small for
        the content layer's grid (relu4_2's stride is 8 px: a 80 px face is 10 positions
        across, too coarse for an eyelid), among the layers ``available`` (None: not needed)."""
        if self.features is None or self.face_width <= 0:
            return None
        if self.face_width / CONTENT_STRIDE >= MIN_FACE_POSITIONS:
            return None
        fits = [name for name, stride in DETAIL_LAYERS if self.face_width / stride >= MIN_FACE_POSITIONS]
        name = fits[0] if fits else DETAIL_LAYERS[-1][0]
        return name if name in available else None

    def content_layers(self, layers, available) -> list[str]:
        """``layers`` (the content layers asked for), and the detail layer where it is needed."""
        detail = self.detail_layer(available)
        return list(layers) + ([detail] if detail and detail not in layers else [])

    def to(self, device) -> Guide:
        return self._map(lambda mask: mask.to(device))

    def cropped(self, crop) -> Guide:
        """The guide passed through ``crop`` (a function on …×H×W tensors)."""
        return self._map(crop)

    def content_weights(self, height: int, width: int, layer: str | None = None) -> torch.Tensor | None:
        """Per-position multiplier of the content weight at a layer of H×W positions: the
        face's skin held a little, its features' lines firmly, by ``strength``; at the detail
        layer (``detail_layer``), only the features' lines."""
        if self.likeness is None:
            return None
        if layer is not None and layer in dict(DETAIL_LAYERS) and self.features is not None:
            return DETAIL_BOOST * self.strength * at_size(self.features, height, width)
        weights = 1 + FACE_BOOST * self.strength * at_size(self.likeness, height, width)
        if self.features is not None:
            weights = weights + FEATURE_BOOST * self.strength * at_size(self.features, height, width)
        return weights

    def style_share(self) -> float:
        """How much of the style a face keeps: all of it up to strength 0.5, none at 1."""
        return 1 - max(0.0, 2 * self.strength - 1)

    def _face_gram(self) -> bool:
        # With region styles the face's target would be its region's style: not built,
        # the face then keeps only the whole-region terms.
        return self.likeness is not None and self.regions is None and FACE_STYLE > 0

    def style_masks(self, height: int, width: int) -> torch.Tensor | None:
        """R×1×H×W: each region's mask, times the face's style share (None: no guidance);
        in portrait mode without regions, the face's own mask after the whole image's, so the
        face gets the painting's statistics by itself (its guided Gram) and not only as a part
        of the whole, where the background's many strokes can stand in for its few."""
        if not self.active:
            return None
        regions = (self.likeness.new_ones(1, 1, height, width) if self.regions is None
                   else at_size(self.regions, height, width))
        if self.likeness is not None and self.style_share() < 1:
            face = at_size(self.likeness, height, width).clamp(max=1)
            regions = regions * (1 - (1 - self.style_share()) * face)
        if self._face_gram():
            regions = torch.cat([regions, at_size(self.likeness, height, width)], dim=1)
        return regions.transpose(0, 1)

    def style_region_weights(self) -> list[float] | None:
        """One weight per mask of ``style_masks`` (None: all 1): the face's Gram term weighs
        FACE_STYLE × the style share, less for a face narrower than FACE_STYLE_WIDTH px (× the
        square of its width's share): the painting's strokes keep their size, and on a small
        face one stroke covers an eye (a 384 px preview of a full-length portrait)."""
        if not self._face_gram():
            return None
        small = 1.0 if self.face_width <= 0 else min(1.0, self.face_width / FACE_STYLE_WIDTH) ** 2
        return [1.0] * self.region_count() + [FACE_STYLE * self.style_share() * small]


def at_size(mask: torch.Tensor | None, height: int, width: int) -> torch.Tensor | None:
    """``mask`` area-averaged (or bilinearly enlarged) to H×W."""
    if mask is None or tuple(mask.shape[-2:]) == (height, width):
        return mask
    shrinking = height <= mask.shape[-2] and width <= mask.shape[-1]
    if shrinking:
        return F.interpolate(mask, size=(height, width), mode="area")
    return F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)


def guide_for(content: torch.Tensor, params, n_styles: int, *, face_mask: torch.Tensor | None = None,
              region_mask: torch.Tensor | None = None) -> Guide | None:
    """The guidance ``params`` ask for, at ``content``'s size (None: none asked for).

    ``face_mask``/``region_mask`` (N×C×H×W, 0..1) override ``params.face_mask``/``params.mask``
    paths, which are read here when no tensor is given. A user's face mask overrides
    detection; ``portrait="off"`` turns both off.
    """
    height, width = content.shape[-2:]
    likeness = features = None
    face_width = 0.0
    if params.portrait != "off":
        if face_mask is None and params.face_mask is not None:
            face_mask = _read_mask(params.face_mask)
        if face_mask is not None:
            likeness = at_size(face_mask.mean(dim=1, keepdim=True).float(), height, width)
            if float(likeness.max()) < 1 / 255:
                raise ParamError("--face-mask has no white pixels: white marks the face, black the rest")
        elif params.portrait == "auto":
            faces = detect_faces(content)
            if faces:
                likeness, features = face_planes(height, width, faces)
                face_width = max(face.width for face in faces)
    if region_mask is None and params.mask is not None:
        region_mask = _read_mask(params.mask)
    regions = None
    if region_mask is not None:
        regions = region_masks(at_size(region_mask.float(), height, width), n_styles)
    guide = Guide(likeness=likeness, features=features, regions=regions, strength=params.portrait_strength,
                  face_width=face_width)
    return guide if guide.active else None


def _read_mask(path) -> torch.Tensor:
    from impasto import imaging  # imaging is light, but keep engine imports one-way at load

    return imaging.load(path)
