"""The waitlist: viewers in line for a sold-out allocation, first come, first served.

A unit that comes back while someone waits never becomes free for everyone: in the same
transaction that returns it (a hold released or expired, a sale refunded), it is offered
to the first entry in line as a held reservation with its own short window
(``WAITLIST_OFFER_SECONDS``). An offer not taken in time expires like any hold, and its
units go to the next in line the same way. So the gate never sees those units: while
anyone waits, the allocation has no free unit (``remaining - pending == 0``), which is
also exactly when joining is allowed.

Every function that changes the line holds the allocation row lock, the same lock that
every return of units takes, so joins, leaves and offers of one allocation are serial.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import NotFound
from inventory import events, locks
from inventory.exceptions import (
    DropNotLive,
    LimitReached,
    NotOnWaitlist,
    NotSoldOut,
    ReservationNotHeld,
)
from inventory.models import Allocation, Reservation, StockMovement, WaitlistEntry
from inventory.services._common import (
    allocation_changed_event,
    customer_units,
    pending_units,
    reservation_changed_event,
    validate_quantity,
    waitlist_changed_event,
)
from inventory.services.gate_sync import gate_after_commit

Entry = WaitlistEntry.Status

# After each offer, this many viewers at the head of the line hear their new position;
# further back, positions move slowly and the API answers whoever asks.
POSITION_UPDATES = 20


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
    from inventory.services.holds import reservation_release

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
            events.emit_on_commit([waitlist_changed_event(entry), *_head_positions(allocation_id)])
        return entry
    raise NotOnWaitlist("Your place in line keeps changing; try again.")


def _head_positions(allocation_id: int) -> list[events.WaitlistChanged]:
    head = WaitlistEntry.objects.filter(allocation_id=allocation_id, status=Entry.WAITING).order_by(
        "id"
    )[:POSITION_UPDATES]
    return [waitlist_changed_event(entry, position) for position, entry in enumerate(head, start=1)]


def offers_returned(*, reservations: list[Reservation], status: str) -> None:
    """Inside the transaction returning these holds: offers among them end (lapsed
    when not taken in time, left when released)."""
    outcome = Entry.LAPSED if status == Reservation.Status.EXPIRED else Entry.LEFT
    entries = list(
        WaitlistEntry.objects.filter(
            reservation_id__in=[r.pk for r in reservations], status=Entry.OFFERED
        )
    )
    if entries:
        WaitlistEntry.objects.filter(pk__in=[e.pk for e in entries]).update(
            status=outcome, updated_at=timezone.now()
        )
        for entry in entries:
            entry.status = outcome
        events.emit_on_commit([waitlist_changed_event(entry) for entry in entries])


def offer_claimed(*, reservation: Reservation) -> None:
    """Inside the sale's transaction: an offer that was bought is claimed."""
    entry = WaitlistEntry.objects.filter(
        reservation_id=reservation.pk, status=Entry.OFFERED
    ).first()
    if entry is not None:
        WaitlistEntry.objects.filter(pk=entry.pk).update(
            status=Entry.CLAIMED, updated_at=timezone.now()
        )
        entry.status = Entry.CLAIMED
        events.emit_on_commit([waitlist_changed_event(entry)])


def offer_returned_units(*, allocation_id: int) -> int:
    """Inside a transaction holding the allocation's lock, after units came back to it:
    offer every free unit to the line, first come first served. Returns the units
    offered (the caller then rebuilds the gate instead of handing them to it)."""
    if not WaitlistEntry.objects.filter(allocation_id=allocation_id, status=Entry.WAITING).exists():
        return 0
    allocation = Allocation.objects.get(pk=allocation_id)  # fresh counters, lock held
    if allocation.status != Allocation.Status.OPEN:
        return 0
    free = allocation.remaining - pending_units(allocation_id)
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.WAITLIST_OFFER_SECONDS)
    offered = 0
    changes: list[events.Event] = []
    while free > 0:
        entry = locks.lock_next_waiting(allocation_id)
        if entry is None:
            break
        units = min(entry.quantity, free)
        limit = allocation.per_customer_limit
        if limit is not None and customer_units(allocation_id, entry.customer_id) + units > limit:
            # Bought elsewhere in the meantime: the next in line gets the unit.
            WaitlistEntry.objects.filter(pk=entry.pk).update(status=Entry.SKIPPED, updated_at=now)
            entry.status = Entry.SKIPPED
            changes.append(waitlist_changed_event(entry))
            continue
        taken = Allocation.objects.filter(
            pk=allocation_id, held__lte=F("quantity") - F("sold") - units
        ).update(held=F("held") + units)
        if not taken:  # pragma: no cover - free was computed under the same lock
            break
        reservation = Reservation.objects.create(
            customer_id=entry.customer_id,
            allocation_id=allocation_id,
            quantity=units,
            unit_price=entry.unit_price,
            currency=entry.currency,
            status=Reservation.Status.HELD,
            expires_at=expires_at,
            # No key: the entry links its offer; a client's key can never collide.
            idempotency_key=None,
        )
        StockMovement.objects.create(
            stock_item_id=allocation.stock_item_id,
            allocation_id=allocation_id,
            reservation=reservation,
            reason=StockMovement.Reason.WAITLIST_OFFER,
            held_delta=units,
            reference=f"waitlist:{entry.pk}",
        )
        WaitlistEntry.objects.filter(pk=entry.pk).update(
            status=Entry.OFFERED, reservation=reservation, offered_at=now, updated_at=now
        )
        entry.status, entry.reservation_id = Entry.OFFERED, reservation.pk
        changes += [reservation_changed_event(reservation), waitlist_changed_event(entry)]
        free -= units
        offered += units
    if offered:
        allocation.refresh_from_db()
        changes.append(allocation_changed_event(allocation))
        # The offered units were never free: the gate must not hand them out. A
        # rebuild counts them from the rows (returns are rare next to requests).
        gate_after_commit(allocation_id=allocation_id, rebuild=True)
    if changes:
        events.emit_on_commit(changes + _head_positions(allocation_id))
    return offered


def waitlist_close(*, allocation_id: int) -> int:
    """Inside the allocation's closing transaction: the line ends unserved (it still
    counts as unmet demand). Returns how many entries were waiting."""
    waiting = list(WaitlistEntry.objects.filter(allocation_id=allocation_id, status=Entry.WAITING))
    if waiting:
        WaitlistEntry.objects.filter(pk__in=[e.pk for e in waiting]).update(
            status=Entry.CLOSED, updated_at=timezone.now()
        )
        for entry in waiting:
            entry.status = Entry.CLOSED
        events.emit_on_commit([waitlist_changed_event(entry) for entry in waiting])
    return len(waiting)
