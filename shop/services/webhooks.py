"""Payment provider webhooks: verified, recorded once, dispatched to the order services."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from shop.exceptions import PaymentMismatch
from shop.models import Payment, WebhookEvent
from shop.payments import WebhookEventData, get_payment_provider
from shop.services.orders import order_payment_failed, order_payment_succeeded

logger = logging.getLogger(__name__)

PROCESSED = "processed"
DUPLICATE = "duplicate"
IGNORED = "ignored"
MISMATCH = "mismatch"

PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"


def payment_webhook_handle(*, body: bytes, headers: Mapping[str, str]) -> str:
    """Handle one provider event; returns ``"processed"``, ``"duplicate"`` or
    ``"ignored"`` (answer all three with 200, so the provider stops resending).

    Guarantees:

    * nothing is read or written before the signature is verified: a bad, missing or
      stale one raises ``InvalidWebhookSignature`` (400), a signed body that is not an
      event ``InvalidWebhookPayload`` (400);
    * an event id is processed once per provider: it is recorded (unique on provider
      and event id) before it is processed, and a repeat of a processed event is a
      ``"duplicate"`` with no effect. An event recorded but not processed (the process
      died in between, or processing raised) is processed again when redelivered: the
      order services are idempotent, so a twin delivery racing it changes nothing twice;
    * ``payment.succeeded`` / ``payment.failed`` go to ``order_payment_succeeded`` /
      ``order_payment_failed``, in whatever order they come: a success after a failure
      sells, a failure after a success is ignored. Another event type, or a payment
      reference we do not know, is ``"ignored"`` (and logged);
    * a ``payment.succeeded`` whose amount or currency is not the payment's (or is not
      stated) confirms nothing: it raises ``PaymentMismatch`` (409), logged as an
      error for ops, every time it is delivered. The event is recorded as handled
      with the result ``"mismatch"`` and the order and payment are left untouched.

    Errors from processing (e.g. ``RefundFailed``) propagate, leaving the event
    unprocessed: answer them with a 5xx and the provider redelivers.
    """
    provider = get_payment_provider()
    event = provider.parse_webhook(body=body, headers=headers)
    payment = _payment_of(provider_name=provider.name, event=event)
    mismatch = _mismatch(event=event, payment=payment)
    # A mismatch is recorded as handled in the same write that records the event: there
    # is nothing to process, so no state in between is left behind.
    handled = {"processed_at": timezone.now(), "result": MISMATCH} if mismatch else {}
    with transaction.atomic(durable=True):
        record, created = WebhookEvent.objects.get_or_create(
            provider=provider.name,
            event_id=event.event_id,
            defaults={"event_type": event.type, "payload": dict(event.raw), **handled},
        )
    if mismatch:
        logger.error(
            "webhook %s %s refused: payment %s %s (event %r)",
            provider.name,
            event.event_id,
            payment.reference,
            mismatch,
            event.type,
        )
        raise PaymentMismatch(mismatch)
    if not created and record.processed_at is not None:
        logger.info("webhook %s %s is a duplicate", provider.name, event.event_id)
        return DUPLICATE
    result = _dispatch(event=event, payment=payment)
    WebhookEvent.objects.filter(pk=record.pk, processed_at__isnull=True).update(
        processed_at=timezone.now(), result=result
    )
    return result


def _payment_of(*, provider_name: str, event: WebhookEventData) -> Payment | None:
    reference = event.payment_reference
    if event.type not in (PAYMENT_SUCCEEDED, PAYMENT_FAILED) or not reference:
        return None
    return (
        Payment.objects.filter(provider=provider_name)
        .filter(Q(reference=reference) | Q(provider_reference=reference))
        .only("pk", "order_id", "reference", "amount", "currency")
        .first()
    )


def _mismatch(*, event: WebhookEventData, payment: Payment | None) -> str:
    """Why a success event cannot be believed for this payment ("" if it can).

    Only a success is checked: it is what sells units. A failure moves no money."""
    if payment is None or event.type != PAYMENT_SUCCEEDED:
        return ""
    expected = f"{payment.amount} {payment.currency}"
    if event.amount is None or not event.currency:
        return f"expects {expected}; the event states no amount or currency"
    # Decimal equality ("12.5" is "12.50"); ISO 4217 codes whatever their case.
    if event.amount != payment.amount or event.currency.upper() != payment.currency.upper():
        return f"expects {expected}; the event says {event.amount} {event.currency}"
    return ""


def _dispatch(*, event: WebhookEventData, payment: Payment | None) -> str:
    if event.type not in (PAYMENT_SUCCEEDED, PAYMENT_FAILED):
        logger.info("webhook %s: event type %r ignored", event.event_id, event.type)
        return IGNORED
    if payment is None:
        logger.warning(
            "webhook %s: %s for unknown payment %r ignored",
            event.event_id,
            event.type,
            event.payment_reference,
        )
        return IGNORED
    if event.type == PAYMENT_SUCCEEDED:
        order_payment_succeeded(order_id=payment.order_id, payment_reference=payment.reference)
    else:
        order_payment_failed(
            order_id=payment.order_id,
            payment_reference=payment.reference,
            failure_reason=event.failure_reason,
        )
    return PROCESSED
