"""The last-unit race, on real PostgreSQL connections released together by a barrier."""

from collections import Counter
from decimal import Decimal

import pytest

from inventory import services
from inventory.exceptions import LimitReached, SoldOut, TooManyHolds
from inventory.models import Allocation, Reservation
from tests.concurrency import run_together
from tests.factories import UserFactory, open_allocation
from tests.inventory.invariants import assert_gate_agrees, assert_inventory_invariants

BUYERS = 60
UNITS = 7


def _request(buyer_id: int, allocation_id: int, *, key: str, quantity: int = 1):
    return services.reservation_request(
        customer_id=buyer_id,
        allocation_id=allocation_id,
        quantity=quantity,
        idempotency_key=key,
        unit_price=Decimal("9.99"),
        currency="USD",
    )


def _outcome(result) -> str:
    if isinstance(result, Reservation):
        return result.status
    if isinstance(result, SoldOut | LimitReached):
        return result.code
    raise result if isinstance(result, BaseException) else AssertionError(result)


def _last_unit_race():
    allocation = open_allocation(quantity=UNITS, on_hand=UNITS + 5)
    buyers = [UserFactory().pk for _ in range(BUYERS)]

    results = run_together(BUYERS, lambda i: _request(buyers[i], allocation.pk, key=f"race-{i}"))

    outcomes = Counter(_outcome(r) for r in results)
    allocation.refresh_from_db()
    return allocation, outcomes


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_last_unit_race_with_the_database_alone(gate_off):
    allocation, outcomes = _last_unit_race()

    assert outcomes["held"] == UNITS
    # Losers are turned away up front (sold_out) or settled as rejected; none is lost.
    assert outcomes["held"] + outcomes["sold_out"] + outcomes["rejected"] == BUYERS
    assert allocation.held == UNITS
    assert allocation.remaining == 0
    assert Reservation.objects.filter(status="held").count() == UNITS
    assert set(
        Reservation.objects.filter(status="rejected").values_list("reject_reason", flat=True)
    ) <= {"sold_out"}
    assert_inventory_invariants()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_last_unit_race_through_the_gate(gate_on):
    allocation, outcomes = _last_unit_race()

    # The gate admits exactly the units there are; everyone else is answered sold_out
    # without a row being written.
    assert outcomes == Counter({"held": UNITS, "sold_out": BUYERS - UNITS})
    assert allocation.held == UNITS
    assert Reservation.objects.count() == UNITS
    assert_inventory_invariants()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_buyer_racing_itself_never_passes_the_limit(gate_mode):
    allocation = open_allocation(quantity=50, per_customer_limit=2)
    buyer = UserFactory().pk

    results = run_together(20, lambda i: _request(buyer, allocation.pk, key=f"self-{i}"))

    held = [r for r in results if isinstance(r, Reservation) and r.status == "held"]
    assert len(held) == 2
    assert all(
        isinstance(r, LimitReached)
        or (isinstance(r, Reservation) and r.status in {"held", "rejected"})
        for r in results
    )
    allocation.refresh_from_db()
    assert allocation.held == 2
    assert_inventory_invariants()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_one_hold(gate_mode):
    allocation = open_allocation(quantity=10)
    buyer = UserFactory().pk

    results = run_together(16, lambda i: _request(buyer, allocation.pk, key="same-key"))

    assert all(isinstance(r, Reservation) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert Reservation.objects.count() == 1
    allocation.refresh_from_db()
    assert allocation.held == 1
    assert_gate_agrees(allocation.pk)
    assert_inventory_invariants()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_releases_racing_buyers_never_lose_or_double_a_unit(gate_off):
    """Holders release while others buy: every unit ends held by exactly one buyer."""
    allocation = open_allocation(quantity=5)
    holders = [UserFactory().pk for _ in range(5)]
    holds = [_request(h, allocation.pk, key=f"first-{h}") for h in holders]
    buyers = [UserFactory().pk for _ in range(25)]

    def work(i):
        if i < 5:
            return services.reservation_release(reservation_id=holds[i].pk, customer_id=holders[i])
        return _request(buyers[i - 5], allocation.pk, key=f"second-{i}")

    run_together(30, work)

    allocation.refresh_from_db()
    assert Allocation.objects.get(pk=allocation.pk).held == allocation.held
    assert allocation.held == Reservation.objects.filter(status="held").count()
    assert allocation.held <= 5
    assert Reservation.objects.filter(status="released").count() == 5
    assert_inventory_invariants()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_active_hold_cap_is_exact_under_concurrency(gate_off, settings):
    settings.RESERVATION_MAX_ACTIVE_PER_CUSTOMER = 3
    allocation = open_allocation(quantity=50)
    buyer = UserFactory().pk

    results = run_together(12, lambda i: _request(buyer, allocation.pk, key=f"cap-{i}"))

    assert sum(isinstance(r, Reservation) for r in results) == 3
    assert sum(isinstance(r, TooManyHolds) for r in results) == 9
    assert Reservation.objects.filter(customer_id=buyer).count() == 3
    assert_inventory_invariants()
