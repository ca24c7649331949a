"""An order's life: ordered → rendering → ready → printed → shipped, or cancelled.

Paid online (a hosted checkout), it starts earlier: awaiting_payment → paid → rendering …,
or awaiting_payment → expired when the checkout runs out. Nothing renders before ``paid``:
the print job is only enqueued then (``service/shop/payments.py``). Pay on invoice starts
at ``ordered`` and renders at once, as before.

``set_order_status`` is one conditional UPDATE (compare-and-set on ``status``), so two
admins or a worker and an admin cannot both move the same order. It flushes; the caller
commits (see ``jobs`` for who commits).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from impasto.errors import OrderStatusError
from impasto.service.core.models import Order, OrderStatus, utcnow

log = logging.getLogger(__name__)

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.AWAITING_PAYMENT: frozenset({OrderStatus.PAID, OrderStatus.EXPIRED, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.RENDERING, OrderStatus.CANCELLED}),
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.ORDERED: frozenset({OrderStatus.RENDERING, OrderStatus.CANCELLED}),
    OrderStatus.RENDERING: frozenset({OrderStatus.READY, OrderStatus.CANCELLED}),
    # READY → RENDERING: the print is re-rendered (a re-run) before it goes to the printer
    OrderStatus.READY: frozenset({OrderStatus.PRINTED, OrderStatus.RENDERING, OrderStatus.CANCELLED}),
    OrderStatus.PRINTED: frozenset({OrderStatus.SHIPPED}),
    OrderStatus.SHIPPED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
# the statuses from which the print job's end moves the order on to rendering, then ready
AWAITING_RENDER = frozenset({OrderStatus.ORDERED, OrderStatus.PAID})
_ORDER_TIMESTAMPS = {OrderStatus.PAID: "paid_at", OrderStatus.EXPIRED: "expired_at", OrderStatus.READY: "ready_at",
                     OrderStatus.PRINTED: "printed_at", OrderStatus.SHIPPED: "shipped_at",
                     OrderStatus.CANCELLED: "cancelled_at"}


def set_order_status(*, session: Session, order_id: int, status: OrderStatus | str,
                     now: datetime | None = None, **fields: object) -> Order:
    """Move an order along ordered → rendering → ready → printed → shipped (or cancelled).

    Setting the status it already has is a no-op (a re-run print finishing twice); any
    other step outside ``ORDER_TRANSITIONS`` is an OrderStatusError. ``fields`` are other
    columns set in the same UPDATE (a payment intent, a tracking number). Flushes; the caller commits.
    """
    status, now = OrderStatus(status), now or utcnow()
    order = session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise OrderStatusError(f"no order {order_id}")
    current = order.status
    if status is current:
        return order
    if status not in ORDER_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in ORDER_TRANSITIONS[current])) or "none (final)"
        raise OrderStatusError(f"order {order.number}: cannot go from {current.value} to {status.value} "
                               f"(allowed from {current.value}: {allowed})")
    values = {**fields, "status": status, "updated_at": now}
    if status in _ORDER_TIMESTAMPS:
        values[_ORDER_TIMESTAMPS[status]] = now
    result = session.execute(update(Order).where(Order.id == order_id, Order.status == current)
                             .values(**values).execution_options(synchronize_session=False))
    if result.rowcount == 0:
        raise OrderStatusError(f"order {order.number} changed status meanwhile; try again")
    session.refresh(order)
    log.info("order %s: %s → %s", order.number, current.value, status.value)
    return order
