"""Shortcuts the inventory tests share: a primed allocation, a request, a settled hold."""

from __future__ import annotations

from decimal import Decimal

from inventory import services
from inventory.models import Allocation, Reservation
from tests.factories import open_allocation

PRICE = Decimal("9.99")


def open_primed(
    quantity: int, *, on_hand: int | None = None, limit: int | None = None
) -> Allocation:
    """An open allocation whose gate (when the gate is on) is already built: the gate
    ``allocation_open`` primes on commit never runs inside a rolled-back test."""
    allocation = open_allocation(quantity=quantity, on_hand=on_hand, per_customer_limit=limit)
    services.gate_rebuild(allocation_id=allocation.pk)
    return allocation


def request_hold(
    customer_id: int, allocation_id: int, *, key: str, quantity: int = 1
) -> Reservation:
    return services.reservation_request(
        customer_id=customer_id,
        allocation_id=allocation_id,
        quantity=quantity,
        idempotency_key=key,
        unit_price=PRICE,
        currency="USD",
    )


def settled_hold(
    capture, customer_id: int, allocation_id: int, *, key: str, quantity: int = 1
) -> Reservation:
    """Request, then let the on-commit work (the eager reserve task, gate updates) run;
    ``capture`` is pytest-django's ``django_capture_on_commit_callbacks``."""
    with capture(execute=True):
        reservation = request_hold(customer_id, allocation_id, key=key, quantity=quantity)
    reservation.refresh_from_db()
    return reservation
