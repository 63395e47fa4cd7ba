"""Allocations: carving units out of stock, opening the sale, closing it and returning
exactly the unsold units; and the events they emit once their transaction commits."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from core.exceptions import InvalidInput, NotFound
from inventory import events, services
from inventory.events import (
    AllocationChanged,
    AllocationRecounted,
    UnitsReturned,
)
from inventory.exceptions import AllocationClosed, InsufficientStock
from inventory.models import Allocation, Reservation, StockItem, StockMovement
from inventory.services._common import MAX_QUANTITY
from tests.factories import UserFactory, stocked_variant
from tests.inventory.helpers import MISSING_ID, allocation_changed, reservation_changed
from tests.inventory.invariants import assert_inventory_invariants

Reason = StockMovement.Reason
Status = Reservation.Status
AStatus = Allocation.Status


@pytest.fixture
def received():
    """Every batch of events delivered while the test runs."""
    batches: list[list[events.Event]] = []

    def listener(batch):
        batches.append(batch)

    events.subscribe(listener)
    try:
        yield batches
    finally:
        events.unsubscribe(listener)


def _item(on_hand: int) -> StockItem:
    return stocked_variant(on_hand=on_hand).stock


def _snapshot() -> tuple:
    return (
        list(StockItem.objects.order_by("pk").values_list("pk", "on_hand", "reserved")),
        list(
            Allocation.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "held", "sold"
            )
        ),
        Reservation.objects.count(),
        StockMovement.objects.count(),
    )


def _hold(allocation: Allocation, capture, *, quantity: int = 1, customer=None) -> Reservation:
    """A settled hold (the reserve task runs eagerly when the request commits)."""
    customer = customer or UserFactory()
    with capture(execute=True):
        reservation = services.reservation_request(
            customer_id=customer.pk,
            allocation_id=allocation.pk,
            quantity=quantity,
            idempotency_key=f"hold-{customer.pk}-{quantity}",
            unit_price=Decimal("9.99"),
            currency="USD",
        )
    reservation.refresh_from_db()
    assert reservation.status == Status.HELD
    return reservation


def _opened(item: StockItem, quantity: int, capture, **kwargs) -> Allocation:
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=quantity, **kwargs)
    with capture(execute=True):
        return services.allocation_open(allocation_id=allocation.pk)


# --- allocation_create -----------------------------------------------------------------


@pytest.mark.django_db
def test_create_carves_units_out_of_stock_with_one_ledger_entry():
    item = _item(10)
    actor = UserFactory()
    movements_before = StockMovement.objects.count()

    allocation = services.allocation_create(
        stock_item_id=item.pk, quantity=4, per_customer_limit=2, label="Friday drop", actor=actor
    )

    allocation.refresh_from_db()
    assert allocation.stock_item_id == item.pk
    assert allocation.status == AStatus.READY
    assert (allocation.quantity, allocation.held, allocation.sold) == (4, 0, 0)
    assert allocation.per_customer_limit == 2
    assert allocation.label == "Friday drop"
    assert allocation.opened_at is None
    assert allocation.closed_at is None
    item.refresh_from_db()
    assert (item.on_hand, item.reserved, item.available) == (10, 4, 6)
    assert StockMovement.objects.count() == movements_before + 1
    movement = StockMovement.objects.order_by("-id").first()
    assert movement.reason == Reason.ALLOCATION_CARVE
    assert (movement.stock_item_id, movement.allocation_id) == (item.pk, allocation.pk)
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (0, 4, 0, 0)
    assert movement.actor == actor
    assert movement.reference == f"allocation:{allocation.pk}"
    assert_inventory_invariants()


@pytest.mark.django_db
def test_create_may_carve_every_free_unit_and_then_no_more():
    item = _item(10)
    services.allocation_create(stock_item_id=item.pk, quantity=6)
    services.allocation_create(stock_item_id=item.pk, quantity=4)
    before = _snapshot()

    with pytest.raises(InsufficientStock) as excinfo:
        services.allocation_create(stock_item_id=item.pk, quantity=1)

    assert excinfo.value.data == {"available": 0}
    assert _snapshot() == before
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (10, 10)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_create_more_than_the_free_units_raises_insufficient_stock_and_writes_nothing():
    item = _item(10)
    services.allocation_create(stock_item_id=item.pk, quantity=7)
    before = _snapshot()

    with pytest.raises(InsufficientStock) as excinfo:
        services.allocation_create(stock_item_id=item.pk, quantity=4)

    assert excinfo.value.data == {"available": 3}
    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize("quantity", [0, -1, 1.5, "2", True, None, MAX_QUANTITY + 1])
def test_create_rejects_a_bad_quantity_and_writes_nothing(quantity):
    item = _item(10)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.allocation_create(stock_item_id=item.pk, quantity=quantity)

    assert excinfo.value.data == {"field": "quantity"}
    assert _snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [0, -1, 1.5, "2", True, MAX_QUANTITY + 1])
def test_create_rejects_a_bad_per_customer_limit_and_writes_nothing(limit):
    item = _item(10)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.allocation_create(stock_item_id=item.pk, quantity=3, per_customer_limit=limit)

    assert excinfo.value.data == {"field": "per_customer_limit"}
    assert _snapshot() == before


@pytest.mark.django_db
def test_create_on_an_unknown_stock_item_is_not_found():
    _item(10)
    before = _snapshot()

    with pytest.raises(NotFound):
        services.allocation_create(stock_item_id=MISSING_ID, quantity=1)

    assert _snapshot() == before


# --- allocation_open -------------------------------------------------------------------


@pytest.mark.django_db
def test_open_puts_a_ready_allocation_on_sale_once(django_capture_on_commit_callbacks, received):
    item = _item(10)
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=4)

    with django_capture_on_commit_callbacks(execute=True):
        opened = services.allocation_open(allocation_id=allocation.pk)
        assert received == []  # delivered on commit, not before

    assert opened.status == AStatus.OPEN
    assert opened.opened_at is not None
    assert received == [
        [
            allocation_changed(allocation.pk, status="open", quantity=4, held=0, sold=0),
            AllocationRecounted(allocation_id=allocation.pk),
        ]
    ]
    before = _snapshot()

    with django_capture_on_commit_callbacks(execute=True):
        again = services.allocation_open(allocation_id=allocation.pk)

    assert again.status == AStatus.OPEN
    assert again.opened_at == opened.opened_at
    assert _snapshot() == before
    # Opening again changes nothing to announce; its copies only count it afresh.
    assert received[1:] == [[AllocationRecounted(allocation_id=allocation.pk)]]
    assert_inventory_invariants()


@pytest.mark.django_db
def test_opening_a_closed_allocation_raises_and_changes_nothing(
    django_capture_on_commit_callbacks, received
):
    item = _item(10)
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=4)
    services.allocation_close(allocation_id=allocation.pk)
    before = _snapshot()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(AllocationClosed):
        services.allocation_open(allocation_id=allocation.pk)

    assert _snapshot() == before
    allocation.refresh_from_db()
    assert allocation.status == AStatus.CLOSED
    assert allocation.opened_at is None
    assert received == []


@pytest.mark.django_db
def test_opening_an_unknown_allocation_is_not_found():
    with pytest.raises(NotFound):
        services.allocation_open(allocation_id=MISSING_ID)


# --- allocation_close ------------------------------------------------------------------


@pytest.mark.django_db
def test_close_returns_exactly_the_unsold_units_and_keeps_open_holds(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    item = _item(12)
    allocation = _opened(item, 10, capture)
    held = _hold(allocation, capture, quantity=2)
    bought = _hold(allocation, capture, quantity=3)
    services.reservation_confirm(reservation_id=bought.pk)
    actor = UserFactory()
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (9, 7)
    movements_before = StockMovement.objects.count()

    with capture(execute=True):
        closed = services.allocation_close(allocation_id=allocation.pk, actor=actor)

    assert closed.status == AStatus.CLOSED
    assert closed.closed_at is not None
    assert (closed.quantity, closed.held, closed.sold) == (5, 2, 3)
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold) == (5, 2, 3)
    item.refresh_from_db()
    # The 5 unsold units went back; the 2 held stay carved until checkout or expiry.
    assert (item.on_hand, item.reserved) == (9, 2)
    assert StockMovement.objects.count() == movements_before + 1
    movement = StockMovement.objects.order_by("-id").first()
    assert movement.reason == Reason.ALLOCATION_RETURN
    assert (movement.allocation_id, movement.stock_item_id) == (allocation.pk, item.pk)
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (0, -5, 0, 0)
    assert movement.actor == actor
    assert movement.reference == f"allocation:{allocation.pk}"
    held.refresh_from_db()
    assert held.status == Status.HELD
    assert_inventory_invariants()


@pytest.mark.django_db
def test_close_is_idempotent(django_capture_on_commit_callbacks, received):
    item = _item(10)
    allocation = _opened(item, 4, django_capture_on_commit_callbacks)
    first = services.allocation_close(allocation_id=allocation.pk)
    before = _snapshot()
    received.clear()

    with django_capture_on_commit_callbacks(execute=True):
        again = services.allocation_close(allocation_id=allocation.pk)

    assert again.status == AStatus.CLOSED
    assert again.closed_at == first.closed_at
    assert _snapshot() == before
    assert received == []
    assert_inventory_invariants()


@pytest.mark.django_db
def test_close_of_a_ready_allocation_returns_every_unit():
    item = _item(10)
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=4)

    closed = services.allocation_close(allocation_id=allocation.pk)

    assert (closed.status, closed.quantity, closed.held, closed.sold) == (AStatus.CLOSED, 0, 0, 0)
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (10, 0)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_close_of_a_sold_out_allocation_writes_no_return_entry(
    gate_off, django_capture_on_commit_callbacks
):
    item = _item(2)
    allocation = _opened(item, 2, django_capture_on_commit_callbacks)
    _hold(allocation, django_capture_on_commit_callbacks, quantity=2)
    movements_before = StockMovement.objects.count()

    closed = services.allocation_close(allocation_id=allocation.pk)

    assert (closed.status, closed.quantity, closed.held) == (AStatus.CLOSED, 2, 2)
    assert StockMovement.objects.count() == movements_before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_closing_an_unknown_allocation_is_not_found():
    with pytest.raises(NotFound):
        services.allocation_close(allocation_id=MISSING_ID)


@pytest.mark.django_db
def test_a_hold_released_after_close_returns_its_units_to_stock(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    item = _item(10)
    allocation = _opened(item, 5, capture)
    hold = _hold(allocation, capture, quantity=2)
    services.allocation_close(allocation_id=allocation.pk)
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (10, 2)

    with capture(execute=True):
        services.reservation_release(reservation_id=hold.pk, customer_id=hold.customer_id)

    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold) == (0, 0, 0)
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (10, 0)
    movement = StockMovement.objects.order_by("-id").first()
    assert movement.reason == Reason.HOLD_RELEASE
    assert (movement.held_delta, movement.reserved_delta, movement.on_hand_delta) == (-2, -2, 0)
    assert movement.reservation_id == hold.pk
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_hold_expiring_after_close_returns_its_units_to_stock(
    gate_off, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    item = _item(10)
    allocation = _opened(item, 5, capture)
    hold = _hold(allocation, capture, quantity=3)
    services.allocation_close(allocation_id=allocation.pk)

    expired = services.reservations_expire(now=hold.expires_at + timedelta(seconds=1))

    assert expired == 1
    hold.refresh_from_db()
    assert hold.status == Status.EXPIRED
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held, allocation.sold) == (0, 0, 0)
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (10, 0)
    movement = StockMovement.objects.order_by("-id").first()
    assert movement.reason == Reason.HOLD_EXPIRE
    assert (movement.held_delta, movement.reserved_delta) == (-3, -3)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_hold_taken_before_close_can_still_be_bought(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    item = _item(10)
    allocation = _opened(item, 5, capture)
    hold = _hold(allocation, capture, quantity=2)
    services.allocation_close(allocation_id=allocation.pk)

    with capture(execute=True):
        confirmed = services.reservation_confirm(reservation_id=hold.pk)

    assert confirmed.status == Status.CONFIRMED
    allocation.refresh_from_db()
    assert (allocation.status, allocation.quantity, allocation.held, allocation.sold) == (
        AStatus.CLOSED,
        2,
        0,
        2,
    )
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (8, 0)
    assert_inventory_invariants()


# --- events ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_close_announces_the_closed_allocation_on_commit(
    gate_off, django_capture_on_commit_callbacks, received
):
    capture = django_capture_on_commit_callbacks
    item = _item(10)
    allocation = _opened(item, 6, capture)
    _hold(allocation, capture, quantity=2)
    received.clear()

    with capture(execute=True):
        services.allocation_close(allocation_id=allocation.pk)
        assert received == []

    assert received == [
        [
            allocation_changed(allocation.pk, status="closed", quantity=2, held=2, sold=0),
            AllocationRecounted(allocation_id=allocation.pk),
        ]
    ]


@pytest.mark.django_db
def test_release_after_close_announces_the_hold_and_the_shrunk_allocation(
    gate_off, django_capture_on_commit_callbacks, received
):
    capture = django_capture_on_commit_callbacks
    item = _item(10)
    allocation = _opened(item, 6, capture)
    hold = _hold(allocation, capture, quantity=2)
    services.allocation_close(allocation_id=allocation.pk)
    received.clear()

    with capture(execute=True):
        services.reservation_release(reservation_id=hold.pk)

    assert received == [
        [
            reservation_changed(hold.pk, status="released"),
            # The units went back to stock, not on sale.
            UnitsReturned(
                allocation_id=allocation.pk,
                customer_id=hold.customer_id,
                quantity=2,
                reservation_id=hold.pk,
                back_on_sale=False,
            ),
            allocation_changed(allocation.pk, status="closed", quantity=0, held=0, sold=0),
        ]
    ]


@pytest.mark.django_db
def test_events_of_a_rolled_back_transaction_are_never_delivered(
    django_capture_on_commit_callbacks, received
):
    item = _item(10)
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=4)

    class Abort(Exception):
        pass

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(Abort),
        transaction.atomic(),
    ):
        services.allocation_open(allocation_id=allocation.pk)
        services.allocation_close(allocation_id=allocation.pk)
        raise Abort

    assert received == []
    allocation.refresh_from_db()
    assert allocation.status == AStatus.READY


@pytest.mark.django_db
def test_a_failing_subscriber_does_not_stop_the_others(
    django_capture_on_commit_callbacks, received
):
    item = _item(10)
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=4)

    def broken(batch):
        raise RuntimeError("listener down")

    events.subscribe(broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.allocation_open(allocation_id=allocation.pk)
    finally:
        events.unsubscribe(broken)

    assert received == [
        [
            allocation_changed(allocation.pk, status="open", quantity=4, held=0, sold=0),
            AllocationRecounted(allocation_id=allocation.pk),
        ]
    ]
    allocation.refresh_from_db()
    assert allocation.status == AStatus.OPEN


def test_allocation_changed_remaining_counts_units_neither_held_nor_sold():
    event = AllocationChanged(
        allocation_id=1, status="open", quantity=10, held=3, sold=2, version=1
    )

    assert event.remaining == 5
