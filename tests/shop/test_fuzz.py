"""Fuzzing (hypothesis) of everything in the shop that reads untrusted bytes or text.

The upload walkers and sniffers, ``Signer.unsign``, CSRF tokens and cookies, HTTP Basic
headers, the untrusted-integer parser, email addresses, and the order and upload routes.
Properties: nothing raises but the documented error (or answers a 5xx), the upload walk
touches a linear number of bytes (``CountingBytes``), and a refused upload stores nothing.

Two profiles: ``ci`` (the default, ~60 examples a test, seconds in all) and ``long`` for a
local run: ``IMPASTO_FUZZ_PROFILE=long python -m pytest tests/shop/test_fuzz.py``.
"""

from __future__ import annotations

import functools
import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import support.shop as app_common
from impasto.service.core.untrusted import MAX_ID, parse_int
from impasto.service.shop import security, uploads
from impasto.service.shop.mail import InvalidEmail, validate_email
from impasto.service.shop.routes.web import http_status
from support.counting import touched_by
from support.shop import ADMIN_PASSWORD, CSRF, count_rows, photo_bytes, stored_files

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("IMPASTO_FUZZ_PROFILE", "ci"))
SIGNER = security.Signer(b"fuzz-secret-0123456789abcdef")
SLACK_BYTES = 2 * 64 * 1024          # one padding window and a little more, whatever the input


# --- inputs: real photos, then damaged ----------------------------------------------------------

@functools.cache
def seeds() -> tuple[bytes, ...]:
    """Small valid uploads of every accepted kind (and an MPF with a gain map)."""
    picture = Image.open(io.BytesIO(photo_bytes(256, 256, seed=5)))
    out = []
    for fmt, options in [("JPEG", {"comment": b"hello"}), ("JPEG", {"progressive": True}), ("PNG", {}),
                         ("WEBP", {"quality": 60}), ("MPO", {"save_all": True, "append_images": [picture.convert("L")]})]:
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt, **options)
        out.append(buffer.getvalue())
    return tuple(out)


