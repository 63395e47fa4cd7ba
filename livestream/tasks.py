"""Celery tasks of the live part: thin interfaces over its services and announcements."""

from celery import shared_task

from livestream import announce, services


@shared_task(name="livestream.flush_counters", acks_late=True, ignore_result=True)
def flush_counters() -> dict[str, int]:
    """Deliver counter updates whose coalescing window was owned by a process that died
    (run every few seconds by beat), so the last value always reaches viewers."""
    return {
        "stock": announce.stock_coalescer.sweep(),
        "viewers": announce.viewers_coalescer.sweep(),
    }


@shared_task(name="livestream.run_drop_schedule", ignore_result=True)
def run_drop_schedule() -> dict[str, int]:
    """Open and close timed drops on time (every second; idempotent)."""
    return services.drops_run_schedule()


@shared_task(name="livestream.notify_reservations", ignore_result=True)
def notify_reservations(messages: list[list]) -> int:
    """Tell each buyer of a settled batch about their reservation (the messages of
    ``announce.reservation_messages``, built from the committed change)."""
    announce.reservations_updated(messages)
    return len(messages)
