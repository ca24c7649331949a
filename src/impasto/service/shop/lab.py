"""A print lab's order API (``IMPASTO_FULFILMENT_PROVIDER=http``), modelled on Prodigi's v4 ``Orders``.

``HttpLab`` speaks the API: ``POST {base}/Orders`` (recipient, one item: SKU, copies, the
print file's URL; ``merchantReference`` and ``idempotencyKey`` the order number, so a retry
never makes a second lab order) and ``GET {base}/Orders/{id}`` (its stage, production
details and shipments), with the key in ``X-API-Key``.

``LabSender`` is the shop's thread that drives it, never a request:

- ``submit_due``: each ``ready`` order not yet at the lab gets its print file in the lab's
  format (sRGB JPEG or TIFF at the print dpi, stored beside the render) and is submitted.
  A failure is kept on the order (``fulfilment_error``, ``fulfilment_attempts``, shown in
  the admin) and retried with exponential backoff; the order stays ``ready`` meanwhile.
- ``poll``: orders at the lab are asked about every ``IMPASTO_LAB_POLL_SECONDS``, or at once
  when the lab's callback (``POST /webhooks/lab``) names one: the callback's body is only a
  nudge, the status is always read back from the API. Production done → ``printed``; a
  shipment → ``shipped`` with its carrier and tracking, and the customer's email.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from impasto.errors import FulfilmentError
from impasto.service.core.models import Job, Order, OrderStatus, utcnow
from impasto.service.core.periodic import Periodic
from impasto.service.shop.fulfilment import LabStatus, Shipment

if TYPE_CHECKING:
    from impasto.service.shop.app import Shop

log = logging.getLogger(__name__)

RETRY_SECONDS = 60                 # first retry after a minute, doubling ...
RETRY_MAX_SECONDS = 6 * 3600       # ... up to six hours, for as long as it takes
SUBMIT_LEASE_SECONDS = 300         # an order being submitted is not picked again meanwhile
REQUEST_SECONDS = 30
PRINT_URL_SECONDS = 7 * 24 * 3600  # the lab fetches the file later, sometimes days later
MAX_ERROR_CHARS = 500
FORMATS = {"jpeg": ("JPEG", "jpg", "image/jpeg"), "tiff": ("TIFF", "tif", "image/tiff")}


class HttpLab:
    name = "http"
    manual = False

    def __init__(self, *, api_base: str, api_key: str, skus: dict[str, str] | None = None,
                 shipping_method: str = "Standard") -> None:
        self.api_base, self.api_key = api_base.rstrip("/"), api_key
        self.skus, self.shipping_method = dict(skus or {}), shipping_method

    def order_body(self, order: Order, *, print_url: str, email: str) -> dict[str, Any]:
        address = {"line1": order.shipping_line1, "line2": order.shipping_line2 or None,
                   "postalOrZipCode": order.shipping_postal_code, "countryCode": order.shipping_country,
                   "townOrCity": order.shipping_city, "stateOrCounty": order.shipping_region or None}
        return {"merchantReference": order.number, "idempotencyKey": order.number,
                "shippingMethod": self.shipping_method,
                "recipient": {"name": order.shipping_name, "email": email,
                              "phoneNumber": order.shipping_phone or None, "address": address},
                "items": [{"merchantReference": order.number, "sku": self.skus.get(order.print_size, order.print_size),
                           "copies": 1, "sizing": "fillPrintArea",
                           "assets": [{"printArea": "default", "url": print_url}]}]}

    def submit(self, order: Order, *, print_url: str, email: str) -> str | None:
        answer = self._request("POST", "/Orders", self.order_body(order, print_url=print_url, email=email))
        lab_order = answer.get("order") or {}
        if not isinstance(lab_order.get("id"), str):
            raise FulfilmentError(f"the lab answered without an order id ({answer.get('outcome')})")
        return lab_order["id"]

    def status(self, reference: str) -> LabStatus:
        lab_order = self._request("GET", f"/Orders/{urllib.request.quote(reference, safe='')}").get("order") or {}
        stage = (lab_order.get("status") or {}).get("stage")
        details = (lab_order.get("status") or {}).get("details") or {}
        shipment = None
        for item in lab_order.get("shipments") or []:
            tracking = item.get("tracking") or {}
            if item.get("status") == "Shipped" and tracking.get("number"):
                shipment = Shipment((item.get("carrier") or {}).get("name") or "carrier",
                                    str(tracking["number"]), str(tracking.get("url") or ""))
        printed = details.get("inProduction") == "Complete" or shipment is not None or stage == "Complete"
        return LabStatus(printed=printed, shipment=shipment, cancelled=stage == "Cancelled")

    def _request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api_base + path, data=data, method=method,
                                         headers={"X-API-Key": self.api_key, "Content-Type": "application/json",
                                                  "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise FulfilmentError(f"the lab answered {exc.code} to {method} {path}: {detail}") from None
        except (OSError, ValueError) as exc:    # unreachable, timed out, not JSON
            raise FulfilmentError(f"the lab could not be reached ({method} {path}): {exc}") from None


# --- the print file in the lab's format ----------------------------------------------------

def print_file_key(job_id: int, fmt: str) -> str:
    return f"jobs/{job_id}/print.{FORMATS[fmt][1]}"


def make_print_file(shop: Shop, job: Job) -> str:
    """The render (PNG) as the lab takes it: sRGB profile, the print dpi, JPEG or TIFF; its key.

    Pixels are not resampled: the print was rendered at the ordered size and dpi."""
    from PIL import Image

    from impasto.imaging import srgb_profile

    pil_format, _, content_type = FORMATS[shop.settings.print_file_format]
    dpi = shop.settings.print_dpi
    with Image.open(io.BytesIO(shop.storage.get(job.result_key))) as image:
        buffer = io.BytesIO()
        options = {"quality": 95, "subsampling": 0} if pil_format == "JPEG" else {"compression": "tiff_lzw"}
        image.convert("RGB").save(buffer, format=pil_format, icc_profile=srgb_profile(), dpi=(dpi, dpi), **options)
    key = print_file_key(job.id, shop.settings.print_file_format)
    shop.storage.put(key, buffer.getvalue(), content_type=content_type)
    return key


# --- the shop's lab thread -------------------------------------------------------------------

def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(RETRY_MAX_SECONDS, RETRY_SECONDS * 2 ** max(0, attempts - 1)))


def submit_due(shop: Shop, *, now: datetime | None = None, limit: int = 20) -> int:
    """Submit the ready orders the lab does not have yet; how many went. Commits each step."""
    now = now or utcnow()
    sent = 0
    with shop.sessions() as session:
        due = session.scalars(select(Order.id).where(
            Order.status == OrderStatus.READY, Order.fulfilment_ref.is_(None),
            or_(Order.fulfilment_next_at.is_(None), Order.fulfilment_next_at <= now))
            .order_by(Order.id).limit(limit)).all()
    for order_id in due:
        sent += _submit_one(shop, order_id, now)
    return sent


def _submit_one(shop: Shop, order_id: int, now: datetime) -> int:
    from sqlalchemy import update

    with shop.sessions() as session:
        # claim: push the next attempt past this one, so a second sender leaves it alone
        claimed = session.execute(update(Order).where(
            Order.id == order_id, Order.fulfilment_ref.is_(None),
            or_(Order.fulfilment_next_at.is_(None), Order.fulfilment_next_at <= now))
            .values(fulfilment_next_at=now + timedelta(seconds=SUBMIT_LEASE_SECONDS))
            .execution_options(synchronize_session=False)).rowcount
        session.commit()
        if not claimed:
            return 0
        order = session.get(Order, order_id, populate_existing=True)
        try:
            job = session.get(Job, order.print_job_id)
            if job is None or not job.result_key:
                raise FulfilmentError("the print file is missing: re-run the print job")
            if order.print_file_key is None:
                order.print_file_key = make_print_file(shop, job)
            url = shop.storage.signed_url(order.print_file_key, expires_seconds=PRINT_URL_SECONDS)
            order.fulfilment_ref = shop.fulfilment.submit(order, print_url=url, email=order.portrait.email)
            order.fulfilment_error, order.fulfilment_next_at = None, now + timedelta(seconds=shop.settings.lab_poll_seconds)
        except Exception as exc:     # the lab, the storage, a bug: kept on the order, tried again later
            order.fulfilment_attempts += 1
            order.fulfilment_error = str(exc)[:MAX_ERROR_CHARS] or type(exc).__name__
            order.fulfilment_next_at = now + _backoff(order.fulfilment_attempts)
            log.warning("order %s: lab submission %d failed: %s", order.number, order.fulfilment_attempts, exc)
            session.commit()
            return 0
        session.commit()
        log.info("order %s submitted to the lab as %s", order.number, order.fulfilment_ref)
        return 1


def poll(shop: Shop, *, now: datetime | None = None, reference: str | None = None) -> int:
    """Ask the lab about the orders it has (or only ``reference``); how many moved on."""
    now = now or utcnow()
    query = select(Order.id).where(Order.fulfilment_ref.is_not(None),
                                   Order.status.in_([OrderStatus.READY, OrderStatus.PRINTED]))
    if reference is None:
        query = query.where(or_(Order.fulfilment_next_at.is_(None), Order.fulfilment_next_at <= now))
    else:
        query = query.where(Order.fulfilment_ref == reference)
    with shop.sessions() as session:
        ids = session.scalars(query.order_by(Order.id)).all()
    return sum(_poll_one(shop, order_id, now) for order_id in ids)


def _poll_one(shop: Shop, order_id: int, now: datetime) -> int:
    from impasto.service.shop.fulfilment import record_shipment
    from impasto.service.core.orders import set_order_status

    with shop.sessions() as session:
        order = session.get(Order, order_id)
        order.fulfilment_next_at = now + timedelta(seconds=shop.settings.lab_poll_seconds)
        try:
            news = shop.fulfilment.status(order.fulfilment_ref)
        except FulfilmentError as exc:
            order.fulfilment_error = str(exc)[:MAX_ERROR_CHARS]
            session.commit()
            return 0
        moved = 0
        if news.cancelled:
            order.fulfilment_error = "the lab cancelled this order: see its dashboard"
        if news.printed and order.status is OrderStatus.READY:
            set_order_status(session=session, order_id=order.id, status=OrderStatus.PRINTED)
            moved = 1
        if news.shipment is not None:
            record_shipment(session=session, order_id=order.id, shipment=news.shipment)
            moved = 1
        session.commit()
        return moved


class LabSender(Periodic):
    """A thread: submits due orders and polls the lab every ``interval_seconds`` (``wake()`` hurries it)."""

    name = "lab"

    def __init__(self, shop: Shop, *, interval_seconds: float = 5.0) -> None:
        super().__init__(interval_seconds=interval_seconds, join_seconds=REQUEST_SECONDS + 5)
        self.shop = shop
        self._nudged: list[str] = []

    def wake(self, reference: str | None = None) -> None:
        if reference:
            self._nudged.append(reference)
        super().wake()

    def run_round(self) -> None:
        submit_due(self.shop)
        while self._nudged:
            poll(self.shop, reference=self._nudged.pop())
        poll(self.shop)
