"""Orders after checkout: payment outcomes, cancellation, refunds.

Lock order, everywhere in the shop: the order row, then its payment rows, then (inside
``inventory.services``) the reservation, the allocation and the stock item. Every
service here owns its transaction (``durable=True``: calling one inside an open
transaction is a bug and fails loudly) and calls the payment provider only outside
any transaction, so a slow provider never holds a row lock.

Money and units stay in step:

* a successful payment sells the hold's units (``reservation_confirm``); if the hold
  expired first, the units are held again if still free (``reservation_reinstate``),
  else the payment is refunded: never oversold, never paid for nothing;
* a refund is *claimed* on the payment row before the provider is asked, so it is
  asked once per claim, and a refund interrupted half-way (crash, provider down) is
  finished later by ``payments_reconcile`` or by repeating the call that claimed it;
* a paid order's units come back (``reservation_refund``) only once its money is back.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inventory import selectors as inventory_selectors
from inventory import services as inventory
from inventory.exceptions import HoldExpired, LimitReached, SoldOut
from shop.exceptions import (
    NotFound,
    OrderNotCancellable,
    PaymentProviderError,
    RefundFailed,
    ReservationNotHeld,
)
from shop.models import Order, Payment
from shop.payments import PaymentProvider, RefundResult, get_payment_provider

logger = logging.getLogger(__name__)

OrderStatus = Order.Status
PaymentStatus = Payment.Status
RefundReason = Payment.RefundReason

# Orders whose payment is still to come (or to be retried).
OPEN_STATUSES = (OrderStatus.PENDING_PAYMENT, OrderStatus.PAYMENT_FAILED)


def _lock_order(order_id: int, *, customer_id: int | None = None) -> Order:
    queryset = Order.objects.select_for_update(no_key=True).filter(pk=order_id)
    if customer_id is not None:
        queryset = queryset.filter(customer_id=customer_id)
    order = queryset.first()
    if order is None:
        raise NotFound("No such order.")
    return order


def _lock_payment(order: Order, payment_reference: str) -> Payment:
    """The payment of ``order`` known by our reference or by the provider's."""
    payment = None
    if payment_reference:
        payment = (
            Payment.objects.select_for_update(no_key=True)
            .filter(order_id=order.pk)
            .filter(Q(reference=payment_reference) | Q(provider_reference=payment_reference))
            .first()
        )
    if payment is None:
        raise NotFound("No such payment for this order.")
    return payment


def _save(instance: Order | Payment, *fields: str) -> None:
    instance.save(update_fields=[*fields, "updated_at"])


def _claim_refund(payment: Payment, reason: str) -> None:
    payment.refund_reason = reason
    payment.refund_requested_at = timezone.now()
    _save(payment, "refund_reason", "refund_requested_at")


def _sell_units(order: Order) -> bool:
    """Inside the order's transaction: sell the hold's units. True when sold; False when
    they cannot be had any more (the hold expired and its units went to someone else,
    or the customer holds their limit again, or the hold was released or never held)."""
    try:
        inventory.reservation_confirm(reservation_id=order.reservation_id)
        return True
    except HoldExpired:
        # Paid after the hold expired (confirm has just expired it, or the sweep did):
        # hold the units again if nobody took them meanwhile.
        pass
    except ReservationNotHeld:
        return False
    try:
        inventory.reservation_reinstate(reservation_id=order.reservation_id)
        inventory.reservation_confirm(reservation_id=order.reservation_id)
    except (SoldOut, LimitReached, ReservationNotHeld, HoldExpired):
        return False
    return True


