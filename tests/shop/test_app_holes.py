"""Issue 12's attack pass, one regression test per hole that was found open (the upload walk's
own tests are in ``test_uploads``): crafted numbers, print files reached as pictures, admin
sessions after logout, CSRF pairs planted by a stranger, lockouts and Basic brute force."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import support.shop as app_common
from impasto.service.core import orders
from impasto.service.core.models import JobKind, OrderStatus
from impasto.service.shop import security
from support.shop import ADDRESS, ADMIN_PASSWORD, CSRF, FORM_ADDRESS, csrf_token, finish_jobs, new_portrait

ORDER = {"print_size": "1x1in", "shipping_address": ADDRESS}
FORM_ORDER = {"print_size": "1x1in", **FORM_ADDRESS}
SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options")
HUGE = str(2**70)


def lenient(client) -> TestClient:
    """The same app, answering a server error with its 500 rather than raising it in the test."""
    return TestClient(client.app, raise_server_exceptions=False, base_url=str(client.base_url),
                      cookies=dict(client.cookies))


def assert_headers(response) -> None:
    missing = [name for name in SECURITY_HEADERS if name not in response.headers]
    assert not missing, (response.status_code, missing)


def ordered(client, shop, *, printed: bool = True) -> tuple[dict, dict]:
    portrait = new_portrait(client, shop)
    response = client.post(f"/api/v1{portrait['url']}/orders", json={**ORDER, "preview_id": portrait["previews"][0]["id"]})
    assert response.status_code == 201, response.text
    if printed:
        finish_jobs(shop, JobKind.PRINT)
    return portrait, response.json()


# --- 6. crafted numbers are 4xx, never 500; every error carries the security headers ------------

@pytest.mark.parametrize(("path", "status"), [
    ("{url}/jobs/" + HUGE + "/image", 404),
    ("{url}/jobs/%C2%B2/image", 404),
    ("{url}/jobs/-1/image", 404),
    ("{url}/order?preview=" + HUGE, 404),
    ("{url}/order?preview=%C2%B2", 404),
    ("{url}/order?preview=%EF%BC%91", 404),          # a fullwidth 1, which int() would take
    ("/files/jobs/1/result.png?expires=%C2%B2&signature=x", 403),
    ("/files/jobs/1/result.png?expires=" + "9" * 400 + "&signature=x", 403),
])
def test_crafted_numbers_in_urls_are_4xx_with_headers(web, path, status):
    client, shop = web
    portrait = new_portrait(client, shop)
    response = lenient(client).get(path.format(url=portrait["url"]), follow_redirects=False,
                                   headers={"accept": "text/html"})
    assert response.status_code == status
    assert_headers(response)


@pytest.mark.parametrize("preview_id", [2**70, 2**31, -1, 0, "7", True])
def test_the_api_orders_preview_id_is_range_checked(web, preview_id):
    client, shop = web
    portrait = new_portrait(client, shop)
    response = lenient(client).post(f"/api/v1{portrait['url']}/orders", json={**ORDER, "preview_id": preview_id})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("preview_id", ["²", HUGE, "1_0", " 1"])
def test_the_order_forms_preview_id_is_checked(web, preview_id):
    client, shop = web
    portrait = new_portrait(client, shop)
    token = csrf_token(client, portrait["previews"][0]["order_url"])
    response = lenient(client).post(f"{portrait['url']}/orders", data={**FORM_ORDER, "preview_id": preview_id,
                                                                        "csrf_token": token})
    assert response.status_code == 404
    assert_headers(response)


def test_superscript_digits_in_tokens_and_cookies_are_refused(web):
    client, shop = web
    other = lenient(client)
    csrf = other.post("/portraits", data={"email": "a@example.com", "consent": "yes", "csrf_token": "n.².mac"})
    assert csrf.status_code == 403
    cookie = b"impasto_admin=admin.\xb2." + b"A" * 43          # 0xB2 is "²" once decoded as latin-1
    admin = other.get("/admin", headers={"cookie": cookie, "accept": "application/json"})
    assert admin.status_code == 401
    assert security.Signer(b"k" * 32).unsign("csrf", "nonce.²³.mac") is None


def test_admin_routes_refuse_huge_ids_with_a_404(web):
    client, _ = web
    token = CSRF.search(client.get("/admin", auth=("admin", ADMIN_PASSWORD)).text).group(1)
    for path in [f"/admin/jobs/{HUGE}/cancel", f"/admin/jobs/{HUGE}/rerun", f"/admin/orders/{HUGE}/status"]:
        response = lenient(client).post(path, data={"csrf_token": token, "status": "cancelled"},
                                        auth=("admin", ADMIN_PASSWORD))
        assert response.status_code == 404, path


def test_a_server_error_carries_the_security_headers(web):
    client, _ = web

    def broken():
        raise RuntimeError("a bug")

    client.app.add_api_route("/broken", broken)
    for accept in ("text/html", "application/json"):
        response = lenient(client).get("/broken", headers={"accept": accept})
        assert response.status_code == 500 and "a bug" not in response.text
        assert_headers(response)


# --- 3. a print file is reached through its order only ------------------------------------------

def test_a_cancelled_orders_print_is_not_reachable_as_a_picture(web):
    client, shop = web
    portrait, order = ordered(client, shop)
    with shop.sessions() as session:
        row = orders.set_order_status(session=session, order_id=_order_id(shop),
                                    status=OrderStatus.CANCELLED)
        print_job = row.print_job_id
        session.commit()
    assert client.get(f"{portrait['url']}/orders/{order['number']}/download", follow_redirects=False).status_code == 410
    assert client.get(f"{portrait['url']}/jobs/{print_job}/image", follow_redirects=False).status_code == 404
    preview = portrait["previews"][0]["id"]
    assert client.get(f"{portrait['url']}/jobs/{preview}/image", follow_redirects=False).status_code == 302


def _order_id(shop) -> int:
    from sqlalchemy import select

    from impasto.service.core.models import Order

    with shop.sessions() as session:
        return session.scalars(select(Order.id)).one()


# --- 2. HTTP Basic shares the sign-in lockout; it cannot lock the owner out alone ------------------

def browser(client, ip: str = "testclient") -> TestClient:
    """Another browser on the same app (its own cookies), from ``ip``."""
    return TestClient(client.app, base_url=str(client.base_url), client=(ip, 50000))


def sign_in(client, password: str = ADMIN_PASSWORD, user: str = "admin"):
    token = csrf_token(client, "/admin/login")
    return client.post("/admin/login", data={"csrf_token": token, "user": user, "password": password},
                       follow_redirects=False)


def test_basic_auth_brute_force_is_locked_out(web):
    client, _ = web
    json = {"accept": "application/json"}
    answers = [client.get("/admin", auth=("admin", f"guess-{i}"), headers=json).status_code for i in range(30)]
    assert answers == [401] * 10 + [429] * 20
    locked = client.get("/admin", auth=("admin", ADMIN_PASSWORD), headers=json)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert browser(client, "198.51.100.7").get("/admin", auth=("admin", ADMIN_PASSWORD)).status_code == 200


def test_a_stranger_cannot_lock_the_owner_out_of_a_known_browser(web):
    client, _ = web
    owner = browser(client)
    assert sign_in(owner).status_code == 303                # the owner's browser is now known
    owner.cookies.delete(security.ADMIN_COOKIE)             # its session ended; its device cookie stays
    stranger = browser(client)                              # same IP (a shared network)
    assert [sign_in(stranger, f"guess-{i}").status_code for i in range(12)] == [401] * 10 + [429] * 2
    assert sign_in(stranger).status_code == 429             # the right password does not help him
    assert sign_in(browser(client)).status_code == 429      # nor a new browser on that network
    assert sign_in(owner).status_code == 303                # but the owner's browser gets in
    assert owner.get("/admin").status_code == 200


def test_only_failed_sign_ins_count(web):
    client, _ = web
    owner = browser(client)
    assert [sign_in(owner).status_code for _ in range(15)] == [303] * 15


# --- 4. logout ends the session on the server --------------------------------------------------

def test_logout_revokes_the_admin_cookie(web):
    client, _ = web
    assert sign_in(client).status_code == 303
    cookie = client.cookies[security.ADMIN_COOKIE]
    assert client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin")},
                       follow_redirects=False).status_code == 303
    copied = browser(client)
    copied.cookies.set(security.ADMIN_COOKIE, cookie)
    assert copied.get("/admin", headers={"accept": "application/json"}).status_code == 401
    assert sign_in(client).status_code == 303 and client.get("/admin").status_code == 200


# --- 5. CSRF tokens are bound to the admin session ---------------------------------------------

def test_a_strangers_csrf_pair_planted_into_the_admins_browser_fails(web):
    client, shop = web
    portrait = new_portrait(client, shop, finished=False)
    job = portrait["previews"][0]["id"]
    stranger = browser(client, "203.0.113.9")
    token = csrf_token(stranger)
    nonce = stranger.cookies[security.CSRF_COOKIE]
    admin = browser(client)
    assert sign_in(admin).status_code == 303
    admin.cookies.set(security.CSRF_COOKIE, nonce)           # planted (a sibling domain, plain http)
    assert admin.post(f"/admin/jobs/{job}/cancel", data={"csrf_token": token}).status_code == 403
    script = browser(client)                                 # an HTTP Basic client, the same plant
    script.cookies.set(security.CSRF_COOKIE, nonce)
    assert script.post(f"/admin/jobs/{job}/cancel", data={"csrf_token": token},
                       auth=("admin", ADMIN_PASSWORD)).status_code == 403
    own = csrf_token(admin, "/admin")                        # the admin's own page works
    assert admin.post(f"/admin/jobs/{job}/cancel", data={"csrf_token": own}).status_code == 200


def test_cookies_carry_the_host_prefix_on_https(tmp_path):
    from impasto.service.shop.app import create_app

    settings = app_common.make_settings(tmp_path, public_url="https://shop.example",
                                             admin_password=ADMIN_PASSWORD)
    app = create_app(settings, catalog=app_common.make_catalog(tmp_path), dispatcher=app_common.NullDispatcher())
    with TestClient(app, base_url="https://shop.example") as client:
        page = client.get("/admin/login")
        assert page.headers["set-cookie"].startswith("__Host-impasto_csrf=")
        assert "Secure" in page.headers["set-cookie"] and "Path=/" in page.headers["set-cookie"]
        signed_in = sign_in(client)
        assert signed_in.status_code == 303
        cookies = signed_in.headers.get_list("set-cookie")
        assert {c.split("=")[0] for c in cookies} == {"__Host-impasto_admin", "__Host-impasto_device"}
        assert all("Secure" in c and "Path=/" in c and "Domain" not in c for c in cookies)
        assert client.get("/admin").status_code == 200


# --- file modes: the database and the stored photos are the shop's alone --------------------------

def test_the_database_and_stored_photos_are_0600(tmp_path, monkeypatch):
    import os
    import stat

    from impasto.service.core.db import make_engine, migrate
    from impasto.service.core.storage import LocalStorage

    previous = os.umask(0o022)             # the usual umask: new files 0644
    try:
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        migrate(url)
        storage = LocalStorage(tmp_path / "files", secret=b"k" * 32, base_url="http://x")
        storage.put("portraits/abc/photo.jpg", b"\xff\xd8 a photo", content_type="image/jpeg")
        old = tmp_path / "old.db"
        old.write_bytes(b"")
        old.chmod(0o644)
        make_engine(f"sqlite:///{old}").dispose()
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in
             [tmp_path / "shop.db", tmp_path / "files/portraits/abc/photo.jpg", old]}
    assert modes == {"shop.db": 0o600, "photo.jpg": 0o600, "old.db": 0o600}
    assert stat.S_IMODE((tmp_path / "files/portraits/abc").stat().st_mode) == 0o700


# --- /docs from local files, under the CSP ------------------------------------------------------

def test_the_api_docs_page_uses_local_assets_under_the_csp(web):
    import re

    client, _ = web
    page = client.get("/docs")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)          # no CDN
    assert "<script>" not in page.text                                        # no inline script
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
