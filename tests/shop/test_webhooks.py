"""payment_webhook_handle: signed events, processed once, in any order."""

import time
from decimal import Decimal

import pytest

from inventory.models import Reservation, StockMovement
from shop import services
from shop.exceptions import InvalidWebhookPayload, InvalidWebhookSignature, PaymentMismatch
from shop.models import Order, Payment, WebhookEvent
from shop.payments import build_test_webhook, sign_test_webhook
from shop.services import webhooks
from tests.concurrency import run_together
from tests.factories import open_allocation
from tests.inventory.invariants import assert_inventory_invariants
from tests.shop.factories import WEBHOOK_SECRET, expire, held_reservation, webhook

pytestmark = pytest.mark.django_db(transaction=True)

SUCCEEDED = "payment.succeeded"
FAILED = "payment.failed"


@pytest.fixture(autouse=True)
def _payments(settings):
    settings.PAYMENT_TEST_MODE = "pending"
    settings.PAYMENT_WEBHOOK_SECRET = WEBHOOK_SECRET


def _pending_order(allocation=None, quantity=1):
    reservation = held_reservation(allocation=allocation, quantity=quantity)
    order = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )
    assert order.status == Order.Status.PENDING_PAYMENT
    return order, order.payments.get(), reservation


def _handle(body_and_headers):
    body, headers = body_and_headers
    return services.payment_webhook_handle(body=body, headers=headers)


def _sales() -> int:
    return StockMovement.objects.filter(reason=StockMovement.Reason.SALE).count()


def test_a_signed_success_pays_a_pending_order():
    allocation = open_allocation(quantity=3)
    order, payment, reservation = _pending_order(allocation, quantity=2)

    result = _handle(webhook(SUCCEEDED, payment.reference, event_id="evt_ok"))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert order.paid_at is not None
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold) == (0, 2)
    event = WebhookEvent.objects.get()
    assert (event.provider, event.event_id, event.event_type) == ("test", "evt_ok", SUCCEEDED)
    assert event.payload["data"] == {
        "payment_reference": payment.reference,
        "amount": "25.00",
        "currency": "USD",
    }
    assert (event.result, event.processed_at is not None) == ("processed", True)
    assert_inventory_invariants()


def test_a_signed_failure_fails_the_order_and_keeps_the_hold():
    order, payment, reservation = _pending_order()

    result = _handle(webhook(FAILED, payment.reference, failure_reason="insufficient_funds"))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAYMENT_FAILED
    payment.refresh_from_db()
    assert (payment.status, payment.failure_reason) == ("failed", "insufficient_funds")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
    assert_inventory_invariants()


def test_the_same_event_twice_is_a_duplicate_with_no_second_effect(monkeypatch):
    order, payment, _ = _pending_order()
    event = webhook(SUCCEEDED, payment.reference, event_id="evt_twice")
    assert _handle(event) == "processed"
    calls = []
    monkeypatch.setattr(webhooks, "order_payment_succeeded", lambda **kw: calls.append(kw))

    result = _handle(event)

    assert result == "duplicate"
    assert calls == []
    assert WebhookEvent.objects.count() == 1
    assert _sales() == 1
    order.refresh_from_db()
    assert order.status == Order.Status.PAID


def test_a_replay_of_an_event_id_with_another_body_is_still_a_duplicate():
    order, payment, _ = _pending_order()
    assert _handle(webhook(FAILED, payment.reference, event_id="evt_same")) == "processed"

    result = _handle(webhook(SUCCEEDED, payment.reference, event_id="evt_same"))

    assert result == "duplicate"
    order.refresh_from_db()
    assert order.status == Order.Status.PAYMENT_FAILED
    assert WebhookEvent.objects.get().event_type == FAILED


def test_a_bad_signature_is_refused_and_records_nothing():
    order, payment, _ = _pending_order()

    with pytest.raises(InvalidWebhookSignature):
        _handle(webhook(SUCCEEDED, payment.reference, secret="not-the-secret"))

    assert WebhookEvent.objects.count() == 0
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT
    assert _sales() == 0


def test_a_stale_timestamp_is_refused_and_records_nothing():
    order, payment, _ = _pending_order()
    stale = int(time.time()) - 301

    with pytest.raises(InvalidWebhookSignature):
        _handle(webhook(SUCCEEDED, payment.reference, timestamp=stale))

    assert WebhookEvent.objects.count() == 0
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT


