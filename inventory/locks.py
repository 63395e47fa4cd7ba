"""The one place the stock code takes row locks, and the order it takes them in.

Every transaction of the stock code locks rows in this order, and each kind by
ascending primary key:

1. the customer's user row (``reservations_create_pending``, which every request for
   units goes through: it makes the active-hold cap exact);
2. reservations (release, expiry, confirm, reinstate, refund);
3. allocations;
4. stock items.

Waitlist entries are locked only while their allocation is locked by the same
transaction, so the allocation's lock already serialises them: they take no place of
their own in the order. The settle is the one path that changes reservations it did not
lock before their allocation: it changes only *pending* rows, and every other path that
locks a pending row finds it not held and takes nothing after it, so no cycle can form.
(A waitlist offer inserts its hold after the allocation: a new row, which no other
transaction can lock before it commits.) Callers outside
the stock code lock their own rows first (a stream, an order) and then call in.

Rows are locked ``FOR NO KEY UPDATE``: that still serialises writers of the same row,
but does not block the ``FOR KEY SHARE`` lock PostgreSQL takes on a referenced row when
a new reservation or ledger entry is inserted. A plain ``FOR UPDATE`` on the allocation
would make every incoming request wait for the settle in progress.

The order is checked as locks are taken: taking a lock out of order raises
``LockOrderViolation`` at once, the same way every time the path runs, so the tests
find it instead of a deadlock under load. A conditional ``UPDATE`` locks its row too:
``claim_*`` records such a lock without a query of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import connection

from inventory.models import Allocation, Reservation, StockItem, WaitlistEntry


class LockOrderViolation(RuntimeError):
    """A lock taken against the order above: a deadlock waiting to happen."""


class Rank(enum.IntEnum):
    CUSTOMER = 1
    RESERVATION = 2
    ALLOCATION = 3
    STOCK_ITEM = 4


def transaction_state() -> dict:
    """A dict that lives as long as the current transaction (the outermost block that a
    test case did not open), for what the stock code gathers per transaction."""
    blocks = [b for b in connection.atomic_blocks if not getattr(b, "_from_testcase", False)]
    if not blocks:
        raise LockOrderViolation("row locks are only taken inside transaction.atomic()")
    outermost = blocks[0]
    state = getattr(outermost, "_inventory_state", None)
    if state is None:
        state = outermost._inventory_state = {}
    return state


def _taken() -> set[tuple[Rank, int]]:
    return transaction_state().setdefault("locks", set())


def _record(rank: Rank, pks: Iterable[int]) -> list[int]:
    """Check that locking ``pks`` (of one kind) keeps the order; record them."""
    taken = _taken()
    new = sorted({pk for pk in pks if (rank, pk) not in taken})
    if new and taken:
        highest = max(taken)
        if (rank, new[0]) < highest:
            raise LockOrderViolation(
                f"{rank.name} {new[0]} locked after {highest[0].name} {highest[1]}"
            )
    taken.update((rank, pk) for pk in new)
    return new


def holds(rank: Rank, pk: int) -> bool:
    return (rank, pk) in _taken()


def created(rank: Rank, pk: int) -> None:
    """A row this transaction inserted: no other transaction can see it, let alone lock
    it, until commit, so it is held whatever the order (a drop created and opened in one
    go)."""
    _taken().add((rank, pk))


# --- 1. customers ----------------------------------------------------------------------


def lock_customer(customer_id: int) -> None:
    lock_customers([customer_id])


def lock_customers(customer_ids: Iterable[int]) -> None:
    """Several customers at once, in pk order (a batch of pending holds)."""
    ids = _record(Rank.CUSTOMER, customer_ids)
    list(
        get_user_model()
        .objects.select_for_update(no_key=True)
        .filter(pk__in=ids)
        .order_by("pk")
        .values_list("pk")
    )


# --- 2. reservations -------------------------------------------------------------------


def lock_reservation(reservation_id: int, *, customer_id: int | None = None) -> Reservation | None:
    """The reservation, locked (``customer_id``: only if it is theirs)."""
    _record(Rank.RESERVATION, [reservation_id])
    queryset = Reservation.objects.select_for_update(no_key=True).filter(pk=reservation_id)
    if customer_id is not None:
        queryset = queryset.filter(customer_id=customer_id)
    return queryset.first()


def lock_due_holds(*, allocation_id: int, now: datetime, limit: int) -> list[Reservation]:
    """Held reservations of the allocation past their expiry, oldest first, locked;
    rows another transaction holds are skipped, never waited for."""
    rows = list(
        Reservation.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(allocation_id=allocation_id, status=Reservation.Status.HELD, expires_at__lte=now)
        .order_by("id")[:limit]
    )
    _record(Rank.RESERVATION, [r.pk for r in rows])
    return rows


# --- 3. allocations --------------------------------------------------------------------


def lock_allocation(allocation_id: int) -> Allocation | None:
    _record(Rank.ALLOCATION, [allocation_id])
    return Allocation.objects.select_for_update(no_key=True).filter(pk=allocation_id).first()


def lock_allocations(allocation_ids: Iterable[int]) -> dict[int, Allocation]:
    """Several allocations at once, in pk order (closing a stream's drops)."""
    ids = sorted(set(allocation_ids))
    _record(Rank.ALLOCATION, ids)
    rows = Allocation.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")
    return {row.pk: row for row in rows}


def claim_allocation(allocation_id: int) -> None:
    """The conditional ``UPDATE`` that follows locks this allocation."""
    _record(Rank.ALLOCATION, [allocation_id])


# --- 4. stock items --------------------------------------------------------------------


def lock_stock_item(stock_item_id: int) -> StockItem | None:
    _record(Rank.STOCK_ITEM, [stock_item_id])
    return StockItem.objects.select_for_update(no_key=True).filter(pk=stock_item_id).first()


def lock_stock_items(stock_item_ids: Iterable[int]) -> None:
    ids = sorted(set(stock_item_ids))
    _record(Rank.STOCK_ITEM, ids)
    list(StockItem.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk"))


def claim_stock_item(stock_item_id: int) -> None:
    """The conditional ``UPDATE`` that follows locks this stock item."""
    _record(Rank.STOCK_ITEM, [stock_item_id])


# --- waitlist entries, under their allocation's lock -----------------------------------


def _require_allocation(allocation_id: int) -> None:
    if not holds(Rank.ALLOCATION, allocation_id):
        raise LockOrderViolation(
            f"waitlist entries of allocation {allocation_id} locked without the allocation"
        )


def lock_active_entry(*, allocation_id: int, customer_id: int) -> WaitlistEntry | None:
    _require_allocation(allocation_id)
    return (
        WaitlistEntry.objects.select_for_update(no_key=True)
        .filter(
            allocation_id=allocation_id,
            customer_id=customer_id,
            status__in=WaitlistEntry.ACTIVE_STATUSES,
        )
        .first()
    )


def lock_next_waiting(allocation_id: int) -> WaitlistEntry | None:
    _require_allocation(allocation_id)
    return (
        WaitlistEntry.objects.select_for_update(no_key=True)
        .filter(allocation_id=allocation_id, status=WaitlistEntry.Status.WAITING)
        .order_by("id")
        .first()
    )
