"""An order's status machine, every transition: the allowed ones move it (and stamp their
time), every other one is refused and leaves the row as it was. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from impasto.errors import OrderStatusError
from impasto.service.core.models import Order, OrderStatus
from impasto.service.core.orders import ORDER_TRANSITIONS, set_order_status
from support.db import add_order, add_portrait

STAMPS = {OrderStatus.PAID: "paid_at", OrderStatus.EXPIRED: "expired_at", OrderStatus.READY: "ready_at",
          OrderStatus.PRINTED: "printed_at", OrderStatus.SHIPPED: "shipped_at",
          OrderStatus.CANCELLED: "cancelled_at"}


def test_the_machine_names_every_status_and_paid_online_orders_render_only_after_paying():
    assert set(ORDER_TRANSITIONS) == set(OrderStatus)
    assert ORDER_TRANSITIONS[OrderStatus.AWAITING_PAYMENT] == {OrderStatus.PAID, OrderStatus.EXPIRED,
                                                               OrderStatus.CANCELLED}
    finals = {status for status, targets in ORDER_TRANSITIONS.items() if not targets}
    assert finals == {OrderStatus.SHIPPED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}


@pytest.mark.parametrize("start", list(OrderStatus))
def test_every_transition_from(sessions, start):
    with sessions() as session:
        portrait = add_portrait(session)
        for target in OrderStatus:
            order = add_order(session, portrait, status=start)
            if target is start:
                assert set_order_status(session=session, order_id=order.id, status=target).status is start
            elif target in ORDER_TRANSITIONS[start]:
                moved = set_order_status(session=session, order_id=order.id, status=target,
                                         tracking_number="T-1")
                assert moved.status is target and moved.tracking_number == "T-1"
                if target in STAMPS:
                    assert getattr(moved, STAMPS[target]) is not None
            else:
                with pytest.raises(OrderStatusError, match=f"cannot go from {start.value} to {target.value}"):
                    set_order_status(session=session, order_id=order.id, status=target)
                assert session.get(Order, order.id, populate_existing=True).status is start
        session.commit()


def test_an_unknown_order_is_refused(sessions):
    with sessions() as session, pytest.raises(OrderStatusError, match="no order 999"):
        set_order_status(session=session, order_id=999, status=OrderStatus.PAID)
