"""Finding the sitter: face boxes and 68 landmarks, offline.

Faces come from dlib's HOG detector and its 68-point landmark predictor (the model file ships
in the PyPI package ``face-recognition-models``; dlib itself in ``dlib-bin``). Where dlib finds
no face — a profile, a strong tilt — OpenCV's Haar cascades (frontal, then profile, shipped in
``opencv-python-headless`` 4.x) give a box, and the predictor is asked for landmarks inside it.
Without dlib installed, the Haar boxes and their eye boxes are all there is (masks.py then draws
the old face ellipse).

dlib's face *recognition* network ships in the same package: it is the portrait judge
(``shared/tools/likeness.py``) and is never loaded here.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from impasto.errors import ParamError

log = logging.getLogger(__name__)

DETECT_SIDE = 768          # faces are found on a copy this size: detection cost is ∝ pixels
MIN_FACE_SHARE = 0.04      # a face narrower than 4 % of the short side is background
EXTRA_FACE_SCORE = 0.5     # faces after the first need a confident HOG score (astronaut: 0.12 on a patch)
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"

# dlib's 68-point layout (iBUG 300-W): index ranges of each feature
JAW = range(17)
BROWS = (range(17, 22), range(22, 27))
NOSE_BRIDGE, NOSE_BASE = range(27, 31), range(31, 36)
EYES = (range(36, 42), range(42, 48))
MOUTH = range(48, 60)


@dataclass(frozen=True)
class Face:
    """A face box in the photo's pixels, its eyes' boxes (Haar only, may be empty) and its
    68 landmarks as (x, y) pairs in the photo's pixels (empty when dlib is not installed)."""

    x: int
    y: int
    w: int
    h: int
    eyes: tuple[tuple[int, int, int, int], ...] = ()
    landmarks: tuple[tuple[float, float], ...] = ()

    def points(self, indices) -> np.ndarray:
        """The landmarks ``indices`` as a k×2 float array."""
        return np.array([self.landmarks[i] for i in indices], dtype=np.float64)

    @property
    def width(self) -> float:
        """The face's width: jaw to jaw with landmarks, else the box's."""
        if not self.landmarks:
            return float(self.w)
        jaw = self.points(JAW)
        return float(np.linalg.norm(jaw[0] - jaw[-1]))


def _rgb_u8(image: torch.Tensor, side: int) -> tuple[np.ndarray, float]:
    """The image as H×W×3 uint8 at most ``side`` px, and the factor back to full size."""
    h, w = image.shape[-2:]
    scale = min(1.0, side / max(h, w))
    small = image if scale == 1.0 else F.interpolate(
        image, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    rgb = small[0, :3].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).contiguous().numpy()
    return rgb, 1.0 / scale


def _gray(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)


@lru_cache(maxsize=1)
def _dlib():
    """(detector, predictor), or None when dlib or its landmark model is not installed."""
    if importlib.util.find_spec("dlib") is None:
        log.warning("portrait mode: dlib is not installed (pip install dlib-bin "
                    "face-recognition-models); faces get an ellipse, not landmarks")
        return None
    path = _landmarks_path()
    if path is None:
        log.warning("portrait mode: %s not found (pip install face-recognition-models); "
                    "faces get an ellipse, not landmarks", LANDMARKS_FILE)
        return None
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def _landmarks_path() -> Path | None:
    # Located without importing the package: its __init__ needs pkg_resources, which
    # current setuptools no longer ships.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LANDMARKS_FILE
    return path if path.is_file() else None


def _cascade(name: str):
    import cv2

    cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}{name}")
    if cascade.empty():
        raise ParamError(f"OpenCV's {name} is missing: portrait mode needs opencv-python-headless<5")
    return cascade


def _dlib_boxes(rgb: np.ndarray, detector, min_side: int) -> list[tuple[int, int, int, int]]:
    rects, scores, _ = detector.run(rgb, 1, 0.0)   # upsampled once: faces down to ~40 px
    found = sorted(zip(rects, scores), key=lambda rs: -rs[0].area())
    boxes = []
    for k, (rect, score) in enumerate(found):
        if rect.width() < min_side or (k > 0 and score < EXTRA_FACE_SCORE):
            continue
        boxes.append((rect.left(), rect.top(), rect.width(), rect.height()))
    return boxes


def _haar_boxes(gray: np.ndarray, min_side: int) -> list[tuple[int, int, int, int]]:
    """Frontal faces, else profiles (either way round): the fallback when dlib finds none."""
    import cv2

    gray = cv2.equalizeHist(gray)
    options = {"scaleFactor": 1.1, "minNeighbors": 6, "minSize": (min_side, min_side)}
    boxes = list(_cascade("haarcascade_frontalface_default.xml").detectMultiScale(gray, **options))
    if not boxes:
        profile = _cascade("haarcascade_profileface.xml")
        boxes = list(profile.detectMultiScale(gray, **options))
        width = gray.shape[1]
        boxes += [(width - x - w, y, w, h) for x, y, w, h in profile.detectMultiScale(gray[:, ::-1].copy(), **options)]
    return [tuple(int(v) for v in box) for box in sorted(boxes, key=lambda b: -b[2] * b[3])]


def _haar_eyes(gray: np.ndarray, box) -> tuple[tuple[int, int, int, int], ...]:
    x, y, w, h = box
    upper = gray[y:y + h // 2 + h // 8, x:x + w]  # eyes sit in the upper half
    eyes = _cascade("haarcascade_eye.xml").detectMultiScale(
        upper, scaleFactor=1.1, minNeighbors=5, minSize=(max(8, w // 10),) * 2, maxSize=(w // 3,) * 2)
    return tuple((x + ex, y + ey, ew, eh) for ex, ey, ew, eh in eyes[:2])


def detect_faces(image: torch.Tensor) -> list[Face]:
    """Faces in a 1×3×H×W 0..1 image, largest first, with landmarks where dlib is installed."""
    rgb, back = _rgb_u8(image, DETECT_SIDE)
    gray = _gray(rgb)
    min_side = max(20, round(MIN_FACE_SHARE * min(gray.shape)))
    models = _dlib()
    boxes = _dlib_boxes(rgb, models[0], min_side) if models else []
    if not boxes:
        boxes = _haar_boxes(gray, min_side)
    faces = []
    for box in boxes:
        landmarks = _landmarks(rgb, box, models[1]) if models else ()
        eyes = () if landmarks else _haar_eyes(gray, box)
        faces.append(Face(*(round(v * back) for v in box),
                          eyes=tuple(tuple(round(v * back) for v in eye) for eye in eyes),
                          landmarks=tuple((px * back, py * back) for px, py in landmarks)))
    log.info("portrait mode: %d face(s) found%s", len(faces), " with landmarks" if models else "")
    return faces


def _landmarks(rgb: np.ndarray, box, predictor) -> tuple[tuple[float, float], ...]:
    import dlib

    x, y, w, h = box
    shape = predictor(rgb, dlib.rectangle(int(x), int(y), int(x + w), int(y + h)))
    # +0.5: dlib's points are pixel indices; the masks work in pixel-centre coordinates
    return tuple((shape.part(i).x + 0.5, shape.part(i).y + 0.5) for i in range(shape.num_parts))
