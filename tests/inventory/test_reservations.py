"""Holds: request, settle, release, confirm and expire, with the database alone and with
the Redis gate in front. A refused request writes nothing and takes nothing from the
gate; every accepted change is one ledger entry and keeps the invariants."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.exceptions import IdempotencyKeyReused, InvalidInput, NotFound
from inventory import events, gate, services
from inventory.events import AllocationChanged, ReservationChanged
from inventory.exceptions import (
    DropNotLive,
    HoldExpired,
    LimitReached,
    ReservationNotHeld,
    SoldOut,
    TooManyHolds,
)
from inventory.models import Allocation, Reservation, StockItem, StockMovement
from inventory.services._common import MAX_QUANTITY
from tests.factories import UserFactory, open_allocation, stocked_variant
from tests.inventory.helpers import PRICE, open_primed, request_hold, settled_hold
from tests.inventory.invariants import assert_gate_agrees, assert_inventory_invariants

Reason = StockMovement.Reason
Status = Reservation.Status

MISSING_ID = 987_654

# --- helpers ---------------------------------------------------------------------------


def _gates() -> dict[int, gate.GateState | None]:
    if not gate.gate_enabled():
        return {}
    return {
        pk: gate.gate_read(allocation_id=pk)
        for pk in Allocation.objects.values_list("pk", flat=True)
    }


def _snapshot() -> tuple:
    """Every row and counter a request could touch, and the gates."""
    return (
        list(
            Reservation.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "expires_at", "idempotency_key"
            )
        ),
        list(
            Allocation.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "held", "sold"
            )
        ),
        list(StockItem.objects.order_by("pk").values_list("pk", "on_hand", "reserved")),
        StockMovement.objects.count(),
        _gates(),
    )


def _last_movement() -> StockMovement:
    return StockMovement.objects.order_by("-id").first()


@pytest.fixture
def frozen_now(monkeypatch):
    """Stop the clock the services read (``timezone.now``) at one instant."""
    instant = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: instant)
    return instant


# --- request: the happy path -----------------------------------------------------------


@pytest.mark.django_db
def test_request_on_an_open_allocation_is_held_until_the_hold_window_ends(
    gate_mode, settings, frozen_now, django_capture_on_commit_callbacks
):
    settings.RESERVATION_HOLD_SECONDS = 120
    allocation = open_primed(5)
    customer = UserFactory()
    movements_before = StockMovement.objects.count()

    reservation = settled_hold(
        django_capture_on_commit_callbacks,
        customer.pk,
        allocation.pk,
        key="first",
        quantity=2,
    )

    assert reservation.status == Status.HELD
    assert reservation.expires_at == frozen_now + timedelta(seconds=120)
    assert (reservation.customer_id, reservation.allocation_id) == (customer.pk, allocation.pk)
    assert reservation.quantity == 2
    assert reservation.unit_price == Decimal("9.99")
    assert reservation.currency == "USD"
    assert reservation.idempotency_key == "first"
    assert reservation.reject_reason == ""
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold, allocation.remaining) == (
        5,
        2,
        0,
        3,
    )
    assert StockMovement.objects.count() == movements_before + 1
    movement = _last_movement()
    assert movement.reason == Reason.HOLD
    assert movement.allocation_id == allocation.pk
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (0, 0, 2, 0)
    assert movement.reference == f"holds:{reservation.pk}"
    assert_gate_agrees(allocation.pk, status="open")
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_request_answers_with_the_settled_hold_when_tasks_run_eagerly(gate_mode):
    """Outside any test transaction: the reserve task runs when the request commits, so
    the caller already gets the settled state back."""
    allocation = open_allocation(quantity=3)
    customer = UserFactory()

    reservation = request_hold(customer.pk, allocation.pk, key="eager")

    assert reservation.status == Status.HELD
    assert reservation.expires_at is not None
    allocation.refresh_from_db()
    assert allocation.held == 1
    assert_gate_agrees(allocation.pk, remaining=2)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_request_of_every_remaining_unit_is_held(gate_mode, django_capture_on_commit_callbacks):
    allocation = open_primed(4)

    reservation = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="all", quantity=4
    )

    assert reservation.status == Status.HELD
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (4, 0)
    assert_inventory_invariants()


# --- request: bad input ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("quantity", [0, -1, 1.5, "1", True, 10**7, MAX_QUANTITY + 1, None])
def test_request_with_a_bad_quantity_is_invalid_and_writes_nothing(
    gate_mode, quantity, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    settled_hold(django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="other")
    customer = UserFactory()
    before = _snapshot()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(InvalidInput) as excinfo,
    ):
        request_hold(customer.pk, allocation.pk, key="bad", quantity=quantity)

    assert excinfo.value.data == {"field": "quantity"}
    assert callbacks == []
    assert _snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize("key", [None, "", "k" * 256, 123, b"bytes-key"])
def test_request_without_a_usable_idempotency_key_is_invalid_and_writes_nothing(
    gate_mode, key, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    customer = UserFactory()
    before = _snapshot()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(InvalidInput) as excinfo,
    ):
        request_hold(customer.pk, allocation.pk, key=key)

    assert excinfo.value.data == {"field": "idempotency_key"}
    assert callbacks == []
    assert _snapshot() == before


@pytest.mark.django_db
def test_an_idempotency_key_of_255_characters_is_accepted(
    gate_off, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)

    reservation = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="k" * 255
    )

    assert reservation.status == Status.HELD
    assert reservation.idempotency_key == "k" * 255


# --- request: idempotency --------------------------------------------------------------


@pytest.mark.django_db
def test_the_same_key_twice_returns_the_same_reservation_and_holds_once(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    first = settled_hold(capture, customer.pk, allocation.pk, key="twice", quantity=2)
    before = _snapshot()

    again = settled_hold(capture, customer.pk, allocation.pk, key="twice", quantity=2)

    assert again.pk == first.pk
    assert again.status == Status.HELD
    assert _snapshot() == before
    allocation.refresh_from_db()
    assert allocation.held == 2
    assert Reservation.objects.count() == 1
    assert_inventory_invariants()


@pytest.mark.django_db
def test_the_same_key_by_another_customer_is_another_request(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)

    first = settled_hold(capture, UserFactory().pk, allocation.pk, key="shared")
    second = settled_hold(capture, UserFactory().pk, allocation.pk, key="shared")

    assert first.pk != second.pk
    assert (first.status, second.status) == (Status.HELD, Status.HELD)
    allocation.refresh_from_db()
    assert allocation.held == 2
    assert_inventory_invariants()


@pytest.mark.django_db
def test_the_same_key_with_another_quantity_is_refused_and_holds_nothing_more(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    settled_hold(capture, customer.pk, allocation.pk, key="reused", quantity=1)
    before = _snapshot()

    with capture(execute=True), pytest.raises(IdempotencyKeyReused):
        request_hold(customer.pk, allocation.pk, key="reused", quantity=2)

    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_the_same_key_on_another_allocation_is_refused_and_takes_nothing_there(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    first_drop = open_primed(5)
    second_drop = open_primed(5)
    customer = UserFactory()
    settled_hold(capture, customer.pk, first_drop.pk, key="reused")
    before = _snapshot()

    with capture(execute=True), pytest.raises(IdempotencyKeyReused):
        request_hold(customer.pk, second_drop.pk, key="reused")

    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_key_refused_up_front_may_be_used_again_once_units_return(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(1)
    holder = settled_hold(capture, UserFactory().pk, allocation.pk, key="holder")
    customer = UserFactory()
    with capture(execute=True), pytest.raises(SoldOut):
        request_hold(customer.pk, allocation.pk, key="retry")
    with capture(execute=True):
        services.reservation_release(reservation_id=holder.pk)

    retried = settled_hold(capture, customer.pk, allocation.pk, key="retry")

    assert retried.status == Status.HELD
    assert_inventory_invariants()


# --- request: refusals -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_past_the_per_customer_limit_is_refused_and_writes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(10, limit=2)
    customer = UserFactory()
    settled_hold(capture, customer.pk, allocation.pk, key="one")
    settled_hold(capture, customer.pk, allocation.pk, key="two")
    before = _snapshot()

    with capture(execute=True), pytest.raises(LimitReached):
        request_hold(customer.pk, allocation.pk, key="three")

    assert _snapshot() == before
    # Another customer is not affected by the first one's limit.
    other = settled_hold(capture, UserFactory().pk, allocation.pk, key="one", quantity=2)
    assert other.status == Status.HELD
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_single_request_above_the_per_customer_limit_is_refused(
    gate_mode, django_capture_on_commit_callbacks
):
    allocation = open_primed(10, limit=2)
    before = _snapshot()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(LimitReached):
        request_hold(UserFactory().pk, allocation.pk, key="greedy", quantity=3)

    assert _snapshot() == before


@pytest.mark.django_db
def test_units_bought_count_towards_the_per_customer_limit(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(10, limit=2)
    customer = UserFactory()
    bought = settled_hold(capture, customer.pk, allocation.pk, key="bought", quantity=2)
    with capture(execute=True):
        services.reservation_confirm(reservation_id=bought.pk)
    before = _snapshot()

    with capture(execute=True), pytest.raises(LimitReached):
        request_hold(customer.pk, allocation.pk, key="more")

    assert _snapshot() == before


@pytest.mark.django_db
def test_released_units_no_longer_count_towards_the_per_customer_limit(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(10, limit=2)
    customer = UserFactory()
    first = settled_hold(capture, customer.pk, allocation.pk, key="first", quantity=2)
    with capture(execute=True):
        services.reservation_release(reservation_id=first.pk, customer_id=customer.pk)

    again = settled_hold(capture, customer.pk, allocation.pk, key="again", quantity=2)

    assert again.status == Status.HELD
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_request_for_more_than_remains_is_sold_out_and_writes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(3, on_hand=10)
    settled_hold(capture, UserFactory().pk, allocation.pk, key="a", quantity=2)
    before = _snapshot()

    with capture(execute=True), pytest.raises(SoldOut):
        request_hold(UserFactory().pk, allocation.pk, key="b", quantity=2)

    assert _snapshot() == before
    # The last unit is still there for whoever asks for one.
    last = settled_hold(capture, UserFactory().pk, allocation.pk, key="c")
    assert last.status == Status.HELD
    with capture(execute=True), pytest.raises(SoldOut):
        request_hold(UserFactory().pk, allocation.pk, key="d")
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (3, 0)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_request_on_a_closed_allocation_is_not_live_and_writes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(3)
    with capture(execute=True):
        services.allocation_close(allocation_id=allocation.pk)
    before = _snapshot()

    with capture(execute=True), pytest.raises(DropNotLive):
        request_hold(UserFactory().pk, allocation.pk, key="late")

    assert _snapshot() == before


@pytest.mark.django_db
def test_a_request_on_an_allocation_not_yet_open_is_not_live_and_writes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    item = stocked_variant(on_hand=5).stock
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=3)
    reservations_before = Reservation.objects.count()
    movements_before = StockMovement.objects.count()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(DropNotLive):
        request_hold(UserFactory().pk, allocation.pk, key="early")

    assert Reservation.objects.count() == reservations_before
    assert StockMovement.objects.count() == movements_before
    allocation.refresh_from_db()
    assert (allocation.status, allocation.held) == (Allocation.Status.READY, 0)


@pytest.mark.django_db
def test_a_request_on_an_unknown_allocation_is_not_found_and_writes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    open_primed(3)
    before = _snapshot()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(NotFound):
        request_hold(UserFactory().pk, MISSING_ID, key="nowhere")

    assert _snapshot() == before
    assert_gate_agrees(MISSING_ID)


@pytest.mark.django_db
def test_too_many_active_holds_are_refused_and_write_nothing(
    gate_mode, settings, django_capture_on_commit_callbacks
):
    settings.RESERVATION_MAX_ACTIVE_PER_CUSTOMER = 2
    capture = django_capture_on_commit_callbacks
    first_drop, second_drop = open_primed(5), open_primed(5)
    customer = UserFactory()
    first = settled_hold(capture, customer.pk, first_drop.pk, key="a")
    settled_hold(capture, customer.pk, second_drop.pk, key="b")
    before = _snapshot()

    with capture(execute=True), pytest.raises(TooManyHolds) as excinfo:
        request_hold(customer.pk, second_drop.pk, key="c")

    assert excinfo.value.data == {"limit": 2}
    assert _snapshot() == before
    # The refused key was not remembered: once a hold is released the retry goes through.
    with capture(execute=True):
        services.reservation_release(reservation_id=first.pk, customer_id=customer.pk)
    retried = settled_hold(capture, customer.pk, second_drop.pk, key="c")
    assert retried.status == Status.HELD
    assert_inventory_invariants()


@pytest.mark.django_db
def test_confirmed_holds_do_not_count_as_active_holds(
    gate_off, settings, django_capture_on_commit_callbacks
):
    settings.RESERVATION_MAX_ACTIVE_PER_CUSTOMER = 1
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    bought = settled_hold(capture, customer.pk, allocation.pk, key="a")
    services.reservation_confirm(reservation_id=bought.pk)

    again = settled_hold(capture, customer.pk, allocation.pk, key="b")

    assert again.status == Status.HELD


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
    movement = _last_movement()
    assert movement.reason == Reason.HOLD_RELEASE
    assert movement.reservation_id == hold.pk
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (0, 0, -2, 0)
    assert_gate_agrees(allocation.pk, status="open")
    before = _snapshot()

    with capture(execute=True):
        again = services.reservation_release(reservation_id=hold.pk, customer_id=customer.pk)

    assert again.status == Status.RELEASED
    assert _snapshot() == before
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
    assert _last_movement().actor == operator
    assert_inventory_invariants()


@pytest.mark.django_db
def test_release_by_another_customer_is_not_found_and_changes_nothing(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    hold = settled_hold(capture, UserFactory().pk, allocation.pk, key="mine")
    before = _snapshot()

    with capture(execute=True), pytest.raises(NotFound):
        services.reservation_release(reservation_id=hold.pk, customer_id=UserFactory().pk)

    assert _snapshot() == before


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
    before = _snapshot()

    with capture(execute=True), pytest.raises(ReservationNotHeld) as excinfo:
        services.reservation_release(reservation_id=hold.pk, customer_id=customer.pk)

    assert excinfo.value.data == {"status": Status.CONFIRMED}
    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_release_of_a_pending_reservation_is_refused(gate_off):
    allocation = open_primed(5)
    customer = UserFactory()
    # Inside the test transaction the reserve task (on commit) never runs: still pending.
    pending = request_hold(customer.pk, allocation.pk, key="pending")
    assert pending.status == Status.PENDING
    before = _snapshot()

    with pytest.raises(ReservationNotHeld) as excinfo:
        services.reservation_release(reservation_id=pending.pk, customer_id=customer.pk)

    assert excinfo.value.data == {"status": Status.PENDING}
    assert _snapshot() == before


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
    movement = _last_movement()
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
    before = _snapshot()

    with capture(execute=True):
        again = services.reservation_confirm(reservation_id=hold.pk)

    assert again.status == Status.CONFIRMED
    assert _snapshot() == before
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
    movement = _last_movement()
    assert movement.reason == Reason.HOLD_EXPIRE
    assert (movement.held_delta, movement.sold_delta, movement.on_hand_delta) == (-2, 0, 0)
    assert_gate_agrees(allocation.pk, status="open")
    before = _snapshot()

    # Asking again is answered the same way and changes nothing.
    with capture(execute=True), pytest.raises(HoldExpired):
        services.reservation_confirm(reservation_id=hold.pk, now=later)

    assert _snapshot() == before
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
    before = _snapshot()

    with pytest.raises(ReservationNotHeld) as excinfo:
        services.reservation_confirm(reservation_id=hold.pk)

    assert excinfo.value.data == {"status": Status.RELEASED}
    assert _snapshot() == before


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
    before = _snapshot()

    assert services.reservations_expire() == 0

    assert _snapshot() == before


@pytest.mark.django_db(transaction=True)
def test_an_expired_hold_gives_its_unit_to_the_next_buyer_at_once(gate_mode, settings):
    """Sold out on paper, but the only hold is past its time: the next request gets the
    unit without waiting for the sweep (the gate answers RECLAIMABLE; without the gate
    the service's pre-check expires it)."""
    settings.RESERVATION_HOLD_SECONDS = 0  # every hold is due the moment it is made
    allocation = open_allocation(quantity=1)
    first = request_hold(UserFactory().pk, allocation.pk, key="first")
    assert first.status == Status.HELD
    settings.RESERVATION_HOLD_SECONDS = 600
    buyer = UserFactory()

    second = request_hold(buyer.pk, allocation.pk, key="second")

    assert second.status == Status.HELD
    first.refresh_from_db()
    assert first.status == Status.EXPIRED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (1, 0)
    assert Reservation.objects.filter(status=Status.HELD).count() == 1
    assert_gate_agrees(allocation.pk, status="open")
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_hold_moved_into_the_past_is_reclaimed_by_the_next_request(gate_mode):
    allocation = open_allocation(quantity=2)
    holds = [request_hold(UserFactory().pk, allocation.pk, key="h") for _ in range(2)]
    assert [h.status for h in holds] == [Status.HELD, Status.HELD]
    past = timezone.now() - timedelta(seconds=5)
    Reservation.objects.filter(pk=holds[0].pk).update(expires_at=past)
    # The gate (when on) learns the moved expiry from the rows.
    services.gate_rebuild(allocation_id=allocation.pk)

    latecomer = request_hold(UserFactory().pk, allocation.pk, key="late")

    assert latecomer.status == Status.HELD
    assert dict(Reservation.objects.values_list("pk", "status")) == {
        holds[0].pk: Status.EXPIRED,
        holds[1].pk: Status.HELD,
        latecomer.pk: Status.HELD,
    }
    with pytest.raises(SoldOut):
        request_hold(UserFactory().pk, allocation.pk, key="too-late")
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (2, 0)
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_hold_not_yet_due_is_not_taken_from_its_owner(gate_mode):
    allocation = open_allocation(quantity=1)
    first = request_hold(UserFactory().pk, allocation.pk, key="first")
    before = _snapshot()

    with pytest.raises(SoldOut):
        request_hold(UserFactory().pk, allocation.pk, key="second")

    assert _snapshot() == before
    first.refresh_from_db()
    assert first.status == Status.HELD


@pytest.mark.django_db(transaction=True)
def test_a_customer_whose_own_hold_expired_may_buy_again_under_the_limit(gate_mode, settings):
    """An expired hold never blocks a buyer (design, "The purchase path"): that holds
    for its own customer too, even before the sweep has run."""
    settings.RESERVATION_HOLD_SECONDS = 0
    allocation = open_allocation(quantity=5, per_customer_limit=1)
    customer = UserFactory()
    first = request_hold(customer.pk, allocation.pk, key="first")
    assert first.status == Status.HELD
    settings.RESERVATION_HOLD_SECONDS = 600

    again = request_hold(customer.pk, allocation.pk, key="again")

    assert again.status == Status.HELD
    first.refresh_from_db()
    assert first.status == Status.EXPIRED
    assert_inventory_invariants()


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


# --- settle ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_reserve_on_a_settled_reservation_changes_nothing(
    gate_off, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    hold = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="x"
    )
    before = _snapshot()

    again = services.reservation_reserve(reservation_id=hold.pk)

    assert (again.pk, again.status, again.expires_at) == (hold.pk, Status.HELD, hold.expires_at)
    assert _snapshot() == before


