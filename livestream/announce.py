"""What each live event says, built from the committed rows, and when the counters go
out: the stream's status, drops pinned, opened and closed, stock and viewer counts
(coalesced), a buyer's own reservation and place in a drop's line. ``livestream.broadcast``
numbers and sends them; a sell-out and each viewer count sent also go out as domain
events (``livestream.events``)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from functools import lru_cache

from core.redis import get_redis, redis_configured
from inventory import events as inventory_events
from inventory import selectors as inventory_selectors
from inventory.models import Reservation
from livestream import broadcast
from livestream import events as live_events
from livestream.models import Drop, Stream
from livestream.presence import presence_count
from livestream.selectors import drop_snapshot, drops_for_snapshot, iso_time
from livestream.serializers import ReservationSerializer

# The event a stream's status change announces, and the moment it carries.
_STATUS_EVENTS = {"live": ("stream.started", "started_at"), "ended": ("stream.ended", "ended_at")}


def stream_status_changed(stream_id: int) -> None:
    """``stream.started`` or ``stream.ended``, from the stream's status as committed."""
    stream = Stream.objects.get(pk=stream_id)
    event_type, moment = _STATUS_EVENTS[stream.status]
    broadcast.publish(
        stream_id,
        event_type,
        stream={"id": stream.pk, "slug": stream.slug, "status": stream.status},
        **{moment: iso_time(getattr(stream, moment))},
    )


def drop_pinned(drop_id: int) -> None:
    drop = drops_for_snapshot().get(pk=drop_id)
    broadcast.publish(drop.stream_id, "drop.pinned", drop=drop_snapshot(drop=drop))


def drop_unpinned(drop_id: int) -> None:
    stream_id = Drop.objects.values_list("stream_id", flat=True).get(pk=drop_id)
    broadcast.publish(stream_id, "drop.unpinned", drop=drop_id)


def drop_opened(drop_id: int) -> None:
    """A timed drop's sale opened by itself at its start."""
    drop = drops_for_snapshot().get(pk=drop_id)
    broadcast.publish(drop.stream_id, "drop.opened", drop=drop_snapshot(drop=drop))


def drop_closed(drop_id: int) -> None:
    """A drop's sale closed (its end time came, or the stream ended)."""
    drop = drops_for_snapshot().get(pk=drop_id)
    broadcast.publish(drop.stream_id, "drop.closed", drop=drop_snapshot(drop=drop))


def _send_stock(drop_id: Hashable) -> None:
    row = (
        Drop.objects.filter(pk=drop_id)
        .values("stream_id", "allocation__quantity", "allocation__held", "allocation__sold")
        .first()
    )
    if row is None:
        return
    remaining = row["allocation__quantity"] - row["allocation__held"] - row["allocation__sold"]
    sold = row["allocation__sold"]
    broadcast.publish(
        row["stream_id"], "stock.changed", drop=drop_id, remaining=remaining, sold=sold
    )
    _maybe_sold_out(row["stream_id"], drop_id, remaining)


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


def allocation_changed(allocation_id: int) -> None:
    """Units moved in an allocation: its drop's ``stock.changed`` (coalesced)."""
    drop_id = _drop_of_allocation(allocation_id)
    if drop_id is not None:
        stock_changed(drop_id)


def reservations_updated(reservation_ids: Iterable[int]) -> None:
    """Each buyer gets their reservation, as the REST API shows it."""
    by_allocation: dict[int, list[Reservation]] = {}
    for reservation in inventory_selectors.reservations_with_ids(
        reservation_ids, fields=("customer_id", *ReservationSerializer.Meta.stored_fields)
    ):
        by_allocation.setdefault(reservation.allocation_id, []).append(reservation)
    events = []
    # One serializer per allocation (a settle batch is one): its drop is known, and
    # DRF builds a serializer's fields once, not per instance.
    for allocation_id, reservations in by_allocation.items():
        bodies = ReservationSerializer(
            reservations, many=True, context={"drop_id": _drop_of_allocation(allocation_id)}
        ).data
        events += [
            (reservation.customer_id, "reservation.updated", {"reservation": body})
            for reservation, body in zip(reservations, bodies, strict=True)
        ]
    broadcast.send_personal_many(events)


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
