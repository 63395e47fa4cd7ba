"""Held reservations (``inventory.services.holds``): release, confirm (the sale),
expiry, late payments (an expired hold reinstated) and refunds, with the database alone
and with the Redis gate in front. A refused change writes nothing; every accepted one is
one ledger entry and keeps the invariants."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.exceptions import NotFound
from inventory import services
from inventory.exceptions import HoldExpired, ReservationNotHeld, SoldOut
from inventory.models import Reservation, StockItem, StockMovement
from tests.factories import UserFactory, open_allocation
from tests.inventory.helpers import (
    MISSING_ID,
    last_movement,
    open_primed,
    request_hold,
    settled_hold,
    snapshot,
)
from tests.inventory.invariants import assert_gate_agrees, assert_inventory_invariants

Reason = StockMovement.Reason
Status = Reservation.Status


# --- release ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_release_gives_the_units_back_once(gate_mode, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    hold = settled_hold(capture, customer.pk, allocation.pk, key="r", quantity=2)
    movements_before = StockMovement.objects.count()

    with capture(execute=True):
        released = services.reservation_release(reservation_id=hold.pk, customer_id=customer.pk)

    assert released.status == Status.RELEASED
    hold.refresh_from_db()
    assert hold.status == Status.RELEASED
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.remaining) == (5, 0, 5)
    assert StockMovement.objects.count() == movements_before + 1
    movement = last_movement()
    assert movement.reason == Reason.HOLD_RELEASE
    assert movement.reservation_id == hold.pk
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (0, 0, -2, 0)
    assert_gate_agrees(allocation.pk, status="open")
    before = snapshot()

    with capture(execute=True):
        again = services.reservation_release(reservation_id=hold.pk, customer_id=customer.pk)

    assert again.status == Status.RELEASED
    assert snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_release_by_ops_records_the_actor(gate_off, django_capture_on_commit_callbacks):
    allocation = open_primed(5)
    hold = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="r"
    )
    operator = UserFactory()

    released = services.reservation_release(reservation_id=hold.pk, actor=operator)

    assert released.status == Status.RELEASED
    assert last_movement().actor == operator
    assert_inventory_invariants()


@pytest.mark.django_db
def test_release_by_another_customer_is_not_found_and_changes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    hold = settled_hold(capture, UserFactory().pk, allocation.pk, key="mine")
    before = snapshot()

    with capture(execute=True), pytest.raises(NotFound):
        services.reservation_release(reservation_id=hold.pk, customer_id=UserFactory().pk)

    assert snapshot() == before


@pytest.mark.django_db
def test_release_of_an_unknown_reservation_is_not_found():
    with pytest.raises(NotFound):
        services.reservation_release(reservation_id=MISSING_ID)


@pytest.mark.django_db
def test_release_of_a_confirmed_reservation_is_refused_and_changes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    hold = settled_hold(capture, customer.pk, allocation.pk, key="bought")
    with capture(execute=True):
        services.reservation_confirm(reservation_id=hold.pk)
    before = snapshot()

    with capture(execute=True), pytest.raises(ReservationNotHeld) as excinfo:
        services.reservation_release(reservation_id=hold.pk, customer_id=customer.pk)

    assert excinfo.value.data == {"status": Status.CONFIRMED}
    assert snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_release_of_a_pending_reservation_is_refused(gate_off):
    allocation = open_primed(5)
    customer = UserFactory()
    # Inside the test transaction the reserve task (on commit) never runs: still pending.
    pending = request_hold(customer.pk, allocation.pk, key="pending")
    assert pending.status == Status.PENDING
    before = snapshot()

    with pytest.raises(ReservationNotHeld) as excinfo:
        services.reservation_release(reservation_id=pending.pk, customer_id=customer.pk)

    assert excinfo.value.data == {"status": Status.PENDING}
    assert snapshot() == before


# --- confirm ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_confirm_sells_the_held_units_once(gate_mode, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5, on_hand=8)
    customer = UserFactory()
    hold = settled_hold(capture, customer.pk, allocation.pk, key="buy", quantity=2)
    movements_before = StockMovement.objects.count()

    with capture(execute=True):
        confirmed = services.reservation_confirm(reservation_id=hold.pk)

    assert confirmed.status == Status.CONFIRMED
    hold.refresh_from_db()
    assert hold.status == Status.CONFIRMED
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold, allocation.remaining) == (
        5,
        0,
        2,
        3,
    )
    item = StockItem.objects.get(pk=allocation.stock_item_id)
    assert (item.on_hand, item.reserved) == (6, 3)
    assert StockMovement.objects.count() == movements_before + 1
    movement = last_movement()
    assert movement.reason == Reason.SALE
    assert movement.reservation_id == hold.pk
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (-2, -2, -2, 2)
    assert movement.reference == f"reservation:{hold.pk}"
    # With the gate: the units stay taken (and count towards the limit); the expiry is
    # forgotten.
    assert_gate_agrees(allocation.pk, status="open")
    before = snapshot()

    with capture(execute=True):
        again = services.reservation_confirm(reservation_id=hold.pk)

    assert again.status == Status.CONFIRMED
    assert snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_confirm_after_the_hold_expired_expires_it_and_returns_the_units(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5, on_hand=8)
    hold = settled_hold(capture, UserFactory().pk, allocation.pk, key="late", quantity=2)
    later = hold.expires_at + timedelta(seconds=1)
    movements_before = StockMovement.objects.count()

    with capture(execute=True), pytest.raises(HoldExpired):
        services.reservation_confirm(reservation_id=hold.pk, now=later)

    hold.refresh_from_db()
    assert hold.status == Status.EXPIRED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (0, 0, 5)
    item = StockItem.objects.get(pk=allocation.stock_item_id)
    assert (item.on_hand, item.reserved) == (8, 5)
    assert StockMovement.objects.count() == movements_before + 1
    movement = last_movement()
    assert movement.reason == Reason.HOLD_EXPIRE
    assert (movement.held_delta, movement.sold_delta, movement.on_hand_delta) == (-2, 0, 0)
    assert_gate_agrees(allocation.pk, status="open")
    before = snapshot()

    # Asking again is answered the same way and changes nothing.
    with capture(execute=True), pytest.raises(HoldExpired):
        services.reservation_confirm(reservation_id=hold.pk, now=later)

    assert snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_confirm_exactly_at_the_expiry_instant_is_too_late(
    gate_off, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    hold = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="x"
    )

    with pytest.raises(HoldExpired):
        services.reservation_confirm(reservation_id=hold.pk, now=hold.expires_at)

    hold.refresh_from_db()
    assert hold.status == Status.EXPIRED
    assert_inventory_invariants()


@pytest.mark.django_db
def test_confirm_just_before_the_expiry_sells(gate_off, django_capture_on_commit_callbacks):
    allocation = open_primed(5)
    hold = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="x"
    )

    confirmed = services.reservation_confirm(
        reservation_id=hold.pk, now=hold.expires_at - timedelta(microseconds=1)
    )

    assert confirmed.status == Status.CONFIRMED
    assert_inventory_invariants()


@pytest.mark.django_db
def test_confirm_of_a_released_reservation_is_refused_and_changes_nothing(
    gate_off, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    hold = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="x"
    )
    services.reservation_release(reservation_id=hold.pk)
    before = snapshot()

    with pytest.raises(ReservationNotHeld) as excinfo:
        services.reservation_confirm(reservation_id=hold.pk)

    assert excinfo.value.data == {"status": Status.RELEASED}
    assert snapshot() == before


@pytest.mark.django_db
def test_confirm_of_an_unknown_reservation_is_not_found():
    with pytest.raises(NotFound):
        services.reservation_confirm(reservation_id=MISSING_ID)


# --- expiry ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_expire_takes_back_only_the_holds_past_their_time(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    first_drop, second_drop = open_primed(5), open_primed(5)
    customer, other = UserFactory(), UserFactory()
    due_a = settled_hold(capture, customer.pk, first_drop.pk, key="a", quantity=2)
    due_b = settled_hold(capture, other.pk, second_drop.pk, key="b")
    later = settled_hold(capture, other.pk, first_drop.pk, key="c")
    Reservation.objects.filter(pk=later.pk).update(
        expires_at=later.expires_at + timedelta(minutes=10)
    )
    services.gate_rebuild(allocation_id=first_drop.pk)  # the gate (when on) learns it
    sweep_at = later.expires_at + timedelta(minutes=5)

    with capture(execute=True):
        expired = services.reservations_expire(now=sweep_at)

    assert expired == 2
    statuses = dict(Reservation.objects.values_list("pk", "status"))
    assert statuses == {
        due_a.pk: Status.EXPIRED,
        due_b.pk: Status.EXPIRED,
        later.pk: Status.HELD,
    }
    first_drop.refresh_from_db()
    second_drop.refresh_from_db()
    assert (first_drop.held, first_drop.remaining) == (1, 4)
    assert (second_drop.held, second_drop.remaining) == (0, 5)
    expiries = StockMovement.objects.filter(reason=Reason.HOLD_EXPIRE).order_by("allocation_id")
    assert [(m.allocation_id, m.held_delta) for m in expiries] == [
        (first_drop.pk, -2),
        (second_drop.pk, -1),
    ]
    assert_gate_agrees(first_drop.pk, status="open")
    assert_gate_agrees(second_drop.pk, status="open")
    assert services.reservations_expire(now=sweep_at) == 0
    assert_inventory_invariants()


@pytest.mark.django_db
def test_expire_works_through_every_due_hold_in_batches(
    gate_off, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(7)
    holds = [settled_hold(capture, UserFactory().pk, allocation.pk, key="h") for _ in range(7)]

    expired = services.reservations_expire(
        now=max(h.expires_at for h in holds) + timedelta(seconds=1), limit=3
    )

    assert expired == 7
    assert set(Reservation.objects.values_list("status", flat=True)) == {Status.EXPIRED}
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (0, 7)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_expire_with_nothing_due_changes_nothing(gate_off, django_capture_on_commit_callbacks):
    allocation = open_primed(5)
    settled_hold(django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="x")
    before = snapshot()

    assert services.reservations_expire() == 0

    assert snapshot() == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_expire_skips_a_hold_another_transaction_has_locked(gate_off):
    allocation = open_allocation(quantity=5)
    busy = request_hold(UserFactory().pk, allocation.pk, key="busy")
    idle = request_hold(UserFactory().pk, allocation.pk, key="idle")
    later = max(busy.expires_at, idle.expires_at) + timedelta(seconds=1)
    locked, finish = threading.Event(), threading.Event()

    def checkout_in_progress():
        try:
            with transaction.atomic():
                Reservation.objects.select_for_update().get(pk=busy.pk)
                locked.set()
                finish.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=checkout_in_progress)
    thread.start()
    try:
        assert locked.wait(30)
        expired = services.reservations_expire(now=later)
    finally:
        finish.set()
        thread.join(30)

    assert expired == 1  # the locked row was skipped, not waited for
    busy.refresh_from_db()
    idle.refresh_from_db()
    assert (busy.status, idle.status) == (Status.HELD, Status.EXPIRED)
    assert services.reservations_expire(now=later) == 1
    busy.refresh_from_db()
    assert busy.status == Status.EXPIRED
    assert_inventory_invariants()


# --- late payments and refunds ---------------------------------------------------------


def _expire(reservation):
    services.reservations_expire(now=reservation.expires_at + timedelta(seconds=1))
    reservation.refresh_from_db()
    assert reservation.status == Status.EXPIRED


@pytest.mark.django_db(transaction=True)
def test_an_expired_hold_is_reinstated_while_units_are_free():
    allocation = open_allocation(quantity=2)
    reservation = request_hold(UserFactory().pk, allocation.pk, key="k", quantity=2)
    _expire(reservation)

    reinstated = services.reservation_reinstate(reservation_id=reservation.pk)

    assert reinstated.status == Status.HELD
    assert reinstated.expires_at > timezone.now()
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (2, 0)
    assert StockMovement.objects.filter(reason="hold_reinstate", held_delta=2).count() == 1
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_reinstating_fails_cleanly_when_the_units_went_to_someone_else():
    allocation = open_allocation(quantity=1)
    late = request_hold(UserFactory().pk, allocation.pk, key="late")
    _expire(late)
    request_hold(UserFactory().pk, allocation.pk, key="next buyer")

    with pytest.raises(SoldOut):
        services.reservation_reinstate(reservation_id=late.pk)

    late.refresh_from_db()
    assert late.status == Status.EXPIRED
    assert not StockMovement.objects.filter(reason="hold_reinstate").exists()
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_after_close_a_late_payment_takes_free_stock_back_into_the_allocation():
    allocation = open_allocation(quantity=1, on_hand=3)
    reservation = request_hold(UserFactory().pk, allocation.pk, key="k")
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


@pytest.mark.django_db(transaction=True)
def test_only_an_expired_hold_can_be_reinstated():
    allocation = open_allocation(quantity=2)
    reservation = request_hold(UserFactory().pk, allocation.pk, key="k")
    services.reservation_release(reservation_id=reservation.pk)

    with pytest.raises(ReservationNotHeld):
        services.reservation_reinstate(reservation_id=reservation.pk)
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_refund_puts_units_back_on_sale_while_the_drop_sells():
    allocation = open_allocation(quantity=2, on_hand=2)
    reservation = request_hold(UserFactory().pk, allocation.pk, key="k", quantity=2)
    services.reservation_confirm(reservation_id=reservation.pk)

    services.reservation_refund(reservation_id=reservation.pk)
    services.reservation_refund(reservation_id=reservation.pk)  # idempotent

    allocation.refresh_from_db()
    stock = allocation.stock_item
    stock.refresh_from_db()
    assert Reservation.objects.get(pk=reservation.pk).status == Status.REFUNDED
    assert (allocation.sold, allocation.remaining) == (0, 2)
    assert (stock.on_hand, stock.reserved) == (2, 2)
    assert StockMovement.objects.filter(reason="sale_refund").count() == 1
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_refund_after_close_returns_units_to_free_stock(gate_mode):
    allocation = open_allocation(quantity=2, on_hand=5)
    reservation = request_hold(UserFactory().pk, allocation.pk, key="k")
    services.reservation_confirm(reservation_id=reservation.pk)
    services.allocation_close(allocation_id=allocation.pk)

    services.reservation_refund(reservation_id=reservation.pk)

    allocation.refresh_from_db()
    stock = allocation.stock_item
    stock.refresh_from_db()
    assert (allocation.quantity, allocation.sold) == (0, 0)
    assert (stock.on_hand, stock.reserved, stock.available) == (5, 0, 5)
    assert_inventory_invariants()
    # The closed gate no longer counts the refunded customer's units against them.
    assert_gate_agrees(allocation.pk, status="closed", remaining=0)


@pytest.mark.django_db(transaction=True)
def test_only_a_confirmed_reservation_can_be_refunded():
    allocation = open_allocation(quantity=1)
    reservation = request_hold(UserFactory().pk, allocation.pk, key="k")

    with pytest.raises(ReservationNotHeld):
        services.reservation_refund(reservation_id=reservation.pk)

    assert not StockMovement.objects.filter(reason="sale_refund").exists()
    assert_inventory_invariants()
