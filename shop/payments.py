"""Payment providers, behind one small interface.

The shop talks to a provider only through ``PaymentProvider``; which one is used comes
from the setting ``PAYMENT_PROVIDER`` (a dotted path, default the ``TestPaymentProvider``
below, which never touches a network).

What every provider must promise:

* ``charge`` treats ``payment_reference`` as an idempotency key: asked twice with the
  same reference, it charges once and answers the same;
* ``refund`` is idempotent per payment: asked twice, it refunds once;
* ``parse_webhook`` accepts only events the provider signed, recently, and raises
  ``InvalidWebhookSignature`` otherwise (before anything is parsed or written); an
  event about a charge carries the charge's ``amount`` and ``currency`` as the
  provider has them, which the shop checks against the payment before believing it.

Signed webhooks of the test provider (the same scheme Stripe uses)::

    Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of b"<t>." + body>

keyed with the setting ``PAYMENT_WEBHOOK_SECRET``. Several ``v1=`` values may be sent
(secret rotation); one matching is enough. A timestamp further than
``PAYMENT_WEBHOOK_TOLERANCE_SECONDS`` (300) from now is refused, so a captured request
cannot be replayed later; replays inside the window are caught by the event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from shop.exceptions import InvalidWebhookPayload, InvalidWebhookSignature

if TYPE_CHECKING:
    from shop.models import Order, Payment

__all__ = [
    "SIGNATURE_HEADER",
    "ChargeResult",
    "InvalidWebhookPayload",
    "InvalidWebhookSignature",
    "PaymentProvider",
    "RefundResult",
    "TestPaymentProvider",
    "WebhookEventData",
    "build_test_webhook",
    "get_payment_provider",
    "sign_test_webhook",
    "verify_signature",
]

DEFAULT_PROVIDER = "shop.payments.TestPaymentProvider"
SIGNATURE_HEADER = "Payment-Signature"
DEFAULT_TOLERANCE_SECONDS = 300

ChargeStatus = Literal["succeeded", "pending", "failed"]
RefundStatus = Literal["succeeded", "failed"]


@dataclass(frozen=True)
class ChargeResult:
    status: ChargeStatus
    # The provider's own id for the charge (may equal the reference we gave it).
    reference: str
    failure_reason: str = ""


@dataclass(frozen=True)
class RefundResult:
    status: RefundStatus
    reference: str = ""
    failure_reason: str = ""


@dataclass(frozen=True)
class WebhookEventData:
    event_id: str
    type: str
    # The reference we gave ``charge`` (or the provider's own id for the charge).
    payment_reference: str
    raw: Mapping[str, Any] = field(default_factory=dict)
    failure_reason: str = ""
    # What the provider says was charged; None / "" when the event does not say.
    amount: Decimal | None = None
    currency: str = ""


class PaymentProvider(Protocol):
    name: str

    def charge(self, *, order: Order, payment_reference: str) -> ChargeResult: ...

    def refund(self, *, payment: Payment) -> RefundResult: ...

    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> WebhookEventData: ...


@lru_cache(maxsize=8)
def _provider_class(path: str) -> type:
    return import_string(path)


def get_payment_provider() -> PaymentProvider:
    """The provider named by ``settings.PAYMENT_PROVIDER`` (a dotted path to a class)."""
    path = getattr(settings, "PAYMENT_PROVIDER", DEFAULT_PROVIDER) or DEFAULT_PROVIDER
    return _provider_class(path)()


# --- signatures ------------------------------------------------------------------------


def _tolerance() -> int:
    return int(getattr(settings, "PAYMENT_WEBHOOK_TOLERANCE_SECONDS", DEFAULT_TOLERANCE_SECONDS))


def _signature(body: bytes, *, secret: str, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_test_webhook(body: bytes, *, secret: str, timestamp: int | None = None) -> str:
    """The ``Payment-Signature`` header value for ``body`` (tests and the bench)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_signature(body, secret=secret, timestamp=t)}"


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case, from ``request.headers``, ``request.META``
    (``HTTP_PAYMENT_SIGNATURE``) or a plain dict."""
    wanted = name.lower().replace("_", "-")
    for key, value in headers.items():
        normal = str(key).lower().replace("_", "-")
        if normal.startswith("http-"):
            normal = normal[5:]
        if normal == wanted:
            return value
    return None


def verify_signature(
    body: bytes,
    header: str | None,
    *,
    secret: str,
    tolerance: int | None = None,
    now: float | None = None,
) -> int:
    """Check a ``t=...,v1=...`` signature of ``body``; returns its timestamp.

    Raises ``InvalidWebhookSignature`` for a missing or malformed header, no secret
    configured, a timestamp outside the tolerance (either way), or no matching ``v1``.
    Digests are compared in constant time."""
    if not secret:
        raise InvalidWebhookSignature("No webhook secret is configured; every event is refused.")
    if not header:
        raise InvalidWebhookSignature(f"The {SIGNATURE_HEADER} header is missing.")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidWebhookSignature("The signature timestamp is malformed.") from None
        elif key == "v1" and value:
            candidates.append(value.strip())
    if timestamp is None or not candidates:
        raise InvalidWebhookSignature("The signature header is malformed.")
    tolerance = _tolerance() if tolerance is None else tolerance
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise InvalidWebhookSignature("The signature timestamp is outside the allowed window.")
    expected = _signature(body, secret=secret, timestamp=timestamp)
    # Compare every candidate (no early exit), each in constant time.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidWebhookSignature("The signature does not match.")
    return timestamp


# --- the test provider -----------------------------------------------------------------


class TestPaymentProvider:
    """A provider with no network, for development, tests and the bench.

    ``settings.PAYMENT_TEST_MODE`` chooses what a charge does:

    * ``"succeed"`` (default): succeeds at once;
    * ``"fail"``: is declined at once (``failure_reason`` "card_declined");
    * ``"pending"``: stays pending; a signed ``payment.succeeded`` or ``payment.failed``
      webhook settles it later (see ``build_test_webhook``).

    Refunds always succeed. Webhook bodies are JSON::

        {"id": "evt_1", "type": "payment.succeeded",
         "data": {"payment_reference": "...", "amount": "19.99", "currency": "USD"}}

    ``amount`` is a decimal string, as everywhere in the API.
    """

    __test__ = False  # not a pytest test class, despite the name

    name = "test"
    MODES = ("succeed", "fail", "pending")

    def _mode(self) -> str:
        mode = getattr(settings, "PAYMENT_TEST_MODE", "succeed") or "succeed"
        if mode not in self.MODES:
            raise ValueError(f"PAYMENT_TEST_MODE must be one of {self.MODES}, not {mode!r}")
        return mode

    def charge(self, *, order: Order, payment_reference: str) -> ChargeResult:
        mode = self._mode()
        if mode == "fail":
            return ChargeResult("failed", payment_reference, failure_reason="card_declined")
        if mode == "pending":
            return ChargeResult("pending", payment_reference)
        return ChargeResult("succeeded", payment_reference)

    def refund(self, *, payment: Payment) -> RefundResult:
        return RefundResult("succeeded", reference=f"re_{payment.reference}")

    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> WebhookEventData:
        verify_signature(
            body,
            header_value(headers, SIGNATURE_HEADER),
            secret=getattr(settings, "PAYMENT_WEBHOOK_SECRET", ""),
        )
        try:
            raw = json.loads(body)
            data = raw.get("data") or {}
            event_id, event_type = raw["id"], raw["type"]
            reference = data.get("payment_reference", "")
            amount, currency = data.get("amount"), data.get("currency", "")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidWebhookPayload() from None
        texts = (event_id, event_type, reference, currency)
        if not all(isinstance(v, str) for v in texts) or not event_id:
            raise InvalidWebhookPayload()
        return WebhookEventData(
            event_id=event_id,
            type=event_type,
            payment_reference=reference,
            raw=raw,
            failure_reason=str(data.get("failure_reason", ""))[:200],
            amount=_decimal_or_none(amount),
            currency=currency,
        )


def _decimal_or_none(value: object) -> Decimal | None:
    """A decimal string as a ``Decimal``; a float, an int or NaN is not an amount."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 32:
        raise InvalidWebhookPayload("The event's amount must be a decimal string.")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidWebhookPayload("The event's amount must be a decimal string.") from None
    if not amount.is_finite():
        raise InvalidWebhookPayload("The event's amount must be a decimal string.")
    return amount


def build_test_webhook(
    *,
    event_id: str,
    type: str,
    payment_reference: str,
    secret: str | None = None,
    timestamp: int | None = None,
    failure_reason: str = "",
    amount: Decimal | str | None = None,
    currency: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A signed test-provider event: ``(body, headers)`` ready for
    ``payment_webhook_handle`` or an HTTP POST. The secret defaults to the setting."""
    data = {"payment_reference": payment_reference}
    if failure_reason:
        data["failure_reason"] = failure_reason
    if amount is not None:
        data["amount"] = str(amount)
    if currency is not None:
        data["currency"] = currency
    body = json.dumps({"id": event_id, "type": type, "data": data}).encode()
    if secret is None:
        secret = getattr(settings, "PAYMENT_WEBHOOK_SECRET", "")
    return body, {SIGNATURE_HEADER: sign_test_webhook(body, secret=secret, timestamp=timestamp)}
