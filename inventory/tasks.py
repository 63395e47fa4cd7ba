"""Celery tasks: thin interfaces over the inventory services.

Every task is idempotent and acknowledged late (see settings): a task redelivered
after its worker died runs again and changes nothing twice.

This module is also the services' settle queue (``inventory.settle_queue``:
``settle_soon`` and ``settles_inline``), registered by ``InventoryConfig.ready``.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone
from redis import RedisError

from core.redis import get_redis, redis_configured
from inventory import gate, services
from inventory.models import Allocation, Reservation

logger = logging.getLogger(__name__)

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


# While a settle of an allocation is queued and not yet started, new pending holds on it
# need no task of their own: that one will find them. The mark lives this long at most,
# so a lost message only delays the next settle (and the reconcile covers it).
SETTLE_QUEUED_SECONDS = 5


def _settle_queued_key(allocation_id: int) -> str:
    return f"settle:{allocation_id}:queued"


def settle_soon(allocation_id: int) -> None:
    """Queue a settle of the allocation's pending holds, unless one is queued already
    (call after the holds are committed). Under a spike every web process commits
    dozens of small batches a second on one allocation; one task settles them all."""
    if redis_configured() and not settles_inline():
        try:
            if not get_redis().set(
                _settle_queued_key(allocation_id), 1, nx=True, ex=SETTLE_QUEUED_SECONDS
            ):
                return
        except RedisError:
            logger.warning("settle mark unavailable; queueing allocation %s", allocation_id)
    settle.delay(allocation_id)


def settles_inline() -> bool:
    """Whether a settle queued now has run by the time ``settle_soon`` returns: Celery
    runs tasks eagerly, in the caller's process (the embedded default, and the tests)."""
    return settle.app.conf.task_always_eager


@shared_task(name="inventory.settle", acks_late=True, **RETRY)
def settle(allocation_id: int) -> int:
    """Settle every pending hold of an allocation; returns how many were decided."""
    if redis_configured():
        # Cleared BEFORE reading the pending rows: a hold committed after this point
        # queues a new settle, one committed before it is read by this one. (Redis away:
        # the mark expires by itself.)
        with contextlib.suppress(RedisError):
            get_redis().delete(_settle_queued_key(allocation_id))
    result = services.allocation_settle_pending(allocation_id=allocation_id)
    logger.info(
        "allocation %s: %d held, %d rejected", allocation_id, len(result.held), len(result.rejected)
    )
    return len(result.held) + len(result.rejected)


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
