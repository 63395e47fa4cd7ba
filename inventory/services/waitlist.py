"""The waitlist: viewers in line for a sold-out allocation, first come, first served.

This module is what viewers do with the line: join it, see their place, leave it.
Units that come back are offered to the line inside the transaction that returns them
(``offers``, below the services that return units); leaving with an offer outstanding
releases its hold like any other, so this module sits above ``holds``.

Every function that changes the line holds the allocation row lock, the same lock that
every return of units takes, so joins, leaves and offers of one allocation are serial.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import IntegrityError, transaction

from core.exceptions import NotFound
from inventory import events, locks
from inventory.exceptions import (
    DropNotLive,
    LimitReached,
    NotOnWaitlist,
    NotSoldOut,
    ReservationNotHeld,
)
from inventory.models import Allocation, WaitlistEntry
from inventory.services._common import (
    customer_units,
    pending_units,
    validate_quantity,
    waitlist_changed_event,
)
from inventory.services.holds import reservation_release
from inventory.services.offers import waitlist_head_positions

Entry = WaitlistEntry.Status


def _lock_allocation(allocation_id: int) -> Allocation:
    allocation = locks.lock_allocation(allocation_id)
    if allocation is None:
        raise NotFound("No such allocation.")
    return allocation


def waitlist_position(entry: WaitlistEntry) -> int | None:
    """1 for the next in line; None when the entry is no longer waiting."""
    if entry.status != Entry.WAITING:
        return None
    ahead = WaitlistEntry.objects.filter(
        allocation_id=entry.allocation_id, status=Entry.WAITING, pk__lt=entry.pk
    ).count()
    return ahead + 1


def waitlist_join(
    *,
    allocation_id: int,
    customer_id: int,
    unit_price: Decimal,
    currency: str,
    quantity: int = 1,
) -> tuple[WaitlistEntry, bool]:
    """Get in line for units of a sold-out allocation. Returns the entry and whether it
    is new; a customer already in line (waiting or offered) gets their entry back.

    Refuses with ``DropNotLive`` when the allocation does not sell, ``NotSoldOut`` when a
    unit is free (reserve it instead), ``LimitReached`` when the units asked for would
    take the customer past the per-customer limit.
    """
    quantity = validate_quantity(quantity)
    with transaction.atomic():
        allocation = _lock_allocation(allocation_id)
        existing = WaitlistEntry.objects.filter(
            allocation_id=allocation_id,
            customer_id=customer_id,
            status__in=WaitlistEntry.ACTIVE_STATUSES,
        ).first()
        if existing is not None:
            existing.position = waitlist_position(existing)
            return existing, False
        if allocation.status != Allocation.Status.OPEN:
            raise DropNotLive()
        if allocation.remaining - pending_units(allocation_id) > 0:
            raise NotSoldOut()
        limit = allocation.per_customer_limit
        if limit is not None and customer_units(allocation_id, customer_id) + quantity > limit:
            raise LimitReached(limit=limit)
        try:
            with transaction.atomic():
                entry = WaitlistEntry.objects.create(
                    allocation_id=allocation_id,
                    customer_id=customer_id,
                    quantity=quantity,
                    unit_price=unit_price,
                    currency=currency,
                )
        except IntegrityError:  # pragma: no cover - the allocation lock serialises joins
            raise NotSoldOut("You are already in line.") from None
        entry.position = waitlist_position(entry)
        events.emit_on_commit([waitlist_changed_event(entry, entry.position)])
    return entry, True


def waitlist_entry_for(*, allocation_id: int, customer_id: int) -> WaitlistEntry:
    """The customer's latest entry for the allocation, with its ``position``."""
    entry = (
        WaitlistEntry.objects.filter(allocation_id=allocation_id, customer_id=customer_id)
        .order_by("-id")
        .first()
    )
    if entry is None:
        raise NotOnWaitlist()
    entry.position = waitlist_position(entry)
    return entry


# Leaving races with the line moving (an offer made, lapsing or bought meanwhile): the
# entry is read, then locked as it was read; if it changed in between, read again.
LEAVE_ATTEMPTS = 5


def waitlist_leave(*, allocation_id: int, customer_id: int) -> WaitlistEntry:
    """Step out of line. An outstanding offer is released, so it passes on at once."""
    for _ in range(LEAVE_ATTEMPTS):
        seen = (
            WaitlistEntry.objects.filter(
                allocation_id=allocation_id,
                customer_id=customer_id,
                status__in=WaitlistEntry.ACTIVE_STATUSES,
            )
            .values("pk", "status", "reservation_id")
            .first()
        )
        if seen is None:
            raise NotOnWaitlist()
        if seen["status"] == Entry.OFFERED:
            # The offer's hold first, then the allocation (the lock order): releasing
            # it marks the entry left and offers its units onward.
            try:
                reservation_release(reservation_id=seen["reservation_id"], customer_id=customer_id)
            except ReservationNotHeld:
                continue  # it lapsed or was bought just now: look again
            return WaitlistEntry.objects.get(pk=seen["pk"])
        with transaction.atomic():
            _lock_allocation(allocation_id)
            entry = locks.lock_active_entry(allocation_id=allocation_id, customer_id=customer_id)
            if entry is None or entry.pk != seen["pk"] or entry.status != Entry.WAITING:
                continue  # offered or ended meanwhile: look again
            entry.status = Entry.LEFT
            entry.save(update_fields=["status", "updated_at"])
            events.emit_on_commit(
                [waitlist_changed_event(entry), *waitlist_head_positions(allocation_id)]
            )
        return entry
    raise NotOnWaitlist("Your place in line keeps changing; try again.")
