"""The customer's pages: upload → portrait (live previews) → order → confirmation.

Server-rendered and usable without JavaScript: forms post and redirect (303), the
portrait page reloads itself while previews paint (``<noscript>`` refresh) and, with
JavaScript, follows the event stream instead (``static/portrait.js``). Every form carries
a CSRF token; a refused form is shown again with its message and what was typed.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from impasto.errors import ImpastoError
from impasto.service.core.untrusted import parse_id
from impasto.service.shop import flows
from impasto.service.shop.deps import DB, check_csrf, client_ip, shop_of
from impasto.service.shop.routes.web import http_status, render

router = APIRouter(include_in_schema=False)

MAX_FORM_FIELDS = 16
ADDRESS_FIELDS = ("name", "line1", "line2", "city", "region", "postal_code", "country", "phone")


def _prints(shop) -> list[dict]:
    return [{"size": p.size, "price_cents": p.price_cents} for p in shop.settings.prints]


def _styles(shop) -> list[dict]:
    return [{"name": name, "title": title, "provenance": provenance, "image_url": f"/styles/{name}/image"}
            for name, (title, provenance) in flows.style_cards(shop).items()]


@router.get("/")
def index(request: Request) -> Response:
    shop = shop_of(request)
    return render(request, "index.html", {"styles": _styles(shop), "prints": _prints(shop), "form": {}})


@router.get("/privacy")
def privacy(request: Request) -> Response:
    return render(request, "privacy.html", {})


@router.post("/portraits")
async def upload(request: Request) -> Response:
    """The upload form: every refusal re-shows the form with its message and status."""
    shop = shop_of(request)
    form: dict = {}
    try:
        data = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=64 * 1024)
        form = {"email": str(data.get("email") or "")[:320], "consent": data.get("consent") == "yes"}
        check_csrf(request, data.get("csrf_token"))
        flows.check_upload_limits(shop, ip=client_ip(request))
        address = flows.check_customer(shop, email=form["email"], consent=form["consent"])
        flows.check_upload_limits(shop, ip=None, email=address)
        photo = data.get("photo")
        if photo is None or isinstance(photo, str) or not photo.filename:
            raise flows.InvalidInput("Please choose a photo to upload.")
        from impasto.service.shop.uploads import aread_capped

        raw = await aread_capped(photo, max_bytes=shop.settings.max_upload_bytes)
        clean = await run_in_threadpool(flows.clean_photo, shop, raw)
        public_id = await run_in_threadpool(flows.create_portrait, shop, email=address, photo=clean)
    except HTTPException as exc:
        if exc.status_code == 403:
            raise
        return _upload_refused(request, exc.status_code, str(exc.detail), form, getattr(exc, "headers", None))
    except ImpastoError as exc:
        status = http_status(exc, default=422)
        return _upload_refused(request, status, str(exc), form, getattr(exc, "headers", None))
    return RedirectResponse(flows.portrait_url(public_id), status_code=303)


def _upload_refused(request: Request, status: int, message: str, form: dict, headers) -> Response:
    if status == 413:
        message = (f"This photo is larger than the "
                   f"{shop_of(request).settings.max_upload_bytes // 2**20} MB limit. Please choose a smaller one.")
    shop = shop_of(request)
    context = {"styles": _styles(shop), "prints": _prints(shop), "form": form, "error": message}
    return render(request, "index.html", context, status_code=status, headers=headers)


@router.get("/portraits/{public_id}")
def portrait_page(public_id: str, request: Request, session: DB) -> Response:
    shop = shop_of(request)
    view = flows.portrait_view(shop, session, flows.find_portrait(session, public_id))
    return render(request, "portrait.html", {"view": view})


@router.get("/portraits/{public_id}/order")
def order_form(public_id: str, request: Request, session: DB, preview: str = "") -> Response:
    portrait = flows.find_portrait(session, public_id)
    return _order_page(request, session, portrait, {"preview_id": parse_id(preview, "preview")})


def _order_page(request: Request, session, portrait, form: dict, *, error: str | None = None,
                status_code: int = 200) -> Response:
    shop = shop_of(request)
    job = flows.find_job(session, portrait, parse_id(form.get("preview_id"), "preview"))
    view = flows.portrait_view(shop, session, portrait)
    preview = next((p for p in view["previews"] if p["id"] == job.id), None)
    if preview is None:
        raise flows.NotFound("No such preview.")
    from impasto.service.shop.addresses import countries
    from impasto.service.shop.payments import offered

    context = {"view": view, "preview": preview, "prints": _prints(shop), "form": form, "error": error,
               "payments": offered(shop.payments), "countries": countries()}
    return render(request, "order.html", context, status_code=status_code)


@router.post("/portraits/{public_id}/orders")
async def place_order(public_id: str, request: Request) -> Response:
    data = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=16 * 1024)
    check_csrf(request, data.get("csrf_token"))
    names = ("preview_id", "print_size", "payment_method", *(f"shipping_{name}" for name in ADDRESS_FIELDS))
    fields = {name: str(data.get(name) or "") for name in names}
    return await run_in_threadpool(_place_order, request, public_id, fields)


def _place_order(request: Request, public_id: str, fields: dict) -> Response:
    """The order form: pay on invoice goes to the order's page, a hosted checkout to its page."""
    from impasto.errors import PaymentError

    shop = shop_of(request)
    with shop.sessions() as session:
        portrait = flows.find_portrait(session, public_id)
        address = {name: fields[f"shipping_{name}"] for name in ADDRESS_FIELDS}
        form = flows.OrderForm(parse_id(fields["preview_id"], "preview"), fields["print_size"], address,
                               fields["payment_method"])
        try:
            order, started = flows.place_order(shop, session, portrait, form)
        except (flows.InvalidInput, flows.NotReady, PaymentError) as exc:
            session.rollback()
            return _order_page(request, session, portrait, {**fields, "preview_id": form.preview_id},
                               error=str(exc), status_code=http_status(exc))
        url = started.redirect_url or f"{flows.portrait_url(public_id)}/orders/{order.number}"
    return RedirectResponse(url, status_code=303)


@router.get("/portraits/{public_id}/orders/{number}")
def order_page(public_id: str, number: str, request: Request, session: DB, paid: str = "") -> Response:
    """The order's page; ``?paid=1`` is the way back from a checkout (the webhook may still be on its way)."""
    from impasto.service.shop.addresses import Address

    shop = shop_of(request)
    portrait = flows.find_portrait(session, public_id)
    row = flows.find_order(session, portrait, number)
    order = flows.order_view(shop, session, row)
    view = flows.portrait_view(shop, session, portrait)
    return render(request, "confirmation.html", {"order": order, "view": view, "paid_return": paid == "1",
                                                 "address_lines": Address.from_order(row).lines()})
