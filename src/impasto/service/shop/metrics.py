"""What the shop's process counts: HTTP requests by route and status, uploads by outcome.

On ``core.metrics.REGISTRY``, beside the render seconds; ``/metrics`` (``routes/metrics.py``)
serves them with the tables' gauges. ``RequestMiddleware`` (``shop/middleware.py``) records
every answer here once the response has started.

An upload's outcome is read from its answer, not from the code that refused it: the form
(``POST /portraits``) and the API (``POST /api/v1/portraits``) refuse in different ways, but
both answer with the status ``HTTP_STATUS`` maps the refusal to, so one table
(``UPLOAD_REASONS``) names the reason for both.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from impasto.service.core.metrics import REGISTRY

UPLOAD_PATHS = frozenset({"/portraits", "/api/v1/portraits"})    # the customers' (not /admin/styles)
UPLOAD_REASONS = {403: "csrf", 408: "too_slow", 413: "too_large", 415: "unsupported_format",
                  422: "invalid", 429: "rate_limited"}
UNMATCHED_ROUTE = "unmatched"     # a 404 for a path no route knows: one series, not one per path

HTTP_REQUESTS = Counter("impasto_http_requests", "HTTP requests answered, by method, route template and status",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_SECONDS = Histogram("impasto_http_request_seconds", "Seconds until the answer started, by route template",
                         ["route"], registry=REGISTRY)
UPLOADS_ACCEPTED = Counter("impasto_uploads_accepted", "Photos accepted (a portrait made)", registry=REGISTRY)
UPLOADS_REJECTED = Counter("impasto_uploads_rejected", "Photo uploads refused, by reason", ["reason"],
                           registry=REGISTRY)


def record_request(*, method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    HTTP_SECONDS.labels(route=route).observe(seconds)
    if method == "POST" and route in UPLOAD_PATHS:
        record_upload(status)


def record_upload(status: int) -> None:
    """An upload's answer: 201 (API) or 303 (form, to the portrait page) accepted it."""
    if status in (201, 303):
        UPLOADS_ACCEPTED.inc()
    elif status >= 500:
        UPLOADS_REJECTED.labels(reason="error").inc()
    else:
        UPLOADS_REJECTED.labels(reason=UPLOAD_REASONS.get(status, "bad_request")).inc()


def route_template(scope: dict) -> str:
    """The route's path template (``/portraits/{public_id}``) of a routed request; a mount's
    prefix (``/static``) for its files; ``unmatched`` for anything else."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    root = scope.get("app_root_path") is not None and scope.get("root_path")
    if isinstance(root, str) and root:
        return root
    return UNMATCHED_ROUTE
