"""A customer's upload in, one clean photo out — or a clear 4xx saying why not.

The order of the checks is the point: nothing expensive happens before something cheap
has said the file deserves it.

1. ``read_capped`` stops reading as soon as the byte cap is passed (413), so a 5 GB
   upload costs at most the cap plus one chunk of memory.
2. ``sniff_format`` reads the magic bytes: JPEG, PNG or WebP, whatever the filename or
   the Content-Type claim (415 otherwise, naming what the file looks like).
3. A small structure walk of that format (``_walk_jpeg`` / ``_walk_png`` / ``_walk_webp``,
   no pixel is decoded) finds the declared size, where the image ends, and which bytes are
   metadata rather than pixels. It refuses, before decoding (422): too many pixels (a
   decompression bomb: a 50000×50000 PNG of a few hundred bytes never gets a buffer),
   too small, truncated structure, animations, absurd progressive-scan counts, and
   polyglots — files that are also something else:
   - bytes after the image's end are refused unless they are padding (NUL, 0xFF, CR/LF) or, for
     JPEG, further complete JPEG images (the gain maps and depth maps that MPF / Ultra HDR
     phone photos append). A ZIP, a script, an HTML page or a phone's "motion photo"
     video appended to the image is refused.
   - metadata (JPEG APPn/COM segments, PNG ancillary chunks, WebP EXIF/XMP/ICCP chunks)
     holding an archive, markup or script signature is refused. Pixel data is not
     scanned: compressed bytes match 4-byte signatures by chance.
4. Only then is the image fully decoded by Pillow, restricted to the sniffed format
   (a truncated or corrupt stream is a 422; one limit: libjpeg fills a JPEG whose data
   was cut but which still ends in an EOI marker with grey instead of failing, and Pillow
   does not report libjpeg's warning, so that photo is accepted and looks damaged),
   turned upright by its EXIF orientation and converted to sRGB through its ICC profile.
5. It is re-encoded from pixels only: the stored file shares no byte with the upload, so
   whatever slipped past the checks above (GPS, a comment, a payload) is gone.

Re-encoding choice: always JPEG, quality 92, 4:4:4 chroma, with an sRGB ICC profile and
no EXIF/XMP/comments. One format keeps keys and content types simple (``photo.jpg``); a
40-megapixel photo stays ~10-20 MB, where PNG would be ~80 MB; 4:4:4 keeps colour edges
sharp for ``--original-colors`` prints; transparency is flattened onto white, as
``imaging.load`` does for every render. Converting to sRGB once, here, means the browser,
the feed-forward previews and the engine all see the same colours.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from impasto.errors import (
    CorruptImage,
    SuspiciousImage,
    TooManyPixels,
    TooSmall,
    UnsupportedFormat,
    UploadError,
    UploadTooLarge,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MIN_SIDE = 256                 # below a preview's size there is nothing to paint
JPEG_QUALITY = 92
MAX_JPEG_SCANS = 100           # libjpeg's progressive default writes 10; thousands are a CPU bomb
MAX_JPEG_FRAMES = 16           # MPF / Ultra HDR phones append 1-3 (gain map, depth map, thumbnail)
# Signatures of archives, documents, executables and markup that have no business inside
# a photo's metadata (matched case-insensitively).
ACTIVE_SIGNATURES = (b"pk\x03\x04", b"pk\x05\x06", b"<script", b"<html", b"<!doctype", b"<?php",
                     b"<svg", b"<iframe", b"<body", b"javascript:", b"%pdf-", b"\x7felf")


@dataclass(frozen=True)
class CleanPhoto:
    """A re-encoded, upright, sRGB photo with no metadata but its colour profile."""

    data: bytes
    width: int
    height: int
    format: str                 # always "JPEG" (see the module docstring)
    source_format: str          # what was uploaded: "JPEG" | "PNG" | "WEBP"

    @property
    def content_type(self) -> str:
        return "image/jpeg"

    @property
    def extension(self) -> str:
        return "jpg"


# --- 1. reading with a cap -----------------------------------------------------------------

def read_capped(stream: Any, *, max_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    """All bytes of ``stream`` (a binary file or an iterable of byte chunks), at most ``max_bytes``.

    Reads ``chunk_bytes`` at a time and raises ``UploadTooLarge`` as soon as the total
    passes the cap, without reading on.
    """
    chunks: Iterable[bytes] = stream
    if hasattr(stream, "read"):
        chunks = iter(lambda: stream.read(chunk_bytes), b"")
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(buffer)


async def aread_capped(stream: Any, *, max_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    """``read_capped`` for an async source: an object with ``async read(n)`` (Starlette's
    ``UploadFile``) or an async iterable of chunks (``request.stream()``, which enforces the
    cap while the body is still arriving, before anything is spooled to disk)."""
    buffer = bytearray()
    if hasattr(stream, "read"):
        while chunk := await stream.read(chunk_bytes):
            buffer += chunk
            if len(buffer) > max_bytes:
                raise _too_large(max_bytes)
    else:
        async for chunk in stream:
            buffer += chunk
            if len(buffer) > max_bytes:
                raise _too_large(max_bytes)
    return bytes(buffer)


def _too_large(max_bytes: int) -> UploadTooLarge:
    return UploadTooLarge(f"This file is larger than the {_megabytes(max_bytes)} limit.")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n:,} bytes"


# --- 2. sniffing ---------------------------------------------------------------------------

def sniff_format(data: bytes) -> str:
    """``"JPEG"``, ``"PNG"`` or ``"WEBP"`` from the magic bytes, else ``UnsupportedFormat``."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if not data:
        raise CorruptImage("The file is empty.")
    raise UnsupportedFormat(f"This looks like {_describe(data)}; please upload a JPEG, PNG or WebP photo.")


