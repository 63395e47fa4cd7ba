"""Order services after checkout: payment outcomes, cancellation, refunds; selectors."""

from collections import Counter
from decimal import Decimal

import pytest

from core.exceptions import NotFound
from inventory import services as inventory
from inventory.models import Reservation, StockMovement
from shop import selectors, services
from shop.exceptions import PaymentFailed, PaymentProviderError, RefundFailed
from shop.models import Order, Payment
from shop.payments import RefundResult, TestPaymentProvider
from tests.concurrency import run_together
from tests.factories import UserFactory, open_allocation
from tests.inventory.invariants import assert_inventory_invariants
from tests.shop.factories import WEBHOOK_SECRET, expire, held_reservation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _payments(settings):
    settings.PAYMENT_TEST_MODE = "succeed"
    settings.PAYMENT_WEBHOOK_SECRET = WEBHOOK_SECRET


def _checkout(reservation):
    return services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )


def _pending_order(settings, allocation=None, quantity=1):
    settings.PAYMENT_TEST_MODE = "pending"
    reservation = held_reservation(allocation=allocation, quantity=quantity)
    order = _checkout(reservation)
    settings.PAYMENT_TEST_MODE = "succeed"
    return order, order.payments.get(), reservation


def _reasons(reservation) -> list[str]:
    return list(
        StockMovement.objects.filter(reservation=reservation)
        .order_by("id")
        .values_list("reason", flat=True)
    )


# --- payment outcomes ------------------------------------------------------------------


def test_a_payment_success_is_idempotent(settings):
    order, payment, reservation = _pending_order(settings)

    first = services.order_payment_succeeded(order_id=order.pk, payment_reference=payment.reference)
    paid_at = first.paid_at
    again = services.order_payment_succeeded(order_id=order.pk, payment_reference=payment.reference)

    assert (first.status, again.status, again.paid_at) == ("paid", "paid", paid_at)
    assert _reasons(reservation) == ["sale"]
    assert_inventory_invariants()


def test_a_payment_failure_after_success_changes_nothing(settings):
    order, payment, reservation = _pending_order(settings)
    services.order_payment_succeeded(order_id=order.pk, payment_reference=payment.reference)

    result = services.order_payment_failed(
        order_id=order.pk, payment_reference=payment.reference, failure_reason="late"
    )

    assert result.status == Order.Status.PAID
    payment.refresh_from_db()
    assert (payment.status, payment.failure_reason) == ("succeeded", "")
    assert _reasons(reservation) == ["sale"]


def test_a_payment_found_by_the_providers_own_reference(settings):
    order, payment, _ = _pending_order(settings)
    Payment.objects.filter(pk=payment.pk).update(provider_reference="ch_123")

    result = services.order_payment_succeeded(order_id=order.pk, payment_reference="ch_123")

    assert result.status == Order.Status.PAID


@pytest.mark.parametrize("reference", ["pay_unknown", ""])
def test_an_unknown_payment_is_not_found_and_changes_nothing(settings, reference):
    order, payment, _ = _pending_order(settings)

    with pytest.raises(NotFound):
        services.order_payment_succeeded(order_id=order.pk, payment_reference=reference)
    with pytest.raises(NotFound):
        services.order_payment_failed(order_id=order.pk, payment_reference=reference)

    order.refresh_from_db()
    payment.refresh_from_db()
    assert (order.status, payment.status) == ("pending_payment", "pending")


def test_a_payment_of_another_order_is_not_found(settings):
    order, _, _ = _pending_order(settings)
    _, other_payment, _ = _pending_order(settings)

    with pytest.raises(NotFound):
        services.order_payment_succeeded(
            order_id=order.pk, payment_reference=other_payment.reference
        )

    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT
    assert not StockMovement.objects.filter(reason="sale").exists()


def test_a_second_successful_payment_of_a_paid_order_is_refunded(settings):
    settings.PAYMENT_TEST_MODE = "fail"
    reservation = held_reservation()
    with pytest.raises(PaymentFailed):
        _checkout(reservation)
    settings.PAYMENT_TEST_MODE = "pending"
    order = _checkout(reservation)  # the retry: a second payment, pending
    first, second = order.payments.order_by("id")
    assert (first.status, second.status) == ("failed", "pending")

    # The first, declined at once, turns out to have gone through after all...
    services.order_payment_succeeded(order_id=order.pk, payment_reference=first.reference)
    # ...and so does the retry: the buyer was charged twice.
    result = services.order_payment_succeeded(order_id=order.pk, payment_reference=second.reference)

    assert result.status == Order.Status.PAID
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.refund_reason) == ("succeeded", "")
    assert (second.status, second.refund_reason) == ("refunded", "duplicate")
    assert _reasons(reservation) == ["sale"]
    assert_inventory_invariants()


# --- cancel ----------------------------------------------------------------------------


