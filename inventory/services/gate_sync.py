"""Keeping the Redis gate in step with the database, the source of truth."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from inventory import gate
from inventory.models import Allocation, Reservation
from inventory.services._common import pending_units

logger = logging.getLogger(__name__)


def _state_from_database(allocation: Allocation) -> gate.GateState:
    reservations = Reservation.objects.filter(allocation_id=allocation.pk)
    pending = pending_units(allocation.pk)
    customers = dict(
        reservations.filter(status__in=Reservation.ACTIVE_STATUSES)
        .values("customer_id")
        .annotate(units=Sum("quantity"))
        .values_list("customer_id", "units")
    )
    expiries = {
        rid: at.timestamp()
        for rid, at in reservations.filter(status=Reservation.Status.HELD).values_list(
            "id", "expires_at"
        )
    }
    return gate.GateState(
        status="open" if allocation.status == Allocation.Status.OPEN else "closed",
        remaining=max(0, allocation.remaining - pending),
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

    The allocation row is locked while its figures are read, so no settle interleaves.
    Requests admitted by the old gate but not yet committed are not seen: the rebuilt
    gate may then admit a few too many, which the database rejects (never an oversell),
    and the next quiet reconcile corrects it.
    """
    if not gate.gate_enabled():
        return None
    with transaction.atomic():
        allocation = (
            Allocation.objects.select_for_update(no_key=True).filter(pk=allocation_id).first()
        )
        if allocation is None:
            gate.gate_delete(allocation_id=allocation_id)
            return None
        state = _state_from_database(allocation)
        remembered = _remembered_keys(allocation_id)
    gate.gate_write(allocation_id=allocation_id, state=state, remembered=remembered)
    return state


def gate_reconcile(*, allocation_id: int) -> bool:
    """Repair the gate if it is missing or has drifted. Returns True when rewritten.

    A gate with requests in flight (pending rows) legitimately differs from the rows, so
    a present gate is only compared at a quiet moment; a missing one is always rebuilt.
    """
    current = gate.gate_read(allocation_id=allocation_id)
    if current is None:
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
        gate_rebuild(allocation_id=allocation_id)
        return True
    return False
