"""Asking for units (``reservation_request``), with the database alone and with the
Redis gate in front: the pending hold and its settled state, the input checks, replays
by idempotency key, the refusals, and expired holds reclaimed for the next buyer. A
refused request writes nothing and takes nothing from the gate; every accepted change
is one ledger entry and keeps the invariants."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from core.exceptions import IdempotencyKeyReused, InvalidInput, NotFound
from core.keys import MAX_KEY_LENGTH
from inventory import services
from inventory.exceptions import DropNotLive, LimitReached, SoldOut, TooManyHolds
from inventory.models import Allocation, Reservation, StockMovement
from inventory.services._common import MAX_QUANTITY
from tests.factories import UserFactory, open_allocation, stocked_variant
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
    movement = last_movement()
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
    before = snapshot()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(InvalidInput) as excinfo,
    ):
        request_hold(customer.pk, allocation.pk, key="bad", quantity=quantity)

    assert excinfo.value.data == {"field": "quantity"}
    assert callbacks == []
    assert snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize("key", [None, "", "k" * (MAX_KEY_LENGTH + 1), 123, b"bytes-key"])
def test_request_without_a_usable_idempotency_key_is_invalid_and_writes_nothing(
    gate_mode, key, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    customer = UserFactory()
    before = snapshot()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(InvalidInput) as excinfo,
    ):
        request_hold(customer.pk, allocation.pk, key=key)

    assert excinfo.value.data == {"field": "idempotency_key"}
    assert callbacks == []
    assert snapshot() == before


@pytest.mark.django_db
def test_an_idempotency_key_as_long_as_the_api_allows_fits_its_column(
    gate_off, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    longest = "k" * MAX_KEY_LENGTH

    reservation = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key=longest
    )

    assert reservation.status == Status.HELD
    reservation.refresh_from_db()
    assert reservation.idempotency_key == longest


# --- request: idempotency --------------------------------------------------------------


@pytest.mark.django_db
def test_the_same_key_twice_returns_the_same_reservation_and_holds_once(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    first = settled_hold(capture, customer.pk, allocation.pk, key="twice", quantity=2)
    before = snapshot()

    again = settled_hold(capture, customer.pk, allocation.pk, key="twice", quantity=2)

    assert again.pk == first.pk
    assert again.status == Status.HELD
    assert snapshot() == before
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
    before = snapshot()

    with capture(execute=True), pytest.raises(IdempotencyKeyReused):
        request_hold(customer.pk, allocation.pk, key="reused", quantity=2)

    assert snapshot() == before
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
    before = snapshot()

    with capture(execute=True), pytest.raises(IdempotencyKeyReused):
        request_hold(customer.pk, second_drop.pk, key="reused")

    assert snapshot() == before
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
    before = snapshot()

    again = settled_hold(capture, customer.pk, allocation.pk, key="mine")

    assert (again.pk, again.status) == (first.pk, Status.HELD)
    assert snapshot() == before


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
    before = snapshot()

    with capture(execute=True), pytest.raises(LimitReached):
        request_hold(customer.pk, allocation.pk, key="three")

    assert snapshot() == before
    # Another customer is not affected by the first one's limit.
    other = settled_hold(capture, UserFactory().pk, allocation.pk, key="one", quantity=2)
    assert other.status == Status.HELD
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_single_request_above_the_per_customer_limit_is_refused(
    gate_mode, django_capture_on_commit_callbacks
):
    allocation = open_primed(10, limit=2)
    before = snapshot()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(LimitReached):
        request_hold(UserFactory().pk, allocation.pk, key="greedy", quantity=3)

    assert snapshot() == before


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
    before = snapshot()

    with capture(execute=True), pytest.raises(LimitReached):
        request_hold(customer.pk, allocation.pk, key="more")

    assert snapshot() == before


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
    before = snapshot()

    with capture(execute=True), pytest.raises(SoldOut):
        request_hold(UserFactory().pk, allocation.pk, key="b", quantity=2)

    assert snapshot() == before
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
    before = snapshot()

    with capture(execute=True), pytest.raises(DropNotLive):
        request_hold(UserFactory().pk, allocation.pk, key="late")

    assert snapshot() == before


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
    before = snapshot()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(NotFound):
        request_hold(UserFactory().pk, MISSING_ID, key="nowhere")

    assert snapshot() == before
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
    before = snapshot()

    with capture(execute=True), pytest.raises(TooManyHolds) as excinfo:
        request_hold(customer.pk, second_drop.pk, key="c")

    assert excinfo.value.data == {"limit": 2}
    assert snapshot() == before
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


# --- request: expired holds in the way -------------------------------------------------


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
    before = snapshot()

    with pytest.raises(SoldOut):
        request_hold(UserFactory().pk, allocation.pk, key="second")

    assert snapshot() == before
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
