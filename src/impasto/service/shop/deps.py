"""What a route asks of the request: the shop, a database session, the client, CSRF, the admin.

FastAPI dependencies (``DB``, ``Admin``) and the small helpers routes call with the
request (``shop_of``, ``client_ip``, ``check_csrf``). The admin's checks live here too: a
session cookie or HTTP Basic, counted by the sign-in lockout (``security.LoginGuard``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.exceptions import HTTPException
from sqlalchemy.orm import Session

from impasto.service.shop import security

if TYPE_CHECKING:
    from impasto.service.shop.app import Shop

log = logging.getLogger(__name__)


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
