"""The post-stream demand report: per drop, the supply, the sales and the demand sales
alone hide, with the audience and the timing. One row shape for the API (JSON and
CSV) and the admin's export, so that they cannot disagree."""

from __future__ import annotations

from typing import Any

from demand.models import DropDemand
from livestream.models import Drop, Stream

DEMAND_REPORT_COLUMNS = (
    "drop",
    "sku",
    "product",
    "measured",
    "final",
    "supply",
    "sold",
    "held",
    "unmet_demand",
    "total_demand",
    "buyers",
    "viewers_turned_away",
    "waitlist_joined",
    "waitlist_only",
    "waitlist_waiting",
    "entries",
    "entry_winners",
    "entries_refused",
    "attempts",
    "viewers_tried",
    "turned_away_sold_out",
    "turned_away_limit",
    "viewers_at_pin",
    "peak_viewers",
    "demand_per_viewer",
    "seconds_to_sell_out",
    "pinned_at",
    "opened_at",
    "sold_out_at",
    "closed_at",
)


def demand_row(*, drop: Drop, demand: DropDemand | None) -> dict[str, Any]:
    """One drop's demand as the report shows it. ``demand`` is its ``DropDemand`` or
    None (not measured yet: the allocation's own counters stand in)."""
    if demand is None:
        allocation = drop.allocation
        row = {column: None for column in DEMAND_REPORT_COLUMNS}
        row.update(
            drop=drop.pk,
            sku=drop.variant.sku,
            product=drop.variant.product.name,
            measured=False,
            final=False,
            supply=allocation.quantity,
            sold=allocation.sold,
            held=allocation.held,
        )
        return row
    seconds = demand.seconds_to_sell_out
    return {
        "drop": drop.pk,
        "sku": drop.variant.sku,
        "product": drop.variant.product.name,
        "measured": True,
        "final": demand.final,
        "supply": demand.supply,
        "sold": demand.sold,
        "held": demand.held,
        "unmet_demand": demand.unmet_demand,
        "total_demand": demand.total_demand,
        "buyers": demand.buyers,
        "viewers_turned_away": demand.viewers_turned_away,
        "waitlist_joined": demand.waitlist_joined,
        "waitlist_only": demand.waitlist_only,
        "waitlist_waiting": demand.waitlist_waiting,
        "entries": demand.entries,
        "entry_winners": demand.entry_winners,
        "entries_refused": demand.entries_refused,
        "attempts": demand.attempts,
        "viewers_tried": demand.viewers_tried,
        "turned_away_sold_out": demand.turned_away_sold_out,
        "turned_away_limit": demand.turned_away_limit,
        "viewers_at_pin": demand.viewers_at_pin,
        "peak_viewers": demand.peak_viewers,
        "demand_per_viewer": round(demand.total_demand / demand.viewers_at_pin, 4)
        if demand.viewers_at_pin
        else None,
        "seconds_to_sell_out": round(seconds, 1) if seconds is not None else None,
        "pinned_at": demand.pinned_at,
        "opened_at": demand.opened_at,
        "sold_out_at": demand.sold_out_at,
        "closed_at": demand.closed_at,
    }


def stream_demand_report(*, stream: Stream) -> list[dict[str, Any]]:
    """Per drop of the stream (in drop order), what demand it met."""
    drops = list(
        Drop.objects.filter(stream_id=stream.pk)
        .select_related("variant__product", "allocation")
        .order_by("id")
    )
    measured = {d.drop_id: d for d in DropDemand.objects.filter(drop__in=drops)}
    return [demand_row(drop=drop, demand=measured.get(drop.pk)) for drop in drops]
