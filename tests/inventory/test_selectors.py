"""The inventory's reads for other apps: scoped to their customer, counting only the
units taken (held or bought), and windows that split the time without overlap."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from core.exceptions import NotFound
from inventory import selectors
from inventory.models import Reservation, WaitlistEntry
from tests.factories import UserFactory, open_allocation

Status = Reservation.Status
pytestmark = pytest.mark.django_db


def _row(allocation, *, status, quantity=1, customer=None, made_ago=None, changed_ago=None):
    """A reservation row in ``status``, made and last changed that long ago (written
    straight: these tests are about reading rows, not about the services that write
    them)."""
    now = timezone.now()
    row = Reservation.objects.create(
        customer=customer or UserFactory(),
        allocation=allocation,
        quantity=quantity,
        unit_price=Decimal("5.00"),
        currency="USD",
        status=status,
        expires_at=now + timedelta(minutes=5) if status == Status.HELD else None,
    )
    Reservation.objects.filter(pk=row.pk).update(
        created_at=now - (made_ago or timedelta()),
        updated_at=now - (changed_ago or timedelta()),
    )
    return row


def test_a_customer_reads_only_their_own_reservations():
    allocation = open_allocation(quantity=10)
    mine, theirs = UserFactory(), UserFactory()
    own = _row(allocation, status=Status.HELD, customer=mine)
    other = _row(allocation, status=Status.HELD, customer=theirs)

    assert list(selectors.reservations_of(customer_id=mine.pk)) == [own]
    found = selectors.reservation_of(customer_id=mine.pk, reservation_id=own.pk)
    assert found == own
    assert found.allocation.stock_item == allocation.stock_item
    with pytest.raises(NotFound):
        selectors.reservation_of(customer_id=mine.pk, reservation_id=other.pk)
    with pytest.raises(NotFound):
        selectors.reservation_get(reservation_id=other.pk + 1000)


def test_held_means_held_now():
    allocation = open_allocation(quantity=10)
    held = _row(allocation, status=Status.HELD)
    released = _row(allocation, status=Status.RELEASED)

    assert selectors.reservation_is_held(reservation_id=held.pk)
    assert not selectors.reservation_is_held(reservation_id=released.pk)


def test_units_taken_count_holds_and_sales_changed_since_the_moment_only():
    first, second, untouched = (open_allocation(quantity=20) for _ in range(3))
    _row(first, status=Status.HELD, quantity=2)
    _row(first, status=Status.CONFIRMED, quantity=3)
    for gone in (Status.PENDING, Status.RELEASED, Status.EXPIRED, Status.REJECTED):
        _row(first, status=gone, quantity=7)
    _row(first, status=Status.CONFIRMED, quantity=11, changed_ago=timedelta(minutes=10))
    _row(second, status=Status.HELD, quantity=4)

    taken = selectors.units_taken_since(
        allocation_ids=[first.pk, second.pk, untouched.pk],
        since=timezone.now() - timedelta(minutes=5),
    )

    assert taken == {first.pk: 5, second.pk: 4}


def test_units_taken_fall_in_one_window_each_by_when_the_hold_was_made():
    allocation = open_allocation(quantity=50)
    # Windows of 10 s, newest first: [now-10, ...), [now-20, now-10), [now-30, now-20).
    _row(allocation, status=Status.HELD, quantity=1, made_ago=timedelta(seconds=2))
    _row(allocation, status=Status.CONFIRMED, quantity=2, made_ago=timedelta(seconds=15))
    _row(allocation, status=Status.HELD, quantity=4, made_ago=timedelta(seconds=25))
    _row(allocation, status=Status.HELD, quantity=8, made_ago=timedelta(seconds=45))  # older
    _row(allocation, status=Status.RELEASED, quantity=16, made_ago=timedelta(seconds=5))

    buckets = selectors.units_taken_by_bucket(
        allocation_ids=[allocation.pk], now=timezone.now(), bucket_seconds=10, buckets=3
    )

    assert buckets == {allocation.pk: [1, 2, 4]}
    assert (
        selectors.units_taken_by_bucket(
            allocation_ids=[], now=timezone.now(), bucket_seconds=10, buckets=3
        )
        == {}
    )


def test_units_bought_are_the_sales_with_when_each_hold_was_made():
    allocation = open_allocation(quantity=10)
    sale = _row(allocation, status=Status.CONFIRMED, quantity=3, made_ago=timedelta(seconds=30))
    _row(allocation, status=Status.HELD, quantity=2)

    sale.refresh_from_db()
    assert selectors.units_bought_at(allocation_id=allocation.pk) == [(sale.created_at, 3)]


def test_waitlist_figures_count_customers_once_and_offers_by_their_hold():
    allocation = open_allocation(quantity=1)
    waiting, offered, claimed_then_back = UserFactory(), UserFactory(), UserFactory()

    def entry(customer, status, reservation=None):
        return WaitlistEntry.objects.create(
            allocation=allocation,
            customer=customer,
            unit_price=Decimal("5.00"),
            currency="USD",
            status=status,
            reservation=reservation,
        )

    entry(waiting, WaitlistEntry.Status.WAITING)
    offer = _row(allocation, status=Status.HELD, customer=offered)
    entry(offered, WaitlistEntry.Status.OFFERED, offer)
    claim = _row(allocation, status=Status.CONFIRMED, customer=claimed_then_back)
    entry(claimed_then_back, WaitlistEntry.Status.CLAIMED, claim)
    entry(claimed_then_back, WaitlistEntry.Status.WAITING)  # back in line

    figures, customers = selectors.waitlist_figures(allocation_id=allocation.pk)

    assert figures == {"joined": 3, "waiting": 2, "offers": 2, "claimed": 1}
    assert customers == {waiting.pk, offered.pk, claimed_then_back.pk}


def test_waiting_places_count_only_the_entries_still_waiting_in_the_order_they_joined():
    allocation, other = open_allocation(quantity=1), open_allocation(quantity=1)

    def entry(status, on=allocation):
        return WaitlistEntry.objects.create(
            allocation=on,
            customer=UserFactory(),
            unit_price=Decimal("5.00"),
            currency="USD",
            status=status,
        ).pk

    first = entry(WaitlistEntry.Status.WAITING)
    entry(WaitlistEntry.Status.LEFT)
    entry(WaitlistEntry.Status.WAITING, on=other)
    second = entry(WaitlistEntry.Status.WAITING)

    assert selectors.waiting_places(allocation_id=allocation.pk) == {first: 1, second: 2}
