"""Settling pending holds: the atomic move of units, in batches per allocation."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inventory import events, locks, metrics
from inventory.exceptions import DropNotLive, LimitReached, SoldOut
from inventory.models import Allocation, Reservation, StockMovement
from inventory.services._common import (
    SETTLED,
    allocation_changed_event,
    reservation_changed_event,
    units_by_customer,
)
from inventory.services.holds import reservations_expire
from inventory.services.offers import offer_returned_units

logger = logging.getLogger(__name__)

Status = Reservation.Status
Reason = StockMovement.Reason


@dataclass
class SettleResult:
    held: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


def reservation_reserve(*, reservation_id: int) -> Reservation | None:
    """Settle a pending reservation (and the pending ones queued before and with it on
    the same allocation). Idempotent: a settled reservation is left as it is."""
    row = Reservation.objects.filter(pk=reservation_id).values("status", "allocation_id").first()
    if row is None:
        return None
    if row["status"] == Status.PENDING:
        allocation_settle_pending(allocation_id=row["allocation_id"])
    return Reservation.objects.get(pk=reservation_id)


def allocation_settle_pending(*, allocation_id: int, batch_size: int | None = None) -> SettleResult:
    """Turn pending reservations into holds or rejections, oldest first, in batches.

    Guarantee: per batch one transaction, with the allocation row locked: one
    conditional ``UPDATE`` for the units of all accepted holds and one ledger entry for
    them (neither when none is accepted), then the reservations written with one
    ``UPDATE`` for the holds and one per reason of rejection. A hold is granted only
    while units remain and within the customer's limit, both counted under that lock;
    the allocation's CHECK constraint backs the first (never more held and sold than
    its quantity).
    """
    batch_size = batch_size or settings.RESERVATION_SETTLE_BATCH
    # Return holds past their expiry first, so they never block a buyer, whether or not
    # the sweep has run (a separate short transaction: no lock is held across both).
    reservations_expire(allocation_id=allocation_id)
    result = SettleResult()
    while True:
        started = time.perf_counter()
        settled = _settle_batch(allocation_id=allocation_id, batch_size=batch_size)
        decided = len(settled.held) + len(settled.rejected)
        if decided:
            metrics.SETTLE_BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.SETTLE_BATCH_SIZE.observe(decided)
        result.held += settled.held
        result.rejected += settled.rejected
        if decided < batch_size:
            return result


def _settle_batch(*, allocation_id: int, batch_size: int) -> SettleResult:
    result = SettleResult()
    with transaction.atomic():
        allocation = locks.lock_allocation(allocation_id)
        if allocation is None:
            return result
        # Pending rows are written after their allocation, against the lock order: only
        # this path changes pending rows, and a path that locks one finds it not held and
        # takes nothing after it (see inventory.locks).
        pending = list(
            Reservation.objects.filter(allocation_id=allocation_id, status=Status.PENDING).order_by(
                "id"
            )[:batch_size]
        )
        if not pending:
            return result
        is_open = allocation.status == Allocation.Status.OPEN
        free = allocation.remaining
        limit = allocation.per_customer_limit
        taken: dict[int, int] = defaultdict(int)
        if limit is not None:
            taken.update(
                units_by_customer(allocation_id, (r.customer_id for r in pending), statuses=SETTLED)
            )
        now = timezone.now()
        expires_at = now + timedelta(seconds=settings.RESERVATION_HOLD_SECONDS)
        # Oldest first: the first waited longest.
        metrics.SETTLE_LAG_SECONDS.observe(max((now - pending[0].created_at).total_seconds(), 0))
        units_held = 0
        for reservation in pending:
            reason = ""
            if not is_open:
                reason = DropNotLive.code
            elif (
                limit is not None and taken[reservation.customer_id] + reservation.quantity > limit
            ):
                reason = LimitReached.code
            elif reservation.quantity > free:
                reason = SoldOut.code
            if reason:
                reservation.status, reservation.reject_reason = Status.REJECTED, reason
                result.rejected.append(reservation.pk)
            else:
                reservation.status, reservation.expires_at = Status.HELD, expires_at
                free -= reservation.quantity
                taken[reservation.customer_id] += reservation.quantity
                units_held += reservation.quantity
                result.held.append(reservation.pk)
            reservation.updated_at = now
        if units_held:
            moved = Allocation.objects.filter(
                pk=allocation_id, held__lte=F("quantity") - F("sold") - units_held
            ).update(held=F("held") + units_held)
            if moved != 1:  # impossible under the row lock; refuse rather than oversell
                raise RuntimeError(f"allocation {allocation_id} changed under its lock")
            allocation.held += units_held
            StockMovement.objects.create(
                stock_item_id=allocation.stock_item_id,
                allocation_id=allocation_id,
                reason=Reason.HOLD,
                held_delta=units_held,
                reference=f"holds:{','.join(map(str, result.held))}"[:200],
            )
        _write_decisions(pending, now=now, expires_at=expires_at)
        # A request turned down here for its own reason (the limit) leaves its units
        # free: while viewers wait in line, those go to them first.
        if result.rejected and is_open:
            offer_returned_units(allocation_id=allocation_id)
        held = [r for r in pending if r.status == Status.HELD]
        events.emit_on_commit(
            [reservation_changed_event(r) for r in pending]
            + ([allocation_changed_event(allocation)] if units_held else [])
            # Units the door took for rejected requests come back; new holds' expiries
            # are told, so a sold-out answer can tell when expired holds could be
            # reclaimed.
            + [
                events.UnitsReturned(allocation_id, r.customer_id, r.quantity)
                for r in pending
                if r.status == Status.REJECTED
            ]
            + (
                [
                    events.HoldsPlaced(
                        allocation_id, tuple((r.pk, expires_at.timestamp()) for r in held)
                    )
                ]
                if held
                else []
            )
        )
    return result


def _write_decisions(pending: list[Reservation], *, now, expires_at) -> None:
    """One ``UPDATE`` for the batch's holds and one per rejection reason. (``bulk_update``
    would write the same in one statement, but builds a ``CASE`` per row and field: it
    was three quarters of a batch's time.)"""
    by_outcome: dict[tuple[str, str], list[int]] = defaultdict(list)
    for reservation in pending:
        by_outcome[reservation.status, reservation.reject_reason].append(reservation.pk)
    for (status, reason), ids in by_outcome.items():
        fields = {"status": status, "updated_at": now}
        if status == Status.HELD:
            fields["expires_at"] = expires_at
        else:
            fields["reject_reason"] = reason
        Reservation.objects.filter(pk__in=ids).update(**fields)
