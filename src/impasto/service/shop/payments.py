"""How an order is paid: a small provider interface, "pay on invoice" and Stripe Checkout.

The shop never sees or stores card data. A provider gets the order when it is placed and
answers with what the customer should see next: instructions (an invoice comes with the
print) or the URL of a hosted payment page, where the card details go straight to the
provider. A hosted provider's order waits in ``awaiting_payment`` and nothing renders
until its webhook says the money is there (``handle_stripe_webhook``): then the order is
``paid``, its print job is queued and the customer gets a receipt.

Amounts are the order's ``price_cents`` (the configured price of the size, in the
currency's minor units), set by the shop when the order is placed; nothing the client
sends is ever an amount. See docs/payments.md for setting Stripe up.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from impasto.errors import ConfigError, PaymentError, WebhookRejected
from impasto.service.core.models import Order, OrderStatus

if TYPE_CHECKING:
    from impasto.config import Settings

log = logging.getLogger(__name__)

STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"
STRIPE_NETWORK_RETRIES = 2          # the stripe package retries with the same idempotency key
PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
EXPIRED_EVENTS = frozenset({"checkout.session.expired", "checkout.session.async_payment_failed"})


SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def format_money(minor_units: int, currency: str) -> str:
    """``€9.00``, ``12.50 CHF``: an amount in the currency's minor units, for emails."""
    amount = f"{minor_units / 100:,.2f}"
    symbol = SYMBOLS.get(currency.upper())
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


@dataclass(frozen=True)
class PaymentStart:
    """What happens after the order: a message on the confirmation page, or a redirect."""

    instructions: str
    redirect_url: str | None = None
    reference: str | None = None      # the provider's id of this payment (a checkout session)


@runtime_checkable
class PaymentProvider(Protocol):
    name: str                    # stored in ``Order.payment_method`` (≤ 16 characters)
    title: str                   # shown on the order form
    hosted: bool                 # the customer pays on the provider's page: the order awaits payment
    form_origins: tuple[str, ...]   # where the order form may send the browser (CSP form-action)

    def start(self, order: Order, *, email: str, order_url: str) -> PaymentStart:
        """The order was placed (flushed, not yet committed): begin its payment."""

    def describe(self, order: Order) -> str:
        """One line on the order page about the payment, in the order's current status."""

    def close(self, order: Order) -> None:
        """The order was cancelled before it was paid: no payment may start any more."""

    def refund(self, order: Order) -> str | None:
        """Pay the order's money back; the refund's reference (None: nothing was taken online)."""


class InvoicePayment:
    """Pay on invoice: the invoice travels with the print; nothing to do online."""

    name = "invoice"
    title = "Pay on invoice — the invoice comes with your print (14 days)"
    hosted = False
    form_origins: tuple[str, ...] = ()

    def start(self, order: Order, *, email: str = "", order_url: str = "") -> PaymentStart:
        return PaymentStart(self.describe(order))

    def describe(self, order: Order) -> str:
        amount = f"{order.price_cents / 100:.2f} {order.currency}"
        return (f"You pay {amount} on invoice: it comes with your print, "
                "payable within 14 days of delivery. No card details are needed.")

    def close(self, order: Order) -> None:
        pass

    def refund(self, order: Order) -> str | None:
        return None


