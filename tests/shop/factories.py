"""Test data for the shop: holds made through the inventory services, signed webhooks."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

from inventory import services as inventory
from inventory.models import Allocation, Reservation
from shop.models import Payment
from shop.payments import build_test_webhook
from tests.factories import UserFactory, open_allocation

WEBHOOK_SECRET = "whsec_test_secret"
PRICE = Decimal("12.50")

_keys = itertools.count(1)
_events = itertools.count(1)


def held_reservation(
    *,
    allocation: Allocation | None = None,
    customer=None,
    quantity: int = 1,
    unit_price: Decimal = PRICE,
) -> Reservation:
    """A ``held`` reservation (Celery runs eagerly in tests, so it settles at once)."""
    allocation = allocation or open_allocation(quantity=5, on_hand=10)
    customer = customer or UserFactory()
    reservation = inventory.reservation_request(
        customer_id=customer.pk,
        allocation_id=allocation.pk,
        quantity=quantity,
        idempotency_key=f"hold-{next(_keys)}",
        unit_price=unit_price,
        currency="USD",
    )
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD, reservation.status
    return reservation


def expire(reservation: Reservation) -> None:
    """Let the sweep expire the hold, as if its time had passed."""
    inventory.reservations_expire(now=reservation.expires_at + timedelta(seconds=1))
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.EXPIRED


def webhook(
    type: str, payment_reference: str, *, event_id: str | None = None, **kwargs
) -> tuple[bytes, dict[str, str]]:
    """A test-provider event signed with ``WEBHOOK_SECRET``. Unless told otherwise, it
    states the amount and currency of the payment it is about, as a provider does."""
    payment = Payment.objects.filter(reference=payment_reference).first()
    if payment is not None:
        kwargs.setdefault("amount", payment.amount)
        kwargs.setdefault("currency", payment.currency)
    return build_test_webhook(
        event_id=event_id or f"evt_{next(_events)}",
        type=type,
        payment_reference=payment_reference,
        secret=kwargs.pop("secret", WEBHOOK_SECRET),
        **kwargs,
    )