def order_payment_succeeded(*, order_id: int, payment_reference: str) -> Order:
    """The provider took the money for this payment of the order.

    Guarantees, whatever the order and number of calls:

    * idempotent: a repeat (a webhook redelivered, the synchronous answer and the
      webhook both arriving) changes nothing;
    * the order is ``paid`` (with ``paid_at``) exactly when its hold's units are sold
      (``reservation_confirm``); a hold that expired before the money arrived is held
      again through ``reservation_reinstate`` while its units are free;
    * never oversold: when the units went to someone else (or the hold was released),
      the payment is refunded and the order ends ``refunded``;
    * a success after a failure of the same payment still sells; a second payment
      that succeeds for an order already paid, or one that succeeds after the order
      was cancelled, is refunded and the order is left as it is.

    Raises ``NotFound`` for an unknown order or payment, and ``RefundFailed`` when a
    refund this needs was not confirmed by the provider (it stays claimed and is
    retried by ``payments_reconcile``; the rest of the outcome is already committed).
    """
    refund_payment_id = None
    with transaction.atomic(durable=True):
        order = _lock_order(order_id)
        payment = _lock_payment(order, payment_reference)
        if payment.status == PaymentStatus.REFUNDED:
            return order
        if payment.refund_requested_at is not None:
            # Claimed before and not finished: finish it.
            refund_payment_id = payment.pk
        elif payment.status == PaymentStatus.SUCCEEDED and order.status == OrderStatus.PAID:
            return order
        else:
            if payment.status != PaymentStatus.SUCCEEDED:
                payment.status = PaymentStatus.SUCCEEDED
                payment.failure_reason = ""
                _save(payment, "status", "failure_reason")
            if order.status == OrderStatus.PAID:
                _claim_refund(payment, RefundReason.DUPLICATE)
                refund_payment_id = payment.pk
            elif order.status not in OPEN_STATUSES:
                _claim_refund(payment, RefundReason.ORDER_CLOSED)
                refund_payment_id = payment.pk
            elif _sell_units(order):
                order.status = OrderStatus.PAID
                order.paid_at = timezone.now()
                _save(order, "status", "paid_at")
            else:
                logger.warning(
                    "order %s was paid (%s) after its units were gone: refunding",
                    order.pk,
                    payment.reference,
                )
                _claim_refund(payment, RefundReason.UNFULFILLABLE)
                refund_payment_id = payment.pk
    if refund_payment_id is not None:
        return _refund_payment(payment_id=refund_payment_id)
    return order


def order_payment_failed(
    *, order_id: int, payment_reference: str, failure_reason: str = ""
) -> Order:
    """The provider declined this payment of the order.

    Guarantees: a pending payment becomes ``failed``, and its order ``payment_failed``
    unless another payment of it is pending or succeeded. Never undoes a success: a
    late failure of a payment that succeeded (or was refunded) changes nothing. The
    hold is left as it is, so the buyer may check out again while it lasts.
    Idempotent. Raises ``NotFound`` for an unknown order or payment.
    """
    with transaction.atomic(durable=True):
        order = _lock_order(order_id)
        payment = _lock_payment(order, payment_reference)
        if payment.status != PaymentStatus.PENDING:
            return order
        payment.status = PaymentStatus.FAILED
        payment.failure_reason = failure_reason[:200]
        _save(payment, "status", "failure_reason")
        if (
            order.status == OrderStatus.PENDING_PAYMENT
            and not order.payments.filter(
                status__in=(PaymentStatus.PENDING, PaymentStatus.SUCCEEDED)
            ).exists()
        ):
            order.status = OrderStatus.PAYMENT_FAILED
            _save(order, "status")
    return order


