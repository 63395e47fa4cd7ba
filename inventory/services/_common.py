"""Helpers shared by the inventory services: input checks, the events a changed row
emits, and unit counts."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import Sum

from core.exceptions import InvalidInput
from inventory import events, locks
from inventory.models import Allocation, Reservation, WaitlistEntry

# Quantities fit PostgreSQL's integer column with room to add them up.
MAX_QUANTITY = 1_000_000
# Stock levels stay far below the 32-bit column limit however many restocks add up.
MAX_ON_HAND = 1_000_000_000


def validate_quantity(
    value: object,
    *,
    field: str = "quantity",
    allow_negative: bool = False,
    maximum: int = MAX_QUANTITY,
) -> int:
    """A whole number of units. Rejects bools, floats, strings, zero (and negatives
    unless asked), and absurd sizes, before anything is written."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be a whole number.", field=field)
    if value == 0 and allow_negative:
        raise InvalidInput(f"{field} must be a non-zero whole number.", field=field)
    if value <= 0 and not allow_negative:
        raise InvalidInput(f"{field} must be a positive whole number.", field=field)
    if abs(value) > maximum:
        raise InvalidInput(f"{field} must be at most {maximum} in size.", field=field)
    return value


def allocation_version(allocation_id: int) -> int:
    """The allocation's ``version`` for every change the current transaction makes to
    it or its reservations: bumped at the first, under the allocation's lock (so
    versions follow the order of the commits), the same number for the rest of the
    transaction. Whoever keeps a copy (the gate, the viewers' counters and their own
    reservations) applies a change only if it is newer than the one it has.

    Like the gate's changes, a number is kept for the transaction even if a savepoint
    that bumped it rolls back; no stock path rolls a savepoint back after a change."""
    versions: dict[int, int] = locks.transaction_state().setdefault("versions", {})
    if allocation_id not in versions:
        locks.claim_allocation(allocation_id)
        table = connection.ops.quote_name(Allocation._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET version = version + 1 WHERE id = %s RETURNING version",
                [allocation_id],
            )
            versions[allocation_id] = cursor.fetchone()[0]
    return versions[allocation_id]


def reservation_changed_event(reservation: Reservation) -> events.ReservationChanged:
    """The reservation as this transaction leaves it (the row's fields a viewer sees)."""
    return events.ReservationChanged.of(
        reservation, version=allocation_version(reservation.allocation_id)
    )


def allocation_changed_event(allocation: Allocation) -> events.AllocationChanged:
    """The allocation's figures as this transaction leaves them."""
    return events.AllocationChanged(
        allocation_id=allocation.pk,
        status=allocation.status,
        quantity=allocation.quantity,
        held=allocation.held,
        sold=allocation.sold,
        version=allocation_version(allocation.pk),
    )


def waitlist_changed_event(
    entry: WaitlistEntry, position: int | None = None
) -> events.WaitlistChanged:
    return events.WaitlistChanged(
        entry_id=entry.pk,
        customer_id=entry.customer_id,
        allocation_id=entry.allocation_id,
        status=entry.status,
        position=position,
        reservation_id=entry.reservation_id,
    )


def _units(**filters) -> int:
    return Reservation.objects.filter(**filters).aggregate(t=Sum("quantity"))["t"] or 0


def pending_units(allocation_id: int) -> int:
    """Units admitted on the allocation and not settled yet (promised to requests)."""
    return _units(allocation_id=allocation_id, status=Reservation.Status.PENDING)


# What counts against a customer's limit on an allocation. Before a request is admitted:
# every active reservation, pending ones included (admitted already, their units are
# promised). Where pending holds are being decided (the settle step, which takes them in
# order and adds each one it holds) or an expired hold comes back: the settled ones only,
# since the pending are exactly what is being decided.
ACTIVE = Reservation.ACTIVE_STATUSES
SETTLED = Reservation.SETTLED_STATUSES


def units_by_customer(
    allocation_id: int, customer_ids: Iterable[int] | None = None, *, statuses=ACTIVE
) -> dict[int, int]:
    """Units per customer on the allocation in ``statuses`` (every customer with any
    when ``customer_ids`` is None); customers with none are left out."""
    rows = Reservation.objects.filter(allocation_id=allocation_id, status__in=statuses)
    if customer_ids is not None:
        rows = rows.filter(customer_id__in=set(customer_ids))
    return dict(
        rows.values("customer_id")
        .annotate(units=Sum("quantity"))
        .values_list("customer_id", "units")
    )


def customer_units(allocation_id: int, customer_id: int, *, statuses=ACTIVE) -> int:
    """``units_by_customer`` of one customer."""
    return _units(allocation_id=allocation_id, customer_id=customer_id, status__in=statuses)
