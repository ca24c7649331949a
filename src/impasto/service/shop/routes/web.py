"""The shop's templates, error pages and the errors' HTTP codes.

``HTTP_STATUS`` maps the ``ImpastoError`` tree onto HTTP (the domain code carries no codes);
``install_error_handlers`` answers every error as the shop's page for a browser, as JSON
for the API. The request dependencies live in ``shop/deps.py``, the middleware in
``shop/middleware.py``.
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from impasto import errors
from impasto.errors import ImpastoError
from impasto.service.shop import security

from impasto.service.shop.deps import admin_binding, shop_of, wants_html

if TYPE_CHECKING:
    from impasto.service.shop.app import Shop

log = logging.getLogger(__name__)


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
    errors.JobError: 409, errors.OrderStatusError: 409, errors.PortraitInUse: 409,
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
