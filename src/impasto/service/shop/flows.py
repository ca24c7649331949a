"""The shop's flows, shared by the pages and the JSON API: upload, view, order, download.

Every lookup that starts from a customer's URL is scoped by the portrait's unguessable
``public_id``: a job or an order is found only *through* its portrait, so another
customer's job id or order number is a 404, the same answer as one that does not exist.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from impasto.errors import (
    ImpastoError,
    InvalidInput,
    LinkExpired,
    NotFound,
    NotReady,
    TooManyRequests,
    Unavailable,
)
from impasto.service.core import jobs
from impasto.service.core.models import Job, JobKind, JobStatus, Order, OrderStatus, Portrait, utcnow
from impasto.service.core.storage import make_key
from impasto.service.core.untrusted import parse_int

if TYPE_CHECKING:
    from impasto.service.shop.addresses import Address
    from impasto.service.shop.app import Shop
    from impasto.service.shop.payments import PaymentStart
    from impasto.service.shop.uploads import CleanPhoto

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
DOWNLOADABLE = (OrderStatus.READY, OrderStatus.PRINTED, OrderStatus.SHIPPED)
# the page keeps listening: a payment or a print may still arrive
UNSETTLED = (OrderStatus.AWAITING_PAYMENT, OrderStatus.PAID, OrderStatus.ORDERED, OrderStatus.RENDERING)
DUPLICATE_ORDER_SECONDS = 600     # the same order placed again this soon is the first one (a double click)


# --- lookups -----------------------------------------------------------------------------

def find_portrait(session: Session, public_id: str) -> Portrait:
    if not isinstance(public_id, str) or not 16 <= len(public_id) <= 64:
        raise NotFound("No portrait here.")
    portrait = session.scalars(select(Portrait).where(Portrait.public_id == public_id)).one_or_none()
    if portrait is None:
        raise NotFound("No portrait here.")
    return portrait


def find_job(session: Session, portrait: Portrait, job_id: int) -> Job:
    if parse_int(job_id, minimum=1) is None:      # out of the column's range: no such row
        raise NotFound("No such picture.")
    job = session.get(Job, job_id)
    if job is None or job.portrait_id != portrait.id:
        raise NotFound("No such picture.")
    return job


def find_order(session: Session, portrait: Portrait, number: str) -> Order:
    order = session.scalars(select(Order).where(Order.number == number,
                                                Order.portrait_id == portrait.id)).one_or_none()
    if order is None:
        raise NotFound("No such order.")
    return order


# --- upload ------------------------------------------------------------------------------

def check_upload_limits(shop: Shop, *, ip: str, email: str | None = None) -> None:
    """429 when this IP (or this email address) uploaded too often in the last hour."""
    for limiter, key, who in [(shop.upload_limit_ip, ip, "from your network"),
                              (shop.upload_limit_email, email, "for this email address")]:
        if key is not None and not limiter.hit(key.lower()):
            wait = limiter.retry_after_seconds(key.lower())
            raise TooManyRequests(f"Too many portraits {who} in the last hour. Please try again in "
                                  f"{max(1, wait // 60)} minutes.", retry_after_seconds=wait)


def check_customer(shop: Shop, *, email: str, consent: bool) -> str:
    """The normalised email address; 422 without consent, 503 with an empty catalog."""
    from impasto.service.shop.mail import InvalidEmail, validate_email

    try:
        address = validate_email(email)
    except InvalidEmail as exc:
        message = str(exc)
        raise InvalidInput(message if "email" in message else f"Please check the email address: {message}") from None
    if not consent:
        raise InvalidInput("Please agree that we may paint and keep your photo, so we can make your portrait.")
    if not shop.catalog.names():
        raise Unavailable("The shop has no styles to offer yet. Please come back soon.")
    return address


def clean_photo(shop: Shop, data: bytes) -> CleanPhoto:
    from impasto.service.shop.uploads import validate_photo

    return validate_photo(data, max_pixels=shop.settings.max_upload_pixels)


def create_portrait(shop: Shop, *, email: str, photo: CleanPhoto) -> str:
    """Store the clean photo, then the portrait and a preview job per style; its public id.

    The photo goes first: if the rows fail, it is deleted again, so no row ever points at a
    missing file and no file outlives a failed upload.
    """
    key = make_key("portraits", uuid.uuid4().hex, f"photo.{photo.extension}")
    shop.storage.put(key, photo.data, content_type=photo.content_type)
    try:
        with shop.sessions() as session:
            portrait = Portrait(email=email, photo_key=key, consent=True)
            session.add(portrait)
            session.flush()
            previews = [jobs.enqueue(session=session, portrait_id=portrait.id, kind=JobKind.PREVIEW,
                                     style=style, max_attempts=shop.settings.max_attempts)
                        for style in shop.catalog.names()]
            session.commit()
            public_id = portrait.public_id
            cards = tuple((job.id, job.style) for job in previews)
    except BaseException:
        shop.storage.delete(key)
        raise
    if shop.sketches is not None:
        from impasto.service.shop.sketches import SketchRequest

        shop.sketches.submit(SketchRequest(photo=photo.data, jobs=cards))
    shop.dispatcher.notify()
    log.info("portrait %s… uploaded (%dx%d)", public_id[:6], photo.width, photo.height)
    return public_id


# --- the portrait as the page and the API show it ----------------------------------------

def portrait_url(public_id: str) -> str:
    return f"/portraits/{public_id}"


def style_cards(shop: Shop) -> dict[str, tuple[str, str]]:
    """Each style's (title, provenance line)."""
    cards = {}
    for name in shop.catalog.names():
        try:
            style = shop.catalog.get(name)
            cards[name] = (style.title, style.provenance)
        except ImpastoError:          # a style being replaced or broken: show its name
            cards[name] = (name, "")
    return cards


