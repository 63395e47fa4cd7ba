"""Awards: an allocation's units handed to claims in a given order (a draw's), each
whole or not at all, the rest queued in that order, never more than the allocation has."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.exceptions import InvalidInput
from inventory import services
from inventory.models import Allocation, Reservation, StockMovement, WaitlistEntry
from inventory.services.awards import Claim, allocation_award_in_order
from tests.factories import UserFactory, stocked_variant
from tests.inventory.invariants import assert_gate_agrees, assert_inventory_invariants

PRICE = Decimal("49.00")


def _ready_allocation(quantity: int, *, limit: int | None = None) -> Allocation:
    variant = stocked_variant(on_hand=quantity + 3)
    return services.allocation_create(
        stock_item_id=variant.stock.pk, quantity=quantity, per_customer_limit=limit
    )


def _claims(*quantities: int) -> list[Claim]:
    return [Claim(UserFactory().pk, q, f"test:{i}") for i, q in enumerate(quantities)]


def _award(allocation, claims, **kwargs):
    return allocation_award_in_order(
        allocation_id=allocation.pk,
        claims=claims,
        unit_price=PRICE,
        currency="USD",
        hold_seconds=kwargs.pop("hold_seconds", 600),
        **kwargs,
    )


@pytest.mark.django_db(transaction=True)
def test_claims_are_served_in_order_and_a_claim_that_no_longer_fits_is_skipped(gate_mode):
    allocation = _ready_allocation(5)
    claims = _claims(2, 2, 2, 1, 3)

    outcome = _award(allocation, claims)

    # 2 + 2 leave 1: the third (2) no longer fits, the fourth (1) does, the fifth not.
    assert sorted(outcome.holds) == [0, 1, 3]
    assert sorted(outcome.waiting) == [2, 4]
    assert outcome.units == 5
    allocation.refresh_from_db()
    assert (allocation.status, allocation.held, allocation.sold) == ("open", 5, 0)
    for index, hold in outcome.holds.items():
        assert (hold.customer_id, hold.quantity, hold.status) == (
            claims[index].customer_id,
            claims[index].quantity,
            Reservation.Status.HELD,
        )
        assert hold.idempotency_key is None and hold.unit_price == PRICE
        movement = StockMovement.objects.get(reservation=hold)
        assert (movement.reason, movement.held_delta) == ("hold", hold.quantity)
        assert movement.reference == claims[index].reference
    line = WaitlistEntry.objects.filter(allocation=allocation).order_by("id")
    assert [(e.customer_id, e.quantity, e.status) for e in line] == [
        (claims[2].customer_id, 2, "waiting"),
        (claims[4].customer_id, 3, "waiting"),
    ]
    assert_inventory_invariants()
    assert_gate_agrees(allocation.pk, status="open", remaining=0)


@pytest.mark.django_db(transaction=True)
def test_units_left_that_no_claim_fits_are_offered_to_the_head_of_the_line(gate_mode):
    allocation = _ready_allocation(3)
    claims = _claims(2, 2, 3)

    outcome = _award(allocation, claims)

    assert sorted(outcome.holds) == [0]
    # The unit left goes to the first in line (the waitlist's offer, part of its ask).
    head = outcome.waiting[1]
    assert head.status == WaitlistEntry.Status.OFFERED
    assert head.reservation.quantity == 1 and head.reservation.status == "held"
    assert outcome.waiting[2].status == WaitlistEntry.Status.WAITING
    allocation.refresh_from_db()
    assert allocation.held == 3
    assert_inventory_invariants()
    assert_gate_agrees(allocation.pk, remaining=0)


@pytest.mark.django_db
def test_fewer_claims_than_units_leave_the_rest_free():
    allocation = _ready_allocation(10)

    outcome = _award(allocation, _claims(1, 2))

    assert sorted(outcome.holds) == [0, 1] and outcome.waiting == {}
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (3, 7)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_claim_past_the_per_customer_limit_does_not_fit():
    allocation = _ready_allocation(10, limit=2)

    outcome = _award(allocation, _claims(3, 2))

    assert sorted(outcome.holds) == [1] and sorted(outcome.waiting) == [0]
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_closed_allocation_awards_nothing_and_queues_no_one():
    allocation = _ready_allocation(4)
    services.allocation_close(allocation_id=allocation.pk)

    outcome = _award(allocation, _claims(1, 1))

    assert (outcome.units, outcome.holds, outcome.waiting) == (0, {}, {})
    assert not Reservation.objects.exists() and not WaitlistEntry.objects.exists()
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("claims", "kwargs"),
    [
        (lambda: _claims(0), {}),
        (lambda: [Claim(UserFactory().pk, "2", "x")], {}),
        (lambda: (lambda c: [c, c])(Claim(UserFactory().pk, 1, "x")), {}),
        (lambda: _claims(1), {"hold_seconds": 0}),
    ],
)
def test_bad_claims_are_refused_before_anything_is_written(claims, kwargs):
    allocation = _ready_allocation(4)

    with pytest.raises(InvalidInput):
        _award(allocation, claims(), **kwargs)

    allocation.refresh_from_db()
    assert (allocation.status, allocation.held) == ("ready", 0)
    assert not Reservation.objects.exists() and not WaitlistEntry.objects.exists()
