"""CSRF, admin access, one customer's things invisible to another, rate limits, link expiry,
signed file URLs and path traversal, security headers."""

from __future__ import annotations

import urllib.parse
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import update

from impasto.service.core.models import Job, JobKind, JobStatus, Order, utcnow
from impasto.service.shop import security
from impasto.service.shop.security import RateLimiter
from support.shop import (
    ADDRESS,
    FORM_ADDRESS,
    ADMIN_PASSWORD,
    csrf_token,
    finish_jobs,
    new_portrait,
    nothing_stored,
    photo_bytes,
    upload,
)

ORDER = {"print_size": "1x1in", "shipping_address": ADDRESS}


def place_order(client, portrait: dict) -> dict:
    response = client.post(f"/api/v1{portrait['url']}/orders",
                           json={**ORDER, "preview_id": portrait["previews"][0]["id"]})
    assert response.status_code == 201, response.text
    return response.json()


# --- CSRF --------------------------------------------------------------------------------

def page_upload(client, token: str | None):
    data = {"email": "ada@example.com", "consent": "yes"}
    if token is not None:
        data["csrf_token"] = token
    return client.post("/portraits", data=data, files={"photo": ("me.jpg", photo_bytes(), "image/jpeg")},
                       follow_redirects=False)


def test_the_upload_form_needs_its_csrf_token(web):
    client, shop = web
    token = csrf_token(client)
    assert page_upload(client, None).status_code == 403
    assert page_upload(client, "forged.1999999999.abc").status_code == 403
    assert page_upload(client, token[:-2] + "xx").status_code == 403
    client.cookies.set(security.CSRF_COOKIE, "A" * 32)         # a token for another visitor's cookie
    assert page_upload(client, token).status_code == 403
    assert nothing_stored(shop)
    client.cookies.clear()
    token = csrf_token(client)
    response = page_upload(client, token)
    assert response.status_code == 303 and response.headers["location"].startswith("/portraits/")


