"""Celery tasks of the shop: thin interfaces over its services."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from shop import services


@shared_task(
    name="shop.reconcile_payments",
    acks_late=True,
    autoretry_for=(DatabaseError, ConnectionError),
    retry_backoff=1,
    max_retries=5,
)
def reconcile_payments() -> dict[str, int]:
    """Finish refunds that were claimed but never confirmed (run it every minute)."""
    return services.payments_reconcile()