def _describe(data: bytes) -> str:
    head = data[:64]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for magic, name in [(b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\0", "a TIFF image"),
                        (b"MM\0*", "a TIFF image"), (b"%PDF", "a PDF document"),
                        (b"PK\x03\x04", "a ZIP archive"), (b"\0\0\1\0", "an icon file")]:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "a HEIC/AVIF photo" if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"hevc") \
            else "a video"
    if text.startswith((b"<svg", b"<?xml")):
        return "an SVG or XML file"
    if text.startswith((b"<!doctype", b"<html", b"<")):
        return "a web page"
    return "a file that is not a photo"


# --- 3. structure walks (no decoding) ------------------------------------------------------

@dataclass
class _Layout:
    width: int
    height: int
    end: int                                  # offset just past the image
    metadata: list[tuple[int, int]]           # (start, end) of non-pixel byte ranges


def _walk(data: bytes, fmt: str) -> _Layout:
    return _walk_at(data, fmt, 0)


def _walk_at(data: bytes, fmt: str, start: int) -> _Layout:
    """The layout of the image of format ``fmt`` that begins at offset ``start`` of ``data``
    (offsets in the layout are offsets into ``data``)."""
    try:
        return {"JPEG": _walk_jpeg, "PNG": _walk_png, "WEBP": _walk_webp}[fmt](data, start)
    except (IndexError, struct.error):
        raise CorruptImage("This image is incomplete or damaged.") from None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _walk_jpeg(data: bytes, start: int) -> _Layout:
    """Marker segments from SOI to EOI; entropy-coded scans are skipped to their next marker."""
    if data[start:start + 2] != b"\xff\xd8":
        raise CorruptImage("This JPEG is damaged (no start-of-image marker).")
    pos, n, size, scans, metadata = start + 2, len(data), None, 0, []
    while True:
        if pos >= n:
            raise CorruptImage("This JPEG is incomplete (it ends before its last marker).")
        if data[pos] != 0xFF:
            raise CorruptImage("This JPEG is damaged (a marker is missing).")
        while pos < n and data[pos] == 0xFF:        # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker == 0xD9:                          # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if marker in (0x00, 0xD8):
            raise CorruptImage("This JPEG is damaged (unexpected marker).")
        length = struct.unpack(">H", data[pos:pos + 2])[0]
        segment_end = pos + length
        if length < 2 or segment_end > n:
            raise CorruptImage("This JPEG is incomplete or damaged.")
        if marker in _JPEG_SOF:
            if size is not None:
                raise CorruptImage("This JPEG holds more than one frame.")
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            size = (width, height)
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:     # APPn, COM
            metadata.append((pos + 2, segment_end))
        pos = segment_end
        if marker == 0xDA:                          # SOS: skip the entropy-coded data
            if size is None:
                raise CorruptImage("This JPEG is damaged (scan before frame header).")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise SuspiciousImage(f"This JPEG has more than {MAX_JPEG_SCANS} scans.")
            pos = _end_of_scan(data, pos)
    if size is None or 0 in size:
        raise CorruptImage("This JPEG has no usable frame header.")
    return _Layout(size[0], size[1], pos, metadata)


