"""The JSON API (``/api/v1``): the same flow as the pages, for apps and scripts.

No cookies are involved (the portrait's unguessable id is the credential, as on the
pages), so these routes need no CSRF token. Errors are ``{"detail": "…"}`` with a 4xx.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from impasto.service.shop import flows
from impasto.service.shop.payments import offered
from impasto.service.shop.routes.schemas import (
    OrderIn,
    OrderOut,
    PortraitOut,
    PrintOption,
    PrintsOut,
    StyleOut,
    preset_options,
)
from impasto.service.shop.deps import DB, client_ip, shop_of

router = APIRouter(prefix="/api/v1")

SSE_POLL_SECONDS = 0.5           # how often the stream looks at the job table
SSE_KEEPALIVE_SECONDS = 15.0     # a comment line keeps proxies from closing an idle stream
SSE_MAX_SECONDS = 600.0          # then the browser reconnects (EventSource does so by itself)
ERRORS = {404: {"description": "not found, or not yours"}, 422: {"description": "invalid input"}}


@router.post("/portraits", tags=["portraits"], status_code=201, response_model=PortraitOut,
             responses={413: {"description": "photo larger than the byte cap"},
                        415: {"description": "not a JPEG, PNG or WebP photo"},
                        422: {"description": "a bad photo or email address, or no consent"},
                        429: {"description": "too many uploads from this IP or for this email"}})
async def upload_portrait(request: Request, photo: Annotated[UploadFile, File(description="JPEG, PNG or WebP")],
                          email: Annotated[str, Form(max_length=320)],
                          consent: Annotated[bool, Form(description="may we paint and keep the photo")] = False):
    """Upload a photo: one preview per catalog style starts painting at once."""
    from impasto.service.shop.uploads import aread_capped

    shop = shop_of(request)
    flows.check_upload_limits(shop, ip=client_ip(request))
    address = flows.check_customer(shop, email=email, consent=consent)
    flows.check_upload_limits(shop, ip=None, email=address)
    data = await aread_capped(photo, max_bytes=shop.settings.max_upload_bytes)
    clean = await run_in_threadpool(flows.clean_photo, shop, data)
    public_id = await run_in_threadpool(flows.create_portrait, shop, email=address, photo=clean)
    return await run_in_threadpool(_portrait_view, shop, public_id)


def _portrait_view(shop, public_id: str) -> dict:
    with shop.sessions() as session:
        return flows.portrait_view(shop, session, flows.find_portrait(session, public_id))


@router.get("/portraits/{public_id}", tags=["portraits"], response_model=PortraitOut, responses=ERRORS)
def get_portrait(public_id: str, request: Request, session: DB):
    """The portrait's previews with their progress (the polling fallback of the event stream)."""
    shop = shop_of(request)
    return flows.portrait_view(shop, session, flows.find_portrait(session, public_id))


@router.get("/portraits/{public_id}/events", tags=["portraits"], responses={
    200: {"content": {"text/event-stream": {}},
          "description": "`event: portrait` with a PortraitOut on each change; `event: done` at the end"},
    **ERRORS})
async def portrait_events(public_id: str, request: Request):
    """Server-sent events of the portrait's progress, read from the job table."""
    shop = shop_of(request)
    first = await run_in_threadpool(_portrait_view, shop, public_id)   # 404 before the stream starts
    return StreamingResponse(_events(request, shop, public_id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(request: Request, shop, public_id: str, view: dict) -> AsyncIterator[str]:
    started = last_sent = time.monotonic()
    yield "retry: 3000\n\n"
    previous = None
    while True:
        payload = json.dumps(view, separators=(",", ":"))
        if payload != previous:
            yield f"event: portrait\ndata: {payload}\n\n"
            previous, last_sent = payload, time.monotonic()
        if view["done"]:
            yield "event: done\ndata: {}\n\n"
            return
        now = time.monotonic()
        if now - started > SSE_MAX_SECONDS or await request.is_disconnected():
            return
        if now - last_sent > SSE_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = now
        await asyncio.sleep(SSE_POLL_SECONDS)
        try:
            view = await run_in_threadpool(_portrait_view, shop, public_id)
        except flows.NotFound:      # deleted meanwhile (the admin)
            return


@router.post("/portraits/{public_id}/orders", tags=["orders"], status_code=201, response_model=OrderOut,
             responses={**ERRORS, 409: {"description": "the preview is not finished"},
                        503: {"description": "the payment service could not open a checkout"}})
def create_order(public_id: str, body: OrderIn, request: Request, session: DB):
    """Order a print of a finished preview: the print continues that preview at the print's size.

    Paid online, the answer's ``payment_url`` is the checkout to send the customer to: the
    order waits in ``awaiting_payment`` and nothing is painted until the payment arrives."""
    shop = shop_of(request)
    portrait = flows.find_portrait(session, public_id)
    form = flows.OrderForm(body.preview_id, body.print_size, body.shipping_address.model_dump(),
                           body.payment_method)
    order, _ = flows.place_order(shop, session, portrait, form)
    return flows.order_view(shop, session, order)


@router.get("/portraits/{public_id}/orders/{number}", tags=["orders"], response_model=OrderOut,
            responses=ERRORS)
def get_order(public_id: str, number: str, request: Request, session: DB):
    """An order's status; ``download_url`` appears once the print file is ready."""
    shop = shop_of(request)
    portrait = flows.find_portrait(session, public_id)
    return flows.order_view(shop, session, flows.find_order(session, portrait, number))


@router.get("/styles", tags=["catalog"], response_model=list[StyleOut])
def list_styles(request: Request):
    """The styles every portrait is previewed in, with their render presets."""
    shop = shop_of(request)
    return [{"name": style.name, "title": style.title, "provenance": style.provenance,
             "image_url": f"/styles/{style.name}/image",
             "preset": preset_options(style.preset)} for style in shop.catalog.all()]


@router.get("/prints", tags=["catalog"], response_model=PrintsOut)
def list_prints(request: Request):
    """Print sizes, their prices, and the ways to pay."""
    shop = shop_of(request)
    settings = shop.settings
    return {"prints": [PrintOption(size=p.size, price_cents=p.price_cents, currency=settings.currency)
                       for p in settings.prints],
            "payment_methods": {name: provider.title for name, provider in offered(shop.payments).items()}}
