"""Domain events of the live side, for the apps built on it.

``livestream`` knows nothing of what is built on it: ``demand`` subscribes here (in its
``AppConfig.ready``) to record each drop's audience at pin, its sell-out, its peak
viewers and its close. Each event goes out when its moment comes, as it did when
livestream called demand itself: after commit for what a transaction decides (a pin, a
close: never if it rolls back), at once for what is seen outside any (a sell-out
announced, a viewer count broadcast). A failing subscriber is logged and never undoes
or breaks what the live side did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction


@dataclass(frozen=True)
class DropPinned:
    """A drop went on stage (not sent again while it stays pinned)."""

    drop_id: int
    stream_id: int
    pinned_at: datetime
    viewers: int  # the stream's presence count once the pin was committed


@dataclass(frozen=True)
class DropClosed:
    """A drop's sale closed: its end time came, ops closed it, or its stream ended (then
    for every drop of the stream, closed before or not)."""

    drop_id: int


@dataclass(frozen=True)
class DropSoldOut:
    """``drop.sold_out`` was announced (once per sell-out)."""

    drop_id: int


@dataclass(frozen=True)
class ViewersCounted:
    """``viewers.changed`` was broadcast with this count (coalesced, a few a second)."""

    stream_id: int
    viewers: int


Event = DropPinned | DropClosed | DropSoldOut | ViewersCounted
Subscriber = Callable[[Event], None]

_listeners: list[Subscriber] = []
logger = logging.getLogger(__name__)


def subscribe(subscriber: Subscriber) -> None:
    """Idempotent: the same subscriber is called once per event."""
    if subscriber not in _listeners:
        _listeners.append(subscriber)


def emit(event: Event) -> None:
    """Deliver the event now, to each subscriber in turn."""
    for subscriber in tuple(_listeners):
        try:
            subscriber(event)
        except Exception:  # what the live side did stands whatever a listener does
            logger.exception("livestream event subscriber %r failed on %r", subscriber, event)


def emit_on_commit(event: Event) -> None:
    """Deliver the event once the current transaction commits (never if it rolls back;
    at once outside a transaction)."""
    transaction.on_commit(lambda: emit(event))