@st.composite
def damaged(draw) -> bytes:
    """A seed photo with a few random edits: bytes flipped, cut, inserted, a span repeated."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "truncate"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "repeat":
            span = bytes(data[at:at + draw(st.integers(1, 256))])
            data[at:at] = span * draw(st.integers(1, 50))
        else:
            del data[at:]
        if not data:
            data = bytearray(b"\xff")
    return bytes(data)


uploads_in = st.one_of(damaged(), st.binary(max_size=512),
                       st.tuples(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP"]),
                                 st.binary(max_size=512)).map(b"".join))


def walk_and_check(data) -> None:
    fmt = uploads.sniff_format(data[:16])
    uploads._check_structure(data, fmt, uploads._walk(data, fmt))


# --- the upload walkers and sniffers ------------------------------------------------------------

@PROFILE
@given(uploads_in)
def test_validate_photo_raises_only_upload_errors(data):
    try:
        clean = uploads.validate_photo(data, max_pixels=2_000_000)
    except uploads.UploadError as exc:
        assert 400 <= http_status(exc) < 500 and str(exc) and "\n" not in str(exc)
    else:
        assert clean.data[:3] == b"\xff\xd8\xff" and min(clean.width, clean.height) >= uploads.MIN_SIDE


@PROFILE
@given(uploads_in)
def test_the_structure_walk_touches_linear_bytes(data):
    assert touched_by(walk_and_check, data) <= 4 * len(data) + SLACK_BYTES


@PROFILE
@given(st.binary(max_size=64))
def test_sniff_format_names_a_format_or_refuses(data):
    try:
        assert uploads.sniff_format(data) in ("JPEG", "PNG", "WEBP")
    except (uploads.UnsupportedFormat, uploads.CorruptImage) as exc:
        assert http_status(exc) in (415, 422)


# --- tokens, cookies, headers, numbers, addresses -------------------------------------------------

ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=80)     # lone surrogates too
tokens = st.one_of(st.text(max_size=80), ANY_TEXT, st.none(),
                   st.lists(st.text(max_size=20), min_size=1, max_size=5).map(".".join),
                   st.builds(lambda v, e, m: f"{v}.{e}.{m}", st.text(max_size=10),
                             st.sampled_from(["²", "١٢", "99999999999", "1_0", " 1", "-1", "9" * 400]),
                             st.text(max_size=43)))


@PROFILE
@given(st.text(max_size=40), tokens)
def test_unsign_returns_none_for_anything_forged(purpose, token):
    assert SIGNER.unsign(purpose, token) is None or token.count(".") == 2


@PROFILE
@given(st.text(alphabet=st.characters(blacklist_characters="."), max_size=40), st.integers(0, 40))
def test_unsign_takes_back_what_sign_made_and_nothing_tampered(value, flip):
    token = SIGNER.sign("p", value, seconds=60)
    assert SIGNER.unsign("p", token) == value and SIGNER.unsign("q", token) is None
    changed = token[:flip] + ("A" if token[flip % len(token)] != "A" else "B") + token[flip + 1:]
    assert changed == token or SIGNER.unsign("p", changed) != value or changed.count(".") != 2


@PROFILE
@given(st.one_of(st.none(), st.text(max_size=40)), tokens, st.text(max_size=30))
def test_csrf_valid_is_a_bool_and_never_raises(cookie, submitted, session):
    assert security.csrf_valid(SIGNER, cookie, submitted, session=session) in (True, False)


NONCES = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40)


@PROFILE
@given(NONCES, NONCES, st.text(max_size=20))
def test_a_csrf_token_is_valid_only_for_its_nonce_and_session(nonce, other, session):
    token = security.csrf_token_for(SIGNER, nonce, session=session)
    assert security.csrf_valid(SIGNER, nonce, token, session=session)
    assert not security.csrf_valid(SIGNER, nonce, token, session=session + "x")
    assert security.csrf_valid(SIGNER, other, token, session=session) is (other == nonce)


@PROFILE
@given(st.one_of(st.none(), st.text(max_size=60), st.binary(max_size=60).map(lambda b: "Basic " + b.hex())))
def test_basic_credentials_parse_or_refuse(header):
    parsed = security.basic_credentials(header)
    assert parsed is None or (isinstance(parsed, tuple) and len(parsed) == 2)


@PROFILE
@given(st.one_of(st.text(max_size=30), st.integers(), st.none(), st.booleans(), st.floats()))
def test_parse_int_takes_ascii_digits_in_range_only(text):
    value = parse_int(text)
    if value is not None:
        assert 0 <= value <= MAX_ID and not isinstance(value, bool)
        assert isinstance(text, int) or (text.isascii() and text.isdigit())


@PROFILE
@given(st.one_of(st.text(max_size=80), st.emails(), st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=30),
                                                            st.text(max_size=30))))
def test_validate_email_normalises_or_refuses(address):
    try:
        normalised = validate_email(address)
    except InvalidEmail as exc:
        assert str(exc)
    else:
        assert normalised.count("@") >= 1 and normalised.isascii() and not any(c.isspace() for c in normalised)


def test_validate_email_refuses_huge_input_before_any_pattern():
    with pytest.raises(InvalidEmail, match="longer"):
        validate_email("a" * 1_000_000 + "@example.com")


# --- over HTTP: the upload and order routes, cookies ---------------------------------------------

@pytest.fixture(scope="module")
def shop_client(tmp_path_factory):
    """One app for all the examples of a test (hypothesis reruns the body, not the fixture)."""
    from fastapi.testclient import TestClient

    from impasto.service.shop.app import create_app, shop_of
    from impasto.service.shop.security import RateLimiter

    folder = tmp_path_factory.mktemp("fuzz-shop")
    settings = app_common.make_settings(folder, admin_password=ADMIN_PASSWORD, max_upload_bytes=300_000,
                                             max_upload_pixels=2_000_000)
    app = create_app(settings, catalog=app_common.make_catalog(folder), dispatcher=app_common.NullDispatcher())
    with TestClient(app, raise_server_exceptions=False) as client:
        shop = shop_of(app)
        shop.upload_limit_ip = shop.upload_limit_email = RateLimiter(0)     # 0: no limit, for the fuzzer
        yield client, shop


@PROFILE
@given(uploads_in)
def test_a_refused_upload_stores_nothing(shop_client, data):
    client, shop = shop_client
    before = (stored_files(shop), count_rows(shop))
    response = client.post("/api/v1/portraits", data={"email": "fuzz@example.com", "consent": "true"},
                           files={"photo": ("x.jpg", data, "image/jpeg")})
    assert response.status_code in (201, 413, 415, 422), response.text
    if response.status_code != 201:
        assert (stored_files(shop), count_rows(shop)) == before


@functools.cache
def _portrait(client) -> tuple[str, str]:
    response = client.post("/api/v1/portraits", data={"email": "ada@example.com", "consent": "true"},
                           files={"photo": ("me.jpg", photo_bytes(), "image/jpeg")})
    portrait = response.json()
    return portrait["url"], str(portrait["previews"][0]["id"])


form_text = st.one_of(st.text(max_size=40), st.sampled_from(["²", "1" * 30, str(2**70), "-1", "1_0", "\x00", "%00"]))


@PROFILE
@given(preview=form_text, size=st.one_of(form_text, st.just("1x1in")), name=form_text, address=form_text,
       method=st.one_of(form_text, st.just("invoice")))
def test_the_order_form_answers_4xx_to_anything(shop_client, preview, size, name, address, method):
    client, _ = shop_client
    url, preview_id = _portrait(client)
    page = client.get(f"{url}/order?preview={preview_id}")
    token = CSRF.search(page.text).group(1) if page.status_code == 200 else ""
    response = client.post(f"{url}/orders", follow_redirects=False,
                           data={"preview_id": preview, "print_size": size, "shipping_name": name,
                                 "shipping_line1": address, "shipping_city": address, "shipping_country": address,
                                 "shipping_postal_code": address, "payment_method": method, "csrf_token": token})
    assert response.status_code in (303, 403, 404, 409, 422), response.status_code


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                                     st.text(max_size=20)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)


@PROFILE
@given(st.dictionaries(st.sampled_from(["preview_id", "print_size", "shipping_address", "payment_method"]),
                       json_values | st.dictionaries(st.sampled_from(["name", "line1", "city", "postal_code",
                                                                      "country", "phone"]), json_values, max_size=6)))
def test_the_api_order_answers_4xx_to_any_json(shop_client, body):
    client, _ = shop_client
    url, _ = _portrait(client)
    response = client.post(f"/api/v1{url}/orders", json=body)
    assert response.status_code in (201, 404, 409, 422), response.status_code


@PROFILE
@given(st.binary(max_size=120), st.sampled_from(["/", "/admin", "/admin/login", "/api/v1/styles"]))
def test_any_cookie_header_is_answered_without_a_5xx(shop_client, cookie, path):
    client, _ = shop_client
    response = client.get(path, headers={"cookie": cookie, "accept": "text/html"}, follow_redirects=False)
    assert response.status_code < 500 and "content-security-policy" in response.headers
