""""Delete my photo now": the customer's own deletion, from the portrait page or an email.

``GET /portraits/{id}/delete`` asks (an email's link must never delete by itself: mail
scanners and link previews follow links); the form's ``POST`` deletes the photo, every
preview, print and snapshot, the orders and the queued emails (``core/retention.py``
``delete_portrait``), and says so. While a print is still being made the page says why it
has to wait (409): the photo goes ``IMPASTO_RETENTION_DAYS`` after shipping, with no action.
The API's ``DELETE /api/v1/portraits/{id}`` does the same (204). The portrait's address is
its own authorisation, as everywhere in the shop; the form carries a CSRF token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from impasto.errors import PortraitInUse
from impasto.service.core.retention import ENDED, delete_portrait
from impasto.service.shop import flows
from impasto.service.shop.deps import DB, check_csrf, shop_of
from impasto.service.shop.routes.web import http_status, render

router = APIRouter()


@router.get("/portraits/{public_id}/delete", include_in_schema=False)
def confirm_page(public_id: str, request: Request, session: DB) -> Response:
    return render(request, "delete.html", _context(session, public_id))


def _context(session, public_id: str) -> dict:
    portrait = flows.find_portrait(session, public_id)
    busy = [order.number for order in portrait.orders if order.status not in ENDED]
    return {"public_id": public_id, "portrait_url": flows.portrait_url(public_id), "busy": busy,
            "orders": len(portrait.orders)}


@router.post("/portraits/{public_id}/delete", include_in_schema=False)
async def delete_form(public_id: str, request: Request) -> Response:
    data = await request.form(max_files=0, max_fields=4, max_part_size=1024)
    check_csrf(request, data.get("csrf_token"))
    try:
        await run_in_threadpool(_delete, request, public_id)
    except PortraitInUse as exc:
        with shop_of(request).sessions() as session:
            context = {**_context(session, public_id), "error": str(exc)}
        return render(request, "delete.html", context, status_code=http_status(exc))
    return render(request, "deleted.html", {})


@router.delete("/api/v1/portraits/{public_id}", tags=["portraits"], status_code=204,
               summary="Delete the photo, its previews, prints and orders now",
               responses={404: {"description": "no such portrait"},
                          409: {"description": "a print of it is still being made"}})
def delete_api(public_id: str, request: Request) -> Response:
    _delete(request, public_id)
    return Response(status_code=204)


def _delete(request: Request, public_id: str) -> None:
    shop = shop_of(request)
    with shop.sessions() as session:
        portrait = flows.find_portrait(session, public_id)
        delete_portrait(session=session, storage=shop.storage, portrait_id=portrait.id)


