"""The shop's two middlewares, both pure ASGI (SSE streams pass through untouched).

``RequestMiddleware``, outermost: the request id (``X-Request-ID``, ``logs.REQUEST_ID``), the
request's metrics and its log line — it sees every answer, the 500 and the 408 included.

``ShopMiddleware``: what every response carries, and the caps every request body meets. It
caps the request body while it streams in (an upload route gets the photo cap plus form
overhead, everything else 256 KiB: 413 as soon as the cap is passed, or at once from
``Content-Length``), gives a browser its CSRF nonce cookie, and adds the security headers
(CSP with no inline script, ``Referrer-Policy: no-referrer`` so portrait tokens never leak
to other sites, no framing, no sniffing, ``no-store`` for pages). An exception no handler
answered becomes the shop's own 500 page here, inside the headers.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import Response
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from impasto.service.shop import security

if TYPE_CHECKING:
    from impasto.service.shop.app import Shop

log = logging.getLogger(__name__)

UPLOAD_PATHS = frozenset({"/portraits", "/api/v1/portraits", "/admin/styles"})
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})   # no CSRF cookie for a probe or a scrape
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")


def shop_middleware(shop: Shop) -> type:
    """``ShopMiddleware`` bound to ``shop`` (``app.add_middleware`` takes a class)."""
    return type("BoundShopMiddleware", (ShopMiddleware,), {"shop": shop})


class ShopMiddleware:
    shop: Shop

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        upload = scope["method"] == "POST" and path in UPLOAD_PATHS
        from impasto.service.shop.app import FORM_BODY_BYTES

        limited = RequestBodyLimitMiddleware(self.app, self.shop.upload_body_bytes if upload else FORM_BODY_BYTES)
        nonce, new_cookie = self._nonce(scope)
        scope.setdefault("state", {})["csrf_nonce"] = nonce
        headers = self._headers(path, nonce if new_cookie else None)

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in headers if k not in present or k == b"set-cookie"]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await limited(scope, receive, send_with_headers)
        except Exception:
            # Starlette's own 500 page is made outside every middleware, so it would lack
            # the security headers; answer here instead. Once a response has started
            # there is nothing left to answer: the server ends the connection.
            if started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], path)
            await _server_error(scope)(scope, receive, send_with_headers)

    def _nonce(self, scope: Scope) -> tuple[str, bool]:
        cookie_name = security.cookie_name(security.CSRF_COOKIE, secure=self.shop.secure_cookies)
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                nonce = cookie_parser(value.decode("latin-1")).get(cookie_name, "")
                if _NONCE.fullmatch(nonce):
                    return nonce, False
        return security.new_csrf_nonce(), True

    def _headers(self, path: str, new_nonce: str | None) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                   (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]
        headers.append((b"content-security-policy", self._csp().encode()))
        if not path.startswith(("/static/", "/docs/assets/")):
            headers.append((b"cache-control", b"no-store"))
        if new_nonce and not path.startswith(("/api/", "/static/", "/files/")) and path not in PROBE_PATHS:
            secure = "; Secure" if self.shop.secure_cookies else ""
            name = security.cookie_name(security.CSRF_COOKIE, secure=self.shop.secure_cookies)
            cookie = (f"{name}={new_nonce}; Path=/; Max-Age={security.CSRF_SECONDS}; "
                      f"HttpOnly; SameSite=Lax{secure}")
            headers.append((b"set-cookie", cookie.encode()))
        return headers

    def _csp(self) -> str:
        images = "'self' data: blob:"
        origin = storage_origin(self.shop)
        if origin:
            images += " " + origin
        # form-action: the order form's redirect to a hosted checkout is a form navigation too
        forms = " ".join(["'self'", *(o for p in self.shop.payments.values() for o in p.form_origins)])
        return ("default-src 'self'; script-src 'self'; style-src 'self'; "
                f"img-src {images}; connect-src 'self'; form-action {forms}; frame-ancestors 'none'; "
                "base-uri 'none'; object-src 'none'")


def _server_error(scope: Scope) -> Response:
    """The 500 answer: the error page (or JSON), a plain text if even that fails."""
    from fastapi.responses import PlainTextResponse

    from impasto.service.shop.routes.web import error_response

    try:
        return error_response(Request(scope), 500,
                              "Something went wrong on our side. Please try again later.")
    except Exception:
        log.exception("the error page failed too")
        return PlainTextResponse("Internal Server Error", status_code=500)


def storage_origin(shop: Shop) -> str:
    """Where signed image URLs point when they leave the app (S3), for the CSP's img-src."""
    from impasto.service.core.storage import LocalStorage

    if isinstance(shop.storage, LocalStorage):
        return ""
    endpoint = shop.settings.s3_endpoint_url
    if endpoint:
        parts = urllib.parse.urlsplit(endpoint)
        return f"{parts.scheme}://{parts.netloc}"
    return "https://*.amazonaws.com"


class RequestMiddleware:
    """The outermost layer: a request id for every request, its metrics and its log line.

    The id is the incoming ``X-Request-ID`` when it is sane (``logs.request_id_from``: a
    proxy's id then follows the request through), else a new one; it is set in
    ``logs.REQUEST_ID`` for every line logged while the request runs and returned as
    ``X-Request-ID``. When the answer starts, its route template and status are counted
    (``shop/metrics.py``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from impasto import logs
        from impasto.service.shop import metrics

        incoming = next((value.decode("latin-1") for name, value in scope.get("headers", [])
                         if name == b"x-request-id"), None)
        request_id = logs.request_id_from(incoming)
        token = logs.REQUEST_ID.set(request_id)
        started = time.monotonic()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode("latin-1"))]
                seconds = time.monotonic() - started
                route, status = metrics.route_template(scope), message["status"]
                metrics.record_request(method=scope["method"], route=route, status=status, seconds=seconds)
                log.info("%s %s → %s in %.3f s", scope["method"], route, status, seconds)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.REQUEST_ID.reset(token)
