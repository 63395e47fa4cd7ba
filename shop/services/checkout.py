"""Checkout: a held reservation becomes an order, and the order is charged."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from inventory import selectors as inventory_selectors
from inventory import services as inventory
from inventory.models import Reservation
from shop.exceptions import (
    HoldExpired,
    PaymentFailed,
    PaymentProviderError,
    ReservationNotHeld,
)
from shop.models import Order, OrderLine, Payment
from shop.payments import ChargeResult, PaymentProvider, get_payment_provider
from shop.services.orders import order_payment_failed, order_payment_succeeded

logger = logging.getLogger(__name__)

OrderStatus = Order.Status
CENT = Decimal("0.01")
# Concurrent first checkouts of one hold: the loser of the insert race takes the
# winner's order on its next attempt; more attempts than this means something else.
MAX_ATTEMPTS = 3


class _HoldPastExpiry(Exception):
    """Held, but its time is up: expire it (outside the transaction), then refuse."""

    def __init__(self, allocation_id: int):
        self.allocation_id = allocation_id


def _new_payment_reference() -> str:
    return f"pay_{uuid.uuid4().hex}"


def _ensure_held(reservation: Reservation, now) -> None:
    if reservation.status == Reservation.Status.HELD:
        if reservation.expires_at <= now:
            raise _HoldPastExpiry(reservation.allocation_id)
        return
    if reservation.status == Reservation.Status.EXPIRED:
        raise HoldExpired()
    raise ReservationNotHeld(status=reservation.status)


def _prepare(
    *, customer_id: int, reservation_id: int, provider: PaymentProvider
) -> tuple[Order, Payment | None]:
    """One transaction: find or create the order, and write the payment to make now
    (None: nothing to charge, answer with the order as it stands)."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        order = (
            Order.objects.select_for_update(no_key=True)
            .filter(reservation_id=reservation_id, customer_id=customer_id)
            .first()
        )
        if order is not None:
            if order.status != OrderStatus.PAYMENT_FAILED:
                return order, None
            # A retry after a declined payment: charge again while the hold lasts.
            _ensure_held(inventory_selectors.reservation_get(reservation_id=reservation_id), now)
            order.status = OrderStatus.PENDING_PAYMENT
            order.save(update_fields=["status", "updated_at"])
        else:
            reservation = inventory_selectors.reservation_of(
                customer_id=customer_id, reservation_id=reservation_id
            )
            _ensure_held(reservation, now)
            # Checkout does not lock the reservation: its price, quantity and currency
            # never change, and if it expires from here on, the payment path finds out
            # and reinstates or refunds.
            line_total = (reservation.unit_price * reservation.quantity).quantize(CENT)
            order = Order.objects.create(
                customer_id=customer_id,
                reservation=reservation,
                total=line_total,
                currency=reservation.currency,
            )
            OrderLine.objects.create(
                order=order,
                variant_id=reservation.allocation.stock_item.variant_id,
                quantity=reservation.quantity,
                unit_price=reservation.unit_price,
                line_total=line_total,
            )
        payment = Payment.objects.create(
            order=order,
            provider=provider.name,
            reference=_new_payment_reference(),
            amount=order.total,
            currency=order.currency,
        )
    return order, payment


def checkout_create(*, customer_id: int, reservation_id: int) -> Order:
    """Turn the customer's held reservation into an order and charge it.

    Guarantees:

    * only the customer's own reservation (another's, or none: ``NotFound``, nothing
      written);
    * the hold must be ``held`` and within its time: an expired one (expired here on
      the spot if the sweep has not yet) raises ``HoldExpired``; a hold not held
      (pending, released, rejected, confirmed without an order) raises
      ``ReservationNotHeld``; no order is created either way;
    * one order per hold, priced from the hold (``unit_price`` x ``quantity``, its
      currency), written with its line and a ``pending`` payment in one transaction
      before the provider is called, outside any transaction;
    * idempotent: a repeat returns the existing order as it stands and charges nothing,
      except after a declined payment (order ``payment_failed``), where it charges
      again with a new payment while the hold lasts. At most one charge is in flight
      per order (a database constraint), so concurrent checkouts charge once.

    Outcome of the charge:

    * succeeded: the units are sold and the order returned ``paid``;
    * pending: the order is returned ``pending_payment``; the provider's webhook
      settles it (``payment_webhook_handle``);
    * failed: the order is ``payment_failed``, the hold is kept, and ``PaymentFailed``
      is raised (data: ``order_id``, ``failure_reason``) so the buyer can retry;
    * succeeded, but the hold expired during the charge and its units were sold to
      someone else: the payment is refunded, the order ends ``refunded``, and
      ``HoldExpired`` is raised (data: ``order_id``, ``refunded=True``).

    A provider that cannot be reached (``PaymentProviderError``) leaves the charge
    pending: its outcome is unknown, so it is settled by the webhook, never re-sent.
    Must not be called inside an open transaction (``RuntimeError``).
    """
    provider = get_payment_provider()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            order, payment = _prepare(
                customer_id=customer_id, reservation_id=reservation_id, provider=provider
            )
            break
        except _HoldPastExpiry as past:
            inventory.reservations_expire(allocation_id=past.allocation_id)
            raise HoldExpired() from None
        except IntegrityError:
            # A concurrent checkout wrote the order (or its payment) first.
            if attempt == MAX_ATTEMPTS:
                raise
    if payment is None:
        return order
    try:
        result = provider.charge(order=order, payment_reference=payment.reference)
    except PaymentProviderError:
        logger.warning(
            "charge %s of order %s has an unknown outcome; left pending for the webhook",
            payment.reference,
            order.pk,
            exc_info=True,
        )
        return Order.objects.get(pk=order.pk)
    return _apply_charge(order=order, payment=payment, result=result)


def _apply_charge(*, order: Order, payment: Payment, result: ChargeResult) -> Order:
    if result.reference and result.reference != payment.reference:
        Payment.objects.filter(pk=payment.pk, provider_reference="").update(
            provider_reference=result.reference[:200]
        )
    if result.status == "succeeded":
        order = order_payment_succeeded(order_id=order.pk, payment_reference=payment.reference)
        if order.status == OrderStatus.REFUNDED:
            raise HoldExpired(
                "The hold expired before the payment was confirmed and its units were "
                "sold; the payment was refunded.",
                order_id=order.pk,
                refunded=True,
            )
        return order
    if result.status == "failed":
        order = order_payment_failed(
            order_id=order.pk,
            payment_reference=payment.reference,
            failure_reason=result.failure_reason,
        )
        if order.status == OrderStatus.PAYMENT_FAILED:
            raise PaymentFailed(order_id=order.pk, failure_reason=result.failure_reason)
        return order
    return Order.objects.get(pk=order.pk)