def _end_of_scan(data: bytes, pos: int) -> int:
    """Offset of the first real marker after entropy-coded data (FF00 and RSTn are data)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise CorruptImage("This JPEG is incomplete (it ends inside the image data).")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


def _walk_png(data: bytes, start: int) -> _Layout:
    """Chunks from IHDR to IEND, CRCs checked; an APNG (``acTL``) is refused."""
    pos, n, metadata, size = start + 8, len(data), [], None
    while True:
        if pos + 12 > n:
            raise CorruptImage("This PNG is incomplete (it ends before its IEND chunk).")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk_end = pos + 12 + length
        if length > 0x7FFFFFFF or chunk_end > n or not kind.isalpha():
            raise CorruptImage("This PNG is incomplete or damaged.")
        (stored_crc,) = struct.unpack(">I", data[chunk_end - 4:chunk_end])
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != stored_crc:
            raise CorruptImage("This PNG is damaged (checksum mismatch).")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise CorruptImage("This PNG is damaged (no IHDR header).")
            size = struct.unpack(">II", data[pos + 8:pos + 16])
        elif kind == b"acTL":
            raise CorruptImage("Animated images are not supported; please upload a still photo.")
        elif kind not in (b"IDAT", b"IEND", b"PLTE"):
            metadata.append((pos + 8, chunk_end - 4))
        pos = chunk_end
        if kind == b"IEND":
            break
    return _Layout(size[0], size[1], pos, metadata)


def _walk_webp(data: bytes, start: int) -> _Layout:
    """RIFF chunks; the size comes from VP8X's canvas or the VP8/VP8L frame header."""
    riff_end = start + 8 + struct.unpack("<I", data[start + 4:start + 8])[0]
    if riff_end > len(data):
        raise CorruptImage("This WebP image is incomplete.")
    pos, metadata, size, image = start + 12, [], None, False
    while pos + 8 <= riff_end:
        kind, length = struct.unpack("<4sI", data[pos:pos + 8])
        body = pos + 8
        if body + length > riff_end:
            raise CorruptImage("This WebP image is incomplete or damaged.")
        if kind == b"VP8X":
            if data[body] & 0x02:
                raise CorruptImage("Animated images are not supported; please upload a still photo.")
            size = (int.from_bytes(data[body + 4:body + 7], "little") + 1,
                    int.from_bytes(data[body + 7:body + 10], "little") + 1)
        elif kind in (b"ANIM", b"ANMF"):
            raise CorruptImage("Animated images are not supported; please upload a still photo.")
        elif kind == b"VP8 ":
            if data[body + 3:body + 6] != b"\x9d\x01\x2a":
                raise CorruptImage("This WebP image is damaged.")
            w, h = struct.unpack("<HH", data[body + 6:body + 10])
            size, image = size or (w & 0x3FFF, h & 0x3FFF), True
        elif kind == b"VP8L":
            if data[body] != 0x2F:
                raise CorruptImage("This WebP image is damaged.")
            bits = int.from_bytes(data[body + 1:body + 5], "little")
            size, image = size or ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1), True
        elif kind != b"ALPH":
            metadata.append((body, body + length))
        pos = body + length + (length & 1)       # chunks are padded to an even length
    if not image or size is None:
        raise CorruptImage("This WebP image has no image data.")
    return _Layout(size[0], size[1], riff_end, metadata)


