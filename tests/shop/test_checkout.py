"""checkout_create: a held reservation becomes an order, charged once."""

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from core.exceptions import NotFound
from inventory import services as inventory
from inventory.exceptions import HoldExpired, ReservationNotHeld
from inventory.models import Reservation, StockMovement
from shop import services
from shop.exceptions import PaymentFailed, PaymentProviderError
from shop.models import Order, OrderLine, Payment
from shop.payments import TestPaymentProvider
from tests.concurrency import run_together
from tests.factories import UserFactory, open_allocation
from tests.inventory.invariants import assert_inventory_invariants
from tests.shop.factories import WEBHOOK_SECRET, expire, held_reservation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _payments(settings):
    settings.PAYMENT_TEST_MODE = "succeed"
    settings.PAYMENT_WEBHOOK_SECRET = WEBHOOK_SECRET


@pytest.fixture
def charges(monkeypatch):
    """Every charge the test provider is asked for, as (order id, payment reference)."""
    calls = []
    real = TestPaymentProvider.charge

    def spy(self, *, order, payment_reference):
        calls.append((order.pk, payment_reference))
        return real(self, order=order, payment_reference=payment_reference)

    monkeypatch.setattr(TestPaymentProvider, "charge", spy)
    return calls


def _nothing_created():
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0
    assert Payment.objects.count() == 0


def test_checkout_of_a_held_reservation_makes_a_paid_order(charges):
    allocation = open_allocation(quantity=5, on_hand=10)
    reservation = held_reservation(allocation=allocation, quantity=2)

    order = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )

    assert order.status == Order.Status.PAID
    assert order.paid_at is not None
    assert (order.total, order.currency) == (Decimal("25.00"), "USD")
    assert order.customer_id == reservation.customer_id
    line = order.lines.get()
    assert (line.variant_id, line.quantity) == (allocation.stock_item.variant_id, 2)
    assert (line.unit_price, line.line_total) == (Decimal("12.50"), Decimal("25.00"))
    payment = order.payments.get()
    assert (payment.status, payment.amount, payment.provider) == (
        "succeeded",
        Decimal("25.00"),
        "test",
    )
    assert charges == [(order.pk, payment.reference)]
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (0, 2, 3)
    stock = allocation.stock_item
    stock.refresh_from_db()
    assert (stock.on_hand, stock.reserved) == (8, 3)
    sale = StockMovement.objects.get(reason=StockMovement.Reason.SALE)
    assert (sale.reservation_id, sale.on_hand_delta, sale.sold_delta) == (reservation.pk, -2, 2)
    assert_inventory_invariants()


def test_checkout_of_someone_elses_reservation_is_not_found(charges):
    reservation = held_reservation()
    intruder = UserFactory()

    with pytest.raises(NotFound):
        services.checkout_create(customer_id=intruder.pk, reservation_id=reservation.pk)

    _nothing_created()
    assert charges == []
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD


def test_checkout_of_an_unknown_reservation_is_not_found():
    user = UserFactory()

    with pytest.raises(NotFound):
        services.checkout_create(customer_id=user.pk, reservation_id=987654)

    _nothing_created()


def test_checkout_twice_returns_the_same_order_and_charges_once(charges):
    reservation = held_reservation()

    first = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )
    second = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )

    assert second.pk == first.pk
    assert second.status == Order.Status.PAID
    assert Order.objects.count() == 1
    assert Payment.objects.count() == 1
    assert len(charges) == 1
    assert StockMovement.objects.filter(reason=StockMovement.Reason.SALE).count() == 1
    assert_inventory_invariants()


def test_checkout_of_an_expired_hold_raises_hold_expired_and_creates_no_order(charges):
    reservation = held_reservation()
    expire(reservation)

    with pytest.raises(HoldExpired):
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    _nothing_created()
    assert charges == []
    assert_inventory_invariants()


def test_checkout_of_a_hold_past_its_time_expires_it_on_the_spot(charges):
    allocation = open_allocation(quantity=3)
    reservation = held_reservation(allocation=allocation, quantity=2)
    # Its time is up, but the sweep has not run yet.
    Reservation.objects.filter(pk=reservation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    with pytest.raises(HoldExpired):
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    _nothing_created()
    assert charges == []
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.EXPIRED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (0, 3)
    assert StockMovement.objects.filter(reason=StockMovement.Reason.HOLD_EXPIRE).count() == 1
    assert_inventory_invariants()


def test_checkout_of_a_released_hold_is_refused(charges):
    reservation = held_reservation()
    inventory.reservation_release(reservation_id=reservation.pk)

    with pytest.raises(ReservationNotHeld):
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    _nothing_created()
    assert charges == []


def test_a_declined_payment_raises_payment_failed_and_keeps_the_hold(settings):
    settings.PAYMENT_TEST_MODE = "fail"
    allocation = open_allocation(quantity=3)
    reservation = held_reservation(allocation=allocation, quantity=2)

    with pytest.raises(PaymentFailed) as raised:
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    order = Order.objects.get()
    assert raised.value.code == "payment_failed"
    assert raised.value.http_status == 402
    assert raised.value.data == {"order_id": order.pk, "failure_reason": "card_declined"}
    assert order.status == Order.Status.PAYMENT_FAILED
    assert order.paid_at is None
    payment = order.payments.get()
    assert (payment.status, payment.failure_reason) == ("failed", "card_declined")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold) == (2, 0)
    assert not StockMovement.objects.filter(reason=StockMovement.Reason.SALE).exists()
    assert_inventory_invariants()


