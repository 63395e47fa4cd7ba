"""The waitlist under real concurrency on PostgreSQL (and the Redis gate): holds are
released and expire while newcomers keep trying and more viewers queue. Every returned
unit goes to the first in line, offers lapse in order to the next, nothing is oversold
or lost, and the ledger balances."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import services
from inventory.exceptions import SoldOut
from inventory.models import Allocation, Reservation, WaitlistEntry
from tests.concurrency import run_together
from tests.factories import UserFactory, open_allocation
from tests.inventory.helpers import PRICE, request_hold
from tests.inventory.invariants import assert_gate_agrees, assert_inventory_invariants

UNITS = 5
IN_LINE = 12
NEWCOMERS = 16
LATE_JOINERS = 4

Entry = WaitlistEntry.Status


def _join(customer_id: int, allocation_id: int):
    return services.waitlist_join(
        allocation_id=allocation_id, customer_id=customer_id, unit_price=PRICE, currency="USD"
    )


def _offered_customers(allocation_id: int) -> list[int]:
    return list(
        WaitlistEntry.objects.filter(allocation_id=allocation_id, status=Entry.OFFERED)
        .order_by("id")
        .values_list("customer_id", flat=True)
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_returned_units_go_to_the_line_in_order_while_everyone_races(gate_mode):
    allocation = open_allocation(quantity=UNITS, on_hand=UNITS + 3)
    services.gate_rebuild(allocation_id=allocation.pk)
    holders = [UserFactory().pk for _ in range(UNITS)]
    holds = [request_hold(c, allocation.pk, key=f"hold-{c}") for c in holders]
    assert all(Reservation.objects.get(pk=h.pk).status == "held" for h in holds)
    line = [UserFactory().pk for _ in range(IN_LINE)]
    for customer in line:
        _join(customer, allocation.pk)
    newcomers = [UserFactory().pk for _ in range(NEWCOMERS)]
    late = [UserFactory().pk for _ in range(LATE_JOINERS)]
    # Two holds are past their time: the sweep returns them during the race.
    past = timezone.now() - timedelta(seconds=1)
    Reservation.objects.filter(pk__in=[holds[3].pk, holds[4].pk]).update(expires_at=past)

    def work(i: int):
        if i < 3:
            return services.reservation_release(reservation_id=holds[i].pk)
        if i == 3:
            return services.reservations_expire()
        i -= 4
        if i < NEWCOMERS:
            return request_hold(newcomers[i], allocation.pk, key=f"new-{i}")
        return _join(late[i - NEWCOMERS], allocation.pk)

    results = run_together(4 + NEWCOMERS + LATE_JOINERS, work)

    for result in results[4 : 4 + NEWCOMERS]:
        # Newcomers never get a returned unit while people wait in line.
        assert isinstance(result, SoldOut) or (
            isinstance(result, Reservation) and result.status == "rejected"
        ), result
    for result in results[:4] + results[4 + NEWCOMERS :]:
        assert not isinstance(result, BaseException), result
    # The five returned units went to the first five in line, in order.
    assert _offered_customers(allocation.pk) == line[:UNITS]
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (UNITS, 0)
    assert_inventory_invariants()

    # Offers lapse: each passes to the next in line, in order, while newcomers race on.
    offers = Reservation.objects.filter(
        allocation=allocation, customer_id__in=line[:UNITS], status="held"
    )
    lapse_at = max(o.expires_at for o in offers) + timedelta(seconds=1)

    def second_round(i: int):
        if i == 0:
            return services.reservations_expire(now=lapse_at)
        return request_hold(newcomers[i - 1], allocation.pk, key=f"again-{i}")

    results = run_together(1 + NEWCOMERS, second_round)

    assert results[0] == UNITS
    for result in results[1:]:
        assert isinstance(result, SoldOut) or (
            isinstance(result, Reservation) and result.status == "rejected"
        ), result
    assert _offered_customers(allocation.pk) == line[UNITS : 2 * UNITS]
    lapsed = WaitlistEntry.objects.filter(allocation=allocation, status=Entry.LAPSED)
    assert sorted(lapsed.values_list("customer_id", flat=True)) == sorted(line[:UNITS])
    # Late joiners queued behind everyone who was there first.
    waiting = list(
        WaitlistEntry.objects.filter(allocation=allocation, status=Entry.WAITING)
        .order_by("id")
        .values_list("customer_id", flat=True)
    )
    assert waiting[: IN_LINE - 2 * UNITS] == line[2 * UNITS :]
    assert sorted(waiting[IN_LINE - 2 * UNITS :]) == sorted(late)
    allocation.refresh_from_db()
    assert (allocation.status, allocation.held, allocation.sold) == (
        Allocation.Status.OPEN,
        UNITS,
        0,
    )
    assert_gate_agrees(allocation.pk)
    assert_inventory_invariants()