class StripeCheckout:
    """Stripe Checkout: one Checkout Session per order, paid on Stripe's page.

    The ``stripe`` package talks to ``api_base`` (empty: Stripe's own API). Each call carries
    an idempotency key made from the order number, so a retried request (the package's own
    retries, or a double click) never makes a second session or a second refund.
    """

    name = "stripe"
    title = "Card — pay securely on Stripe's checkout page"
    hosted = True

    def __init__(self, *, secret_key: str, webhook_secret: str, api_base: str = "",
                 expiry_seconds: int = 24 * 3600, tolerance_seconds: int = 300) -> None:
        self.secret_key, self.webhook_secret, self.api_base = secret_key, webhook_secret, api_base.rstrip("/")
        self.expiry_seconds, self.tolerance_seconds = expiry_seconds, tolerance_seconds
        self._client = None
        if api_base:      # a test's fake, or a proxy: its checkout pages live there too
            parts = urllib.parse.urlsplit(api_base)
            self.form_origins: tuple[str, ...] = (f"{parts.scheme}://{parts.netloc}",)
        else:
            self.form_origins = (STRIPE_CHECKOUT_ORIGIN,)

    def client(self):
        if self._client is None:
            import stripe

            base = {"api": self.api_base} if self.api_base else None
            self._client = stripe.StripeClient(self.secret_key, base_addresses=base,
                                               max_network_retries=STRIPE_NETWORK_RETRIES)
        return self._client

    def start(self, order: Order, *, email: str, order_url: str) -> PaymentStart:
        params = {
            "mode": "payment", "client_reference_id": order.number, "customer_email": email,
            "line_items": [{"quantity": 1, "price_data": {
                "currency": order.currency.lower(), "unit_amount": order.price_cents,
                "product_data": {"name": f"Painted portrait print, {order.print_size}"}}}],
            "success_url": f"{order_url}?paid=1", "cancel_url": order_url,
            "metadata": {"order": order.number},
            "payment_intent_data": {"metadata": {"order": order.number}},
            "expires_at": int(time.time()) + self.expiry_seconds,
        }
        session = self._call("create the checkout", self.client().v1.checkout.sessions.create, params,
                             {"idempotency_key": f"impasto-checkout-{order.number}"})
        log.info("order %s: checkout session %s", order.number, session.id)
        return PaymentStart(self.describe(order), redirect_url=session.url, reference=session.id)

    def describe(self, order: Order) -> str:
        if order.refund_ref:
            return "Refunded to your card."
        if order.status is OrderStatus.AWAITING_PAYMENT:
            return "Waiting for your card payment on Stripe's checkout page."
        if order.status is OrderStatus.EXPIRED:
            return "The checkout expired unpaid: please order again when you are ready."
        if order.payment_intent:
            return f"Paid by card ({order.price_cents / 100:.2f} {order.currency})."
        return "Card payment through Stripe."

    def close(self, order: Order) -> None:
        """Expire the open checkout; a session Stripe no longer holds open is left as it is."""
        import stripe

        if not order.payment_ref:
            return
        try:
            self.client().v1.checkout.sessions.expire(order.payment_ref)
        except stripe.StripeError as exc:   # completed meanwhile: its webhook refunds a cancelled order
            log.warning("order %s: could not expire checkout %s: %s", order.number, order.payment_ref, exc)

    def refund(self, order: Order) -> str | None:
        if not order.payment_intent:
            return None
        refund = self._call("refund the payment", self.client().v1.refunds.create,
                            {"payment_intent": order.payment_intent, "metadata": {"order": order.number}},
                            {"idempotency_key": f"impasto-refund-{order.number}"})
        log.info("order %s: refund %s (%s)", order.number, refund.id, refund.status)
        return refund.id

    def verify(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event in a webhook body, once its ``Stripe-Signature`` is checked (the package's check)."""
        import json

        import stripe

        if not self.webhook_secret:
            raise WebhookRejected("No webhook secret is configured (IMPASTO_STRIPE_WEBHOOK_SECRET).")
        try:
            stripe.WebhookSignature.verify_header(payload, signature, self.webhook_secret,
                                                  self.tolerance_seconds)
            event = json.loads(payload)
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected(f"Bad signature: {exc}") from None
        except ValueError:    # not JSON, not UTF-8
            raise WebhookRejected("The body is not a JSON event.") from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) \
                or not isinstance(event.get("type"), str):
            raise WebhookRejected("The body is not an event.")
        return event

    def _call(self, what: str, method, params: dict, options: dict):
        import stripe

        try:
            return method(params, options)
        except stripe.StripeError as exc:
            log.warning("stripe: could not %s: %s", what, exc)
            raise PaymentError(f"The payment service could not {what} just now. "
                               "Please try again in a few minutes.") from None


def default_providers(settings: Settings | None = None) -> dict[str, PaymentProvider]:
    """The providers on offer: invoice by default, Stripe Checkout with ``IMPASTO_PAYMENT_PROVIDER=stripe``.

    Orders already placed with another provider keep theirs (``shop.payments`` is looked up
    by ``Order.payment_method``), so the invoice provider stays known in both cases.
    """
    invoice = InvoicePayment()
    if settings is None or settings.payment_provider == "invoice":
        return {invoice.name: invoice}
    missing = [name for name, value in [("IMPASTO_STRIPE_SECRET_KEY", settings.stripe_secret_key),
                                        ("IMPASTO_STRIPE_WEBHOOK_SECRET", settings.stripe_webhook_secret)]
               if not value.get_secret_value()]
    if missing:
        raise ConfigError(f"configuration: IMPASTO_PAYMENT_PROVIDER=stripe needs {' and '.join(missing)}")
    stripe = StripeCheckout(secret_key=settings.stripe_secret_key.get_secret_value(),
                            webhook_secret=settings.stripe_webhook_secret.get_secret_value(),
                            api_base=settings.stripe_api_base,
                            expiry_seconds=settings.checkout_expiry_seconds,
                            tolerance_seconds=settings.stripe_webhook_tolerance_seconds)
    return {stripe.name: stripe, invoice.name: invoice}


def offered(payments: dict[str, PaymentProvider]) -> dict[str, PaymentProvider]:
    """The providers a customer may choose for a new order: the configured one alone."""
    first = next(iter(payments))
    return {first: payments[first]}


# --- webhooks ----------------------------------------------------------------------------

def handle_stripe_webhook(shop, *, payload: bytes, signature: str | None) -> str:
    """Verify and apply one Stripe event; what was done, for the log and the answer.

    The event id is recorded in the same transaction as the change it makes: a replayed
    event (Stripe delivers at least once) finds its row and changes nothing, and a failure
    midway rolls both back, so Stripe's retry applies it again.
    """
    provider = shop.payments.get(StripeCheckout.name)
    if not isinstance(provider, StripeCheckout):
        raise WebhookRejected("Stripe payments are not enabled (IMPASTO_PAYMENT_PROVIDER).")
    event = provider.verify(payload, signature)
    checkout = (event.get("data") or {}).get("object") or {}
    number = checkout.get("client_reference_id") if isinstance(checkout, dict) else None
    number = number if isinstance(number, str) and len(number) <= 16 else None
    with shop.sessions() as session:
        if not _record_event(session, event_id=event["id"], type_=event["type"], order_number=number):
            log.info("stripe event %s (%s) already handled", event["id"], event["type"])
            return "duplicate"
        outcome = "ignored"
        order = _order_of(session, number, checkout) if number else None
        if order is not None and event["type"] in PAID_EVENTS:
            outcome = _paid(shop, session, provider, order, checkout)
        elif order is not None and event["type"] in EXPIRED_EVENTS:
            outcome = _expired(session, order)
        session.commit()
    log.info("stripe event %s (%s, order %s): %s", event["id"], event["type"], number, outcome)
    if outcome == "paid":
        shop.dispatcher.notify()
    return outcome


def _record_event(session, *, event_id: str, type_: str, order_number: str | None) -> bool:
    """Insert the event's row once (``ON CONFLICT DO NOTHING``); True when it is new."""
    from sqlalchemy.dialects import postgresql, sqlite

    from impasto.service.core.models import PaymentEvent

    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (insert(PaymentEvent).values(provider=StripeCheckout.name, event_id=event_id[:255],
                                             type=type_[:100], order_number=order_number)
                 .on_conflict_do_nothing(index_elements=["event_id"]).returning(PaymentEvent.id))
    return session.execute(statement).scalar_one_or_none() is not None


def _order_of(session, number: str, checkout: dict) -> Order | None:
    """The order the checkout session belongs to: its number and our session id must both match."""
    from sqlalchemy import select

    order = session.scalars(select(Order).where(Order.number == number)).one_or_none()
    if order is None or order.payment_method != StripeCheckout.name or order.payment_ref != checkout.get("id"):
        log.warning("stripe: checkout %s names order %s, which is not one of its orders",
                    checkout.get("id"), number)
        return None
    return order


def _paid(shop, session, provider: StripeCheckout, order: Order, checkout: dict) -> str:
    from impasto.service.core.orders import set_order_status
    from impasto.service.shop import flows

    if checkout.get("payment_status") not in ("paid", "no_payment_required"):
        return "not paid yet"          # a delayed method: async_payment_succeeded follows
    if checkout.get("amount_total") != order.price_cents or \
            str(checkout.get("currency", "")).upper() != order.currency.upper():
        log.error("stripe: order %s paid %s %s, expected %s %s: left awaiting payment", order.number,
                  checkout.get("amount_total"), checkout.get("currency"), order.price_cents, order.currency)
        return "amount mismatch"
    intent = checkout.get("payment_intent") if isinstance(checkout.get("payment_intent"), str) else None
    if order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        # paid while (or after) the admin cancelled it: the money goes straight back
        order.payment_intent = intent
        order.refund_ref, order.refunded_at = provider.refund(order), _now()
        log.warning("order %s was paid after it was %s: refunded", order.number, order.status.value)
        return "refunded"
    if order.status is not OrderStatus.AWAITING_PAYMENT:
        return "already paid"
    job = flows.enqueue_print(shop, session, order)
    set_order_status(session=session, order_id=order.id, status=OrderStatus.PAID, payment_intent=intent,
                     print_job_id=job.id)
    flows.queue_receipt(shop, session, order)
    return "paid"


def _expired(session, order: Order) -> str:
    from impasto.service.core.orders import set_order_status

    if order.status is not OrderStatus.AWAITING_PAYMENT:
        return f"already {order.status.value}"
    set_order_status(session=session, order_id=order.id, status=OrderStatus.EXPIRED)
    return "expired"


def _now():
    from impasto.service.core.models import utcnow

    return utcnow()
