"""Reads of streams and drops: querysets, the stream snapshot (the API and websocket
shape) and the per-process routing cache of the purchase path."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.db.models import QuerySet
from django.utils import timezone

from core.exceptions import NotFound
from inventory import selectors as inventory_selectors
from livestream.broadcast import current_seqs
from livestream.draw_mode import draw_hooks
from livestream.live_rate import LIVE_BUCKET_SECONDS, LIVE_BUCKETS, live_projection
from livestream.models import Drop, Stream
from livestream.presence import presence_counts


def stream_list() -> QuerySet[Stream]:
    """Every stream, newest first, with its host (for ``host`` in the snapshot)."""
    return Stream.objects.select_related("host").order_by("-created_at", "-id")


def stream_get(*, slug: str) -> Stream:
    """The stream with this slug (host selected), or ``NotFound``."""
    stream = stream_list().filter(slug=slug).first() if isinstance(slug, str) else None
    if stream is None:
        raise NotFound("No such stream.")
    return stream


def drops_for_snapshot() -> QuerySet[Drop]:
    """Drops with everything a drop dict reads, in one query."""
    return Drop.objects.select_related("variant__product", "allocation").order_by("id")


# --- the snapshot ----------------------------------------------------------------------


def iso_time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as DRF renders datetimes."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def drop_snapshot(
    *, drop: Drop, draw_fields: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A drop as clients see it (JSON-serialisable). Reads ``drop.variant.product`` and
    ``drop.allocation``: load them with ``drops_for_snapshot()`` to avoid queries. A drop
    sold by draw adds its draw's fields (``draw_fields``, per drop, when the caller read
    them for many drops at once; else one query)."""
    allocation = drop.allocation
    variant = drop.variant
    snapshot = {
        "id": drop.pk,
        "variant": drop.variant_id,
        "sku": variant.sku,
        "product": variant.product.name,
        "image_url": variant.product.image_url,
        "price": str(drop.price),
        "currency": drop.currency,
        "quantity": allocation.quantity,
        "remaining": allocation.remaining,
        "sold": allocation.sold,
        "per_viewer_limit": drop.per_viewer_limit,
        "pinned": drop.is_pinned,
        "starts_at": iso_time(drop.starts_at),
        "ends_at": iso_time(drop.ends_at),
        "status": allocation.status,
        "mode": drop.mode,
    }
    if drop.mode == Drop.Mode.DRAW:
        if draw_fields is None:
            draw_fields = draw_hooks().drop_fields(drop_ids=[drop.pk])
        snapshot["entry_seconds"] = drop.entry_seconds
        snapshot.update(draw_fields.get(drop.pk) or DRAW_NOT_OPEN)
    return snapshot


# A draw drop's fields before its pin opens entries.
DRAW_NOT_OPEN = {"entries_close_at": None, "seed_commitment": None}


def stream_snapshot(*, stream: Stream) -> dict[str, Any]:
    """The full state of a stream (``GET /api/streams/{slug}/``, ``stream.state``).

    One query for all drops (plus one for the host unless it was selected, as
    ``stream_get`` does); ``viewers`` and ``seq`` come from presence and the broadcast
    counter (Redis when configured).
    """
    return stream_snapshots(streams=[stream])[0]


def stream_snapshots(*, streams: Sequence[Stream]) -> list[dict[str, Any]]:
    """``stream_snapshot`` of each stream, for a whole page at once: one query for the
    drops of all of them, one Redis read for their viewers and one for their ``seq``,
    however many streams (load hosts with ``stream_list()``). Reads only: listing
    streams writes nothing anywhere."""
    ids = [stream.pk for stream in streams]
    drops: dict[int, list[dict[str, Any]]] = {pk: [] for pk in ids}
    rows = list(drops_for_snapshot().filter(stream_id__in=ids))
    draw_ids = [drop.pk for drop in rows if drop.mode == Drop.Mode.DRAW]
    # One more query, only when a draw drop is among them.
    draw_fields = draw_hooks().drop_fields(drop_ids=draw_ids) if draw_ids else {}
    for drop in rows:
        drops[drop.stream_id].append(drop_snapshot(drop=drop, draw_fields=draw_fields))
    viewers = presence_counts(ids)
    seqs = current_seqs(ids)
    return [
        _stream_dict(stream, drops[stream.pk], viewers=viewers[stream.pk], seq=seqs[stream.pk])
        for stream in streams
    ]


def _stream_dict(
    stream: Stream, drops: list[dict[str, Any]], *, viewers: int, seq: int
) -> dict[str, Any]:
    pinned = next((d for d in drops if d["pinned"]), None)
    return {
        "id": stream.pk,
        "slug": stream.slug,
        "title": stream.title,
        "description": stream.description,
        "status": stream.status,
        "host": stream.host.username,
        "scheduled_start": iso_time(stream.scheduled_start),
        "started_at": iso_time(stream.started_at),
        "ended_at": iso_time(stream.ended_at),
        "playback_url": stream.playback_url,
        # A copy: a caller editing one must not edit the other.
        "pinned_drop": dict(pinned) if pinned is not None else None,
        "drops": drops,
        "viewers": viewers,
        "seq": seq,
    }