def _check_structure(data: bytes, fmt: str, layout: _Layout) -> None:
    """Refuse polyglots: significant bytes after the image, active content in its metadata.

    Linear in the size of the upload: every walk starts at an offset into ``data`` and no
    loop copies the rest of the file (slicing ``data[pos:]`` per appended frame made a
    2.7 MB upload of 160 000 tiny frames take 39 s), and appended frames are capped.
    """
    regions = list(layout.metadata)
    pos = layout.end
    frames = 1
    while fmt == "JPEG":
        # MPF / Ultra HDR: gain maps and depth maps are whole JPEGs after the first one,
        # sometimes after NUL padding.
        following = _skip_padding(data, pos, b"\x00")
        if data[following:following + 3] != b"\xff\xd8\xff":
            break
        frames += 1
        if frames > MAX_JPEG_FRAMES:
            raise SuspiciousImage(f"This JPEG holds more than {MAX_JPEG_FRAMES} images.")
        extra = _walk_at(data, "JPEG", following)
        regions += extra.metadata
        pos = extra.end
    if _skip_padding(data, pos, b"\x00\xff\r\n") < len(data):
        log.info("upload refused: %d bytes after the image end (%r...)", len(data) - pos, data[pos:pos + 16])
        raise SuspiciousImage("This file holds more than a photo (data after the image, such as an "
                              "archive or a motion-photo video); please upload the photo itself.")
    for begin, end in regions:
        chunk = data[begin:end].lower()
        for signature in ACTIVE_SIGNATURES:
            if signature in chunk:
                log.info("upload refused: %r in the image metadata", signature)
                raise SuspiciousImage("This image carries hidden content in its metadata; "
                                      "please upload the photo itself.")


def _skip_padding(data: bytes, pos: int, padding: bytes) -> int:
    """The offset of the first byte at or after ``pos`` that is not in ``padding``.

    Looks through windows that start small and double, so a skip reads at most about twice
    the padding it skips plus a few bytes: never the whole rest of the file per frame."""
    n, window = len(data), 16
    while pos < n:
        chunk = data[pos:pos + window]
        rest = chunk.lstrip(padding)
        if rest:
            return pos + len(chunk) - len(rest)
        pos += len(chunk)
        window = min(2 * window, CHUNK_BYTES)
    return n


def _check_size(width: int, height: int, *, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise TooManyPixels(f"This photo is {width}×{height} pixels; the limit is "
                            f"{max_pixels / 1e6:g} megapixels.")
    if min(width, height) < min_side:
        raise TooSmall(f"This photo is {width}×{height} pixels; it needs at least {min_side} "
                       "pixels on each side.")


# --- 4-5. decode, orient, sRGB, re-encode ---------------------------------------------------

def validate_photo(data: bytes, *, max_pixels: int, min_side: int = MIN_SIDE) -> CleanPhoto:
    """The upload as a ``CleanPhoto``, or an ``UploadError`` (415 or 422) saying why not."""
    fmt = sniff_format(data)
    layout = _walk(data, fmt)
    _check_size(layout.width, layout.height, max_pixels=max_pixels, min_side=min_side)
    _check_structure(data, fmt, layout)
    image = _decode(data, fmt, layout)
    image = _upright_srgb(image)
    out = io.BytesIO()
    image.info.clear()       # Pillow re-writes a JPEG comment found in info; keep nothing
    image.save(out, format="JPEG", quality=JPEG_QUALITY, subsampling=0, icc_profile=_srgb_profile())
    log.debug("upload %s %dx%d -> JPEG %d bytes", fmt, image.width, image.height, out.tell())
    return CleanPhoto(out.getvalue(), image.width, image.height, "JPEG", fmt)


def _decode(data: bytes, fmt: str, layout: _Layout):
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Our cap (checked from the header above) replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            # Pillow calls a JPEG with an MPF index (Ultra HDR gain map, depth map) "MPO";
            # its first frame is the photo. Animations were refused by the walk.
            decoded = "JPEG" if image.format == "MPO" else image.format
            if decoded != fmt or image.size != (layout.width, layout.height):
                raise CorruptImage("This image is damaged (its headers disagree).")
            image.load()
    except UploadError:
        raise
    except Image.DecompressionBombError:
        raise TooManyPixels("This photo has too many pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        log.info("upload refused: %s decode failed: %s", fmt, exc)
        raise CorruptImage("This image is incomplete or damaged and cannot be read.") from None
    return image


def _upright_srgb(image):
    """EXIF orientation applied, alpha flattened onto white, pixels converted to sRGB."""
    from PIL import Image, ImageCms, ImageOps

    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error):
        log.info("ignoring unreadable EXIF orientation")       # the photo itself is fine
    profile = image.info.get("icc_profile")
    if image.mode.startswith("I"):                  # 16-bit grey: scale, don't clip
        image = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
            image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        image = image.convert("RGB")
    if image.mode == "P":
        image = image.convert("RGB")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            image = ImageCms.profileToProfile(image, source, _srgb(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            log.info("ignoring an unusable colour profile")
    return image.convert("RGB") if image.mode != "RGB" else image


def _srgb():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _srgb_profile() -> bytes:
    return _srgb().tobytes()
