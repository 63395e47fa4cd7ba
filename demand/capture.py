"""Per-drop demand: the figures of ``DropDemand``, flushed from where they are counted.

Request outcomes are counted by the inventory (next to the Redis gate, or in rows on the
database path) and read with ``inventory.services.demand``; a draw's entries are its
rows (``draws.selectors``), the viewers who wanted a drop sold by draw; the audience (viewers at
pin, peak viewers) comes from presence, the timing from the drop's own moments, the
waitlist from its rows. A periodic task flushes every selling drop; closing a drop
flushes it one last time (``final``). The live side's moments (a pin, a sell-out, a
viewer count, a close) arrive as ``livestream.events``, to ``on_live_event``. Nothing
here runs on the purchase path.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.redis import get_redis, redis_configured
from demand.models import DropDemand
from draws import selectors as draw_selectors
from inventory import selectors as inventory_selectors
from inventory.models import Allocation
from inventory.services import demand as inventory_demand
from livestream import events as live_events
from livestream.models import Drop

logger = logging.getLogger(__name__)

# DropDemand field <- DemandCounts field.
_COUNTED = {
    "attempts": "attempts",
    "admitted": "admitted",
    "admitted_units": "admitted_units",
    "turned_away_sold_out": "sold_out",
    "turned_away_limit": "limit",
    "turned_away_not_live": "not_live",
    "viewers_tried": "viewers_tried",
    "buyers": "buyers",
    "viewers_turned_away": "viewers_turned_away",
}


def _peak_key(stream_id: int) -> str:
    return f"stream:peak:{stream_id}"


# Peak viewers of a stream since its current drop was pinned (reset at each pin).
_RAISE_PEAK = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400) end
return 1
"""
_local_peaks: dict[int, int] = {}


def peak_viewers_seen(stream_id: int, viewers: int) -> None:
    """Called with every viewer count the stream broadcasts (coalesced, a few a second)."""
    if redis_configured():
        get_redis().eval(_RAISE_PEAK, 1, _peak_key(stream_id), viewers)
    else:
        _local_peaks[stream_id] = max(_local_peaks.get(stream_id, 0), viewers)


def _peak_viewers(stream_id: int) -> int:
    if redis_configured():
        return int(get_redis().get(_peak_key(stream_id)) or 0)
    return _local_peaks.get(stream_id, 0)


def demand_on_pin(*, drop_id: int, stream_id: int, pinned_at: datetime, viewers: int) -> None:
    """The drop went on stage: remember who was watching (the first pin only; a re-pin
    keeps the figures of the moment its demand began)."""
    row, created = DropDemand.objects.get_or_create(
        drop_id=drop_id,
        defaults={"viewers_at_pin": viewers, "peak_viewers": viewers, "pinned_at": pinned_at},
    )
    if not created and row.viewers_at_pin is None:
        DropDemand.objects.filter(pk=row.pk).update(viewers_at_pin=viewers, pinned_at=pinned_at)
    if redis_configured():
        get_redis().set(_peak_key(stream_id), viewers, ex=86400)
    else:
        _local_peaks[stream_id] = viewers


def demand_sold_out(*, drop_id: int, at: datetime | None = None) -> None:
    """The drop sold out (announced once per sell-out): the first time is kept."""
    at = at or timezone.now()
    updated = DropDemand.objects.filter(drop_id=drop_id, sold_out_at__isnull=True).update(
        sold_out_at=at
    )
    if not updated and not DropDemand.objects.filter(drop_id=drop_id).exists():
        DropDemand.objects.get_or_create(drop_id=drop_id, defaults={"sold_out_at": at})


def _waitlist_figures(*, drop_id: int, allocation_id: int) -> dict[str, int]:
    counts, customers = inventory_selectors.waitlist_figures(allocation_id=allocation_id)
    figures = {f"waitlist_{name}": value for name, value in counts.items()}
    turned_away = inventory_demand.demand_turned_away_among(
        allocation_id=allocation_id, customer_ids=customers
    )
    # Queued without being turned away first (joined straight from the sold-out page),
    # nor queued by the draw they entered: counted once, not again on top of the
    # turned-away viewers or the entrants.
    entrants = draw_selectors.entrants_among(drop_id=drop_id, customer_ids=customers)
    figures["waitlist_only"] = len(customers - turned_away - entrants)
    return figures


