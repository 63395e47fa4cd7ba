"""Awards: an allocation's units handed to claims in an order the caller decided (a
draw's winners), instead of to whoever asks first.

Each claim gets its whole quantity as a held reservation with its own window (checked
out like any hold; waitlist offers are made the same way), while units remain; a claim
that no longer fits gets nothing and the claims after it are still tried. The claims
not served queue on the allocation's waitlist in the same order, so units that come
back (an award not checked out in time, a refund) go to them first, as offers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import InvalidInput, NotFound
from inventory import events, locks
from inventory.models import Allocation, Reservation, StockMovement, WaitlistEntry
from inventory.services._common import (
    allocation_changed_event,
    pending_units,
    reservation_changed_event,
    units_by_customer,
    validate_quantity,
)
from inventory.services.allocations import allocation_open
from inventory.services.offers import offer_returned_units, waitlist_head_positions


@dataclass(frozen=True)
class Claim:
    """One claim on units: who, how many, and the ledger's reference for its hold."""

    customer_id: int
    quantity: int
    reference: str


@dataclass
class AwardOutcome:
    """Per claim (by its index in the order given): its hold, or its place in line."""

    units: int  # the free units handed out from
    holds: dict[int, Reservation] = field(default_factory=dict)
    waiting: dict[int, WaitlistEntry] = field(default_factory=dict)


def allocation_award_in_order(
    *,
    allocation_id: int,
    claims: list[Claim],
    unit_price: Decimal,
    currency: str,
    hold_seconds: int,
) -> AwardOutcome:
    """Open the allocation (if it is ready) and hand its free units to ``claims`` in
    their order.

    Guarantees, in one transaction under the allocation's lock: never more units held
    than are free (one conditional ``UPDATE`` for their sum; the database's CHECK is the
    last line), one ledger entry per hold, each claim within the per-customer limit
    counting what the customer holds already (a claim that would pass it is treated as
    not fitting), no customer twice in line. Claims not served queue in the order given;
    free units left over (every remaining claim wanted more) are offered to the line at
    once. A closed allocation awards nothing and queues no one: the sale ended first.
    The gate is rebuilt after commit.
    """
    if not isinstance(hold_seconds, int) or hold_seconds < 1:
        raise InvalidInput("hold_seconds must be a positive whole number.", field="hold_seconds")
    for claim in claims:
        validate_quantity(claim.quantity)
    if len({claim.customer_id for claim in claims}) != len(claims):
        raise InvalidInput("A customer may claim once.", field="claims")
    with transaction.atomic():
        allocation = locks.lock_allocation(allocation_id)
        if allocation is None:
            raise NotFound("No such allocation.")
        if allocation.status == Allocation.Status.CLOSED:
            return AwardOutcome(units=0)
        if allocation.status == Allocation.Status.READY:
            allocation = allocation_open(allocation_id=allocation_id)
        free = allocation.remaining - pending_units(allocation_id)
        outcome = AwardOutcome(units=max(free, 0))
        limit = allocation.per_customer_limit
        holding = units_by_customer(allocation_id, [c.customer_id for c in claims])
        now = timezone.now()
        expires_at = now + timedelta(seconds=hold_seconds)

        served: list[tuple[int, Claim]] = []
        left = outcome.units
        for index, claim in enumerate(claims):
            held_already = holding.get(claim.customer_id, 0)
            within_limit = limit is None or held_already + claim.quantity <= limit
            if claim.quantity <= left and within_limit:
                served.append((index, claim))
                left -= claim.quantity
        taken = sum(claim.quantity for _, claim in served)
        if taken:
            locks.claim_allocation(allocation_id)
            moved = Allocation.objects.filter(
                pk=allocation_id, held__lte=F("quantity") - F("sold") - taken
            ).update(held=F("held") + taken)
            if not moved:  # pragma: no cover - free was computed under the same lock
                raise RuntimeError("units free under the lock were gone")
            holds = Reservation.objects.bulk_create(
                Reservation(
                    customer_id=claim.customer_id,
                    allocation_id=allocation_id,
                    quantity=claim.quantity,
                    unit_price=unit_price,
                    currency=currency,
                    status=Reservation.Status.HELD,
                    expires_at=expires_at,
                    # No key: the caller's row links its hold; a client's key never collides.
                    idempotency_key=None,
                )
                for _, claim in served
            )
            StockMovement.objects.bulk_create(
                StockMovement(
                    stock_item_id=allocation.stock_item_id,
                    allocation_id=allocation_id,
                    reservation=hold,
                    reason=StockMovement.Reason.HOLD,
                    held_delta=hold.quantity,
                    reference=claim.reference,
                )
                for hold, (_, claim) in zip(holds, served, strict=True)
            )
            outcome.holds = {index: hold for hold, (index, _) in zip(holds, served, strict=True)}

        unserved = [(i, c) for i, c in enumerate(claims) if i not in outcome.holds]
        in_line = set(
            WaitlistEntry.objects.filter(
                allocation_id=allocation_id,
                customer_id__in=[c.customer_id for _, c in unserved],
                status__in=WaitlistEntry.ACTIVE_STATUSES,
            ).values_list("customer_id", flat=True)
        )
        queued = [(i, c) for i, c in unserved if c.customer_id not in in_line]
        # One row after another, so that ids (the line's order) follow the claims' order.
        for index, claim in queued:
            outcome.waiting[index] = WaitlistEntry.objects.create(
                allocation_id=allocation_id,
                customer_id=claim.customer_id,
                quantity=claim.quantity,
                unit_price=unit_price,
                currency=currency,
            )

        allocation.refresh_from_db()
        changes: list[events.Event] = [reservation_changed_event(h) for h in outcome.holds.values()]
        changes.append(allocation_changed_event(allocation))
        if outcome.waiting:
            changes += waitlist_head_positions(allocation_id)
        # The awarded units were never free to ask for: a copy recounts them from the
        # rows (a draw is one award for the whole drop).
        changes.append(events.AllocationRecounted(allocation_id))
        events.emit_on_commit(changes)
        # Units nobody drawn could take whole go to the line's head, as returned units do.
        offer_returned_units(allocation_id=allocation_id)
        for entry in outcome.waiting.values():
            entry.refresh_from_db()
    return outcome
