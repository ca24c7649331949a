"""Pictures and downloads: every one is a redirect to a short-lived signed URL of storage.

The routes here check who may see what (the portrait's token, the order's status and link
age) and then mint a signed URL: S3 serves it directly; for ``LocalStorage`` it points at
``/files/<key>``, which serves the file only when ``LocalStorage.verify`` accepts the
signature. Style paintings are public (they are the shop window) and served from the catalog.
"""

from __future__ import annotations

import mimetypes
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse

from impasto.catalog import NAME as STYLE_NAME
from impasto.errors import ImpastoError
from impasto.service.core.storage import LocalStorage, content_disposition
from impasto.service.core.untrusted import MAX_TIMESTAMP, parse_id, parse_int
from impasto.service.shop import flows
from impasto.service.shop.deps import DB, shop_of

router = APIRouter(include_in_schema=False)

NO_STORE = {"Cache-Control": "no-store"}


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get("/portraits/{public_id}/photo")
def portrait_photo(public_id: str, request: Request, session: DB):
    shop = shop_of(request)
    return _redirect(flows.photo_url(shop, flows.find_portrait(session, public_id)))


@router.get("/portraits/{public_id}/jobs/{job_id}/image")
def job_image(public_id: str, job_id: str, request: Request, session: DB):
    shop = shop_of(request)
    portrait = flows.find_portrait(session, public_id)
    return _redirect(flows.image_url(shop, session, portrait, parse_id(job_id, "picture")))


@router.get("/portraits/{public_id}/orders/{number}/download")
def download(public_id: str, number: str, request: Request, session: DB):
    """The link in the "print ready" email: a fresh signed URL on every click."""
    shop = shop_of(request)
    portrait = flows.find_portrait(session, public_id)
    return _redirect(flows.download_url(shop, session, portrait, number))


@router.get("/files/{key:path}")
def signed_file(key: str, request: Request, expires: str = "", signature: str = "",
                filename: str | None = None):
    """A LocalStorage object behind a valid signature (403), before it expires (410)."""
    storage = shop_of(request).storage
    if not isinstance(storage, LocalStorage):
        raise HTTPException(404)
    if not storage.verify(key, expires, signature, filename=filename):
        when = parse_int(expires, maximum=MAX_TIMESTAMP)
        if when is not None and when < time.time() and signature:
            raise HTTPException(410, "This link has expired. Please go back and open it again.")
        raise HTTPException(403, "This link is not valid.")
    try:
        path = storage.path(key)
    except ImpastoError:
        raise HTTPException(404) from None
    if not path.is_file():
        raise HTTPException(404)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Cache-Control": "private, max-age=300"}
    if filename is not None:
        headers["Content-Disposition"] = content_disposition(filename)
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/styles/{name}/image")
def style_image(name: str, request: Request):
    catalog = shop_of(request).catalog
    if not STYLE_NAME.match(name):
        raise HTTPException(404)
    try:
        style = catalog.get(name)
    except ImpastoError:
        raise HTTPException(404) from None
    media_type = mimetypes.guess_type(style.image_path.name)[0] or "application/octet-stream"
    return FileResponse(style.image_path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})
