"""Payment providers' webhooks: ``POST /webhooks/stripe``.

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
from impasto.service.shop.routes.web import shop_of

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