def test_the_order_form_needs_its_csrf_token(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    form = {"print_size": "1x1in", **FORM_ADDRESS, "preview_id": str(portrait["previews"][0]["id"])}
    assert client.post(f"{portrait['url']}/orders", data=form).status_code == 403
    token = csrf_token(client, portrait["previews"][0]["order_url"])
    response = client.post(f"{portrait['url']}/orders", data={**form, "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and "/orders/IMP-" in response.headers["location"]


# --- admin -------------------------------------------------------------------------------

def test_the_admin_needs_a_login(web):
    client, _ = web
    assert client.get("/admin", headers={"accept": "application/json"}).status_code == 401
    assert client.get("/admin", headers={"accept": "application/json"}).headers["www-authenticate"].startswith("Basic")
    browser = client.get("/admin", headers={"accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303 and browser.headers["location"].startswith("/admin/login")
    assert client.get("/admin", auth=("admin", "wrong"), follow_redirects=False).status_code == 303
    assert client.get("/admin", auth=("admin", ADMIN_PASSWORD)).status_code == 200
    assert client.get("/admin/styles", auth=("root", ADMIN_PASSWORD), follow_redirects=False).status_code == 303


def test_admin_actions_refuse_anonymous_posts(web):
    client, shop = web
    portrait = new_portrait(client, shop, finished=False)
    job_id = portrait["previews"][0]["id"]
    token = csrf_token(client)
    response = client.post(f"/admin/jobs/{job_id}/cancel", data={"csrf_token": token},
                           headers={"accept": "application/json"})
    assert response.status_code == 401
    with shop.sessions() as session:
        assert session.get(Job, job_id).status is JobStatus.QUEUED


def test_admin_login_form_sets_a_session_and_actions_need_csrf(web):
    client, shop = web
    token = csrf_token(client, "/admin/login")
    wrong = client.post("/admin/login", data={"csrf_token": token, "user": "admin", "password": "guess"})
    assert wrong.status_code == 401 and "Wrong" in wrong.text
    right = client.post("/admin/login", data={"csrf_token": token, "user": "admin", "password": ADMIN_PASSWORD,
                                              "next": "https://evil.example/"}, follow_redirects=False)
    assert right.status_code == 303 and right.headers["location"] == "/admin"     # no open redirect
    assert client.get("/admin").status_code == 200
    portrait = new_portrait(client, shop, finished=False)
    job_id = portrait["previews"][0]["id"]
    assert client.post(f"/admin/jobs/{job_id}/cancel", data={}).status_code == 403
    # the login page's token was made for no session: the admin's forms carry their own
    assert client.post(f"/admin/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 403
    token = csrf_token(client, "/admin")
    assert client.post(f"/admin/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 200
    with shop.sessions() as session:
        assert session.get(Job, job_id).status is JobStatus.CANCELLED


def test_the_admin_is_closed_without_a_password(web):
    client, shop = web
    shop.settings = shop.settings.model_copy(update={"admin_password": SecretStr("")})
    assert client.get("/admin", auth=("admin", "")).status_code == 403
    assert client.get("/admin/login").status_code == 403


def test_sign_in_attempts_are_rate_limited(web):
    client, _ = web
    token = csrf_token(client, "/admin/login")
    statuses = [client.post("/admin/login", data={"csrf_token": token, "user": "admin", "password": f"x{i}"})
                .status_code for i in range(11)]
    assert statuses == [401] * 10 + [429]


# --- one customer never sees another's ---------------------------------------------------

def test_another_portraits_token_finds_nothing(web):
    client, shop = web
    ada = new_portrait(client, shop, email="ada@example.com")
    bob = new_portrait(client, shop, email="bob@example.com")
    order = place_order(client, ada)
    ada_job, number = ada["previews"][0]["id"], order["number"]
    for path in [f"{bob['url']}/jobs/{ada_job}/image", f"{bob['url']}/order?preview={ada_job}",
                 f"{bob['url']}/orders/{number}", f"{bob['url']}/orders/{number}/download",
                 f"/api/v1{bob['url']}/orders/{number}", "/portraits/" + "x" * 32,
                 "/api/v1/portraits/" + "x" * 32, "/api/v1/portraits/" + "x" * 32 + "/events"]:
        assert client.get(path, follow_redirects=False).status_code == 404, path
    stolen = client.post(f"/api/v1{bob['url']}/orders", json={**ORDER, "preview_id": ada_job})
    assert stolen.status_code == 404
    assert client.get(f"{ada['url']}/jobs/{ada_job}/image", follow_redirects=False).status_code == 302


def test_ordering_an_unfinished_preview_is_a_409(web):
    client, shop = web
    portrait = new_portrait(client, shop, finished=False)
    response = client.post(f"/api/v1{portrait['url']}/orders", json={**ORDER, "preview_id": portrait["previews"][0]["id"]})
    assert response.status_code == 409
    bad_size = client.post(f"/api/v1{portrait['url']}/orders",
                           json={**ORDER, "print_size": "40x60in", "preview_id": portrait["previews"][0]["id"]})
    assert bad_size.status_code == 422


# --- rate limits -------------------------------------------------------------------------

def test_uploads_are_rate_limited_per_ip_and_per_email(web):
    client, shop = web
    shop.upload_limit_ip = RateLimiter(2)
    assert [upload(client, email=f"u{i}@example.com").status_code for i in range(3)] == [201, 201, 429]
    refused = upload(client, email="u9@example.com")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    shop.upload_limit_ip, shop.upload_limit_email = RateLimiter(100), RateLimiter(2)
    statuses = [upload(client, email="same@example.com").status_code for _ in range(3)]
    assert statuses == [201, 201, 429] and "email" in upload(client, email="Same@EXAMPLE.com").json()["detail"]


def test_the_rate_limiter_is_a_sliding_window():
    now = [0.0]
    limiter = RateLimiter(2, 3600, clock=lambda: now[0])
    assert [limiter.hit("ip"), limiter.hit("ip"), limiter.hit("ip")] == [True, True, False]
    assert limiter.hit("other") and 3599 <= limiter.retry_after_seconds("ip") <= 3601
    now[0] = 3600.5
    assert limiter.hit("ip")


# --- downloads and signed files ----------------------------------------------------------

def test_download_links_are_409_before_ready_and_410_once_expired(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    number = place_order(client, portrait)["number"]
    link = f"{portrait['url']}/orders/{number}/download"
    assert client.get(link, follow_redirects=False).status_code == 409
    finish_jobs(shop, JobKind.PRINT)
    first = client.get(link, follow_redirects=False)
    assert first.status_code == 302 and first.headers["cache-control"] == "no-store"
    with shop.sessions() as session:
        old = utcnow() - timedelta(seconds=shop.settings.download_link_seconds + 60)
        session.execute(update(Order).where(Order.number == number).values(ready_at=old))
        session.commit()
    expired = client.get(link, headers={"accept": "text/html"})
    assert expired.status_code == 410 and "expired" in expired.text and number in expired.text


def test_signed_file_urls_are_checked(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    location = client.get(portrait["previews"][0]["image_url"], follow_redirects=False).headers["location"]
    assert client.get(location).status_code == 200
    parts = urllib.parse.urlsplit(location)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert client.get(parts.path, params={**query, "signature": "A" * 43}).status_code == 403
    assert client.get(parts.path).status_code == 403
    assert client.get(parts.path, params={**query, "expires": "1"}).status_code == 410
    other = portrait["previews"][1]["id"]
    assert client.get(f"/files/jobs/{other}/result.png", params=query).status_code == 403   # not this key's
    for path in ["/files/../secret_key", "/files/%2e%2e/secret_key", "/files/jobs/..%2f..%2fsecret_key",
                 "/files//etc/passwd", "/files/%2fetc%2fpasswd"]:
        assert client.get(path, params=query).status_code in (403, 404), path


def test_pages_carry_security_headers(web):
    client, _ = web
    response = client.get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("path", ["/admin", "/api/v1/portraits/x", "/nowhere"])
def test_unknown_things_are_plain_404s_or_auth(web, path):
    client, _ = web
    assert client.get(path, headers={"accept": "application/json"}).status_code in (401, 404)

