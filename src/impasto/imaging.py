"""Image files ↔ tensors: load with checks, save atomically with an sRGB profile.

Tensors are float ``1×3×H×W`` in 0..1, RGB. A path ``sample:NAME`` names one of the
photos scikit-image ships (see ``SAMPLES``), so a first render needs no files at all. Loading applies the EXIF orientation,
converts embedded colour profiles to sRGB, flattens transparency onto white and refuses
images that are truncated, tiny, or larger than a pixel cap (decompression bombs).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from impasto.errors import ImageError, OutputError
from impasto.files import atomic_path

log = logging.getLogger(__name__)
MIN_SIDE = 32
MAX_PIXELS = 120_000_000   # ~ a 36×24 in print at 300 dpi, with margin
SAMPLE_PREFIX = "sample:"
# Photos scikit-image ships in its wheel (no download): NASA's portrait of Eileen Collins,
# a cat, a cup of coffee, a stained tissue micrograph, a rocket.
SAMPLES = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "rocket")
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF",
                ".tiff": "TIFF", ".webp": "WEBP"}


def open_image(path: Path | str, *, max_pixels: int | None = None) -> Image.Image:
    """A fully decoded, upright RGB PIL image in sRGB, or an ImageError saying why not.

    ``max_pixels`` defaults to ``MAX_PIXELS`` (read at call time, so it can be configured).
    """
    if str(path).startswith(SAMPLE_PREFIX):
        return sample_image(str(path).removeprefix(SAMPLE_PREFIX))
    path = Path(path)
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            # Our own cap (checked from the header, before decoding) replaces PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_size(img.size, path, max_pixels)
                img.load()
                # in place: at print size each copy of the decoded image is 4 bytes a pixel
                return _to_srgb_rgb(ImageOps.exif_transpose(img, in_place=True) or img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        # PIL's own hard limit (2 × Image.MAX_IMAGE_PIXELS) lies above our default cap.
        raise ImageError(f"{path}: image is larger than the {max_pixels:,} pixel cap") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or a format impasto cannot read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from None


def sample_image(name: str) -> Image.Image:
    """A sample photo shipped inside scikit-image (offline), for demos: ``sample:astronaut``."""
    if name not in SAMPLES:
        raise ImageError(f"unknown sample image {name!r}; samples are {', '.join(SAMPLES)}")
    try:
        import skimage.data
    except ImportError:
        raise ImageError("sample images need scikit-image: pip install scikit-image") from None
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _check_size(size: tuple[int, int], path: Path, max_pixels: int) -> None:
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path}: {w}×{h} px is too small (at least {MIN_SIDE} px a side)")
    if w * h > max_pixels:
        raise ImageError(f"{path}: {w}×{h} px is larger than the {max_pixels:,} pixel cap")


def _to_srgb_rgb(img: Image.Image) -> Image.Image:
    profile = img.info.get("icc_profile")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            img = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            log.warning("ignoring an unreadable colour profile")
    return img


STRIPE_VALUES = 1 << 20   # values per stripe when converting large images (4 MB as float32:
# stripes freed into malloc's heap stay small beside the image)


def _stripe_rows(width: int) -> int:
    return max(1, STRIPE_VALUES // (3 * width))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """``1×3×H×W`` float32 in 0..1, converted stripe by stripe from PIL's 8-bit pixels: the
    float tensor is the only full-size buffer made (a 4096² photo: 201 MB, not three, and
    no whole 8-bit copy of the pixels beside PIL's own)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    width, height = img.size
    out = torch.empty((1, 3, height, width), dtype=torch.float32)
    rows = _stripe_rows(width)
    for top in range(0, height, rows):
        array = np.array(img.crop((0, top, width, min(height, top + rows))))   # rows×W×3 uint8
        out[0, :, top:top + rows] = torch.from_numpy(array).permute(2, 0, 1).to(torch.float32).div_(255.0)
    return out


def load(path: Path | str, *, max_pixels: int | None = None) -> torch.Tensor:
    """``1×3×H×W`` float tensor in 0..1 RGB (sRGB) from an image file."""
    return to_tensor(open_image(path, max_pixels=max_pixels))


def to_pil(image: torch.Tensor) -> Image.Image:
    """8-bit RGB, pasted stripe by stripe: no whole 8-bit array beside PIL's pixels."""
    image = image.detach().squeeze(0)
    height, width = image.shape[-2:]
    img = Image.new("RGB", (width, height))
    rows = _stripe_rows(width)
    for top in range(0, height, rows):
        stripe = _quantized(image[:, top:top + rows], 255, np.uint8)
        img.paste(Image.fromarray(stripe, "RGB"), (0, top))
    return img


def _quantized(image: torch.Tensor, top: int, dtype) -> np.ndarray:
    """H×W×3 integers round(clamp(x, 0, 1)·top), stripe by stripe: no full-size float copy."""
    image = image.detach().squeeze(0)
    height, width = image.shape[-2:]
    out = np.empty((height, width, 3), dtype=dtype)
    rows = _stripe_rows(width)
    for start in range(0, height, rows):
        stripe = image[:, start:start + rows].cpu().clamp(0, 1).mul_(top).round_()
        out[start:start + rows] = stripe.to(torch.int32).permute(1, 2, 0).numpy()
    return out


def check_writable(path: Path | str) -> Path:
    """Fail before a long render, not after it: known format, existing writable folder."""
    path = Path(path)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise OutputError(f"{path}: unknown output format; use one of {', '.join(SAVE_FORMATS)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    if path.is_dir() or not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"{path}: not writable")
    return path


def save(image: torch.Tensor | Image.Image, path: Path | str, *, dpi: int | None = None,
         bit_depth: int = 8) -> Path:
    """Write atomically (temp file + rename: never a partial file) with an sRGB profile.

    ``dpi`` is recorded in the file (PNG pHYs, JPEG/TIFF resolution) for print shops;
    ``bit_depth=16`` writes a 16-bit RGB TIFF from the float image (smooth gradients in
    large prints; PIL cannot write 16-bit RGB, so tifffile does).
    """
    path = check_writable(path)
    fmt = SAVE_FORMATS[path.suffix.lower()]
    if bit_depth not in (8, 16) or (bit_depth == 16 and (fmt != "TIFF" or isinstance(image, Image.Image))):
        raise OutputError(f"{path}: 16-bit output is written as .tif/.tiff only (bit depth 8 or 16)")
    srgb = srgb_profile()
    try:
        with atomic_path(path) as tmp:
            if bit_depth == 16:
                _write_tiff16(image, tmp, srgb, dpi)
            else:
                _write_8bit(image, tmp, fmt, srgb, dpi)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None
    return path


@functools.lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """The sRGB ICC profile written into every output, with a fixed creation date.

    littleCMS stamps the current time into the header (bytes 24–35), so the same image
    saved a second later had other bytes: a retried job stored a different file. The date
    is not in the profile's MD5 ID, which littleCMS leaves zero, so fixing it is safe.
    """
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
    return bytes(profile)


def _write_8bit(image: torch.Tensor | Image.Image, target: str, fmt: str, icc: bytes, dpi: int | None) -> None:
    img = image if isinstance(image, Image.Image) else to_pil(image)
    options = {"icc_profile": icc}
    if dpi:
        options["dpi"] = (dpi, dpi)
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 95
    img.save(target, format=fmt, **options)


def _write_tiff16(image: torch.Tensor, target: str, icc: bytes, dpi: int | None) -> None:
    import tifffile

    array = _quantized(image, 65535, np.uint16)
    options = {"resolution": (dpi, dpi), "resolutionunit": "INCH"} if dpi else {}
    # 34675 is TIFF's ICC-profile tag (type 7: undefined bytes).
    tifffile.imwrite(target, array, photometric="rgb", compression="zlib",
                     extratags=[(34675, 7, len(icc), icc, True)], **options)
