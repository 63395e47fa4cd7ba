"""The readiness report's reads: a host's past drops as plain numbers for
``demand.estimator``, the report of a stream's drops still to sell, the scheduled
streams with a problem (``check_readiness`` and the admin flag), and recorded spikes
for the live projection's backtest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from demand.estimator import (
    CONFIDENCE,
    HISTORY_DROPS,
    DropAssessment,
    DropHistory,
    Estimate,
    SaleTimeline,
    assess_drop,
    demand_decay,
    expected_demand,
    expected_viewers,
    units_per_buyer,
    viewer_to_buyer_rate,
)
from demand.models import DropDemand
from inventory import selectors as inventory_selectors
from inventory.models import Allocation
from livestream.models import Drop, Stream


def history_of(row: DropDemand) -> DropHistory:
    """A final ``DropDemand`` as plain numbers."""
    return DropHistory(
        demand=row.total_demand,
        viewers=row.viewers_at_pin or 0,
        supply=row.supply,
        units_per_buyer=row.units_per_buyer,
        seconds_to_sell_out=row.seconds_to_sell_out,
    )


def host_history(*, host_id: int, exclude_stream_id: int | None = None) -> list[DropHistory]:
    """The host's most recent finished drops with an audience at pin."""
    rows = DropDemand.objects.filter(
        drop__stream__host_id=host_id, final=True, viewers_at_pin__gt=0
    )
    if exclude_stream_id is not None:
        rows = rows.exclude(drop__stream_id=exclude_stream_id)
    return [history_of(r) for r in rows.order_by("-closed_at", "-drop_id")[:HISTORY_DROPS]]


@dataclass(frozen=True)
class DropReadiness:
    drop: int
    sku: str
    product: str
    status: str
    quantity: int
    per_viewer_limit: int | None
    stock_on_hand: int
    stock_free: int
    units_per_buyer: float
    assessment: DropAssessment

    def as_dict(self) -> dict[str, Any]:
        a = self.assessment
        return {
            "drop": self.drop,
            "sku": self.sku,
            "product": self.product,
            "status": self.status,
            "quantity": self.quantity,
            "per_viewer_limit": self.per_viewer_limit,
            "stock_on_hand": self.stock_on_hand,
            "stock_free": self.stock_free,
            "units_per_buyer": round(self.units_per_buyer, 3),
            "expected_demand": _estimate_dict(a.expected_units, digits=1),
            "verdict": a.verdict,
            "message": a.message,
            "cover": a.cover,
            "shortfall": a.shortfall,
            "shortfall_low": a.shortfall_low,
            "shortfall_high": a.shortfall_high,
            "sell_out_seconds": round(a.sell_out_seconds) if a.sell_out_seconds else None,
            "problems": list(a.problems),
        }


@dataclass(frozen=True)
class StreamReadiness:
    stream: int
    slug: str
    title: str
    status: str
    scheduled_start: datetime | None
    viewers: Estimate
    rate: Estimate
    decay: Estimate
    drops: list[DropReadiness]

    @property
    def problems(self) -> list[tuple[DropReadiness, str]]:
        return [(d, p) for d in self.drops for p in d.assessment.problems]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "slug": self.slug,
            "title": self.title,
            "status": self.status,
            "scheduled_start": self.scheduled_start,
            "confidence": CONFIDENCE,
            "expected_viewers": _estimate_dict(self.viewers, digits=0),
            "rate": _estimate_dict(self.rate, digits=4),
            "decay_seconds": _estimate_dict(self.decay, digits=1),
            "drops": [d.as_dict() for d in self.drops],
        }


def _estimate_dict(estimate: Estimate, *, digits: int) -> dict[str, Any]:
    def rounded(x):
        return None if x is None else round(x, digits)

    return {
        "value": rounded(estimate.value),
        "low": rounded(estimate.low),
        "high": rounded(estimate.high),
        "basis": estimate.basis,
        "drops": estimate.drops,
    }


