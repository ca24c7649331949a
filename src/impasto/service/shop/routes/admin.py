"""The admin (``/admin``): orders, jobs, workers, the outbox and the style catalog.

Closed (403) until ``IMPASTO_ADMIN_PASSWORD`` is set; then a login form sets a signed
session cookie (HTTP Basic works too, for scripts). Unauthenticated browsers are sent to
the login page, other clients get 401. Every action is a POST with a CSRF token that
redirects back (303), so the pages work without JavaScript; htmx (``hx-boost``) makes them
feel instant and refreshes the jobs table while renders run.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from impasto.errors import ImpastoError, OrderStatusError
from impasto.service.core import jobs
from impasto.service.core.models import Email, EmailStatus, Job, JobKind, Order, OrderStatus
from impasto.service.core.orders import ORDER_TRANSITIONS, set_order_status
from impasto.service.core.untrusted import parse_id
from impasto.service.shop import flows, fulfilment, security
from impasto.service.shop.deps import (
    DB,
    Admin,
    admin_cookie,
    admin_session_id,
    check_csrf,
    shop_of,
    sign_in_failed,
    sign_in_wait,
)
from impasto.service.shop.routes.web import http_status, render

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", include_in_schema=False)

ROWS = 100
ADMIN_ORDER_STEPS = (OrderStatus.PRINTED, OrderStatus.SHIPPED, OrderStatus.CANCELLED)


# --- login -------------------------------------------------------------------------------

def _safe_next(target: str | None) -> str:
    """Only a path inside the admin: never an open redirect to another site."""
    if target and target.startswith("/admin") and "//" not in target and "\\" not in target:
        return target
    return "/admin"


@router.get("/login")
def login_page(request: Request, next: str = "/admin") -> Response:
    closed = not shop_of(request).settings.admin_password.get_secret_value()
    return render(request, "admin/login.html", {"next": _safe_next(next), "closed": closed},
                  status_code=403 if closed else 200)


@router.post("/login")
async def login(request: Request) -> Response:
    shop = shop_of(request)
    data = await request.form(max_files=0, max_fields=5)
    check_csrf(request, data.get("csrf_token"))
    password = shop.settings.admin_password.get_secret_value()
    target = _safe_next(str(data.get("next") or ""))
    user = str(data.get("user") or "")
    if not password:
        raise HTTPException(403, "The admin is closed until IMPASTO_ADMIN_PASSWORD is set.")
    wait = sign_in_wait(request, user)
    if wait:
        raise flows.TooManyRequests("Too many sign-in attempts. Please wait a few minutes.",
                                    retry_after_seconds=wait)
    if not security.password_matches(password, user, str(data.get("password") or ""),
                                     expected_user=shop.settings.admin_user):
        sign_in_failed(request, user)
        return render(request, "admin/login.html", {"next": target, "error": "Wrong user name or password."},
                      status_code=401)
    response = RedirectResponse(target, status_code=303)
    secure = shop.secure_cookies
    # Path=/ (not /admin): the __Host- prefix requires it; SameSite=Strict keeps it off
    # every cross-site request anyway.
    response.set_cookie(security.cookie_name(security.ADMIN_COOKIE, secure=secure),
                        security.admin_session(shop.signer, password), max_age=security.ADMIN_SESSION_SECONDS,
                        httponly=True, samesite="strict", secure=secure, path="/")
    if security.device_id(shop.signer, password, admin_cookie(request, security.DEVICE_COOKIE)) is None:
        response.set_cookie(security.cookie_name(security.DEVICE_COOKIE, secure=secure),
                            security.device_token(shop.signer, password), max_age=security.DEVICE_SECONDS,
                            httponly=True, samesite="strict", secure=secure, path="/")
    return response


@router.post("/logout", dependencies=[Admin])
async def logout(request: Request) -> Response:
    """Ends the session on the server too: its id is revoked, so a copied cookie is dead."""
    data = await request.form(max_files=0, max_fields=5)
    check_csrf(request, data.get("csrf_token"))
    shop = shop_of(request)
    session = admin_session_id(request)
    if session:
        shop.admin_sessions.revoke(session)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(security.cookie_name(security.ADMIN_COOKIE, secure=shop.secure_cookies), path="/",
                           secure=shop.secure_cookies, httponly=True, samesite="strict")
    return response


# --- the dashboard -----------------------------------------------------------------------

@router.get("", dependencies=[Admin])
def dashboard(request: Request, session: DB) -> Response:
    from impasto.service.core.dispatch import list_workers

    orders = session.scalars(select(Order).order_by(Order.id.desc()).limit(ROWS)).all()
    outbox = dict(session.execute(select(Email.status, func.count()).group_by(Email.status)).all())
    failed_mail = session.scalars(select(Email).where(Email.status == EmailStatus.FAILED)
                                  .order_by(Email.id.desc()).limit(20)).all()
    context = {"orders": orders, "jobs": _jobs(session), "workers": list_workers(session=session),
               "outbox": {status.value: outbox.get(status, 0) for status in EmailStatus},
               "failed_mail": failed_mail, "steps": ADMIN_ORDER_STEPS,
               "transitions": ORDER_TRANSITIONS, "mail_configured": shop_of(request).mailer is not None}
    return render(request, "admin/dashboard.html", context)


@router.get("/jobs", dependencies=[Admin])
def jobs_table(request: Request, session: DB) -> Response:
    """The jobs table alone (htmx refreshes it every few seconds)."""
    return render(request, "admin/_jobs.html", {"jobs": _jobs(session)})


def _jobs(session) -> list[Job]:
    return session.scalars(select(Job).order_by(Job.id.desc()).limit(ROWS)).all()


async def _checked_form(request: Request):
    data = await request.form(max_files=0, max_fields=8)
    check_csrf(request, data.get("csrf_token"))
    return data


@router.post("/jobs/{job_id}/rerun", dependencies=[Admin])
async def rerun_job(job_id: str, request: Request) -> Response:
    await _checked_form(request)
    await run_in_threadpool(_rerun, request, parse_id(job_id, "job"))
    shop_of(request).dispatcher.notify()
    return RedirectResponse("/admin#jobs", status_code=303)


def _rerun(request: Request, job_id: int) -> None:
    with shop_of(request).sessions() as session:
        try:
            job = jobs.rerun(session=session, job_id=job_id)
        except jobs.JobError as exc:
            raise flows.NotReady(str(exc)) from None
        order = session.scalars(select(Order).where(Order.print_job_id == job.id)).one_or_none()
        if job.kind is JobKind.PRINT and order is not None and order.status is OrderStatus.READY:
            set_order_status(session=session, order_id=order.id, status=OrderStatus.RENDERING)
        session.commit()


@router.post("/jobs/{job_id}/cancel", dependencies=[Admin])
async def cancel_job(job_id: str, request: Request) -> Response:
    await _checked_form(request)
    number = parse_id(job_id, "job")

    def cancel() -> None:
        with shop_of(request).sessions() as session:
            try:
                jobs.cancel(session=session, job_id=number)
            except jobs.JobError as exc:
                raise flows.NotFound(str(exc)) from None
            session.commit()

    await run_in_threadpool(cancel)
    return RedirectResponse("/admin#jobs", status_code=303)


@router.post("/orders/{order_id}/status", dependencies=[Admin])
async def order_status(order_id: str, request: Request) -> Response:
    """Printed, shipped (with its carrier and tracking number) or cancelled (a paid one refunded)."""
    data = await _checked_form(request)
    number = parse_id(order_id, "order")
    try:
        status = OrderStatus(str(data.get("status") or ""))
    except ValueError:
        raise flows.InvalidInput("Unknown order status.") from None
    if status not in ADMIN_ORDER_STEPS:
        raise flows.InvalidInput("The admin marks orders printed, shipped or cancelled; renders do the rest.")
    shipment = None
    if status is OrderStatus.SHIPPED:
        shipment = fulfilment.check_shipment(data, template=shop_of(request).settings.tracking_url_template)
    await run_in_threadpool(_set_order_status, request, number, status, shipment)
    return RedirectResponse("/admin#orders", status_code=303)


def _set_order_status(request: Request, order_id: int, status: OrderStatus,
                      shipment: fulfilment.Shipment | None) -> None:
    shop = shop_of(request)
    with shop.sessions() as session:
        try:
            if status is OrderStatus.CANCELLED:
                fulfilment.cancel_order(shop, session=session, order_id=order_id)
            elif status is OrderStatus.SHIPPED:
                fulfilment.ship_order(shop, session=session, order_id=order_id, shipment=shipment)
            else:
                fulfilment.mark_printed(session=session, order_id=order_id)
        except OrderStatusError as exc:
            raise flows.NotReady(str(exc)) from None
    if status is OrderStatus.SHIPPED and shop.outbox is not None:
        shop.outbox.wake()


@router.get("/orders/{order_id}/slip", dependencies=[Admin])
def packing_slip(order_id: str, request: Request, session: DB) -> Response:
    """The packing slip: the address label, what goes in the parcel, and the print file's link."""
    from impasto.service.shop.addresses import Address

    order = session.get(Order, parse_id(order_id, "order"))
    if order is None:
        raise flows.NotFound("No such order.")
    download = (f"{flows.portrait_url(order.portrait.public_id)}/orders/{order.number}/download"
                if order.status in flows.DOWNLOADABLE else None)
    context = {"order": order, "label": Address.from_order(order).lines(), "download_url": download,
               "phone": order.shipping_phone, "transitions": ORDER_TRANSITIONS}
    return render(request, "admin/slip.html", context)