def test_a_tampered_body_is_refused_and_records_nothing():
    order, payment, _ = _pending_order()
    body, headers = webhook(FAILED, payment.reference)
    body = body.replace(FAILED.encode(), SUCCEEDED.encode())

    with pytest.raises(InvalidWebhookSignature):
        services.payment_webhook_handle(body=body, headers=headers)

    assert WebhookEvent.objects.count() == 0
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT


def test_a_signed_body_that_is_not_an_event_records_nothing():
    body = b"not json"

    with pytest.raises(InvalidWebhookPayload):
        services.payment_webhook_handle(
            body=body, headers={"Payment-Signature": sign_test_webhook(body, secret=WEBHOOK_SECRET)}
        )

    assert WebhookEvent.objects.count() == 0


def test_a_failure_after_a_success_leaves_the_order_paid():
    order, payment, reservation = _pending_order()
    assert _handle(webhook(SUCCEEDED, payment.reference)) == "processed"

    result = _handle(webhook(FAILED, payment.reference))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED
    assert _sales() == 1
    assert_inventory_invariants()


def test_a_success_after_a_failure_pays_the_order():
    order, payment, reservation = _pending_order()
    assert _handle(webhook(FAILED, payment.reference)) == "processed"

    result = _handle(webhook(SUCCEEDED, payment.reference))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    payment.refresh_from_db()
    assert (payment.status, payment.failure_reason) == ("succeeded", "")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED
    assert_inventory_invariants()


def test_an_unknown_payment_reference_is_ignored_and_recorded():
    order, _, _ = _pending_order()
    event = webhook(SUCCEEDED, "pay_nobody_knows", event_id="evt_stray")

    assert _handle(event) == "ignored"
    assert _handle(event) == "duplicate"

    recorded = WebhookEvent.objects.get()
    assert (recorded.event_id, recorded.result) == ("evt_stray", "ignored")
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT


def test_an_unknown_event_type_is_ignored():
    order, payment, _ = _pending_order()

    result = _handle(webhook("payment.disputed", payment.reference))

    assert result == "ignored"
    assert WebhookEvent.objects.get().result == "ignored"
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT


def test_a_late_payment_is_reinstated_while_its_units_are_free():
    allocation = open_allocation(quantity=2)
    order, payment, reservation = _pending_order(allocation, quantity=2)
    expire(reservation)
    allocation.refresh_from_db()
    assert allocation.remaining == 2

    result = _handle(webhook(SUCCEEDED, payment.reference))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (0, 2, 0)
    assert (
        StockMovement.objects.filter(reason="hold_reinstate", reservation=reservation).count() == 1
    )
    assert_inventory_invariants()


def test_a_late_payment_is_refunded_when_its_units_were_sold_to_someone_else(settings):
    allocation = open_allocation(quantity=1)
    order, payment, reservation = _pending_order(allocation)
    expire(reservation)
    other = held_reservation(allocation=allocation)
    settings.PAYMENT_TEST_MODE = "succeed"  # the other buyer pays at once
    other_order = services.checkout_create(customer_id=other.customer_id, reservation_id=other.pk)
    assert other_order.status == Order.Status.PAID

    result = _handle(webhook(SUCCEEDED, payment.reference))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.REFUNDED
    assert order.paid_at is None
    payment.refresh_from_db()
    assert (payment.status, payment.refund_reason) == ("refunded", "unfulfillable")
    assert payment.refund_reference == f"re_{payment.reference}"
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.EXPIRED
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold) == (1, 0, 1)
    assert _sales() == 1
    assert_inventory_invariants()


def test_a_late_payment_is_refunded_when_its_units_are_held_by_someone_else():
    allocation = open_allocation(quantity=1)
    order, payment, reservation = _pending_order(allocation)
    expire(reservation)
    held_reservation(allocation=allocation)

    result = _handle(webhook(SUCCEEDED, payment.reference))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.REFUNDED
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold) == (1, 1, 0)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED
    assert_inventory_invariants()


def test_a_success_after_the_order_was_cancelled_is_refunded():
    allocation = open_allocation(quantity=2)
    order, payment, reservation = _pending_order(allocation)
    services.order_cancel(order_id=order.pk, customer_id=order.customer_id)

    result = _handle(webhook(SUCCEEDED, payment.reference))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    payment.refresh_from_db()
    assert (payment.status, payment.refund_reason) == ("refunded", "order_closed")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.RELEASED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (0, 0, 2)
    assert_inventory_invariants()


