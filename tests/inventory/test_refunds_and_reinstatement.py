"""Late payments (reinstating an expired hold) and refunds (units coming back)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory import services
from inventory.exceptions import ReservationNotHeld, SoldOut
from inventory.models import Reservation, StockMovement
from tests.factories import UserFactory, open_allocation
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = pytest.mark.django_db(transaction=True)


def _hold(allocation, *, key="k", quantity=1):
    return services.reservation_request(
        customer_id=UserFactory().pk,
        allocation_id=allocation.pk,
        quantity=quantity,
        idempotency_key=key,
        unit_price=Decimal("3.00"),
        currency="USD",
    )


def _expire(reservation):
    services.reservations_expire(now=reservation.expires_at + timedelta(seconds=1))
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.EXPIRED


def test_an_expired_hold_is_reinstated_while_units_are_free():
    allocation = open_allocation(quantity=2)
    reservation = _hold(allocation, quantity=2)
    _expire(reservation)

    reinstated = services.reservation_reinstate(reservation_id=reservation.pk)

    assert reinstated.status == Reservation.Status.HELD
    assert reinstated.expires_at > timezone.now()
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (2, 0)
    assert StockMovement.objects.filter(reason="hold_reinstate", held_delta=2).count() == 1
    assert_inventory_invariants()


def test_reinstating_fails_cleanly_when_the_units_went_to_someone_else():
    allocation = open_allocation(quantity=1)
    late = _hold(allocation, key="late")
    _expire(late)
    _hold(allocation, key="next buyer")

    with pytest.raises(SoldOut):
        services.reservation_reinstate(reservation_id=late.pk)

    late.refresh_from_db()
    assert late.status == Reservation.Status.EXPIRED
    assert not StockMovement.objects.filter(reason="hold_reinstate").exists()
    assert_inventory_invariants()


def test_after_close_a_late_payment_takes_free_stock_back_into_the_allocation():
    allocation = open_allocation(quantity=1, on_hand=3)
    reservation = _hold(allocation)
    _expire(reservation)
    services.allocation_close(allocation_id=allocation.pk)

    services.reservation_reinstate(reservation_id=reservation.pk)
    services.reservation_confirm(reservation_id=reservation.pk)

    allocation.refresh_from_db()
    stock = allocation.stock_item
    stock.refresh_from_db()
    assert (allocation.quantity, allocation.sold, allocation.held) == (1, 1, 0)
    assert (stock.on_hand, stock.reserved) == (2, 0)
    assert_inventory_invariants()


def test_only_an_expired_hold_can_be_reinstated():
    allocation = open_allocation(quantity=2)
    reservation = _hold(allocation)
    services.reservation_release(reservation_id=reservation.pk)

    with pytest.raises(ReservationNotHeld):
        services.reservation_reinstate(reservation_id=reservation.pk)
    assert_inventory_invariants()


def test_a_refund_puts_units_back_on_sale_while_the_drop_sells():
    allocation = open_allocation(quantity=2, on_hand=2)
    reservation = _hold(allocation, quantity=2)
    services.reservation_confirm(reservation_id=reservation.pk)

    services.reservation_refund(reservation_id=reservation.pk)
    services.reservation_refund(reservation_id=reservation.pk)  # idempotent

    allocation.refresh_from_db()
    stock = allocation.stock_item
    stock.refresh_from_db()
    assert Reservation.objects.get(pk=reservation.pk).status == Reservation.Status.REFUNDED
    assert (allocation.sold, allocation.remaining) == (0, 2)
    assert (stock.on_hand, stock.reserved) == (2, 2)
    assert StockMovement.objects.filter(reason="sale_refund").count() == 1
    assert_inventory_invariants()


def test_a_refund_after_close_returns_units_to_free_stock():
    allocation = open_allocation(quantity=2, on_hand=5)
    reservation = _hold(allocation)
    services.reservation_confirm(reservation_id=reservation.pk)
    services.allocation_close(allocation_id=allocation.pk)

    services.reservation_refund(reservation_id=reservation.pk)

    allocation.refresh_from_db()
    stock = allocation.stock_item
    stock.refresh_from_db()
    assert (allocation.quantity, allocation.sold) == (0, 0)
    assert (stock.on_hand, stock.reserved, stock.available) == (5, 0, 5)
    assert_inventory_invariants()


def test_only_a_confirmed_reservation_can_be_refunded():
    allocation = open_allocation(quantity=1)
    reservation = _hold(allocation)

    with pytest.raises(ReservationNotHeld):
        services.reservation_refund(reservation_id=reservation.pk)

    assert not StockMovement.objects.filter(reason="sale_refund").exists()
    assert_inventory_invariants()
