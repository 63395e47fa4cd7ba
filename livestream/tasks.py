"""Celery tasks of the live part: thin interfaces over the broadcast module."""

from celery import shared_task

from livestream import broadcast


@shared_task(name="livestream.flush_counters", acks_late=True, ignore_result=True)
def flush_counters() -> dict[str, int]:
    """Deliver counter updates whose coalescing window was owned by a process that died
    (run every few seconds by beat), so the last value always reaches viewers."""
    return {
        "stock": broadcast.stock_coalescer.sweep(),
        "viewers": broadcast.viewers_coalescer.sweep(),
    }
