"""Uploads: every abuse case is built here, byte by byte where Pillow would refuse to write it."""

from __future__ import annotations

import asyncio
import io
import struct
import zipfile
import zlib

import pytest
from PIL import Image, ImageCms

from impasto.service.shop.routes.web import http_status
from impasto.service.shop.uploads import (
    CleanPhoto,
    CorruptImage,
    SuspiciousImage,
    TooManyPixels,
    TooSmall,
    UnsupportedFormat,
    UploadError,
    UploadTooLarge,
    aread_capped,
    read_capped,
    sniff_format,
    validate_photo,
)

MAX_PIXELS = 40_000_000


def photo(size=(400, 300), mode="RGB") -> Image.Image:
    """A non-uniform test photo: a gradient with a red top-left quadrant."""
    image = Image.linear_gradient("L").resize(size).convert(mode)
    if mode in ("RGB", "RGBA"):
        image.paste((255, 0, 0) if mode == "RGB" else (255, 0, 0, 255), (0, 0, size[0] // 2, size[1] // 2))
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def jpeg_segments(data: bytes) -> list[int]:
    """The markers of a JPEG up to its first scan."""
    markers, pos = [], 2
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        markers.append(data[pos + 1])
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return markers


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def check(data: bytes, error: type[UploadError], status: int, **options) -> UploadError:
    with pytest.raises(error) as caught:
        validate_photo(data, max_pixels=options.pop("max_pixels", MAX_PIXELS), **options)
    assert http_status(caught.value) == status
    message = str(caught.value)
    assert message and "\n" not in message
    return caught.value


# --- reading with a cap --------------------------------------------------------------------

class EndlessStream:
    """A never-ending upload that counts what was read from it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        assert n > 0, "read_capped must never ask for everything"
        self.read_bytes += n
        return b"\0" * n


def test_read_capped_stops_early():
    stream = EndlessStream()
    with pytest.raises(UploadTooLarge) as caught:
        read_capped(stream, max_bytes=1_000_000, chunk_bytes=65_536)
    assert stream.read_bytes <= 1_000_000 + 65_536
    assert http_status(caught.value) == 413


def test_read_capped_reads_everything_under_the_cap():
    assert read_capped(io.BytesIO(b"x" * 1000), max_bytes=1000, chunk_bytes=7) == b"x" * 1000
    assert read_capped([b"ab", b"cd"], max_bytes=4) == b"abcd"
    with pytest.raises(UploadTooLarge):
        read_capped([b"ab", b"cde"], max_bytes=4)


def test_aread_capped_stops_early():
    pulled = 0

    async def chunks():
        nonlocal pulled
        while True:
            pulled += 1
            yield b"\0" * 65_536

    with pytest.raises(UploadTooLarge):
        asyncio.run(aread_capped(chunks(), max_bytes=1_000_000))
    assert pulled * 65_536 <= 1_000_000 + 65_536

    class AsyncFile:
        def __init__(self, data):
            self.stream = io.BytesIO(data)

        async def read(self, n):
            return self.stream.read(n)

    assert asyncio.run(aread_capped(AsyncFile(b"y" * 100), max_bytes=100, chunk_bytes=30)) == b"y" * 100
    with pytest.raises(UploadTooLarge):
        asyncio.run(aread_capped(AsyncFile(b"y" * 101), max_bytes=100))


# --- formats -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, options", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}),
                                          ("WEBP", {}), ("WEBP", {"lossless": True})])
def test_good_photos_become_clean_jpegs(fmt, options):
    clean = validate_photo(encode(photo(), fmt, **options), max_pixels=MAX_PIXELS)
    assert isinstance(clean, CleanPhoto)
    assert (clean.width, clean.height, clean.format, clean.source_format) == (400, 300, "JPEG", fmt)
    assert clean.content_type == "image/jpeg"
    with Image.open(io.BytesIO(clean.data)) as out:
        assert out.format == "JPEG" and out.size == (400, 300) and out.mode == "RGB"
        r, g, b = out.getpixel((20, 20))
        assert r > 200 and g < 60 and b < 60


def test_format_comes_from_content_only():
    assert sniff_format(encode(photo(), "PNG")) == "PNG"
    assert sniff_format(encode(photo(), "WEBP")) == "WEBP"
    assert sniff_format(encode(photo(), "JPEG")) == "JPEG"


@pytest.mark.parametrize("name, data", [
    ("GIF", encode(photo(), "GIF")),
    ("BMP", encode(photo(), "BMP")),
    ("TIFF", encode(photo(), "TIFF")),
    ("SVG", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ("SVG bare", b"  <svg onload=alert(1)></svg>"),
    ("HTML", b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"),
    ("PDF", b"%PDF-1.7\n%..."),
    ("ZIP", b"PK\x03\x04" + b"\0" * 40),
    ("HEIC", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"),
    ("text", b"hello"),
])
def test_other_formats_refused_with_415(name, data):
    error = check(data, UnsupportedFormat, 415)
    assert "JPEG, PNG or WebP" in str(error)


def test_empty_file_is_422():
    check(b"", CorruptImage, 422)


# --- sizes and bombs -----------------------------------------------------------------------

def bomb_png(width=50_000, height=50_000) -> bytes:
    """A ~100-byte PNG declaring width×height pixels (2.5 gigapixels by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + png_chunk(b"IEND", b""))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if anything opens or decodes an image with Pillow."""
    import PIL.ImageFile

    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image that should have been refused from its header")

    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", refuse)


def test_png_bomb_refused_from_the_header(no_decoding):
    data = bomb_png()
    assert len(data) < 200
    error = check(data, TooManyPixels, 422)
    assert "50000×50000" in str(error)


def test_jpeg_bomb_refused_from_the_header(no_decoding):
    data = bytearray(encode(photo((300, 300))))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65_000, 65_000)
    check(bytes(data), TooManyPixels, 422)


def test_webp_bomb_refused_from_the_header(no_decoding):
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0]) + (16_383).to_bytes(3, "little") * 2
    body = b"WEBP" + vp8x + b"VP8L" + struct.pack("<I", 5) + b"\x2f\xff\xff\xff\x0f" + b"\0"
    check(b"RIFF" + struct.pack("<I", len(body)) + body, TooManyPixels, 422)


def test_pixel_cap_is_configurable():
    data = encode(photo((400, 300)))
    check(data, TooManyPixels, 422, max_pixels=100_000)
    assert validate_photo(data, max_pixels=120_000).width == 400


def test_too_small_refused():
    check(encode(photo((300, 100))), TooSmall, 422)
    assert validate_photo(encode(photo((100, 100))), max_pixels=MAX_PIXELS, min_side=64).width == 100


# --- truncated and damaged -----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_refused(fmt, keep):
    data = encode(photo(), fmt)
    check(data[:int(len(data) * keep)], CorruptImage, 422)


def test_truncated_jpeg_without_end_marker():
    data = encode(photo())
    assert data.endswith(b"\xff\xd9")
    check(data[:-2], CorruptImage, 422)


def test_png_with_truncated_pixel_data_refused():
    """Well-formed chunks around a cut-short zlib stream: only a full decode notices."""
    rows = b"".join(b"\0" + bytes([i % 256]) * 900 for i in range(300))
    ihdr = struct.pack(">IIBBBBB", 300, 300, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(rows)[:-200]) + png_chunk(b"IEND", b""))
    check(data, CorruptImage, 422)


def test_png_with_bad_checksum_refused():
    data = bytearray(encode(photo(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF
    check(bytes(data), CorruptImage, 422)


def test_jpeg_header_only_refused():
    data = encode(photo())
    sos = data.index(b"\xff\xda")
    check(data[:sos] + b"\xff\xd9", CorruptImage, 422)


# --- polyglots and hidden content ----------------------------------------------------------

def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload.html", "<script>alert(document.cookie)</script>")
    return out.getvalue()


def test_jpeg_zip_polyglot_refused():
    polyglot = encode(photo()) + zip_bytes()
    assert zipfile.is_zipfile(io.BytesIO(polyglot))          # it really is both
    Image.open(io.BytesIO(polyglot)).load()                  # and Pillow alone would accept it
    check(polyglot, SuspiciousImage, 422)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_trailing_data_refused(fmt):
    check(encode(photo(), fmt) + b"<html><script>alert(1)</script></html>", SuspiciousImage, 422)


def test_trailing_padding_accepted():
    assert validate_photo(encode(photo()) + b"\0" * 64, max_pixels=MAX_PIXELS).width == 400


def test_script_in_jpeg_comment_refused():
    check(encode(photo(), comment=b"<?php system($_GET['c']); ?>"), SuspiciousImage, 422)


def test_html_in_png_text_chunk_refused():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<html><body onload=alert(1)>")
    check(encode(photo(), "PNG", pnginfo=info), SuspiciousImage, 422)


def test_zip_in_webp_exif_chunk_refused():
    check(encode(photo(), "WEBP", exif=b"Exif\0\0" + zip_bytes()), SuspiciousImage, 422)


def test_multi_picture_jpeg_accepted():
    """Ultra HDR / MPF photos append a gain map JPEG after the first: that is not a polyglot."""
    gain_map = photo((200, 150)).convert("L")
    data = encode(photo(), "MPO", save_all=True, append_images=[gain_map])
    clean = validate_photo(data, max_pixels=MAX_PIXELS)
    assert (clean.width, clean.height) == (400, 300)
    check(data + zip_bytes(), SuspiciousImage, 422)         # but nothing after the last one


def test_animations_refused():
    frames = [photo(), photo().rotate(180)]
    check(encode(frames[0], "PNG", save_all=True, append_images=frames[1:]), CorruptImage, 422)
    check(encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]), CorruptImage, 422)


def test_progressive_scan_bomb_refused(no_decoding):
    data = encode(photo(), progressive=True)
    last_scan = data.rindex(b"\xff\xda")
    scan = data[last_scan:-2]
    check(data[:-2] + scan * 150 + b"\xff\xd9", SuspiciousImage, 422)


# --- what comes out ------------------------------------------------------------------------

def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "SecretCam"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 22.0, 1.5), 3: "E", 4: (4.0, 53.0, 2.0)})
    return exif


def test_exif_orientation_applied():
    # Orientation 6: the stored picture must be turned 90° clockwise to be upright, so the
    # stored top-left (red) quadrant ends up at the top right.
    clean = validate_photo(encode(photo((400, 300)), exif=exif_with_gps(6)), max_pixels=MAX_PIXELS)
    assert (clean.width, clean.height) == (300, 400)
    with Image.open(io.BytesIO(clean.data)) as out:
        assert out.size == (300, 400)
        assert out.getpixel((280, 20))[0] > 200 and out.getpixel((280, 20))[2] < 60
        r, _, b = out.getpixel((20, 20))              # top left: grey, not red
        assert abs(r - b) < 30
        assert out.getexif().get(0x0112) is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_gps_and_all_exif_gone(fmt):
    source = encode(photo(), fmt, exif=exif_with_gps())
    assert b"SecretCam" in source
    clean = validate_photo(source, max_pixels=MAX_PIXELS)
    assert b"SecretCam" not in clean.data and b"Exif\0\0" not in clean.data
    with Image.open(io.BytesIO(clean.data)) as out:
        assert not out.getexif() and "exif" not in out.info
    # Only JFIF (APP0), the ICC profile (APP2), tables and the frame: no APP1 EXIF/XMP, no COM.
    assert set(jpeg_segments(clean.data)) <= {0xE0, 0xE2, 0xDB, 0xC4, 0xC0}


def test_comment_and_xmp_gone():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    clean = validate_photo(encode(photo(), comment=b"shot at home", xmp=xmp), max_pixels=MAX_PIXELS)
    assert b"shot at home" not in clean.data and b"xmpmeta" not in clean.data


def icc_profile_swapping_red_and_blue() -> bytes:
    """A minimal ICC v2 RGB profile whose red primary is sRGB's blue and vice versa."""
    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z):
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    text = b"swapped primaries\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.1431, 0.0606, 0.7141)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text\0\0\0\0none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, blobs = b"", b""
    for signature, blob in tags:
        blob += b"\0" * (-len(blob) % 4)
        table += signature + struct.pack(">II", offset + len(blobs), len(blob))
        blobs += blob
    body = struct.pack(">I", len(tags)) + table + blobs
    header = (struct.pack(">I", 128 + len(body)) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + body


def test_icc_profile_kept_as_srgb():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    clean = validate_photo(encode(photo(), icc_profile=srgb), max_pixels=MAX_PIXELS)
    with Image.open(io.BytesIO(clean.data)) as out:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)
        assert out.getpixel((20, 20))[0] > 200


def test_other_profiles_converted_to_srgb():
    red = Image.new("RGB", (300, 300), (255, 0, 0))
    clean = validate_photo(encode(red, "PNG", icc_profile=icc_profile_swapping_red_and_blue()),
                           max_pixels=MAX_PIXELS)
    with Image.open(io.BytesIO(clean.data)) as out:
        r, g, b = out.getpixel((150, 150))
        assert b > 200 and r < 60 and g < 60                  # "red" in that space is sRGB blue
        profile = ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_transparency_flattened_onto_white():
    clear = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    for fmt in ("PNG", "WEBP"):
        clean = validate_photo(encode(clear, fmt), max_pixels=MAX_PIXELS)
        with Image.open(io.BytesIO(clean.data)) as out:
            assert min(out.getpixel((150, 150))) > 250


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "I;16", "1"])
def test_other_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    source = photo().convert(mode) if mode != "I;16" else Image.new("I;16", (300, 300), 40_000)
    clean = validate_photo(encode(source, fmt), max_pixels=MAX_PIXELS)
    with Image.open(io.BytesIO(clean.data)) as out:
        assert out.mode == "RGB"
        if mode == "I;16":
            assert 150 <= out.getpixel((150, 150))[0] <= 160     # scaled 16 → 8 bit, not clipped


