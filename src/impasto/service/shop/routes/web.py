"""What every route shares: the middleware, templates, error pages and request dependencies.

``ShopMiddleware`` (pure ASGI, so SSE streams pass through untouched) does three things
for every request: caps the request body while it streams in (an upload route gets the
photo cap plus form overhead, everything else 256 KiB: 413 as soon as the cap is passed,
or at once from ``Content-Length``), gives a browser its CSRF nonce cookie, and adds the
security headers (CSP with no inline script, ``Referrer-Policy: no-referrer`` so portrait
tokens never leak to other sites, no framing, no sniffing, ``no-store`` for pages).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from impasto import errors
from impasto.errors import ImpastoError
from impasto.service.shop import security

if TYPE_CHECKING:
    from impasto.service.shop.app import Shop

log = logging.getLogger(__name__)

UPLOAD_PATHS = frozenset({"/portraits", "/api/v1/portraits", "/admin/styles"})
PROBE_PATHS = frozenset({"/healthz", "/readyz"})   # routes/health.py: no CSRF cookie for a probe
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")
SESSION_COOKIE_ARGS = {"httponly": True, "path": "/"}


def shop_of(request: Request) -> Shop:
    return request.app.state.shop


def db_session(request: Request) -> Iterator[Session]:
    with shop_of(request).sessions() as session:
        yield session


DB = Annotated[Session, Depends(db_session)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/files/")):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or not accept or "*/*" in accept


# --- middleware --------------------------------------------------------------------------

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


# --- templates ---------------------------------------------------------------------------

def make_templates(shop: Shop, directory: Path) -> Jinja2Templates:
    def context(request: Request) -> dict[str, Any]:
        nonce = getattr(request.state, "csrf_nonce", None) or security.new_csrf_nonce()
        token = security.csrf_token_for(shop.signer, nonce, session=admin_binding(request))
        return {"csrf_token": token, "csrf_field": security.CSRF_FIELD,
                "settings": shop.settings}

    templates = Jinja2Templates(directory=directory, context_processors=[context])
    templates.env.filters["money"] = money
    templates.env.globals["static_version"] = _static_version(directory.parent / "static")
    return templates


def money(cents: int, currency: str = "EUR") -> str:
    symbol = {"EUR": "€", "USD": "$", "GBP": "£"}.get(currency.upper())
    amount = f"{cents / 100:,.2f}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def _static_version(folder: Path) -> str:
    """A cache-busting query string: the newest static file's modification time."""
    times = [p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()]
    return str(max(times, default=0) // 1_000_000_000)


def render(request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    return shop_of(request).templates.TemplateResponse(request, name, context or {}, status_code=status_code,
                                                       headers=headers)


# --- errors ------------------------------------------------------------------------------

TITLES = {400: "That request was not understood", 401: "Please sign in", 403: "Not allowed",
          404: "Not found", 409: "Not yet", 410: "This link has expired", 413: "That file is too large",
          415: "That file type is not supported", 422: "Please check your input",
          429: "Too many requests", 500: "Something went wrong", 503: "Not available right now"}


# The domain errors carry no HTTP codes: they are mapped here, the nearest class in the
# error's MRO winning; any other ImpastoError is the request's fault (errors.py's promise).
HTTP_STATUS: dict[type[ImpastoError], int] = {
    errors.ShopError: 400, errors.NotFound: 404, errors.NotReady: 409, errors.LinkExpired: 410,
    errors.InvalidInput: 422, errors.TooManyRequests: 429, errors.Unavailable: 503,
    errors.UploadError: 422, errors.UploadTooLarge: 413, errors.UnsupportedFormat: 415,
    errors.InvalidEmail: 422, errors.NoSuchId: 404, errors.KeyNotFound: 404,
    errors.JobError: 409, errors.OrderStatusError: 409,
    errors.MailError: 503, errors.FarmError: 503,           # outages, not the request's fault
}
DEFAULT_STATUS = 400


def http_status(exc: ImpastoError, default: int = DEFAULT_STATUS) -> int:
    """The HTTP answer to ``exc``: its class's code in ``HTTP_STATUS``, or its nearest base's."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return default


def error_response(request: Request, status_code: int, detail: str,
                   headers: dict[str, str] | None = None) -> Response:
    if status_code == 401 and request.url.path.startswith("/admin") and wants_html(request):
        target = urllib.parse.quote(request.url.path, safe="/")
        return RedirectResponse(f"/admin/login?next={target}", status_code=303)
    if not wants_html(request):
        return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)
    context = {"status": status_code, "title": TITLES.get(status_code, "Something went wrong"),
               "detail": detail}
    return render(request, "error.html", context, status_code=status_code, headers=headers)


def install_error_handlers(app) -> None:
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "Request refused."
        if exc.status_code == 404 and detail == "Not Found":
            detail = "There is nothing here — the link may be mistyped, or not yours."
        return error_response(request, exc.status_code, detail, getattr(exc, "headers", None))

    async def shop_error(request: Request, exc: ImpastoError) -> Response:
        status = http_status(exc)
        if type(exc) not in HTTP_STATUS:
            log.warning("impasto error without an HTTP code of its own (%s): %s", DEFAULT_STATUS, exc)
        return error_response(request, status, str(exc), getattr(exc, "headers", None))

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if wants_html(request):
            return error_response(request, 422, "Some of the details sent are not valid.")
        return JSONResponse({"detail": _plain(exc.errors())}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ImpastoError, shop_error)
    app.add_exception_handler(RequestValidationError, invalid)


def _plain(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the rejected input echoed back (it may be a whole file)."""
    return [{key: value for key, value in error.items() if key in ("loc", "msg", "type")} for error in errors]


# --- CSRF and admin ----------------------------------------------------------------------

def check_csrf(request: Request, submitted: str | None) -> None:
    """403 unless ``submitted`` (form field or header) matches the visitor's cookie nonce and
    was made for the admin session this request carries (none for a customer)."""
    shop = shop_of(request)
    cookie = request.cookies.get(security.cookie_name(security.CSRF_COOKIE, secure=shop.secure_cookies))
    submitted = submitted or request.headers.get(security.CSRF_HEADER)
    if not security.csrf_valid(shop.signer, cookie, submitted, session=admin_binding(request)):
        raise HTTPException(403, "This form has expired or did not come from this site. "
                                 "Please reload the page and try again.")


def _password(request: Request) -> str:
    return shop_of(request).settings.admin_password.get_secret_value()


def admin_cookie(request: Request, name: str) -> str | None:
    shop = shop_of(request)
    return request.cookies.get(security.cookie_name(name, secure=shop.secure_cookies))


def admin_session_id(request: Request) -> str | None:
    """The id of the request's admin session cookie when it is valid and not logged out."""
    shop = shop_of(request)
    token = admin_cookie(request, security.ADMIN_COOKIE)
    session = security.admin_session_id(shop.signer, _password(request), token)
    return session if session and not shop.admin_sessions.revoked(session) else None


def _basic_admin(request: Request) -> tuple[str, str] | None:
    return security.basic_credentials(request.headers.get("authorization"))


def admin_binding(request: Request) -> str:
    """What this request's CSRF tokens are bound to: its admin session id, ``basic`` for
    valid HTTP Basic credentials, "" for everyone else. Checks only, counts nothing."""
    session = admin_session_id(request)
    if session:
        return session
    credentials = _basic_admin(request)
    password = _password(request)
    if credentials and password and security.password_matches(
            password, *credentials, expected_user=shop_of(request).settings.admin_user):
        return security.BASIC_BINDING
    return ""


def known_device(request: Request) -> str | None:
    """A browser that signed in before: its device cookie's id, else its live admin session."""
    shop = shop_of(request)
    token = admin_cookie(request, security.DEVICE_COOKIE)
    device = security.device_id(shop.signer, _password(request), token)
    return device or admin_session_id(request)


def sign_in_wait(request: Request, user: str) -> int:
    """Seconds this sign-in attempt must wait (0: check its password), for form and Basic."""
    return shop_of(request).login_guard.retry_after_seconds(ip=client_ip(request), user=user,
                                                           device=known_device(request))


def sign_in_failed(request: Request, user: str) -> None:
    log.warning("admin: failed sign-in from %s", client_ip(request))
    shop_of(request).login_guard.failed(ip=client_ip(request), user=user, device=known_device(request))


def is_admin(request: Request) -> bool:
    """A valid admin session, or HTTP Basic credentials checked under the sign-in lockout
    (429 while locked: a brute force gets no answer to its guesses)."""
    shop = shop_of(request)
    password = _password(request)
    if not password:
        return False
    if admin_session_id(request):
        return True
    credentials = _basic_admin(request)
    if credentials is None:
        return False
    wait = sign_in_wait(request, credentials[0])
    if wait:
        raise HTTPException(429, "Too many sign-in attempts. Please wait a few minutes.",
                            headers={"Retry-After": str(wait)})
    if security.password_matches(password, *credentials, expected_user=shop.settings.admin_user):
        return True
    sign_in_failed(request, credentials[0])
    return False


def require_admin(request: Request) -> None:
    shop = shop_of(request)
    if not shop.settings.admin_password.get_secret_value():
        raise HTTPException(403, "The admin is closed until IMPASTO_ADMIN_PASSWORD is set.")
    if not is_admin(request):
        raise HTTPException(401, "Please sign in to the admin.",
                            headers={"WWW-Authenticate": 'Basic realm="impasto admin", charset="UTF-8"'})


Admin = Depends(require_admin)