# --- host stats ------------------------------------------------------------------------

# Demand is measured over this recent window: long enough to smooth single buys, short
# enough to follow the stream's moment.
RATE_WINDOW = timedelta(minutes=5)


def host_stats(*, stream: Stream, viewers: int, now: datetime | None = None) -> dict[str, Any]:
    """What the host watches live: viewers, and per drop the sell-through, the units
    taken per minute (held or bought, over the last few minutes of its sale), the live
    rate (``livestream.live_rate``: weighted towards the last seconds) and
    the projected time until it sells out at that live rate (None when nothing
    moves)."""
    now = now or timezone.now()
    drops = list(drops_for_snapshot().filter(stream_id=stream.pk))
    since = now - RATE_WINDOW
    taken = inventory_selectors.units_taken_since(
        allocation_ids=[d.allocation_id for d in drops], since=since
    )
    # The live rate's input: units taken per bucket, by when each hold was made, in one
    # query for every open drop (the same rate demand's backtest replays, so the console
    # and the demand report agree).
    live = inventory_selectors.units_taken_by_bucket(
        allocation_ids=[d.allocation_id for d in drops if d.allocation.status == "open"],
        now=now,
        bucket_seconds=LIVE_BUCKET_SECONDS,
        buckets=LIVE_BUCKETS,
    )
    rows = []
    for drop in drops:
        allocation = drop.allocation
        opened = allocation.opened_at or now
        minutes = max((now - max(opened, since)).total_seconds() / 60, 1 / 60)
        rate = taken.get(allocation.pk, 0) / minutes
        remaining = allocation.remaining
        live_rate, projected = live_projection(
            buckets=live.get(allocation.pk),
            opened_at=allocation.opened_at,
            now=now,
            remaining=remaining,
        )
        rows.append(
            {
                "drop": drop.pk,
                "pinned": drop.is_pinned,
                "quantity": allocation.quantity,
                "held": allocation.held,
                "sold": allocation.sold,
                "remaining": remaining,
                "sell_through": round(allocation.sold / allocation.quantity, 4)
                if allocation.quantity
                else 0.0,
                "units_per_minute": round(rate, 2),
                "live_units_per_minute": round(live_rate * 60, 2),
                "projected_sold_out_seconds": round(projected)
                if projected is not None and allocation.status == "open"
                else None,
            }
        )
    return {"type": "host.stats", "stream": stream.pk, "viewers": viewers, "drops": rows}


# --- routing of the purchase path ------------------------------------------------------


class DropRouting(NamedTuple):
    """What a reservation on a drop needs. Fixed once the drop exists, but for
    ``buyer_rules``, fixed once it was pinned or went on sale."""

    allocation_id: int
    price: Decimal
    currency: str
    stream_id: int
    mode: str
    buyer_rules: bool


# Bounded: an entry is ~200 bytes, so a few MB at most per process.
ROUTING_CACHE_SIZE = 10_000
_routing: OrderedDict[int, DropRouting] = OrderedDict()
_routing_lock = threading.Lock()


def drop_routing(drop_id: int) -> DropRouting:
    """The drop's allocation, price, currency and stream, or ``NotFound``.

    Cached in process (least recently used out first), so that the purchase path, and a
    rejection at the Redis gate in particular, runs no SQL once a process has seen the
    drop. Safe because these facts never change after the drop is created, and
    ``buyer_rules`` never once it was pinned or went on sale: before that it is read
    afresh each time (nothing is sold before, so nothing hot waits on it). Database ids
    are never reused in production, and ``drop_create`` forgets its new id all the same
    (SQLite test databases do reuse ids after a rollback).
    """
    if isinstance(drop_id, bool) or not isinstance(drop_id, int):
        raise NotFound("No such drop.")
    with _routing_lock:
        routing = _routing.get(drop_id)
        if routing is not None:
            _routing.move_to_end(drop_id)
            return routing
    row = (
        Drop.objects.filter(pk=drop_id)
        .values_list(
            "allocation_id",
            "price",
            "currency",
            "stream_id",
            "mode",
            "buyer_rules",
            "pinned_at",
            "allocation__opened_at",
        )
        .first()
    )
    if row is None:
        raise NotFound("No such drop.")
    *facts, pinned_at, opened_at = row
    routing = DropRouting(*facts)
    if pinned_at is None and opened_at is None:
        return routing  # its rules may still change
    with _routing_lock:
        _routing[drop_id] = routing
        _routing.move_to_end(drop_id)
        while len(_routing) > ROUTING_CACHE_SIZE:
            _routing.popitem(last=False)
    return routing


def drop_routing_cached(drop_id: int) -> DropRouting | None:
    """The drop's routing if this process has it in memory; never queries."""
    with _routing_lock:
        return _routing.get(drop_id)


def drop_routing_forget(drop_id: int) -> None:
    """Drop one id from this process's routing cache."""
    with _routing_lock:
        _routing.pop(drop_id, None)


def drop_routing_cache_clear() -> None:
    """Empty this process's routing cache (tests whose database reuses ids)."""
    with _routing_lock:
        _routing.clear()
