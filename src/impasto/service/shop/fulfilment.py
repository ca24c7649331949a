"""Getting the print to the customer, behind a ``FulfilmentProvider``; and the admin's order steps.

``manual`` (the default): the admin downloads the print file from the order's packing
slip, prints it, marks it printed, then shipped with the carrier and tracking number; the
customer gets a "shipped" email with the tracking link.

``http`` (``lab.py``): a print lab's order API, modelled on Prodigi's v4 ``Orders``. A ready
order is submitted by the shop's lab thread (never inside a request), with its print file's
signed URL, size, copies and address; failures are retried with backoff and shown in the
admin, the order staying ``ready`` meanwhile, so none is lost. The lab's status, polled or
nudged by its callback, moves the order to printed, then shipped (the same email).

The admin's steps live here too, because each one may reach a provider: cancelling a paid
order refunds it (``PaymentProvider.refund``) in the same transaction that cancels it, so an
order is never cancelled without its refund, nor refunded without being cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from impasto.errors import InvalidInput
from impasto.service.core import jobs
from impasto.service.core.models import Order, OrderStatus, utcnow
from impasto.service.core.orders import set_order_status

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from impasto.service.shop.app import Shop

log = logging.getLogger(__name__)

MAX_CARRIER_CHARS = 64
MAX_TRACKING_CHARS = 128


@dataclass(frozen=True)
class Shipment:
    carrier: str
    tracking_number: str
    tracking_url: str = ""


@dataclass(frozen=True)
class LabStatus:
    """Where the lab has got to with an order."""

    printed: bool = False
    shipment: Shipment | None = None
    cancelled: bool = False


@runtime_checkable
class FulfilmentProvider(Protocol):
    name: str
    manual: bool          # the admin marks printed and shipped by hand

    def submit(self, order: Order, *, print_url: str, email: str) -> str | None:
        """The order's print file is ready: hand it on; the lab's order id (None: nothing to hand on)."""

    def status(self, reference: str) -> LabStatus:
        """The lab's news of an order it was handed."""


class ManualFulfilment:
    """The admin prints and ships by hand: nothing to submit anywhere."""

    name = "manual"
    manual = True

    def submit(self, order: Order, *, print_url: str, email: str) -> str | None:
        return None

    def status(self, reference: str) -> LabStatus:
        return LabStatus()


def make_fulfilment(settings) -> FulfilmentProvider:
    if settings.fulfilment_provider == "http":
        from impasto.errors import ConfigError
        from impasto.service.shop.lab import HttpLab

        if not settings.lab_api_base or not settings.lab_api_key.get_secret_value():
            raise ConfigError("configuration: IMPASTO_FULFILMENT_PROVIDER=http needs IMPASTO_LAB_API_BASE "
                              "and IMPASTO_LAB_API_KEY")

        return HttpLab(api_base=settings.lab_api_base, api_key=settings.lab_api_key.get_secret_value(),
                       skus=settings.lab_skus, shipping_method=settings.lab_shipping_method)
    return ManualFulfilment()


# --- the admin's steps -------------------------------------------------------------------

def cancel_order(shop: Shop, *, session: Session, order_id: int) -> Order:
    """Cancel an order: its open checkout is closed, its payment refunded, its print job stopped.

    Commits. The status changes first (refusing a shipped order before any money moves),
    then the provider is called; if the refund fails, the whole cancel is rolled back.
    """
    before = session.get(Order, order_id)
    was_awaiting = before is not None and before.status is OrderStatus.AWAITING_PAYMENT
    order = set_order_status(session=session, order_id=order_id, status=OrderStatus.CANCELLED)
    provider = shop.payments.get(order.payment_method)
    try:
        if provider is not None and was_awaiting:
            provider.close(order)
        if provider is not None and order.payment_intent and order.refund_ref is None:
            order.refund_ref, order.refunded_at = provider.refund(order), utcnow()
        if order.print_job_id:
            jobs.cancel(session=session, job_id=order.print_job_id)
    except BaseException:
        session.rollback()
        raise
    session.commit()
    log.info("order %s cancelled%s", order.number, f", refund {order.refund_ref}" if order.refund_ref else "")
    return order


def check_shipment(form: dict[str, object], *, template: str = "") -> Shipment:
    carrier = " ".join(str(form.get("carrier") or "").split())
    tracking = " ".join(str(form.get("tracking_number") or "").split())
    url = str(form.get("tracking_url") or "").strip()
    if not carrier or len(carrier) > MAX_CARRIER_CHARS:
        raise InvalidInput(f"Please enter the carrier (at most {MAX_CARRIER_CHARS} characters).")
    if not tracking or len(tracking) > MAX_TRACKING_CHARS:
        raise InvalidInput(f"Please enter the tracking number (at most {MAX_TRACKING_CHARS} characters).")
    if url and not url.startswith("https://"):
        raise InvalidInput("The tracking link must be an https:// address.")
    if not url and template:
        from urllib.parse import quote

        url = template.replace("{tracking}", quote(tracking, safe=""))
    return Shipment(carrier, tracking, url)


def ship_order(shop: Shop, *, session: Session, order_id: int, shipment: Shipment) -> Order:
    """Printed → shipped with its carrier and tracking, and the customer's "shipped" email. Commits."""
    order = record_shipment(session=session, order_id=order_id, shipment=shipment, from_ready=False)
    session.commit()
    return order


def record_shipment(*, session: Session, order_id: int, shipment: Shipment, from_ready: bool = True) -> Order:
    """The order shipped (through printed, when ``from_ready`` and it is still ready) and its
    "shipped" email queued once. Flushes; the caller commits."""
    from impasto.service.core import outbox

    if from_ready and session.get(Order, order_id).status is OrderStatus.READY:
        set_order_status(session=session, order_id=order_id, status=OrderStatus.PRINTED)
    order = set_order_status(session=session, order_id=order_id, status=OrderStatus.SHIPPED,
                             carrier=shipment.carrier, tracking_number=shipment.tracking_number,
                             tracking_url=shipment.tracking_url or None)
    outbox.queue_email(session=session, dedupe_key=f"shipped:{order.number}", to=order.portrait.email,
                       template="shipped",
                       context={"order": order.number, "name": order.shipping_name, "size": order.print_size,
                                "carrier": shipment.carrier, "tracking_number": shipment.tracking_number,
                                "tracking_url": shipment.tracking_url})
    return order


def mark_printed(*, session: Session, order_id: int) -> Order:
    order = set_order_status(session=session, order_id=order_id, status=OrderStatus.PRINTED)
    session.commit()
    return order

