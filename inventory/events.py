"""Domain events of the inventory, delivered after commit to whoever subscribed.

``inventory`` knows nothing of streams or websockets: ``livestream`` subscribes here
(in its ``AppConfig.ready``) and turns these into broadcasts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReservationChanged:
    reservation_id: int
    customer_id: int
    allocation_id: int
    status: str


@dataclass(frozen=True)
class AllocationChanged:
    allocation_id: int
    status: str
    quantity: int
    held: int
    sold: int

    @property
    def remaining(self) -> int:
        return self.quantity - self.held - self.sold


@dataclass(frozen=True)
class WaitlistChanged:
    """A customer's place in line changed: joined, moved up, offered, claimed, left..."""

    entry_id: int
    customer_id: int
    allocation_id: int
    status: str
    position: int | None  # 1 = next in line; None once no longer waiting
    reservation_id: int | None


Event = ReservationChanged | AllocationChanged | WaitlistChanged
Subscriber = Callable[[list[Event]], None]

_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)


def unsubscribe(subscriber: Subscriber) -> None:
    if subscriber in _subscribers:
        _subscribers.remove(subscriber)


def emit_on_commit(events: Iterable[Event]) -> None:
    """Deliver events once the current transaction commits (never if it rolls back)."""
    batch = list(events)
    if batch:
        transaction.on_commit(lambda: _deliver(batch))


def _deliver(batch: list[Event]) -> None:
    for subscriber in list(_subscribers):
        try:
            subscriber(batch)
        except Exception:  # a failing listener must not undo or block a committed sale
            logger.exception("inventory event subscriber %r failed", subscriber)
