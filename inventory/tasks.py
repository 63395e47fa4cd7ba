"""Celery tasks: thin interfaces over the inventory services.

Every task is idempotent and acknowledged late (see settings): a task redelivered
after its worker died runs again and changes nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone

from inventory import gate, services
from inventory.models import Allocation, Reservation

RETRY = {
    "autoretry_for": (DatabaseError, ConnectionError),
    "retry_backoff": 0.2,
    "retry_backoff_max": 10,
    "retry_jitter": True,
    "max_retries": 8,
}

# A pending hold older than this has likely lost its task (broker loss): settle it again.
STALE_PENDING_AFTER = timedelta(seconds=30)


@shared_task(name="inventory.reserve", acks_late=True, **RETRY)
def reserve(reservation_id: int) -> str | None:
    """Settle a pending hold (and those queued with it on its allocation)."""
    reservation = services.reservation_reserve(reservation_id=reservation_id)
    return reservation.status if reservation else None


@shared_task(name="inventory.expire_holds", acks_late=True, **RETRY)
def expire_holds() -> int:
    """The sweep Celery beat runs every few seconds."""
    return services.reservations_expire()


@shared_task(name="inventory.reconcile", acks_late=True, **RETRY)
def reconcile() -> dict[str, int]:
    """Repair what a lost message or lost Redis data could leave behind: re-settle stale
    pending holds, and rebuild missing or drifted gates from the database."""
    stale_before = timezone.now() - STALE_PENDING_AFTER
    stale = list(
        Reservation.objects.filter(status=Reservation.Status.PENDING, created_at__lt=stale_before)
        .order_by()  # the model's default ordering would make DISTINCT per row
        .values_list("allocation_id", flat=True)
        .distinct()
    )
    for allocation_id in stale:
        services.allocation_settle_pending(allocation_id=allocation_id)
    repaired = 0
    if gate.gate_enabled():
        for allocation_id in Allocation.objects.filter(status=Allocation.Status.OPEN).values_list(
            "id", flat=True
        ):
            repaired += services.gate_reconcile(allocation_id=allocation_id)
    return {"stale_allocations": len(stale), "gates_repaired": repaired}
