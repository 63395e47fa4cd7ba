"""The waitlist: joining a sold-out allocation, returned units offered first come first
served as short holds, offers lapsing to the next in line, the per-customer limit, and
the gate never handing an offered unit to someone else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import events, services
from inventory.events import WaitlistChanged
from inventory.exceptions import DropNotLive, LimitReached, NotOnWaitlist, NotSoldOut, SoldOut
from inventory.models import Allocation, Reservation, StockMovement, WaitlistEntry
from tests.factories import UserFactory
from tests.inventory.helpers import PRICE, open_primed, request_hold, settled_hold
from tests.inventory.invariants import assert_gate_agrees, assert_inventory_invariants

Entry = WaitlistEntry.Status
Status = Reservation.Status

pytestmark = pytest.mark.django_db


def _join(customer_id: int, allocation_id: int, quantity: int = 1):
    return services.waitlist_join(
        allocation_id=allocation_id,
        customer_id=customer_id,
        quantity=quantity,
        unit_price=PRICE,
        currency="USD",
    )


def _sold_out_to(capture, allocation: Allocation, buyers: int) -> list[Reservation]:
    """Every unit of ``allocation`` held, one per new buyer."""
    return [
        settled_hold(capture, UserFactory().pk, allocation.pk, key=f"buy-{i}")
        for i in range(buyers)
    ]


@pytest.fixture
def recorded_events():
    seen: list = []

    def subscriber(batch):
        seen.extend(batch)

    events.subscribe(subscriber)
    yield seen
    events.unsubscribe(subscriber)


def test_joining_is_refused_while_a_unit_is_free(gate_mode):
    allocation = open_primed(2)

    with pytest.raises(NotSoldOut):
        _join(UserFactory().pk, allocation.pk)

    assert not WaitlistEntry.objects.exists()


def test_the_line_forms_in_order_and_rejoining_returns_the_same_place(
    gate_mode, django_capture_on_commit_callbacks, recorded_events
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(1)
    _sold_out_to(capture, allocation, 1)
    first, second = UserFactory(), UserFactory()

    with capture(execute=True):
        entry_a, new_a = _join(first.pk, allocation.pk)
        entry_b, new_b = _join(second.pk, allocation.pk)
    again, new_again = _join(first.pk, allocation.pk)

    assert (new_a, new_b, new_again) == (True, True, False)
    assert (entry_a.position, entry_b.position, again.position) == (1, 2, 1)
    assert again.pk == entry_a.pk
    assert [
        (e.customer_id, e.status, e.position)
        for e in recorded_events
        if isinstance(e, WaitlistChanged)
    ] == [(first.pk, Entry.WAITING, 1), (second.pk, Entry.WAITING, 2)]


def test_a_released_unit_is_offered_to_the_first_in_line_and_nobody_else_can_take_it(
    gate_mode, django_capture_on_commit_callbacks, settings
):
    settings.WAITLIST_OFFER_SECONDS = 45
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(2)
    holds = _sold_out_to(capture, allocation, 2)
    first, second, newcomer = UserFactory(), UserFactory(), UserFactory()
    with capture(execute=True):
        _join(first.pk, allocation.pk)
        _join(second.pk, allocation.pk)
    before = timezone.now()

    with capture(execute=True):
        services.reservation_release(reservation_id=holds[0].pk, customer_id=holds[0].customer_id)

    offer = Reservation.objects.get(customer=first, allocation=allocation)
    assert offer.status == Status.HELD and offer.quantity == 1 and offer.unit_price == PRICE
    assert (
        before + timedelta(seconds=44) < offer.expires_at <= timezone.now() + timedelta(seconds=45)
    )
    entry = WaitlistEntry.objects.get(customer=first)
    assert (entry.status, entry.reservation_id) == (Entry.OFFERED, offer.pk)
    assert (
        services.waitlist_entry_for(allocation_id=allocation.pk, customer_id=second.pk).position
        == 1
    )
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (2, 0)
    offer_entry = StockMovement.objects.get(reservation=offer)
    assert (offer_entry.reason, offer_entry.held_delta) == (
        StockMovement.Reason.WAITLIST_OFFER,
        1,
    )
    assert_gate_agrees(allocation.pk)
    # A newcomer is still told sold out: the unit was never free.
    with capture(execute=True), pytest.raises(SoldOut):
        request_hold(newcomer.pk, allocation.pk, key="late")
    assert_inventory_invariants()


def test_an_offer_not_taken_in_time_passes_to_the_next_in_line(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(1)
    (hold,) = _sold_out_to(capture, allocation, 1)
    line = [UserFactory() for _ in range(3)]
    with capture(execute=True):
        for customer in line:
            _join(customer.pk, allocation.pk)
        services.reservation_release(reservation_id=hold.pk)

    offers = []
    for customer in line:
        offer = Reservation.objects.get(customer=customer, allocation=allocation)
        offers.append(offer)
        with capture(execute=True):
            services.reservations_expire(now=offer.expires_at + timedelta(seconds=1))

    assert [o.expires_at for o in offers] == sorted(o.expires_at for o in offers)
    assert list(WaitlistEntry.objects.order_by("id").values_list("customer_id", "status")) == [
        (c.pk, Entry.LAPSED) for c in line
    ]
    allocation.refresh_from_db()
    # Nobody left in line: the unit is back on sale for everyone.
    assert (allocation.held, allocation.remaining) == (0, 1)
    assert_gate_agrees(allocation.pk)
    assert_inventory_invariants()


def test_an_offer_bought_is_claimed(gate_mode, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(1)
    (hold,) = _sold_out_to(capture, allocation, 1)
    customer = UserFactory()
    with capture(execute=True):
        _join(customer.pk, allocation.pk)
        services.reservation_release(reservation_id=hold.pk)
    offer = Reservation.objects.get(customer=customer)

    with capture(execute=True):
        services.reservation_confirm(reservation_id=offer.pk)

    assert WaitlistEntry.objects.get(customer=customer).status == Entry.CLAIMED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold) == (0, 1)
    assert_inventory_invariants()


def test_a_refunded_sale_goes_to_the_line_too(gate_mode, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(1)
    (hold,) = _sold_out_to(capture, allocation, 1)
    with capture(execute=True):
        services.reservation_confirm(reservation_id=hold.pk)
    customer = UserFactory()
    with capture(execute=True):
        _join(customer.pk, allocation.pk)
        services.reservation_refund(reservation_id=hold.pk)

    offer = Reservation.objects.get(customer=customer)
    assert offer.status == Status.HELD
    allocation.refresh_from_db()
    assert (allocation.held, allocation.sold, allocation.remaining) == (1, 0, 0)
    assert_inventory_invariants()


def test_the_per_customer_limit_holds_in_line(gate_mode, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(2, limit=1)
    holds = _sold_out_to(capture, allocation, 2)
    holder = Reservation.objects.get(pk=holds[1].pk).customer
    # Already at the limit: cannot queue for more.
    with pytest.raises(LimitReached):
        _join(holder.pk, allocation.pk)
    first, second = UserFactory(), UserFactory()
    with capture(execute=True):
        _join(first.pk, allocation.pk)
        _join(second.pk, allocation.pk)
    # The first in line got a unit some other way meanwhile (a reinstated late payment
    # stands in for it here): when a unit comes back, they are skipped.
    Reservation.objects.create(
        customer=first,
        allocation=allocation,
        quantity=1,
        unit_price=PRICE,
        currency="USD",
        status=Status.CONFIRMED,
        idempotency_key="elsewhere",
    )
    Allocation.objects.filter(pk=allocation.pk).update(quantity=3, sold=1)

    with capture(execute=True):
        services.reservation_release(reservation_id=holds[0].pk)

    assert WaitlistEntry.objects.get(customer=first).status == Entry.SKIPPED
    assert WaitlistEntry.objects.get(customer=second).status == Entry.OFFERED


def test_leaving_with_an_offer_passes_it_on(gate_mode, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(1)
    (hold,) = _sold_out_to(capture, allocation, 1)
    first, second = UserFactory(), UserFactory()
    with capture(execute=True):
        _join(first.pk, allocation.pk)
        _join(second.pk, allocation.pk)
        services.reservation_release(reservation_id=hold.pk)

    with capture(execute=True):
        services.waitlist_leave(allocation_id=allocation.pk, customer_id=first.pk)

    assert WaitlistEntry.objects.get(customer=first).status == Entry.LEFT
    assert Reservation.objects.get(customer=first).status == Status.RELEASED
    assert WaitlistEntry.objects.get(customer=second).status == Entry.OFFERED
    with pytest.raises(NotOnWaitlist):
        services.waitlist_leave(allocation_id=allocation.pk, customer_id=first.pk)
    assert_inventory_invariants()


def test_closing_the_sale_closes_the_line(gate_mode, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(1)
    _sold_out_to(capture, allocation, 1)
    customer = UserFactory()
    with capture(execute=True):
        _join(customer.pk, allocation.pk)
        services.allocation_close(allocation_id=allocation.pk)

    assert WaitlistEntry.objects.get(customer=customer).status == Entry.CLOSED
    with pytest.raises(DropNotLive):
        _join(UserFactory().pk, allocation.pk)


def test_a_unit_freed_by_a_request_refused_at_settle_goes_to_the_line(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(2, limit=1)
    eager = UserFactory()
    # Two requests of one customer admitted before either settled (a race the gate can
    # let through): both pending, so nothing looks free and a viewer may queue.
    for key in ("twin-1", "twin-2"):
        Reservation.objects.create(
            customer=eager,
            allocation=allocation,
            quantity=1,
            unit_price=PRICE,
            currency="USD",
            idempotency_key=key,
        )
    waiting = UserFactory()
    with capture(execute=True):
        _join(waiting.pk, allocation.pk)

    with capture(execute=True):
        services.allocation_settle_pending(allocation_id=allocation.pk)

    assert sorted(Reservation.objects.filter(customer=eager).values_list("status", flat=True)) == [
        "held",
        "rejected",
    ]
    assert WaitlistEntry.objects.get(customer=waiting).status == Entry.OFFERED
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (2, 0)
    assert_gate_agrees(allocation.pk)
    assert_inventory_invariants()
