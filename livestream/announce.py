"""What each live event says, and when the counters go out: the stream's status, drops
pinned, opened and closed, stock and viewer counts (coalesced), a buyer's own
reservation and place in a drop's line. Each is built from the change itself, inside its
transaction (the rows as it leaves them, or the inventory event's data), and sent once
it commits; ``livestream.broadcast`` numbers and sends them, the stock figures and
reservations by version so that a late send never shows an older value. A sell-out and
each viewer count sent also go out as domain events (``livestream.events``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from functools import lru_cache
from typing import Any

from core.exceptions import NotFound
from core.redis import get_redis, redis_configured
from inventory import events as inventory_events
from livestream import broadcast
from livestream import events as live_events
from livestream.models import Drop, Stream
from livestream.presence import presence_count
from livestream.selectors import drop_routing, drop_snapshot, drops_for_snapshot, iso_time
from livestream.serializers import reservation_body

# The event a stream's status change announces, and the moment it carries.
_STATUS_EVENTS = {"live": ("stream.started", "started_at"), "ended": ("stream.ended", "ended_at")}


# The stream and drop events below are called inside the transaction that made the
# change, after its last write: each builds its payload from the rows as the transaction
# leaves them and publishes it once the transaction commits (never if it rolls back).


def stream_status_changed(stream: Stream) -> None:
    """``stream.started`` or ``stream.ended``, from the stream's new status."""
    event_type, moment = _STATUS_EVENTS[stream.status]
    fields = {
        "stream": {"id": stream.pk, "slug": stream.slug, "status": stream.status},
        moment: iso_time(getattr(stream, moment)),
    }
    broadcast.on_commit(lambda: broadcast.publish(stream.pk, event_type, **fields))


def _drop_now(drop_id: int) -> tuple[int, dict[str, Any]]:
    """The drop's stream and the drop as clients see it, as the transaction has it now."""
    drop = drops_for_snapshot().get(pk=drop_id)
    return drop.stream_id, drop_snapshot(drop=drop)


def _drop_event(event_type: str, drop_id: int) -> None:
    stream_id, snapshot = _drop_now(drop_id)
    broadcast.on_commit(lambda: broadcast.publish(stream_id, event_type, drop=snapshot))


def drop_pinned(drop_id: int) -> Callable[[], None]:
    """The pin takes its place among the transaction's events now, ahead of what the
    opening of its sale sends (viewers learn of the drop on stage first); its payload is
    built by the function returned, to be called after the transaction's last write."""
    built: list[tuple[int, dict[str, Any]]] = []

    def send() -> None:
        stream_id, snapshot = built[0]
        broadcast.publish(stream_id, "drop.pinned", drop=snapshot)

    broadcast.on_commit(send)
    return lambda: built.append(_drop_now(drop_id))


def drop_unpinned(drop_id: int, stream_id: int) -> None:
    broadcast.on_commit(lambda: broadcast.publish(stream_id, "drop.unpinned", drop=drop_id))


def drop_opened(drop_id: int) -> None:
    """A drop's sale opened (at its start, or by ops)."""
    _drop_event("drop.opened", drop_id)


def drop_closed(drop_id: int) -> None:
    """A drop's sale closed (its end time came, or ops closed it)."""
    _drop_event("drop.closed", drop_id)


# A drop's stock figures as the newest committed change left them.
stock_latest = broadcast.Latest("stock")


def _send_stock(drop_id: Hashable) -> None:
    try:
        stream_id = drop_routing(drop_id).stream_id
    except NotFound:
        return
    sent = stock_latest.publish(drop_id, stream_id, "stock.changed")
    if sent is not None:
        _maybe_sold_out(stream_id, drop_id, sent["remaining"])


# Which drops were announced sold out (so the event goes once per sell-out, again only
# after units came back and ran out again).
_sold_out_local: set[int] = set()


def _maybe_sold_out(stream_id: int, drop_id: int, remaining: int) -> None:
    key = f"stream:soldout:{drop_id}"
    if remaining > 0:
        if redis_configured():
            get_redis().delete(key)
        else:
            _sold_out_local.discard(drop_id)
        return
    if redis_configured():
        first = bool(get_redis().set(key, "1", nx=True, ex=7 * 24 * 3600))
    else:
        first = drop_id not in _sold_out_local
        _sold_out_local.add(drop_id)
    if first:
        broadcast.publish(stream_id, "drop.sold_out", drop=drop_id)
        live_events.emit(live_events.DropSoldOut(drop_id=drop_id))


def _send_viewers(stream_id: Hashable) -> None:
    viewers = presence_count(stream_id)
    broadcast.publish(stream_id, "viewers.changed", viewers=viewers)
    live_events.emit(live_events.ViewersCounted(stream_id=stream_id, viewers=viewers))


stock_coalescer = broadcast.Coalescer("stock", _send_stock, window_setting="BROADCAST_COALESCE_MS")
viewers_coalescer = broadcast.Coalescer(
    "viewers", _send_viewers, window_setting="VIEWERS_COALESCE_MS"
)


def stock_changed(drop_id: int) -> None:
    stock_coalescer.touch(drop_id)


def viewers_changed(stream_id: int) -> None:
    viewers_coalescer.touch(stream_id)


# --- from inventory events -------------------------------------------------------------


@lru_cache(maxsize=100_000)
def _drop_of_allocation(allocation_id: int) -> int | None:
    """The drop on stage for an allocation (fixed once created, so cached)."""
    return Drop.objects.filter(allocation_id=allocation_id).values_list("pk", flat=True).first()


def allocation_changed(event: inventory_events.AllocationChanged) -> None:
    """Units moved in an allocation: its drop's ``stock.changed`` (coalesced), with the
    figures the change committed, unless a newer change's are kept already."""
    drop_id = _drop_of_allocation(event.allocation_id)
    if drop_id is None:
        return
    if stock_latest.offer(
        drop_id, event.version, drop=drop_id, remaining=event.remaining, sold=event.sold
    ):
        stock_changed(drop_id)


def reservation_messages(
    changes: Iterable[inventory_events.ReservationChanged],
) -> list[broadcast.VersionedPersonal]:
    """Each buyer's ``reservation.updated``, as the REST API shows the reservation, from
    the changes' data, versioned in its allocation (JSON-safe, so a task can carry
    them)."""
    return [
        broadcast.VersionedPersonal(
            scope=f"allocation:{change.allocation_id}",
            about=str(change.reservation_id),
            version=change.version,
            user_id=change.customer_id,
            event_type="reservation.updated",
            fields={
                "reservation": reservation_body(
                    change,
                    reservation_id=change.reservation_id,
                    drop_id=_drop_of_allocation(change.allocation_id),
                )
            },
        )
        for change in changes
    ]


def reservations_updated(messages: Iterable[broadcast.VersionedPersonal]) -> None:
    """Send ``reservation_messages``: each buyer gets their reservation, unless they were
    told of a newer version of it already."""
    broadcast.send_personal_versioned(messages)


def waitlist_updated(event: inventory_events.WaitlistChanged) -> None:
    """The viewer's own place in a drop's line: the waitlist entry's id, drop, status,
    position and offer (a subset of what the REST API shows)."""
    drop_id = _drop_of_allocation(event.allocation_id)
    if drop_id is None:
        return
    broadcast.send_personal(
        event.customer_id,
        "waitlist.updated",
        waitlist={
            "id": event.entry_id,
            "drop": drop_id,
            "status": event.status,
            "position": event.position,
            "reservation": event.reservation_id,
        },
    )
