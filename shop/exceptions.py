"""Shop domain errors: the same ``DomainError`` contract as the inventory's, so the one
API exception handler turns them into ``{"code", "detail", ...}`` bodies.

``NotFound``, ``HoldExpired`` and ``ReservationNotHeld`` come from the inventory and are
re-exported here, so callers of the shop services import errors from one place.
"""

from __future__ import annotations

from core.exceptions import DomainError, NotFound
from inventory.exceptions import HoldExpired, ReservationNotHeld

__all__ = [
    "DomainError",
    "HoldExpired",
    "InvalidWebhookPayload",
    "InvalidWebhookSignature",
    "NotFound",
    "OrderNotCancellable",
    "PaymentFailed",
    "PaymentMismatch",
    "PaymentProviderError",
    "RefundFailed",
    "ReservationNotHeld",
]


class PaymentFailed(DomainError):
    code = "payment_failed"
    http_status = 402
    default_detail = "The payment was declined; the hold is kept, so you may try again."


class RefundFailed(DomainError):
    code = "refund_failed"
    http_status = 502
    default_detail = "The payment provider did not confirm the refund; it will be retried."


class OrderNotCancellable(DomainError):
    code = "order_not_cancellable"
    http_status = 409
    default_detail = "This order cannot be cancelled."


class InvalidWebhookSignature(DomainError):
    code = "invalid_signature"
    http_status = 400
    default_detail = "The webhook signature is missing, invalid or too old."


class InvalidWebhookPayload(DomainError):
    code = "invalid_payload"
    http_status = 400
    default_detail = "The webhook body is not a valid event."


class PaymentMismatch(DomainError):
    """A signed event about a payment says another amount or currency was charged than
    the payment is for: believing it would ship units for money that is not there."""

    code = "payment_mismatch"
    http_status = 409
    default_detail = "The event's amount or currency does not match the payment."


class PaymentProviderError(Exception):
    """The provider could not be reached or answered nonsense: the outcome is unknown.

    Not a ``DomainError``: a charge with an unknown outcome is left ``pending`` and
    settled later by the provider's webhook (or the reconcile task), never retried
    blindly."""
