"""Holds the system makes (waitlist offers) live outside the clients' idempotency keys:
no key a client sends can make a return of units fail."""

from __future__ import annotations

import pytest

from inventory import services
from inventory.models import Allocation, Reservation, WaitlistEntry
from tests.factories import UserFactory
from tests.inventory.helpers import PRICE, open_primed, settled_hold
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = pytest.mark.django_db


def test_a_client_key_shaped_like_an_offer_cannot_block_returns(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    sold_out = open_primed(1)
    elsewhere = open_primed(5)
    holder, waiting = UserFactory(), UserFactory()
    hold = settled_hold(capture, holder.pk, sold_out.pk, key="buy")
    with capture(execute=True):
        entry, _ = services.waitlist_join(
            allocation_id=sold_out.pk,
            customer_id=waiting.pk,
            quantity=1,
            unit_price=PRICE,
            currency="USD",
        )
    # What the system once used as the offer's key, sent by the client on another drop.
    settled_hold(capture, waiting.pk, elsewhere.pk, key=f"waitlist-offer:{entry.pk}")

    with capture(execute=True):
        services.reservation_release(reservation_id=hold.pk, customer_id=holder.pk)

    entry.refresh_from_db()
    offer = entry.reservation
    assert (entry.status, offer.status, offer.customer_id) == (
        WaitlistEntry.Status.OFFERED,
        Reservation.Status.HELD,
        waiting.pk,
    )
    assert offer.idempotency_key is None
    sold_out.refresh_from_db()
    assert (sold_out.held, sold_out.remaining) == (1, 0)
    assert_inventory_invariants()


def test_every_offer_of_one_customer_coexists_without_a_key(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    waiting = UserFactory()
    offers = []
    for i in range(2):
        allocation = open_primed(1)
        holder = UserFactory()
        hold = settled_hold(capture, holder.pk, allocation.pk, key=f"buy-{i}")
        with capture(execute=True):
            services.waitlist_join(
                allocation_id=allocation.pk,
                customer_id=waiting.pk,
                quantity=1,
                unit_price=PRICE,
                currency="USD",
            )
            services.reservation_release(reservation_id=hold.pk, customer_id=holder.pk)
        offers.append(Reservation.objects.get(customer=waiting, allocation=allocation))

    assert [o.status for o in offers] == [Reservation.Status.HELD] * 2
    assert [o.idempotency_key for o in offers] == [None, None]
    assert Allocation.objects.filter(held=1).count() == 2
    assert_inventory_invariants()