def style_titles(shop: Shop) -> dict[str, str]:
    return {name: title for name, (title, _) in style_cards(shop).items()}


def portrait_view(shop: Shop, session: Session, portrait: Portrait) -> dict[str, Any]:
    """Everything the portrait page shows, as plain JSON values (also the SSE payload)."""
    base = portrait_url(portrait.public_id)
    titles = style_titles(shop)
    rows = session.scalars(select(Job).where(Job.portrait_id == portrait.id).order_by(Job.id)).all()
    previews = [_preview(base, job, titles) for job in rows if job.kind is JobKind.PREVIEW]
    orders = session.scalars(select(Order).where(Order.portrait_id == portrait.id).order_by(Order.id)).all()
    jobs_by_id = {job.id: job for job in rows}
    return {"id": portrait.public_id, "url": base, "photo_url": f"{base}/photo",
            "events_url": f"/api/v1{base}/events", "created_at": portrait.created_at.isoformat(),
            "previews": previews,
            "orders": [order_summary(order, jobs_by_id.get(order.print_job_id)) for order in orders],
            "done": not any(job.status in ACTIVE for job in rows)
                    and all(_settled(order, jobs_by_id.get(order.print_job_id)) for order in orders)}


def _settled(order: Order, print_job: Job | None) -> bool:
    """Nothing more will change on the page: the order is past rendering, or its print failed.

    The worker finishes the print job, then marks the order ready in a second commit: a view
    read between the two has no active job and no download link yet, and must not end a
    live stream (the confirmation page would never show its download button)."""
    if order.status not in UNSETTLED:
        return True
    return print_job is not None and print_job.status in (JobStatus.FAILED, JobStatus.CANCELLED)


def _preview(base: str, job: Job, titles: dict[str, str]) -> dict[str, Any]:
    image, sketch = None, False
    if job.status is JobStatus.DONE and job.result_key:
        image = f"{base}/jobs/{job.id}/image?v=done{job.attempts}"
    elif job.status is JobStatus.RUNNING and job.iteration > 0:
        image = f"{base}/jobs/{job.id}/image?v={job.attempts}-{job.iteration}"
    elif job.sketch_key and job.status in ACTIVE:
        image, sketch = f"{base}/jobs/{job.id}/image?v=sketch", True
    return {"id": job.id, "style": job.style, "title": titles.get(job.style, job.style),
            "status": job.status.value, "progress": round(job.progress, 4), "iteration": job.iteration,
            "total": job.total, "image_url": image, "sketch": sketch, "eta_seconds": _eta_seconds(job),
            "order_url": f"{base}/order?preview={job.id}" if job.status is JobStatus.DONE else None}


ETA_MIN_PROGRESS = 0.05    # below this the rate so far says too little to promise a time


def _eta_seconds(job: Job) -> int | None:
    """Seconds left at the job's own pace so far (progress counts pixel-work, not iterations)."""
    if job.status is not JobStatus.RUNNING or job.started_at is None or job.progress < ETA_MIN_PROGRESS:
        return None
    elapsed = (utcnow() - job.started_at).total_seconds()
    return max(1, round(elapsed * (1 - job.progress) / job.progress))


def order_summary(order: Order, print_job: Job | None) -> dict[str, Any]:
    base = portrait_url(order.portrait.public_id)
    ready = order.status in DOWNLOADABLE
    return {"number": order.number, "status": order.status.value, "print_size": order.print_size,
            "url": f"{base}/orders/{order.number}",
            "print_progress": round(print_job.progress, 4) if print_job else 0.0,
            "download_url": f"{base}/orders/{order.number}/download" if ready else None}


# --- ordering ----------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderForm:
    preview_id: int
    print_size: str
    address: dict[str, Any]           # raw fields: name, line1, line2, city, region, postal_code, country, phone
    payment_method: str = ""          # empty: the shop's configured provider


