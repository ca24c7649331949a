"""``GET /metrics``: Prometheus's text format, for the shop and the whole farm's tables.

What this process counted (requests, uploads, render seconds when it renders itself) and
what the tables hold now (jobs by queue and status, workers and their heartbeats, the mail
outbox) — see ``core/metrics.py``. A farm worker serves its own render seconds on
``impasto worker --metrics-port``.

With ``IMPASTO_METRICS_TOKEN`` set, a scrape must send ``Authorization: Bearer <token>``
(Prometheus's ``authorization`` setting); without it the route is open, for a private
network or a proxy that keeps it in. No CSRF cookie (``middleware.PROBE_PATHS``).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from impasto.service.shop.deps import shop_of

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    shop = shop_of(request)
    token = shop.settings.metrics_token.get_secret_value()
    if token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), f"Bearer {token}".encode()):
            raise HTTPException(401, "This scrape needs the metrics token.",
                                headers={"WWW-Authenticate": 'Bearer realm="impasto metrics"'})
    body = await run_in_threadpool(generate_latest, shop.metrics)   # the table gauges query the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)