def test_cancelling_a_paid_order_refunds_it_and_puts_the_units_back():
    allocation = open_allocation(quantity=3, on_hand=10)
    reservation = held_reservation(allocation=allocation, quantity=2)
    order = _checkout(reservation)
    allocation.refresh_from_db()
    assert (allocation.sold, allocation.remaining) == (2, 1)

    result = services.order_cancel(order_id=order.pk, customer_id=order.customer_id)

    assert result.status == Order.Status.REFUNDED
    payment = order.payments.get()
    assert (payment.status, payment.refund_reason) == ("refunded", "cancelled")
    assert payment.refund_reference == f"re_{payment.reference}"
    assert payment.refunded_at is not None
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.REFUNDED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (0, 0, 3)
    stock = allocation.stock_item
    stock.refresh_from_db()
    assert (stock.on_hand, stock.reserved) == (10, 3)
    refund = StockMovement.objects.get(reason=StockMovement.Reason.SALE_REFUND)
    assert (refund.reservation_id, refund.on_hand_delta, refund.sold_delta) == (
        reservation.pk,
        2,
        -2,
    )
    assert_inventory_invariants()


def test_cancelling_twice_refunds_once(monkeypatch):
    reservation = held_reservation()
    order = _checkout(reservation)
    refunds = []
    real = TestPaymentProvider.refund

    def spy(self, *, payment):
        refunds.append(payment.reference)
        return real(self, payment=payment)

    monkeypatch.setattr(TestPaymentProvider, "refund", spy)

    services.order_cancel(order_id=order.pk)
    again = services.order_cancel(order_id=order.pk)

    assert again.status == Order.Status.REFUNDED
    assert len(refunds) == 1
    assert StockMovement.objects.filter(reason="sale_refund").count() == 1
    assert_inventory_invariants()


def test_cancelling_a_pending_order_releases_the_hold(settings):
    allocation = open_allocation(quantity=3)
    order, payment, reservation = _pending_order(settings, allocation, quantity=2)

    result = services.order_cancel(order_id=order.pk, customer_id=order.customer_id)
    again = services.order_cancel(order_id=order.pk, customer_id=order.customer_id)

    assert (result.status, again.status) == ("cancelled", "cancelled")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.RELEASED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (0, 0, 3)
    assert _reasons(reservation) == ["hold_release"]
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING  # the provider may still answer
    assert_inventory_invariants()


def test_cancelling_a_failed_order_releases_the_hold(settings):
    settings.PAYMENT_TEST_MODE = "fail"
    reservation = held_reservation()
    with pytest.raises(PaymentFailed):
        _checkout(reservation)
    order = Order.objects.get()

    result = services.order_cancel(order_id=order.pk, customer_id=order.customer_id)

    assert result.status == Order.Status.CANCELLED
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.RELEASED
    assert_inventory_invariants()


def test_cancelling_a_pending_order_whose_hold_expired_leaves_the_hold_alone(settings):
    order, _, reservation = _pending_order(settings)
    expire(reservation)

    result = services.order_cancel(order_id=order.pk)

    assert result.status == Order.Status.CANCELLED
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.EXPIRED
    assert _reasons(reservation) == ["hold_expire"]
    assert_inventory_invariants()


def test_cancelling_someone_elses_order_is_not_found_and_changes_nothing():
    reservation = held_reservation()
    order = _checkout(reservation)

    with pytest.raises(NotFound):
        services.order_cancel(order_id=order.pk, customer_id=UserFactory().pk)

    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert order.payments.get().status == Payment.Status.SUCCEEDED
    assert not StockMovement.objects.filter(reason="sale_refund").exists()


def test_ops_cancelling_a_paid_order_is_recorded_in_the_ledger():
    staff = UserFactory(is_staff=True)
    order = _checkout(held_reservation())

    services.order_cancel(order_id=order.pk, actor=staff)

    assert StockMovement.objects.get(reason="sale_refund").actor_id == staff.pk


def test_a_refund_the_provider_refuses_keeps_the_order_paid_until_it_is_retried(monkeypatch):
    allocation = open_allocation(quantity=2)
    reservation = held_reservation(allocation=allocation)
    order = _checkout(reservation)
    monkeypatch.setattr(
        TestPaymentProvider,
        "refund",
        lambda self, *, payment: RefundResult("failed", failure_reason="provider_down"),
    )

    with pytest.raises(RefundFailed) as raised:
        services.order_cancel(order_id=order.pk, customer_id=order.customer_id)

    assert (raised.value.code, raised.value.http_status) == ("refund_failed", 502)
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    payment = order.payments.get()
    assert (payment.status, payment.refund_reason) == ("succeeded", "cancelled")
    assert payment.refund_requested_at is not None
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED
    allocation.refresh_from_db()
    assert allocation.sold == 1  # no units back before the money
    assert services.payments_reconcile(older_than_seconds=0) == {
        "refunds_finished": 0,
        "refunds_failed": 1,
    }

    monkeypatch.undo()
    assert services.payments_reconcile(older_than_seconds=0) == {
        "refunds_finished": 1,
        "refunds_failed": 0,
    }

    order.refresh_from_db()
    assert order.status == Order.Status.REFUNDED
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.REFUNDED
    allocation.refresh_from_db()
    assert (allocation.sold, allocation.remaining) == (0, 2)
    assert services.payments_reconcile(older_than_seconds=0) == {
        "refunds_finished": 0,
        "refunds_failed": 0,
    }
    assert_inventory_invariants()