# --- the style catalog -------------------------------------------------------------------

@router.get("/styles", dependencies=[Admin])
def styles_page(request: Request) -> Response:
    return _styles_page(request, {})


def _styles_page(request: Request, form: dict, *, error: str | None = None, status_code: int = 200) -> Response:
    shop = shop_of(request)
    styles = []
    for name in shop.catalog.names():
        try:
            style = shop.catalog.get(name)
            styles.append({"name": name, "title": style.title, "preset": json.dumps(style.preset, sort_keys=True)})
        except ImpastoError as exc:
            styles.append({"name": name, "title": name, "preset": f"unreadable: {exc}"})
    context = {"styles": styles, "form": form, "error": error}
    return render(request, "admin/styles.html", context, status_code=status_code)


@router.post("/styles", dependencies=[Admin])
async def add_style(request: Request) -> Response:
    shop = shop_of(request)
    data = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
    check_csrf(request, data.get("csrf_token"))
    form = {key: str(data.get(key) or "").strip() for key in ("name", "title", "preset")}
    try:
        preset = _checked_preset(form["preset"] or "{}")
        image = data.get("image")
        if image is None or isinstance(image, str) or not image.filename:
            raise flows.InvalidInput("Please choose the painting's image.")
        from impasto.service.shop.uploads import aread_capped

        raw = await aread_capped(image, max_bytes=shop.settings.max_upload_bytes)
        clean = await run_in_threadpool(flows.clean_photo, shop, raw)
        await run_in_threadpool(_store_style, shop, form, clean.data, preset)
    except ImpastoError as exc:
        return _styles_page(request, form, error=str(exc), status_code=http_status(exc, default=422))
    return RedirectResponse("/admin/styles", status_code=303)


def _checked_preset(text: str) -> dict:
    from impasto.service.shop.routes.schemas import RenderOptions

    try:
        values = json.loads(text)
        return RenderOptions.model_validate(values).model_dump(exclude_none=True, mode="json")
    except ValueError as exc:     # JSONDecodeError and ValidationError are both ValueErrors
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) \
            if isinstance(exc, ValidationError) else str(exc)
        raise flows.InvalidInput(f"The preset is not valid: {detail}") from None


def _store_style(shop, form: dict, image: bytes, preset: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="impasto-style-") as folder:
        path = Path(folder) / "style.jpg"
        path.write_bytes(image)
        shop.catalog.add(form["name"], path, preset, title=form["title"] or None)
    log.info("admin: style %s added", form["name"])


@router.post("/styles/{name}/delete", dependencies=[Admin])
async def remove_style(name: str, request: Request) -> Response:
    await _checked_form(request)
    try:
        await run_in_threadpool(shop_of(request).catalog.remove, name)
    except ImpastoError as exc:
        raise flows.NotFound(str(exc)) from None
    log.info("admin: style %s removed", name)
    return RedirectResponse("/admin/styles", status_code=303)
