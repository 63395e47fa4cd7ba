"""Counters of what the other apps announce: the inventory's committed changes and
Celery's task failures. Each process counts its own (summed at scrape)."""

from __future__ import annotations

from prometheus_client import Counter

from core.metrics import PREFIX
from inventory import events
from inventory.models import WaitlistEntry

OFFERED = WaitlistEntry.Status.OFFERED

RESERVATIONS = Counter(
    f"{PREFIX}_reservation_changes",
    "Reservations that reached a status (held, rejected, confirmed, released, expired,"
    " refunded), as committed.",
    ["status"],
)
WAITLIST_OFFERS = Counter(
    f"{PREFIX}_waitlist_offers", "Units held for viewers in line, offered to them."
)
TASK_FAILURES = Counter(
    f"{PREFIX}_celery_task_failures", "Celery tasks that raised, by task name.", ["task"]
)


def on_inventory_events(batch: list[events.Event]) -> None:
    for event in batch:
        if isinstance(event, events.ReservationChanged):
            RESERVATIONS.labels(event.status).inc()
        elif isinstance(event, events.WaitlistChanged) and event.status == OFFERED:
            WAITLIST_OFFERS.inc()


def on_task_failure(sender=None, **_kwargs) -> None:
    # Task names are the code's own (a fixed set): a bounded label.
    TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()
