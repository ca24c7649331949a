"""The API explorer (``/docs``): Swagger UI from the ``fastapi-offline`` package, no CDN.

FastAPI's own ``/docs`` page loads Swagger UI from jsDelivr and starts it with an inline
script, so it was blank offline and had to be exempt from the shop's CSP. This page serves
Swagger UI (5.x: it reads OpenAPI 3.1, which FastAPI writes and ``swagger-ui-bundle``'s
4.15 cannot) from the files ``fastapi-offline`` ships (``/docs/assets/…``; we use only
its files, not its page, which starts Swagger UI with an inline script) and starts it with
``/static/api-docs.js``, so it works offline and under the CSP every page has
(``script-src 'self'``, no inline script). ReDoc is not offered.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from impasto.errors import ImpastoError

router = APIRouter(include_in_schema=False)

ASSETS = "/docs/assets"
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""


def assets_folder() -> Path:
    """Swagger UI's files as the ``fastapi-offline`` package ships them."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.origin:
        raise ImpastoError("the package fastapi-offline (Swagger UI's files for /docs) is not installed")
    return Path(spec.origin).parent / "static"


@router.get("/docs")
def api_docs(request: Request) -> HTMLResponse:
    app = request.app
    return HTMLResponse(PAGE.format(title=html.escape(app.title), assets=ASSETS,
                                    openapi=html.escape(app.openapi_url or "/openapi.json")))
