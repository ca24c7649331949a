"""How an order is paid: a small provider interface, with "pay on invoice" as the default.

The shop never sees or stores card data. A provider gets the order when it is placed and
answers with what the customer should see next: instructions (an invoice comes with the
print) or a URL to a hosted payment page (a card provider's checkout, where the card
details go straight to the provider). A hosted provider would confirm the payment later
through its own webhook route, which would call ``orders.set_order_status`` as the admin does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from impasto.service.core.models import Order


@dataclass(frozen=True)
class PaymentStart:
    """What happens after the order: a message on the confirmation page, or a redirect."""

    instructions: str
    redirect_url: str | None = None


@runtime_checkable
class PaymentProvider(Protocol):
    name: str            # stored in ``Order.payment_method`` (≤ 16 characters)
    title: str           # shown on the order form

    def start(self, order: Order) -> PaymentStart:
        """The order was placed (not yet committed): begin its payment."""


class InvoicePayment:
    """Pay on invoice: the invoice travels with the print; nothing to do online."""

    name = "invoice"
    title = "Pay on invoice — the invoice comes with your print (14 days)"

    def start(self, order: Order) -> PaymentStart:
        amount = f"{order.price_cents / 100:.2f} {order.currency}"
        return PaymentStart(f"You pay {amount} on invoice: it comes with your print, "
                            "payable within 14 days of delivery. No card details are needed.")


def default_providers() -> dict[str, PaymentProvider]:
    provider = InvoicePayment()
    return {provider.name: provider}
