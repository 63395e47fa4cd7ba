"""What the live side does when something happens elsewhere: the inventory's committed
changes become viewer events, and a user who logs out keeps no websocket rights.
Connected in ``LivestreamConfig.ready``."""

from __future__ import annotations

import logging

from inventory import events as inventory_events
from livestream import announce, broadcast, tasks

logger = logging.getLogger(__name__)

# From this many reservations changed in one commit, their buyers are told by a task.
NOTIFY_IN_BACKGROUND_FROM = 10


def on_inventory_events(batch: list[inventory_events.Event]) -> None:
    """Subscribed to ``inventory.events`` (after commit): counters and personal events."""
    messages = announce.reservation_messages(
        e for e in batch if isinstance(e, inventory_events.ReservationChanged)
    )
    if len(messages) >= NOTIFY_IN_BACKGROUND_FROM:
        # A settle batch: its buyers are told by another worker process, so that this
        # one settles the next batch at once (the holds are committed already).
        tasks.notify_reservations.delay(messages)
    elif messages:
        announce.reservations_updated(messages)
    for event in batch:
        if isinstance(event, inventory_events.AllocationChanged):
            announce.allocation_changed(event)
        elif isinstance(event, inventory_events.WaitlistChanged):
            announce.waitlist_updated(event)


def on_user_logged_out(sender, request=None, user=None, **kwargs) -> None:
    """Receiver of Django's ``user_logged_out`` (session logout, and token revocation,
    which sends it too). A broadcast failure never fails the logout itself."""
    if user is None or getattr(user, "pk", None) is None:
        return
    try:
        broadcast.user_signed_out(user.pk)
    except Exception:
        logger.exception("could not close the websockets of user %s after logout", user.pk)
