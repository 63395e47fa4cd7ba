"""The waitlist's part in the transactions that move units: offers made, ended and
claimed, and the line closed.

A unit that comes back while someone waits never becomes free for everyone: in the same
transaction that returns it (a hold released or expired, a sale refunded), it is offered
to the first entry in line as a held reservation with its own short window
(``WAITLIST_OFFER_SECONDS``). An offer not taken in time expires like any hold, and its
units go to the next in line the same way. So the gate never sees those units: while
anyone waits, the allocation has no free unit (``remaining - pending == 0``), which is
also exactly when joining is allowed.

Every function here runs inside its caller's transaction, which holds the allocation's
row lock (``holds``, ``settle`` and ``allocations`` call them), and calls none of those
back. What viewers do with the line (join, leave, their position) is ``waitlist``.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from inventory import events, locks
from inventory.models import Allocation, Reservation, StockMovement, WaitlistEntry
from inventory.services._common import (
    allocation_changed_event,
    customer_units,
    pending_units,
    reservation_changed_event,
    waitlist_changed_event,
)

Entry = WaitlistEntry.Status

# After each offer, this many viewers at the head of the line hear their new position;
# further back, positions move slowly and the API answers whoever asks.
POSITION_UPDATES = 20


def waitlist_head_positions(allocation_id: int) -> list[events.WaitlistChanged]:
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
        # The offered units were never free: a copy must not hand them out, and
        # recounts them from the rows (returns are rare next to requests).
        changes += [allocation_changed_event(allocation), events.AllocationRecounted(allocation_id)]
    if changes:
        events.emit_on_commit(changes + waitlist_head_positions(allocation_id))
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