def _entry_figures(drop_id: int) -> dict[str, int]:
    figures = draw_selectors.entry_figures(drop_id=drop_id)
    return {
        "entries": figures.entries,
        "entry_units": figures.units,
        "entry_winners": figures.winners,
        "entries_refused": figures.refused,
    }


def demand_flush(*, drop_id: int, final: bool = False) -> DropDemand:
    """Write the drop's current figures to its ``DropDemand`` row (idempotent: the
    counters are cumulative). ``final``: the drop closed; the Redis counters may go."""
    drop = Drop.objects.select_related("allocation").get(pk=drop_id)
    allocation = drop.allocation
    counts = inventory_demand.demand_read(allocation_id=allocation.pk)
    figures = _waitlist_figures(drop_id=drop_id, allocation_id=allocation.pk)
    if drop.mode == Drop.Mode.DRAW:
        figures.update(_entry_figures(drop_id))
    with transaction.atomic():
        row, _ = DropDemand.objects.select_for_update().get_or_create(drop=drop)
        if counts.epoch and row.counter_epoch and counts.epoch != row.counter_epoch:
            # The counters were lost and started again: what was flushed stays counted.
            logger.warning("demand counters of drop %s restarted; keeping %s", drop_id, row.pk)
            row.counter_base = {field: getattr(row, field) for field in _COUNTED}
        if counts.epoch:
            row.counter_epoch = counts.epoch
        for field, source in _COUNTED.items():
            setattr(row, field, row.counter_base.get(field, 0) + getattr(counts, source))
        for field, value in figures.items():
            setattr(row, field, value)
        # Supply: what the drop put on sale. Closing shrinks the allocation to what was
        # held or sold, so the figure from before the close is kept.
        if allocation.status != Allocation.Status.CLOSED or not row.supply:
            row.supply = allocation.quantity
        row.sold, row.held = allocation.sold, allocation.held
        row.opened_at = allocation.opened_at
        row.closed_at = allocation.closed_at
        if row.pinned_at is None:
            row.pinned_at = drop.pinned_at
        if drop.is_pinned:
            row.peak_viewers = max(row.peak_viewers, _peak_viewers(drop.stream_id))
        if row.sold_out_at is None and allocation.quantity and allocation.remaining == 0:
            row.sold_out_at = timezone.now()
        row.flushed_at = timezone.now()
        row.final = row.final or final
        row.save()
    if final:
        inventory_demand.demand_retire(allocation_id=allocation.pk)
    return row


def demand_flush_selling() -> int:
    """Flush every drop whose sale is open, and closed ones not flushed for good yet."""
    drop_ids = list(
        Drop.objects.filter(
            Q(allocation__status=Allocation.Status.OPEN)
            | Q(allocation__status=Allocation.Status.CLOSED)
            & (Q(demand__isnull=True) | Q(demand__final=False))
        )
        .exclude(allocation__opened_at__isnull=True)
        .values_list("pk", "allocation__status")
    )
    for drop_id, status in drop_ids:
        try:
            demand_flush(drop_id=drop_id, final=status == Allocation.Status.CLOSED)
        except Exception:  # one drop's failure must not stop the others' figures
            logger.exception("demand flush of drop %s failed", drop_id)
    return len(drop_ids)


def on_live_event(event: live_events.Event) -> None:
    """Subscribed to ``livestream.events``: each moment of a drop's sale, as it comes."""
    if isinstance(event, live_events.ViewersCounted):
        peak_viewers_seen(event.stream_id, event.viewers)
    elif isinstance(event, live_events.DropPinned):
        demand_on_pin(
            drop_id=event.drop_id,
            stream_id=event.stream_id,
            pinned_at=event.pinned_at,
            viewers=event.viewers,
        )
    elif isinstance(event, live_events.DropSoldOut):
        demand_sold_out(drop_id=event.drop_id)
    elif isinstance(event, live_events.DropClosed):
        demand_flush(drop_id=event.drop_id, final=True)