@dataclass(frozen=True)
class CheckedOrder:
    preview_id: int
    print_size: str
    address: Address
    payment_method: str


def check_order_form(shop: Shop, form: OrderForm) -> CheckedOrder:
    """The form with its text tidied; 422 naming the first field that is not acceptable."""
    from impasto.service.shop.addresses import check_address
    from impasto.service.shop.payments import offered

    sizes = {option.size for option in shop.settings.prints}
    if form.print_size not in sizes:
        raise InvalidInput(f"Please choose one of the print sizes: {', '.join(sorted(sizes))}.")
    address = check_address(form.address if isinstance(form.address, dict) else {})
    choices = offered(shop.payments)
    method = form.payment_method or next(iter(choices))
    if method not in choices:
        raise InvalidInput(f"Please choose a way to pay: {', '.join(choices)}.")
    return CheckedOrder(form.preview_id, form.print_size, address, method)


def place_order(shop: Shop, session: Session, portrait: Portrait, form: OrderForm) -> tuple[Order, PaymentStart]:
    """An order, committed, and its payment's start.

    Pay on invoice: the order is ``ordered`` and its print job (continuing the chosen
    preview) is queued at once. A hosted checkout: the order is ``awaiting_payment`` and
    nothing renders until the provider's webhook confirms the payment."""
    checked = check_order_form(shop, form)
    preview = find_job(session, portrait, checked.preview_id)
    if preview.kind is not JobKind.PREVIEW:
        raise NotFound("No such preview.")
    if preview.status is not JobStatus.DONE:
        raise NotReady("That preview is not finished yet: please order once it is painted.")
    provider = shop.payments[checked.payment_method]
    earlier = _same_recent_order(session, portrait, checked)
    if earlier is not None:
        return earlier, _restart(provider, earlier)
    price = {option.size: option.price_cents for option in shop.settings.prints}[checked.print_size]
    order = Order(portrait_id=portrait.id, preview_job_id=preview.id, print_size=checked.print_size,
                  price_cents=price, currency=shop.settings.currency, payment_method=provider.name,
                  status=OrderStatus.AWAITING_PAYMENT if provider.hosted else OrderStatus.ORDERED,
                  **checked.address.columns())
    session.add(order)
    session.flush()
    if not provider.hosted:
        order.print_job_id = enqueue_print(shop, session, order).id
    started = provider.start(order, email=portrait.email, order_url=order_page_url(shop, order))
    order.payment_ref, order.payment_url = started.reference, started.redirect_url
    session.commit()
    if not provider.hosted:
        shop.dispatcher.notify()
    log.info("order %s placed: %s of job %s (%s)", order.number, order.print_size, preview.id, provider.name)
    return order, started


def _restart(provider, order: Order) -> PaymentStart:
    """The answer to the same order placed again: back to its open checkout, if it has one."""
    from impasto.service.shop.payments import PaymentStart

    redirect = order.payment_url if order.status is OrderStatus.AWAITING_PAYMENT else None
    return PaymentStart(provider.describe(order), redirect_url=redirect, reference=order.payment_ref)


def enqueue_print(shop: Shop, session: Session, order: Order) -> Job:
    """The order's print job: the chosen preview continued at the print's size. Flushes."""
    preview = session.get(Job, order.preview_job_id) if order.preview_job_id else None
    if preview is None:
        raise NotFound(f"Order {order.number}: its preview is gone, so its print cannot be painted.")
    return jobs.enqueue(session=session, portrait_id=order.portrait_id, kind=JobKind.PRINT, style=preview.style,
                        params={"print_size": render_size(order.print_size, shop.settings.print_bleed_mm)},
                        parent_job_id=preview.id, max_attempts=shop.settings.max_attempts)


def render_size(print_size: str, bleed_mm: float) -> str:
    """The size a print is painted at: the ordered one, grown by the bleed on every edge.

    The bleed is rendered (the photo is cropped to the larger sheet's shape and the whole
    sheet painted at the print dpi), never the finished picture stretched to cover it."""
    if not bleed_mm:
        return print_size
    from impasto.engine.prints import parse_print_size

    short, long = parse_print_size(print_size)
    grow = 2 * bleed_mm / 25.4
    return f"{short + grow:.4f}x{long + grow:.4f}in"


def order_page_url(shop: Shop, order: Order) -> str:
    """The order's page, absolute (a checkout's way back, the emails' links)."""
    return f"{shop.settings.public_url.rstrip('/')}{portrait_url(order.portrait.public_id)}/orders/{order.number}"