def test_repeating_a_cancel_finishes_a_refund_that_failed(monkeypatch):
    order = _checkout(held_reservation())

    def down(self, *, payment):
        raise PaymentProviderError("timeout")

    monkeypatch.setattr(TestPaymentProvider, "refund", down)
    with pytest.raises(RefundFailed):
        services.order_cancel(order_id=order.pk)
    monkeypatch.undo()

    result = services.order_cancel(order_id=order.pk)

    assert result.status == Order.Status.REFUNDED
    assert order.payments.get().status == Payment.Status.REFUNDED
    assert StockMovement.objects.filter(reason="sale_refund").count() == 1
    assert_inventory_invariants()


def test_reconcile_waits_before_touching_a_fresh_claim(monkeypatch):
    order = _checkout(held_reservation())
    monkeypatch.setattr(
        TestPaymentProvider, "refund", lambda self, *, payment: RefundResult("failed")
    )
    with pytest.raises(RefundFailed):
        services.order_cancel(order_id=order.pk)

    assert services.payments_reconcile(older_than_seconds=60) == {
        "refunds_finished": 0,
        "refunds_failed": 0,
    }


@pytest.mark.postgres
def test_a_cancel_racing_a_payment_success_ends_with_the_money_and_units_back(settings):
    allocation = open_allocation(quantity=2)
    order, payment, reservation = _pending_order(settings, allocation)

    def work(i):
        if i % 2:
            return services.order_cancel(order_id=order.pk)
        return services.order_payment_succeeded(
            order_id=order.pk, payment_reference=payment.reference
        )

    results = run_together(6, work)

    assert [r for r in results if isinstance(r, BaseException)] == []
    order.refresh_from_db()
    payment.refresh_from_db()
    # Paid then cancelled (refunded), or cancelled then paid (payment refunded).
    assert order.status in (Order.Status.REFUNDED, Order.Status.CANCELLED)
    assert payment.status == Payment.Status.REFUNDED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (0, 0, 2)
    assert Counter(_reasons(reservation))["sale"] <= 1
    assert_inventory_invariants()


# --- selectors -------------------------------------------------------------------------


def test_a_customer_lists_only_their_own_orders_newest_first():
    buyer = UserFactory()
    allocation = open_allocation(quantity=5)
    first = _checkout(held_reservation(allocation=allocation, customer=buyer))
    second = _checkout(held_reservation(allocation=allocation, customer=buyer, quantity=2))
    _checkout(held_reservation(allocation=allocation))  # someone else's

    orders = list(selectors.order_list_for(customer_id=buyer.pk))

    assert [o.pk for o in orders] == [second.pk, first.pk]
    assert [o.total for o in orders] == [Decimal("25.00"), Decimal("12.50")]
    assert [line.quantity for line in orders[0].lines.all()] == [2]


def test_a_customer_gets_their_own_order_and_not_someone_elses():
    buyer, other = UserFactory(), UserFactory()
    order = _checkout(held_reservation(customer=buyer))

    assert selectors.order_get_for(customer_id=buyer.pk, order_id=order.pk).pk == order.pk
    with pytest.raises(NotFound):
        selectors.order_get_for(customer_id=other.pk, order_id=order.pk)
    with pytest.raises(NotFound):
        selectors.order_get_for(customer_id=buyer.pk, order_id=order.pk + 1000)


# --- the Redis gate --------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("path", ["late_reinstated", "late_refunded", "cancel_paid", "cancel_open"])
def test_the_gate_stays_in_step_with_the_database(settings, gate_on, path):
    allocation = open_allocation(quantity=2)
    order, payment, reservation = _pending_order(settings, allocation)
    if path.startswith("late"):
        expire(reservation)
        if path == "late_refunded":
            held_reservation(allocation=allocation, quantity=2)
        services.order_payment_succeeded(order_id=order.pk, payment_reference=payment.reference)
    elif path == "cancel_paid":
        services.order_payment_succeeded(order_id=order.pk, payment_reference=payment.reference)
        services.order_cancel(order_id=order.pk)
    else:
        services.order_cancel(order_id=order.pk)

    assert inventory.gate_reconcile(allocation_id=allocation.pk) is False  # nothing to repair
    assert_inventory_invariants()
