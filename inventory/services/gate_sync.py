"""Keeping the Redis gate in step with the database, the source of truth: the only
module that writes the gate from the database side.

The services say how units moved through their events (``inventory.events``: units
returned, holds placed or sold, an allocation to recount); ``on_unit_events`` sees them
inside the transaction that emits them, under the allocation's lock (subscribed in
``InventoryConfig.ready``), each stamped with the allocation's ``version`` for that
transaction; after commit, everything the transaction moved is applied
in one script call stamped with that version, or, after a recount, a rebuild reads the
rows afresh. The versions make the order of those updates irrelevant (see
``inventory.gate``): a return that commits while a rebuild reads is counted exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from django.db import transaction
from django.utils import timezone

from inventory import events, gate, locks, metrics
from inventory.models import Allocation, Reservation
from inventory.services._common import allocation_version, pending_units, units_by_customer

logger = logging.getLogger(__name__)

# A rebuild refused as stale (a newer change was applied while it read) reads again.
REBUILD_ATTEMPTS = 5


@dataclass
class _Changes:
    """What one transaction changed in one allocation's gate."""

    version: int
    returns: list[gate.GateReturn] = field(default_factory=list)
    tracked: dict[int, float] = field(default_factory=dict)
    forgotten: list[int] = field(default_factory=list)
    rebuild: bool = False


def on_unit_events(batch: list[events.Event]) -> None:
    """Subscribed in the transaction to the inventory's events: once it commits, the
    gate gets the units returned and the holds' expiries to track or forget, or a
    rebuild from the rows. Nothing happens if the transaction rolls back."""
    if not gate.gate_enabled():
        return
    pending: dict[int, _Changes] = locks.transaction_state().setdefault("gate", {})

    def changes(allocation_id: int) -> _Changes:
        # The transaction's version of the allocation (its lock is held).
        if allocation_id not in pending:
            pending[allocation_id] = _Changes(version=allocation_version(allocation_id))
        return pending[allocation_id]

    staged = False
    for event in batch:
        if isinstance(event, events.UnitsReturned):
            changes(event.allocation_id).returns.append(
                gate.GateReturn(
                    event.customer_id, event.quantity, event.reservation_id, event.back_on_sale
                )
            )
        elif isinstance(event, events.HoldsPlaced):
            changes(event.allocation_id).tracked.update(event.expiries)
        elif isinstance(event, events.HoldsSold):
            changes(event.allocation_id).forgotten += event.reservation_ids
        elif isinstance(event, events.AllocationRecounted):
            changes(event.allocation_id).rebuild = True
        else:
            continue
        staged = True
    if staged:
        # Registered by every batch that moved units and run once: a callback
        # registered inside a savepoint that rolled back is dropped, the later ones
        # are not.
        transaction.on_commit(lambda: _apply_all(pending))


def _apply_all(pending: dict[int, _Changes]) -> None:
    if not pending:
        return  # applied by an earlier callback of the same transaction
    todo = sorted(pending.items())
    pending.clear()
    for allocation_id, changes in todo:
        try:
            if changes.rebuild:
                gate_rebuild(allocation_id=allocation_id)
                continue
            gate.gate_apply(
                allocation_id=allocation_id,
                version=changes.version,
                returns=changes.returns,
                tracked=changes.tracked,
                forgotten=changes.forgotten,
            )
        except redis.RedisError:
            # Committed all the same; the gate is an accelerator. The reconcile task
            # rebuilds a gate that drifted or went missing.
            logger.exception("gate of allocation %s not updated after commit", allocation_id)


def gate_undo_admission(
    *,
    allocation_id: int,
    customer_id: int,
    quantity: int,
    admitted_in: int | None,
    forget_key: str | None = None,
) -> None:
    """A request the gate admitted left no row behind: give its units back, unless a
    rebuild since already forgot it; ``forget_key``: a retry must be admitted afresh."""
    gate.gate_give_back(
        allocation_id=allocation_id,
        customer_id=customer_id,
        quantity=quantity,
        forget_idempotency_key=forget_key,
        admitted_in=admitted_in,
    )