def queue_receipt(shop: Shop, session: Session, order: Order) -> None:
    """The customer's receipt, once per order (the outbox sends it). Flushes."""
    from impasto.service.core import outbox
    from impasto.service.shop.payments import format_money

    outbox.queue_email(session=session, dedupe_key=f"payment_received:{order.number}", to=order.portrait.email,
                       template="payment_received",
                       context={"order": order.number, "name": order.shipping_name, "size": order.print_size,
                                "amount": format_money(order.price_cents, order.currency),
                                "order_url": order_page_url(shop, order)})


def _same_recent_order(session: Session, portrait: Portrait, form: CheckedOrder) -> Order | None:
    since = utcnow() - timedelta(seconds=DUPLICATE_ORDER_SECONDS)
    same_address = [getattr(Order, column) == value for column, value in form.address.columns().items()]
    return session.scalars(select(Order).where(
        Order.portrait_id == portrait.id, Order.preview_job_id == form.preview_id,
        Order.print_size == form.print_size, *same_address, Order.created_at >= since,
        Order.payment_method == form.payment_method,
        Order.status.not_in([OrderStatus.CANCELLED, OrderStatus.EXPIRED]))).first()


def order_view(shop: Shop, session: Session, order: Order) -> dict[str, Any]:
    print_job = session.get(Job, order.print_job_id) if order.print_job_id else None
    from impasto.service.shop.addresses import Address

    provider = shop.payments.get(order.payment_method)
    summary = order_summary(order, print_job)
    awaiting = order.status is OrderStatus.AWAITING_PAYMENT
    return {**summary, "price_cents": order.price_cents, "currency": order.currency,
            "shipping_address": Address.from_order(order).as_dict(),
            "payment_method": order.payment_method,
            "payment_instructions": provider.describe(order) if provider else None,
            "payment_url": order.payment_url if awaiting else None,
            "refunded": order.refund_ref is not None,
            "carrier": order.carrier, "tracking_number": order.tracking_number,
            "tracking_url": order.tracking_url,
            "created_at": order.created_at.isoformat(),
            "ready_at": order.ready_at.isoformat() if order.ready_at else None,
            "preview_image_url": (f"{portrait_url(order.portrait.public_id)}/jobs/{order.preview_job_id}/image"
                                  if order.preview_job_id else None),
            "download_expires_at": _link_expiry(shop, order)}


def _link_expiry(shop: Shop, order: Order) -> str | None:
    if order.ready_at is None or order.status not in DOWNLOADABLE:
        return None
    return (order.ready_at + timedelta(seconds=shop.settings.download_link_seconds)).isoformat()


# --- signed URLs -------------------------------------------------------------------------

def download_url(shop: Shop, session: Session, portrait: Portrait, number: str) -> str:
    """A fresh signed URL of the order's print file; 409 before it is ready, 410 once expired."""
    order = find_order(session, portrait, number)
    if order.status is OrderStatus.CANCELLED:
        raise LinkExpired("This order was cancelled, so its download is no longer available.")
    job = session.get(Job, order.print_job_id) if order.print_job_id else None
    if order.status not in DOWNLOADABLE or job is None or job.status is not JobStatus.DONE \
            or not job.result_key:
        raise NotReady("Your print file is still being painted. We will email you when it is ready.")
    if order.ready_at and utcnow() > order.ready_at + timedelta(seconds=shop.settings.download_link_seconds):
        raise LinkExpired(f"This download link has expired. Please reply to your email with order "
                          f"number {order.number} and we will send a new one.")
    filename = f"impasto-{order.number}-{order.print_size}.png"
    return shop.storage.signed_url(job.result_key, expires_seconds=shop.settings.signed_url_seconds,
                                   filename=filename)


def image_url(shop: Shop, session: Session, portrait: Portrait, job_id: int) -> str:
    """A short-lived signed URL of a preview: its result, or while it renders, its latest snapshot.

    Previews only: a print file is reached through ``download_url``, which checks the
    order's status (cancelled) and the link's age; job ids are sequential, so a print job's
    id is easy to guess from its preview's."""
    from impasto.service.core import render_job as worker

    job = find_job(session, portrait, job_id)
    if job.kind is not JobKind.PREVIEW:
        raise NotFound("No such picture.")
    key = job.result_key if job.status is JobStatus.DONE else None
    if key is None and job.status is JobStatus.RUNNING and shop.storage.exists(worker.snapshot_key(job.id)):
        key = worker.snapshot_key(job.id)
    if key is None and job.status in ACTIVE and job.sketch_key:    # the feed-forward look, until then
        key = job.sketch_key
    if key is None:
        raise NotFound("This picture is not painted yet.")
    return shop.storage.signed_url(key, expires_seconds=shop.settings.signed_url_seconds)


def photo_url(shop: Shop, portrait: Portrait) -> str:
    return shop.storage.signed_url(portrait.photo_key, expires_seconds=shop.settings.signed_url_seconds)
