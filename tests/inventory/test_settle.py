"""Settling pending holds (``inventory.services.settle``): the reserve step, the batch
that holds in order until the units run out, and what is announced on commit."""

from __future__ import annotations

import pytest

from inventory import events, services
from inventory.events import (
    HoldsPlaced,
    UnitsReturned,
)
from inventory.models import Reservation
from tests.factories import UserFactory
from tests.inventory.helpers import (
    MISSING_ID,
    PRICE,
    allocation_changed,
    open_primed,
    request_hold,
    reservation_changed,
    settled_hold,
    snapshot,
)
from tests.inventory.invariants import assert_inventory_invariants

Status = Reservation.Status


# --- reserve ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_reserve_on_a_settled_reservation_changes_nothing(
    gate_off, django_capture_on_commit_callbacks
):
    allocation = open_primed(5)
    hold = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="x"
    )
    before = snapshot()

    again = services.reservation_reserve(reservation_id=hold.pk)

    assert (again.pk, again.status, again.expires_at) == (hold.pk, Status.HELD, hold.expires_at)
    assert snapshot() == before


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


# --- batches ---------------------------------------------------------------------------


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
            reservation_changed(won.pk, status="held"),
            reservation_changed(lost.pk, status="rejected"),
            allocation_changed(allocation.pk, status="open", quantity=1, held=1, sold=0),
            # What the gate mirrors: the refused request's units back, the hold's expiry.
            UnitsReturned(allocation_id=allocation.pk, customer_id=loser.pk, quantity=1),
            HoldsPlaced(
                allocation_id=allocation.pk,
                expiries=((won.pk, Reservation.objects.get(pk=won.pk).expires_at.timestamp()),),
            ),
        ]
    ]