def test_a_retry_after_a_declined_payment_charges_again_with_a_new_payment(settings, charges):
    settings.PAYMENT_TEST_MODE = "fail"
    reservation = held_reservation()
    with pytest.raises(PaymentFailed):
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    settings.PAYMENT_TEST_MODE = "succeed"
    order = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )

    assert order.status == Order.Status.PAID
    assert Order.objects.count() == 1
    assert list(order.payments.order_by("id").values_list("status", flat=True)) == [
        "failed",
        "succeeded",
    ]
    assert len(charges) == 2
    assert charges[0][1] != charges[1][1]
    assert_inventory_invariants()


def test_a_retry_after_a_declined_payment_needs_the_hold_to_last(settings, charges):
    settings.PAYMENT_TEST_MODE = "fail"
    reservation = held_reservation()
    with pytest.raises(PaymentFailed):
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)
    expire(reservation)
    settings.PAYMENT_TEST_MODE = "succeed"

    with pytest.raises(HoldExpired):
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    assert Order.objects.get().status == Order.Status.PAYMENT_FAILED
    assert Payment.objects.count() == 1
    assert len(charges) == 1


def test_a_pending_charge_leaves_the_order_waiting_and_a_repeat_charges_nothing(settings, charges):
    settings.PAYMENT_TEST_MODE = "pending"
    allocation = open_allocation(quantity=3)
    reservation = held_reservation(allocation=allocation)

    order = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )
    again = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )

    assert (order.status, again.status, again.pk) == (
        "pending_payment",
        "pending_payment",
        order.pk,
    )
    assert order.payments.get().status == Payment.Status.PENDING
    assert len(charges) == 1
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold) == (1, 0)
    assert_inventory_invariants()


def test_an_unreachable_provider_leaves_the_charge_pending(monkeypatch):
    def down(self, *, order, payment_reference):
        raise PaymentProviderError("connection reset")

    monkeypatch.setattr(TestPaymentProvider, "charge", down)
    reservation = held_reservation()

    order = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )

    assert order.status == Order.Status.PENDING_PAYMENT
    assert order.payments.get().status == Payment.Status.PENDING
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD


def test_a_hold_that_expires_during_the_charge_is_reinstated_while_units_are_free(monkeypatch):
    allocation = open_allocation(quantity=2)
    reservation = held_reservation(allocation=allocation)
    real = TestPaymentProvider.charge

    def slow(self, *, order, payment_reference):
        expire(reservation)  # the provider took its time
        return real(self, order=order, payment_reference=payment_reference)

    monkeypatch.setattr(TestPaymentProvider, "charge", slow)

    order = services.checkout_create(
        customer_id=reservation.customer_id, reservation_id=reservation.pk
    )

    assert order.status == Order.Status.PAID
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED
    reasons = list(
        StockMovement.objects.filter(reservation=reservation)
        .order_by("id")
        .values_list("reason", flat=True)
    )
    assert reasons == ["hold_expire", "hold_reinstate", "sale"]
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold) == (0, 1)
    assert_inventory_invariants()


def test_a_hold_that_expires_during_the_charge_is_refunded_when_its_units_are_gone(monkeypatch):
    allocation = open_allocation(quantity=1)
    reservation = held_reservation(allocation=allocation)
    real = TestPaymentProvider.charge
    others = []

    def slow(self, *, order, payment_reference):
        expire(reservation)
        others.append(held_reservation(allocation=allocation))  # the unit went to another
        return real(self, order=order, payment_reference=payment_reference)

    monkeypatch.setattr(TestPaymentProvider, "charge", slow)

    with pytest.raises(HoldExpired) as raised:
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    order = Order.objects.get()
    assert raised.value.data == {"order_id": order.pk, "refunded": True}
    assert order.status == Order.Status.REFUNDED
    payment = order.payments.get()
    assert (payment.status, payment.refund_reason) == ("refunded", "unfulfillable")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.EXPIRED
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold) == (1, 1, 0)
    assert Reservation.objects.get(pk=others[0].pk).status == Reservation.Status.HELD
    assert_inventory_invariants()


def test_checkout_inside_an_open_transaction_is_refused(charges):
    reservation = held_reservation()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.checkout_create(customer_id=reservation.customer_id, reservation_id=reservation.pk)

    _nothing_created()
    assert charges == []


@pytest.mark.postgres
def test_concurrent_checkouts_of_one_hold_make_one_order_and_one_charge(charges):
    reservation = held_reservation(quantity=2)

    results = run_together(
        8,
        lambda i: services.checkout_create(
            customer_id=reservation.customer_id, reservation_id=reservation.pk
        ),
    )

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert Counter(r.pk for r in results) == Counter({Order.objects.get().pk: 8})
    assert Payment.objects.count() == 1
    assert len(charges) == 1
    assert Order.objects.get().status == Order.Status.PAID
    assert StockMovement.objects.filter(reason=StockMovement.Reason.SALE).count() == 1
    assert_inventory_invariants()
