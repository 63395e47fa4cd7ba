"""Allocations: carving units out of stock for a drop, opening and closing the sale."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inventory import events, gate
from inventory.exceptions import AllocationClosed, InsufficientStock, NotFound
from inventory.models import Allocation, StockItem, StockMovement
from inventory.services._common import validate_quantity
from inventory.services.gate_sync import gate_rebuild
from inventory.services.waitlist import waitlist_close

Reason = StockMovement.Reason


def allocation_changed_event(allocation: Allocation) -> events.AllocationChanged:
    return events.AllocationChanged(
        allocation_id=allocation.pk,
        status=allocation.status,
        quantity=allocation.quantity,
        held=allocation.held,
        sold=allocation.sold,
    )


@transaction.atomic
def allocation_create(
    *,
    stock_item_id: int,
    quantity: int,
    per_customer_limit: int | None = None,
    label: str = "",
    actor=None,
) -> Allocation:
    """Carve ``quantity`` free units out of a stock item into a new allocation.

    Guarantee: units are carved only if that many are free (on hand and not carved for
    another allocation); otherwise ``InsufficientStock`` and nothing is written.
    """
    validate_quantity(quantity)
    if per_customer_limit is not None:
        validate_quantity(per_customer_limit, field="per_customer_limit")
    carved = StockItem.objects.filter(
        pk=stock_item_id, on_hand__gte=F("reserved") + quantity
    ).update(reserved=F("reserved") + quantity)
    if not carved:
        item = StockItem.objects.filter(pk=stock_item_id).first()
        if item is None:
            raise NotFound("No such stock item.")
        raise InsufficientStock(
            f"Only {item.available} units are free to allocate.", available=item.available
        )
    allocation = Allocation.objects.create(
        stock_item_id=stock_item_id,
        quantity=quantity,
        per_customer_limit=per_customer_limit,
        label=label,
    )
    StockMovement.objects.create(
        stock_item_id=stock_item_id,
        allocation=allocation,
        reason=Reason.ALLOCATION_CARVE,
        reserved_delta=quantity,
        actor=actor,
        reference=f"allocation:{allocation.pk}",
    )
    return allocation


def allocation_open(*, allocation_id: int) -> Allocation:
    """Put the allocation on sale (idempotent) and prime its gate from the database."""
    with transaction.atomic():
        opened = Allocation.objects.filter(pk=allocation_id, status=Allocation.Status.READY).update(
            status=Allocation.Status.OPEN, opened_at=timezone.now()
        )
        allocation = Allocation.objects.filter(pk=allocation_id).first()
        if allocation is None:
            raise NotFound("No such allocation.")
        if allocation.status == Allocation.Status.CLOSED:
            raise AllocationClosed()
        if opened:
            events.emit_on_commit([allocation_changed_event(allocation)])
        transaction.on_commit(lambda: gate_rebuild(allocation_id=allocation_id))
    return allocation


def allocation_close(*, allocation_id: int, actor=None) -> Allocation:
    """Stop the sale and return every unit not held or sold to stock (idempotent).

    Holds still open keep their units until checkout, release or expiry; released ones
    then go straight back to stock, since the allocation no longer sells.
    """
    with transaction.atomic():
        allocation = (
            Allocation.objects.select_for_update(no_key=True).filter(pk=allocation_id).first()
        )
        if allocation is None:
            raise NotFound("No such allocation.")
        if allocation.status == Allocation.Status.CLOSED:
            return allocation
        unsold = allocation.remaining
        Allocation.objects.filter(pk=allocation_id).update(
            status=Allocation.Status.CLOSED,
            closed_at=timezone.now(),
            quantity=F("quantity") - unsold,
        )
        if unsold:
            StockItem.objects.filter(pk=allocation.stock_item_id).update(
                reserved=F("reserved") - unsold
            )
            StockMovement.objects.create(
                stock_item_id=allocation.stock_item_id,
                allocation=allocation,
                reason=Reason.ALLOCATION_RETURN,
                reserved_delta=-unsold,
                actor=actor,
                reference=f"allocation:{allocation.pk}",
            )
        # Whoever still waits in line is not served: the sale ended first.
        waitlist_close(allocation_id=allocation_id)
        allocation.refresh_from_db()
        events.emit_on_commit([allocation_changed_event(allocation)])
        if gate.gate_enabled():
            transaction.on_commit(
                lambda: gate.gate_set_status(allocation_id=allocation_id, status="closed")
            )
    return allocation
