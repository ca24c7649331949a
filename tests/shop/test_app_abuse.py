"""Bad and hostile uploads: each gets a clear 4xx and leaves nothing behind (no row, no file).

The checks themselves live in ``uploads.py`` and ``mail.py`` (tested there); these tests
prove the app wires them in, through the API and through the upload page.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest
from PIL import Image

from impasto.service.core.models import Portrait
from support.shop import MAX_UPLOAD_BYTES, csrf_token, nothing_stored, photo_bytes, stored_files, upload


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png() -> bytes:
    """A few hundred bytes declaring 30000×30000 pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096, 9)) + _png_chunk(b"IEND", b""))


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.js", "alert(1)")
    return buffer.getvalue()


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), "red").save(buffer, format="GIF")
    return buffer.getvalue()


BAD_PHOTOS = {
    "over the byte cap": (b"\xff\xd8\xff" + bytes(MAX_UPLOAD_BYTES + 10_000), 413),
    "a GIF": (gif_bytes(), 415),
    "a web page named .jpg": (b"<!doctype html><script>alert(1)</script>", 415),
    "empty": (b"", 422),
    "too many pixels": (photo_bytes(2000, 1200, quality=30), 422),
    "a decompression bomb": (bomb_png(), 422),
    "a truncated JPEG": (photo_bytes()[:4000], 422),
    "a JPEG with a ZIP appended (polyglot)": (photo_bytes() + zip_bytes(), 422),
    "a script in a JPEG comment": (photo_bytes(comment=b"<script>alert(1)</script>"), 422),
    "too small": (photo_bytes(100, 100), 422),
}
BAD_EMAILS = ["", "ada", "ada@localhost", "ada@example", "ada @example.com", "ada@example.com\r\nBcc: x@evil.com",
              "a" * 250 + "@example.com", "<ada@example.com>", "ada@@example.com"]


@pytest.mark.parametrize("case", BAD_PHOTOS)
def test_a_bad_photo_is_refused_through_the_api_and_nothing_is_stored(web, case):
    client, shop = web
    data, status = BAD_PHOTOS[case]
    response = upload(client, data)
    assert response.status_code == status, response.text
    assert response.json()["detail"]              # a sentence for the customer
    assert nothing_stored(shop)


@pytest.mark.parametrize("address", BAD_EMAILS)
def test_a_malformed_email_address_is_a_422(web, address):
    client, shop = web
    response = upload(client, email=address)
    assert response.status_code == 422 and "mail" in response.text.lower()
    assert nothing_stored(shop)


def test_without_consent_nothing_is_painted(web):
    client, shop = web
    response = upload(client, consent=False)
    assert response.status_code == 422 and "agree" in response.json()["detail"]
    assert nothing_stored(shop)


def test_a_body_over_the_cap_is_refused_from_its_content_length(web):
    client, shop = web
    response = upload(client, b"\xff\xd8\xff" + bytes(3 * MAX_UPLOAD_BYTES))
    assert response.status_code == 413
    assert nothing_stored(shop)


def test_a_body_without_a_content_length_is_cut_off_at_the_cap(web):
    """(The test client buffers the body; uvicorn streams it, and the cap applies per chunk.)"""
    client, shop = web

    def chunked():
        yield b"--b\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n\r\n\xff\xd8\xff"
        for _ in range(20):
            yield bytes(65536)

    response = client.post("/api/v1/portraits", content=chunked(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert nothing_stored(shop)


def test_the_upload_page_shows_the_refusal_with_what_was_typed(web):
    client, shop = web
    token = csrf_token(client)
    response = client.post("/portraits", data={"csrf_token": token, "email": "ada@example.com", "consent": "yes"},
                           files={"photo": ("a.gif", gif_bytes(), "image/gif")})
    assert response.status_code == 415
    assert "JPEG, PNG or WebP" in response.text and 'value="ada@example.com"' in response.text
    big = client.post("/portraits", data={"csrf_token": token, "email": "ada@example.com", "consent": "yes"},
                      files={"photo": ("a.jpg", b"\xff\xd8\xff" + bytes(MAX_UPLOAD_BYTES + 1), "image/jpeg")})
    assert big.status_code == 413 and "larger than" in big.text
    assert nothing_stored(shop)


def test_exif_orientation_is_applied_and_all_metadata_dropped(web):
    client, shop = web
    exif = Image.Exif()
    exif[0x0112] = 6                               # rotate 90° clockwise to display
    exif[0x010F] = "Spy Camera Co."
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (51.0, 30.0, 26.0)
    sent = photo_bytes(320, 256, exif=exif.tobytes())
    with Image.open(io.BytesIO(sent)) as original:
        assert original.getexif().get_ifd(0x8825)  # the upload does carry a location

    response = upload(client, sent)
    assert response.status_code == 201
    with shop.sessions() as session:
        key = session.query(Portrait).one().photo_key
    stored = shop.storage.get(key)
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG" and image.size == (256, 320)   # upright
        assert len(image.getexif()) == 0 and "exif" not in image.info
    assert b"Spy Camera" not in stored
    stored_now = stored_files(shop)            # the photo, once, and the previews' sketches painted from it
    assert [f for f in stored_now if not f.startswith("jobs/")] == [key]
    assert all(f.endswith("/sketch.jpg") for f in stored_now if f.startswith("jobs/"))
    assert key.startswith("portraits/") and key.endswith("/photo.jpg") and response.json()["id"] not in key