def test_an_event_recorded_but_not_processed_is_processed_when_redelivered(monkeypatch):
    order, payment, _ = _pending_order()
    event = webhook(SUCCEEDED, payment.reference, event_id="evt_crash")
    real = webhooks.order_payment_succeeded

    def crash(**kwargs):
        raise RuntimeError("worker died")

    monkeypatch.setattr(webhooks, "order_payment_succeeded", crash)
    with pytest.raises(RuntimeError):
        _handle(event)
    assert WebhookEvent.objects.get().processed_at is None
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT

    monkeypatch.setattr(webhooks, "order_payment_succeeded", real)
    assert _handle(event) == "processed"
    assert _handle(event) == "duplicate"

    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert WebhookEvent.objects.get().result == "processed"
    assert _sales() == 1


@pytest.mark.postgres
def test_concurrent_deliveries_of_one_event_sell_once():
    order, payment, _ = _pending_order(quantity=2)
    event = webhook(SUCCEEDED, payment.reference, event_id="evt_storm")

    results = run_together(8, lambda i: _handle(event))

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert set(results) <= {"processed", "duplicate"}
    assert "processed" in results
    assert WebhookEvent.objects.count() == 1
    assert _sales() == 1
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert_inventory_invariants()


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("12.49", "USD"),  # a cent short
        ("1250.00", "USD"),  # minor units mistaken for major ones
        ("12.50", "EUR"),
        (None, "USD"),  # an amount not stated cannot be checked
        ("12.50", None),
    ],
)
def test_a_success_for_another_amount_or_currency_confirms_nothing(amount, currency, caplog):
    allocation = open_allocation(quantity=3)
    order, payment, reservation = _pending_order(allocation)
    assert (payment.amount, payment.currency) == (Decimal("12.50"), "USD")
    body_and_headers = build_test_webhook(
        event_id="evt_short",
        type=SUCCEEDED,
        payment_reference=payment.reference,
        amount=amount,
        currency=currency,
        secret=WEBHOOK_SECRET,
    )

    with pytest.raises(PaymentMismatch) as refused:
        _handle(body_and_headers)

    assert (refused.value.code, refused.value.http_status) == ("payment_mismatch", 409)
    assert refused.value.detail.startswith("expects 12.50 USD; the event ")
    order.refresh_from_db()
    assert (order.status, order.paid_at) == (Order.Status.PENDING_PAYMENT, None)
    payment.refresh_from_db()
    assert (payment.status, payment.refund_reason) == (Payment.Status.PENDING, "")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold) == (1, 0)
    assert _sales() == 0
    event = WebhookEvent.objects.get()
    assert (event.event_id, event.result, event.processed_at is not None) == (
        "evt_short",
        "mismatch",
        True,
    )
    assert [r.levelname for r in caplog.records if "evt_short" in r.getMessage()] == ["ERROR"]
    assert_inventory_invariants()


def test_a_mismatch_is_refused_again_when_redelivered_and_the_right_event_still_pays():
    order, payment, _ = _pending_order()
    wrong = webhook(SUCCEEDED, payment.reference, event_id="evt_wrong", amount="0.01")
    with pytest.raises(PaymentMismatch):
        _handle(wrong)

    with pytest.raises(PaymentMismatch):
        _handle(wrong)
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT

    assert _handle(webhook(SUCCEEDED, payment.reference, event_id="evt_right")) == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert dict(WebhookEvent.objects.values_list("event_id", "result")) == {
        "evt_wrong": "mismatch",
        "evt_right": "processed",
    }
    assert _sales() == 1


def test_the_amount_is_compared_as_a_decimal_and_the_currency_whatever_its_case():
    order, payment, _ = _pending_order()

    result = _handle(webhook(SUCCEEDED, payment.reference, amount="12.5", currency="usd"))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAID


def test_a_failure_is_not_checked_against_the_amount():
    # A failure moves no money: it fails the attempt whatever it says was asked.
    order, payment, reservation = _pending_order()

    result = _handle(webhook(FAILED, payment.reference, amount="99.00", currency="EUR"))

    assert result == "processed"
    order.refresh_from_db()
    assert order.status == Order.Status.PAYMENT_FAILED
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