# --- the structure walks are linear (issue 12: a 2.7 MB upload pinned a core for 39 s) -------

# SOI, a 1×1 baseline frame header, EOI: the smallest "JPEG" the walk takes as an MPF frame.
TINY_JPEG = b"\xff\xd8" + b"\xff\xc0\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00" + b"\xff\xd9"


def walk_and_check(data) -> None:
    from impasto.service.shop import uploads

    fmt = uploads.sniff_format(data[:16])
    uploads._check_structure(data, fmt, uploads._walk(data, fmt))


@pytest.mark.parametrize("frames", [1_000, 4_000, 16_000])
def test_appended_frames_cost_linear_bytes_and_are_capped(frames):
    from support.counting import touched_by

    data = encode(photo((256, 256))) + TINY_JPEG * frames
    assert touched_by(walk_and_check, data) <= 3 * len(data)
    check(data, SuspiciousImage, 422)


@pytest.mark.parametrize("padding", [10_000, 100_000, 1_000_000])
def test_long_padding_and_metadata_cost_linear_bytes(padding):
    """Bytes touched stay a small multiple of the size however the size is made up."""
    from support.counting import touched_by

    base = encode(photo(), comment=b"c" * 60_000)
    for data in (base + b"\0" * padding, base + (b"\0" * 999 + TINY_JPEG) * 10 + b"\0" * padding,
                 encode(photo(), "PNG") + b"\r\n" * (padding // 2)):
        assert touched_by(walk_and_check, data) <= 3 * len(data) + 2 * 64 * 1024


def test_a_few_appended_frames_still_accepted():
    gain_map = photo((200, 150)).convert("L")
    data = encode(photo(), "MPO", save_all=True, append_images=[gain_map] * 3)
    assert validate_photo(data, max_pixels=MAX_PIXELS).width == 400