@pytest.mark.django_db
def test_reserve_on_a_missing_reservation_returns_none():
    assert services.reservation_reserve(reservation_id=MISSING_ID) is None


@pytest.mark.django_db
def test_reserve_settles_a_pending_reservation(gate_off):
    allocation = open_primed(5)
    customer = UserFactory()
    pending = request_hold(customer.pk, allocation.pk, key="p", quantity=2)
    assert pending.status == Status.PENDING
    allocation.refresh_from_db()
    assert allocation.held == 0

    settled = services.reservation_reserve(reservation_id=pending.pk)

    assert settled.status == Status.HELD
    allocation.refresh_from_db()
    assert allocation.held == 2
    assert_inventory_invariants()


@pytest.mark.django_db
def test_settle_holds_pending_requests_in_order_until_the_units_run_out(gate_off):
    allocation = open_primed(3, limit=2)
    alice, bob, carol = UserFactory(), UserFactory(), UserFactory()
    # Pending rows as the gate would have let them through (the database decides).
    rows = [
        Reservation.objects.create(
            customer=customer,
            allocation=allocation,
            quantity=quantity,
            unit_price=PRICE,
            currency="USD",
            idempotency_key=f"p{n}",
        )
        for n, (customer, quantity) in enumerate([(alice, 2), (alice, 1), (bob, 2), (carol, 1)])
    ]

    result = services.allocation_settle_pending(allocation_id=allocation.pk, batch_size=2)

    assert result.held == [rows[0].pk, rows[3].pk]
    assert result.rejected == [rows[1].pk, rows[2].pk]
    outcome = {
        r.pk: (r.status, r.reject_reason) for r in Reservation.objects.filter(allocation=allocation)
    }
    assert outcome == {
        rows[0].pk: (Status.HELD, ""),
        rows[1].pk: (Status.REJECTED, "limit_reached"),
        rows[2].pk: (Status.REJECTED, "sold_out"),
        rows[3].pk: (Status.HELD, ""),
    }
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (3, 0)
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize("then", ["sold_out", "closed"])
def test_a_repeat_of_a_granted_request_replays_after_the_drop_sold_out_or_closed(
    gate_mode, then, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(2)
    customer = UserFactory()
    first = settled_hold(capture, customer.pk, allocation.pk, key="mine")
    if then == "sold_out":
        settled_hold(capture, UserFactory().pk, allocation.pk, key="last")
    else:
        with capture(execute=True):
            services.allocation_close(allocation_id=allocation.pk)
    before = _snapshot()

    again = settled_hold(capture, customer.pk, allocation.pk, key="mine")

    assert (again.pk, again.status) == (first.pk, Status.HELD)
    assert _snapshot() == before


# --- events ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_settling_announces_each_reservation_and_the_allocation_on_commit(
    gate_mode, django_capture_on_commit_callbacks
):
    allocation = open_primed(1)
    winner, loser = UserFactory(), UserFactory()
    won = Reservation.objects.create(
        customer=winner,
        allocation=allocation,
        quantity=1,
        unit_price=PRICE,
        currency="USD",
        idempotency_key="w",
    )
    lost = Reservation.objects.create(
        customer=loser,
        allocation=allocation,
        quantity=1,
        unit_price=PRICE,
        currency="USD",
        idempotency_key="l",
    )
    received = []
    events.subscribe(received.append)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.reservation_reserve(reservation_id=lost.pk)
            assert received == []
    finally:
        events.unsubscribe(received.append)

    assert received == [
        [
            ReservationChanged(
                reservation_id=won.pk,
                customer_id=winner.pk,
                allocation_id=allocation.pk,
                status="held",
            ),
            ReservationChanged(
                reservation_id=lost.pk,
                customer_id=loser.pk,
                allocation_id=allocation.pk,
                status="rejected",
            ),
            AllocationChanged(
                allocation_id=allocation.pk, status="open", quantity=1, held=1, sold=0
            ),
        ]
    ]
