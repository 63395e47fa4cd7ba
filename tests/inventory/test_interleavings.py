"""Every pair of stock paths that can meet on the same rows, the second run inside the
first at its point of danger (right after it took the allocation's lock; for the gate
rebuild, between its read and its write), on real PostgreSQL connections and the real
gate. Whatever the pair: no deadlock, no lock taken out of order, no lost update, the
ledger balances and the gate agrees with the database afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from unittest import mock

import pytest
from django.db import DatabaseError
from django.utils import timezone

from core.exceptions import DomainError
from inventory import gate, services
from inventory.locks import LockOrderViolation
from inventory.models import Allocation, Reservation, WaitlistEntry
from inventory.services.gate_sync import _state_from_database
from inventory.tasks import settle
from tests.factories import UserFactory, open_allocation
from tests.inventory.helpers import PRICE, request_hold
from tests.inventory.interleave import inside
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("gate_on"),
]

Status = Reservation.Status


@dataclass
class Scene:
    """One sold-out allocation with something for every path to do."""

    allocation: Allocation
    held: Reservation  # to release
    due: Reservation  # held, past its expiry
    sold: Reservation  # confirmed, to refund
    paying: Reservation  # held, to confirm
    expired: Reservation  # expired, to reinstate
    pending: Reservation  # admitted, waiting for the settle
    leaver: int  # a customer waiting in line, who leaves
    joiner: int  # a customer who joins the line


def _join(allocation_id: int, customer_id: int):
    return services.waitlist_join(
        allocation_id=allocation_id,
        customer_id=customer_id,
        unit_price=PRICE,
        currency="USD",
    )


def _scene() -> Scene:
    allocation = open_allocation(quantity=6)
    hold = {}
    for name in ("held", "due", "sold", "paying", "expired"):
        hold[name] = request_hold(UserFactory().pk, allocation.pk, key=name)
    services.reservation_confirm(reservation_id=hold["sold"].pk)
    past = timezone.now() - timedelta(seconds=5)
    Reservation.objects.filter(pk=hold["expired"].pk).update(expires_at=past)
    services.reservations_expire(allocation_id=allocation.pk)
    request_hold(UserFactory().pk, allocation.pk, key="filler")
    # The last unit admitted, its settle task not run yet.
    with mock.patch.object(settle, "delay"):
        pending = request_hold(UserFactory().pk, allocation.pk, key="pending")
    Reservation.objects.filter(pk=hold["due"].pk).update(expires_at=past)
    leaver, joiner = UserFactory().pk, UserFactory().pk
    _join(allocation.pk, UserFactory().pk)  # first in line: gets what comes back
    _join(allocation.pk, leaver)
    # The due hold's moved expiry, and everything above, as the gate must see it.
    services.gate_rebuild(allocation_id=allocation.pk)
    for reservation in (*hold.values(), pending):
        reservation.refresh_from_db()
    assert pending.status == Status.PENDING
    return Scene(
        allocation=allocation,
        pending=pending,
        leaver=leaver,
        joiner=joiner,
        **hold,
    )


PATHS = {
    "settle": lambda s: services.allocation_settle_pending(allocation_id=s.allocation.pk),
    "release": lambda s: services.reservation_release(
        reservation_id=s.held.pk, customer_id=s.held.customer_id
    ),
    "expire": lambda s: services.reservations_expire(),
    "confirm": lambda s: services.reservation_confirm(reservation_id=s.paying.pk),
    "reinstate": lambda s: services.reservation_reinstate(reservation_id=s.expired.pk),
    "refund": lambda s: services.reservation_refund(reservation_id=s.sold.pk),
    "join": lambda s: _join(s.allocation.pk, s.joiner),
    "leave": lambda s: services.waitlist_leave(allocation_id=s.allocation.pk, customer_id=s.leaver),
    "close": lambda s: services.allocation_close(allocation_id=s.allocation.pk),
    "rebuild": lambda s: services.gate_rebuild(allocation_id=s.allocation.pk),
    "admin_label": lambda s: services.allocation_set_label(
        allocation_id=s.allocation.pk, label="renamed"
    ),
    "admin_threshold": lambda s: services.stock_item_set_threshold(
        stock_item_id=s.allocation.stock_item_id, low_stock_threshold=3
    ),
}
# Where each path is in danger: holding the allocation's lock, or for the rebuild,
# between reading the rows and writing the gate. The admin's saves take no lock of
# their own: they only ever run as the guest.
DANGER = {name: "inventory.locks.lock_allocation" for name in PATHS}
DANGER["rebuild"] = "inventory.gate.gate_write"
HOSTS = [name for name in PATHS if not name.startswith("admin")]
PAIRS = [(host, guest) for host in HOSTS for guest in PATHS if guest != host]


def _assert_clean(outcome, label: str) -> None:
    for side in ("host", "guest"):
        value = getattr(outcome, side)
        if isinstance(value, BaseException):
            # A refusal (sold out, not held any more, not in line) is a fine outcome of
            # a race; a deadlock, a lock out of order or any other error is not.
            assert isinstance(value, DomainError), f"{label}: {side} raised {value!r}"
            assert not isinstance(value, LockOrderViolation | DatabaseError)


def _assert_gate_agrees(allocation: Allocation) -> None:
    # Settle whatever is still pending first: a gate with requests in flight differs
    # from the rows by design.
    services.allocation_settle_pending(allocation_id=allocation.pk)
    allocation.refresh_from_db()
    assert gate.gate_read(allocation_id=allocation.pk) == _state_from_database(allocation)


@pytest.mark.parametrize(("host", "guest"), PAIRS, ids=[f"{h}-then-{g}" for h, g in PAIRS])
def test_two_paths_meeting_on_the_same_rows(host, guest):
    scene = _scene()

    outcome = inside(
        lambda: PATHS[host](scene), point=DANGER[host], guest=lambda: PATHS[guest](scene)
    )

    _assert_clean(outcome, f"{guest} inside {host}")
    assert outcome.guest_ran_inside
    assert_inventory_invariants()
    _assert_gate_agrees(scene.allocation)


def test_a_return_landing_while_the_gate_is_rebuilt_is_counted_once():
    allocation = open_allocation(quantity=2)
    holds = [request_hold(UserFactory().pk, allocation.pk, key=f"h{i}") for i in range(2)]

    # The rebuild read the rows (nothing free), then the release commits and reaches the
    # gate before the rebuild writes what it read.
    outcome = inside(
        lambda: services.gate_rebuild(allocation_id=allocation.pk),
        point="inventory.gate.gate_write",
        after=False,
        guest=lambda: services.reservation_release(
            reservation_id=holds[0].pk, customer_id=holds[0].customer_id
        ),
    )

    _assert_clean(outcome, "release inside rebuild")
    state = gate.gate_read(allocation_id=allocation.pk)
    assert state.remaining == 1
    assert state == _state_from_database(Allocation.objects.get(pk=allocation.pk))


def test_a_return_applied_after_a_rebuild_that_read_it_is_not_counted_twice():
    allocation = open_allocation(quantity=2)
    holds = [request_hold(UserFactory().pk, allocation.pk, key=f"h{i}") for i in range(2)]

    # The release commits; before its change reaches the gate, a rebuild reads the rows
    # (the unit is back) and writes them.
    outcome = inside(
        lambda: services.reservation_release(
            reservation_id=holds[0].pk, customer_id=holds[0].customer_id
        ),
        point="inventory.gate.gate_apply",
        after=False,
        guest=lambda: services.gate_rebuild(allocation_id=allocation.pk),
    )

    _assert_clean(outcome, "rebuild inside release")
    state = gate.gate_read(allocation_id=allocation.pk)
    assert state.remaining == 1
    assert state == _state_from_database(Allocation.objects.get(pk=allocation.pk))


def test_leaving_the_line_while_the_offer_expires_cannot_deadlock():
    allocation = open_allocation(quantity=1)
    holder = request_hold(UserFactory().pk, allocation.pk, key="h")
    waiting = UserFactory().pk
    _join(allocation.pk, waiting)
    services.reservation_release(reservation_id=holder.pk, customer_id=holder.customer_id)
    entry = WaitlistEntry.objects.get(customer_id=waiting)
    assert entry.status == WaitlistEntry.Status.OFFERED
    Reservation.objects.filter(pk=entry.reservation_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    # The sweep holds the offer's row and is about to lock the allocation when the
    # viewer steps out of line.
    outcome = inside(
        lambda: services.reservations_expire(),
        point="inventory.locks.lock_due_holds",
        guest=lambda: services.waitlist_leave(allocation_id=allocation.pk, customer_id=waiting),
    )

    _assert_clean(outcome, "leave inside expiry")
    assert outcome.host == 1
    entry.refresh_from_db()
    assert entry.status == WaitlistEntry.Status.LAPSED
    assert Reservation.objects.get(pk=entry.reservation_id).status == Status.EXPIRED
    assert_inventory_invariants()
    _assert_gate_agrees(allocation)