def _sale_seconds(drop: Drop) -> float | None:
    if drop.duration is not None:
        return drop.duration.total_seconds()
    if drop.starts_at is not None and drop.ends_at is not None:
        return (drop.ends_at - drop.starts_at).total_seconds()
    return None


def stream_readiness(*, stream: Stream) -> StreamReadiness:
    """The readiness report of every drop of the stream still to sell (not closed)."""
    history = host_history(host_id=stream.host_id, exclude_stream_id=stream.pk)
    viewers = expected_viewers(
        declared=stream.expected_viewers, history_viewers=[h.viewers for h in history]
    )
    rate = viewer_to_buyer_rate(history)
    decay = demand_decay(history)
    drops = (
        Drop.objects.filter(stream_id=stream.pk)
        .exclude(allocation__status=Allocation.Status.CLOSED)
        .select_related("variant__product", "allocation__stock_item")
        .order_by("id")
    )
    rows = []
    for drop in drops:
        allocation = drop.allocation
        stock = allocation.stock_item
        per_buyer = units_per_buyer(history, limit=drop.per_viewer_limit)
        demand_viewers = expected_demand(viewers, rate)
        demand_units = (
            Estimate(
                demand_viewers.value * per_buyer,
                demand_viewers.low * per_buyer,
                demand_viewers.high * per_buyer,
                demand_viewers.basis,
                demand_viewers.drops,
            )
            if demand_viewers.known
            else demand_viewers
        )
        assessment = assess_drop(
            quantity=allocation.quantity,
            on_hand=stock.on_hand,
            free=stock.available,
            demand_units=demand_units,
            decay_seconds=decay.value,
            sale_seconds=_sale_seconds(drop),
        )
        rows.append(
            DropReadiness(
                drop=drop.pk,
                sku=drop.variant.sku,
                product=drop.variant.product.name,
                status=allocation.status,
                quantity=allocation.quantity,
                per_viewer_limit=drop.per_viewer_limit,
                stock_on_hand=stock.on_hand,
                stock_free=stock.available,
                units_per_buyer=per_buyer,
                assessment=assessment,
            )
        )
    return StreamReadiness(
        stream=stream.pk,
        slug=stream.slug,
        title=stream.title,
        status=stream.status,
        scheduled_start=stream.scheduled_start,
        viewers=viewers,
        rate=rate,
        decay=decay,
        drops=rows,
    )


def scheduled_streams(*, now: datetime, within_hours: float | None = None) -> QuerySet[Stream]:
    """Scheduled streams, soonest first; with ``within_hours`` only those starting in
    that window (a stream without a start time has no place in a window)."""
    streams = Stream.objects.filter(status=Stream.Status.SCHEDULED)
    if within_hours is not None:
        streams = streams.filter(
            scheduled_start__gte=now, scheduled_start__lte=now + timedelta(hours=within_hours)
        )
    return streams.order_by("scheduled_start", "id")


def streams_with_problems(
    *, now: datetime, within_hours: float | None = None
) -> list[tuple[Stream, StreamReadiness]]:
    """``(stream, readiness)`` for each scheduled stream with a readiness problem."""
    found = []
    for stream in scheduled_streams(now=now, within_hours=within_hours):
        report = stream_readiness(stream=stream)
        if report.problems:
            found.append((stream, report))
    return found


def recorded_timelines(*, drop_ids: Sequence[int]) -> list[SaleTimeline]:
    """The recorded spikes of sold-out drops, for ``backtest_live_eta``: when each unit
    was taken (holds that became sales, by their creation time), from the opening."""
    timelines = []
    rows = DropDemand.objects.filter(drop_id__in=drop_ids, sold_out_at__isnull=False)
    for row in rows.select_related("drop"):
        opened = row.opened_at or row.pinned_at
        if opened is None:
            continue
        times = []
        for created, quantity in inventory_selectors.units_bought_at(
            allocation_id=row.drop.allocation_id
        ):
            times += [(created - opened).total_seconds()] * quantity
        timelines.append(SaleTimeline(supply=row.supply, take_times=sorted(times)))
    return timelines
