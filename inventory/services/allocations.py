"""Allocations: carving units out of stock for a drop, opening and closing the sale."""

from __future__ import annotations

from typing import Protocol

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import InvalidInput, NotFound
from inventory import events, locks
from inventory.exceptions import AllocationClosed, InsufficientStock
from inventory.models import Allocation, StockItem, StockMovement
from inventory.services._common import allocation_changed_event, validate_quantity
from inventory.services.offers import waitlist_close

Reason = StockMovement.Reason


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
    with transaction.atomic():
        locks.claim_stock_item(stock_item_id)
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
        locks.created(locks.Rank.ALLOCATION, allocation.pk)
        StockMovement.objects.create(
            stock_item_id=stock_item_id,
            allocation=allocation,
            reason=Reason.ALLOCATION_CARVE,
            reserved_delta=quantity,
            actor=actor,
            reference=f"allocation:{allocation.pk}",
        )
    return allocation


def allocation_lock(*, allocation_id: int) -> Allocation:
    """Inside the caller's transaction: lock the allocation, in the lock order, as its
    opening and closing do, so that neither happens until the caller commits."""
    allocation = locks.lock_allocation(allocation_id)
    if allocation is None:
        raise NotFound("No such allocation.")
    return allocation


def allocation_open(*, allocation_id: int) -> Allocation:
    """Put the allocation on sale (idempotent) and prime its gate from the database."""
    with transaction.atomic():
        allocation = locks.lock_allocation(allocation_id)
        if allocation is None:
            raise NotFound("No such allocation.")
        if allocation.status == Allocation.Status.CLOSED:
            raise AllocationClosed()
        opened = allocation.status == Allocation.Status.READY
        if opened:
            allocation.status, allocation.opened_at = Allocation.Status.OPEN, timezone.now()
            allocation.save(update_fields=["status", "opened_at"])
        # Its copies count it from the rows, whether or not it just opened (a repeat
        # primes a gate that went missing).
        events.emit_on_commit(
            ([allocation_changed_event(allocation)] if opened else [])
            + [events.AllocationRecounted(allocation_id)]
        )
    return allocation


def allocation_close(*, allocation_id: int, actor=None) -> Allocation:
    """Stop the sale and return every unit not held or sold to stock (idempotent).

    Holds still open keep their units until checkout, release or expiry; released ones
    then go straight back to stock, since the allocation no longer sells.
    """
    with transaction.atomic():
        allocation = locks.lock_allocation(allocation_id)
        if allocation is None:
            raise NotFound("No such allocation.")
        if allocation.status == Allocation.Status.CLOSED:
            return allocation
        locks.claim_stock_item(allocation.stock_item_id)
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
        # The unsold units left: a copy recounts what stays (closing is rare).
        events.emit_on_commit(
            [allocation_changed_event(allocation), events.AllocationRecounted(allocation_id)]
        )
    return allocation


def allocations_close(*, allocation_ids: list[int], actor=None) -> list[Allocation]:
    """Close several allocations in one transaction (a stream ending): every allocation
    is locked first, then every stock item, each in pk order, so that two of them
    sharing a stock item can never lock against another transaction."""
    with transaction.atomic():
        allocations = locks.lock_allocations(allocation_ids)
        locks.lock_stock_items(a.stock_item_id for a in allocations.values())
        return [allocation_close(allocation_id=pk, actor=actor) for pk in sorted(allocations)]


class AllocationOwner(Protocol):
    """An app that sells through allocations (a drop puts one on stage). Opening or
    closing one of its allocations by hand goes through it, so that its rules hold; each
    method returns False for an allocation it does not own."""

    def open_by_hand(self, *, allocation_id: int, actor) -> bool: ...

    def close_by_hand(self, *, allocation_id: int, actor) -> bool: ...


_owners: list[AllocationOwner] = []


def allocation_owner_register(owner: AllocationOwner) -> None:
    if owner not in _owners:
        _owners.append(owner)


def allocation_open_by_hand(*, allocation_id: int, actor) -> Allocation:
    """Ops open an allocation: by its owner's rules when an app owns it, else directly."""
    if not any(o.open_by_hand(allocation_id=allocation_id, actor=actor) for o in _owners):
        allocation_open(allocation_id=allocation_id)
    return Allocation.objects.get(pk=allocation_id)


def allocation_close_by_hand(*, allocation_id: int, actor) -> Allocation:
    """Ops close an allocation: by its owner's rules when an app owns it, else directly."""
    if not any(o.close_by_hand(allocation_id=allocation_id, actor=actor) for o in _owners):
        allocation_close(allocation_id=allocation_id, actor=actor)
    return Allocation.objects.get(pk=allocation_id)


def check_label(value: object) -> str:
    max_length = Allocation._meta.get_field("label").max_length
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidInput(f"label must be text of at most {max_length} characters.", field="label")
    return value


def allocation_set_label(*, allocation_id: int, label: str) -> Allocation:
    """Rename an allocation (ops' admin): writes the label and nothing else, so no
    counter read earlier is ever written back."""
    check_label(label)
    with transaction.atomic():
        if not Allocation.objects.filter(pk=allocation_id).update(label=label):
            raise NotFound("No such allocation.")
        return Allocation.objects.get(pk=allocation_id)