def gate_forget_stale_expiries(*, allocation_id: int, due: list[int]) -> None:
    """Of the holds the gate believes due, forget those that are no longer held, so
    they stop sending sold-out answers to the database."""
    still_held = set(
        Reservation.objects.filter(pk__in=due, status=Reservation.Status.HELD).values_list(
            "pk", flat=True
        )
    )
    gate.gate_forget_holds(
        allocation_id=allocation_id, reservation_ids=[r for r in due if r not in still_held]
    )


# --- rebuilding from the rows ------------------------------------------------------------


def _state_from_database(allocation: Allocation) -> gate.GateState:
    reservations = Reservation.objects.filter(allocation_id=allocation.pk)
    pending = pending_units(allocation.pk)
    customers = units_by_customer(allocation.pk)
    expiries = {
        rid: at.timestamp()
        for rid, at in reservations.filter(status=Reservation.Status.HELD).values_list(
            "id", "expires_at"
        )
    }
    return gate.GateState(
        status="open" if allocation.status == Allocation.Status.OPEN else "closed",
        # Below zero when units promised to admitted requests went elsewhere (a late
        # payment reinstated): those requests are rejected at settle and give their
        # units back, which brings the gate to zero, not above it.
        remaining=allocation.remaining - pending,
        limit=allocation.per_customer_limit or 0,
        customers=customers,
        expiries=expiries,
    )


def _remembered_keys(allocation_id: int) -> list[gate.RememberedKey]:
    """Idempotency keys of this allocation's reservations still inside the window, so a
    repeat of a granted request replays even when the rebuilt gate would refuse it."""
    now = timezone.now()
    window = timedelta(seconds=gate.IDEMPOTENCY_TTL_SECONDS)
    rows = Reservation.objects.filter(
        allocation_id=allocation_id, created_at__gt=now - window, idempotency_key__isnull=False
    ).values_list("customer_id", "idempotency_key", "quantity", "created_at")
    return [
        gate.RememberedKey(
            customer_id=customer_id,
            key=key,
            units=quantity,
            ttl_seconds=int((created_at + window - now).total_seconds()),
        )
        for customer_id, key, quantity, created_at in rows
    ]


def gate_rebuild(*, allocation_id: int) -> gate.GateState | None:
    """Rewrite the allocation's gate from the database.

    The figures and their ``version`` are read under the allocation's lock, so
    they are one consistent moment; the write is refused if a change newer than that
    moment reached the gate meanwhile, and then the rows are read again. Requests
    admitted by the old gate whose rows are not committed yet are not seen: the rebuilt
    gate may then admit a few too many, which the database rejects (never an oversell),
    and the next quiet reconcile corrects it.
    """
    if not gate.gate_enabled():
        return None
    for _ in range(REBUILD_ATTEMPTS):
        with transaction.atomic():
            allocation = locks.lock_allocation(allocation_id)
            if allocation is None:
                gate.gate_delete(allocation_id=allocation_id)
                return None
            state = _state_from_database(allocation)
            remembered = _remembered_keys(allocation_id)
        if gate.gate_write(
            allocation_id=allocation_id,
            state=state,
            remembered=remembered,
            version=allocation.version,
        ):
            return state
    logger.warning("gate of allocation %s: rebuild kept losing to newer changes", allocation_id)
    return state


def gate_reconcile(*, allocation_id: int) -> bool:
    """Repair the gate if it is missing or has drifted. Returns True when rewritten.

    A gate with requests in flight (pending rows) legitimately differs from the rows, so
    a present gate is only compared at a quiet moment; a missing one is always rebuilt.
    """
    current = gate.gate_read(allocation_id=allocation_id)
    if current is None:
        metrics.GATE_REPAIRS.labels("missing").inc()
        gate_rebuild(allocation_id=allocation_id)
        return True
    allocation = Allocation.objects.filter(pk=allocation_id).first()
    if allocation is None:
        gate.gate_delete(allocation_id=allocation_id)
        return True
    if Reservation.objects.filter(
        allocation_id=allocation_id, status=Reservation.Status.PENDING
    ).exists():
        return False
    expected = _state_from_database(allocation)
    if expected != current:
        logger.warning(
            "gate of allocation %s drifted (remaining %s, database says %s): rebuilding",
            allocation_id,
            current.remaining,
            expected.remaining,
        )
        metrics.GATE_REPAIRS.labels("drifted").inc()
        gate_rebuild(allocation_id=allocation_id)
        return True
    return False