def order_cancel(*, order_id: int, customer_id: int | None = None, actor=None) -> Order:
    """Cancel an order, by its customer (``customer_id``) or by ops (``None``).

    * ``pending_payment`` / ``payment_failed`` → ``cancelled``, and the hold's units
      go back on sale (``reservation_release``) if it is still held. A payment that
      succeeds after this is refunded.
    * ``paid`` → the payment is refunded through the provider, then the units come
      back (``reservation_refund``: reservation ``refunded``, ledger ``sale_refund``)
      and the order is ``refunded``. Units never come back before the money does.
    * ``cancelled`` / ``refunded``: returned as they are (idempotent).

    Raises ``NotFound`` (unknown order, or another customer's), ``RefundFailed`` when
    the provider did not confirm the refund (the order stays ``paid`` with the refund
    claimed; repeating the call, or ``payments_reconcile``, finishes it), and
    ``OrderNotCancellable`` for a paid order with no payment to refund.
    """
    refund_payment_id = None
    with transaction.atomic(durable=True):
        order = _lock_order(order_id, customer_id=customer_id)
        if order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
            return order
        if order.status == OrderStatus.PAID:
            payments = Payment.objects.select_for_update(no_key=True).filter(
                order_id=order.pk, status=PaymentStatus.SUCCEEDED
            )
            # A cancel already under way, else the payment that paid the order (the only
            # succeeded one without a refund claim).
            payment = (
                payments.filter(refund_reason=RefundReason.CANCELLED).first()
                or payments.filter(refund_requested_at__isnull=True).order_by("id").first()
            )
            if payment is None:
                raise OrderNotCancellable("This paid order has no payment to refund.")
            if payment.refund_requested_at is None:
                _claim_refund(payment, RefundReason.CANCELLED)
            refund_payment_id = payment.pk
        else:
            order.status = OrderStatus.CANCELLED
            _save(order, "status")
            held = inventory_selectors.reservation_is_held(reservation_id=order.reservation_id)
            # Expired (or settled) meanwhile: its units are back already.
            if held:
                with contextlib.suppress(ReservationNotHeld):
                    inventory.reservation_release(reservation_id=order.reservation_id, actor=actor)
    if refund_payment_id is not None:
        return _refund_payment(payment_id=refund_payment_id, actor=actor)
    return order


def _provider_for(payment: Payment) -> PaymentProvider:
    provider = get_payment_provider()
    if provider.name != payment.provider:
        # Refunding through another provider than the one that charged cannot work.
        raise RuntimeError(
            f"payment {payment.reference} was made with provider {payment.provider!r}, "
            f"but the configured provider is {provider.name!r}"
        )
    return provider


def _refund_payment(*, payment_id: int, actor=None) -> Order:
    """Ask the provider to refund a claimed payment (outside any transaction), then
    record it and apply what its claim was for. Safe to repeat."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.status == PaymentStatus.REFUNDED:
        return Order.objects.get(pk=payment.order_id)
    try:
        result = _provider_for(payment).refund(payment=payment)
    except PaymentProviderError as exc:
        result = RefundResult("failed", failure_reason=str(exc))
    if result.status != "succeeded":
        logger.warning(
            "refund of payment %s failed (%s); it stays claimed and will be retried",
            payment.reference,
            result.failure_reason,
        )
        raise RefundFailed(
            order_id=payment.order_id,
            payment_reference=payment.reference,
            failure_reason=result.failure_reason,
        )
    with transaction.atomic(durable=True):
        order = _lock_order(payment.order_id)
        payment = Payment.objects.select_for_update(no_key=True).get(pk=payment_id)
        if payment.status == PaymentStatus.REFUNDED:
            return order
        payment.status = PaymentStatus.REFUNDED
        payment.refunded_at = timezone.now()
        payment.refund_reference = result.reference[:200]
        _save(payment, "status", "refunded_at", "refund_reference")
        if payment.refund_reason == RefundReason.CANCELLED:
            inventory.reservation_refund(reservation_id=order.reservation_id, actor=actor)
            order.status = OrderStatus.REFUNDED
            _save(order, "status")
        elif payment.refund_reason == RefundReason.UNFULFILLABLE and order.status in OPEN_STATUSES:
            order.status = OrderStatus.REFUNDED
            _save(order, "status")
    return order


def payments_reconcile(*, older_than_seconds: int = 60) -> dict[str, int]:
    """Finish refunds claimed at least ``older_than_seconds`` ago and never confirmed
    (the process died, or the provider failed, between the claim and the record).
    Returns how many were finished and how many failed again. Idempotent."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    claimed = list(
        Payment.objects.filter(refund_requested_at__lte=cutoff)
        .exclude(status=PaymentStatus.REFUNDED)
        .order_by("id")
        .values_list("pk", flat=True)
    )
    finished = failed = 0
    for payment_id in claimed:
        try:
            _refund_payment(payment_id=payment_id)
            finished += 1
        except RefundFailed:
            failed += 1
    return {"refunds_finished": finished, "refunds_failed": failed}
