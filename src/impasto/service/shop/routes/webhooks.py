"""Webhooks: a payment provider's (``POST /webhooks/stripe``) and a print lab's (``POST /webhooks/lab``).

No CSRF token and no cookie: the caller is Stripe's servers, and the request proves itself
by its ``Stripe-Signature`` over the raw body (checked by the ``stripe`` package, within
``IMPASTO_STRIPE_WEBHOOK_TOLERANCE_SECONDS``). The body is read raw, before any parsing,
because the signature covers its exact bytes. Answers: 200 once the event is applied or was
already (a replay), 400 for a bad signature or body (Stripe shows it in the dashboard), 503
when applying it failed, so Stripe retries it later.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from impasto.errors import WebhookRejected
from impasto.service.shop.payments import handle_stripe_webhook
from impasto.service.shop.deps import shop_of

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", include_in_schema=False)


@router.post("/stripe")
async def stripe_webhook(request: Request) -> JSONResponse:
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    try:
        outcome = await run_in_threadpool(handle_stripe_webhook, shop_of(request), payload=payload,
                                          signature=signature)
    except WebhookRejected as exc:
        log.warning("stripe webhook refused: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return JSONResponse({"received": True, "outcome": outcome})


@router.post("/lab")
async def lab_callback(request: Request) -> JSONResponse:
    """A print lab's status callback: only a nudge to ask the lab's API about the order it names.

    Its body is not trusted (the lab signs nothing): the status is read back from the API
    with the shop's key, so a forged callback can only make the shop ask sooner."""
    import json

    shop = shop_of(request)
    if shop.lab is None:
        return JSONResponse({"detail": "No print lab is configured (IMPASTO_FULFILMENT_PROVIDER)."}, status_code=404)
    try:
        body = json.loads(await request.body())
        data = body.get("data", body) if isinstance(body, dict) else {}
        reference = (data.get("order") or {}).get("id") if isinstance(data, dict) else None
    except (ValueError, AttributeError):
        reference = None
    if isinstance(reference, str) and 0 < len(reference) <= 64:
        shop.lab.wake(reference)
    return JSONResponse({"received": True})
