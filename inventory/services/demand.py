"""The demand an allocation sees: how every reserve request was decided, per customer.

With the Redis gate on, the gate's own script counts each decision next to the units
(``inventory.gate``), so a rejection still runs no SQL; this module reads those counters.
With no gate, the database path counts the same figures in ``DemandViewer`` rows. Either
way the figures are cumulative and exact (distinct customers are exact sets, not
estimates); ``demand.capture`` flushes them into per-drop reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum

from core.redis import get_redis
from inventory import gate
from inventory.gate import ADMITTED, LIMIT, NOT_LIVE, SOLD_OUT
from inventory.models import DemandViewer

# Decision outcomes are the gate's (its script counts under those names); the database
# path counts the same ones, each in its DemandViewer column.
_ROW_FIELD = {ADMITTED: "admitted", SOLD_OUT: "sold_out", LIMIT: "at_limit", NOT_LIVE: "not_live"}


@dataclass(frozen=True)
class DemandCounts:
    """Cumulative figures of one allocation. ``epoch`` changes when the counters were
    lost and started again (Redis data loss); the database path's epoch is fixed."""

    epoch: str
    attempts: int = 0
    admitted: int = 0
    admitted_units: int = 0
    sold_out: int = 0
    limit: int = 0
    not_live: int = 0
    viewers_tried: int = 0
    buyers: int = 0
    viewers_turned_away: int = 0
    viewers_at_limit: int = 0

    COUNTED = (
        "attempts",
        "admitted",
        "admitted_units",
        "sold_out",
        "limit",
        "not_live",
        "viewers_tried",
        "buyers",
        "viewers_turned_away",
        "viewers_at_limit",
    )

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNTED}


DATABASE_EPOCH = "database"


def demand_record(*, allocation_id: int, customer_id: int, quantity: int, outcome: str) -> None:
    """The database path: count one decided request (two small statements; the gate
    path counts in Redis instead and never calls this)."""
    field = _ROW_FIELD[outcome]
    changes = {"attempts": F("attempts") + 1, field: F(field) + 1}
    if outcome == ADMITTED:
        changes["admitted_units"] = F("admitted_units") + quantity
    for _ in range(2):
        updated = DemandViewer.objects.filter(
            allocation_id=allocation_id, customer_id=customer_id
        ).update(**changes)
        if updated:
            return
        try:
            with transaction.atomic():
                DemandViewer.objects.create(allocation_id=allocation_id, customer_id=customer_id)
        except IntegrityError:
            pass  # a concurrent request created it: count on it


def demand_read(*, allocation_id: int) -> DemandCounts:
    if gate.gate_enabled():
        return _read_redis(allocation_id)
    return _read_rows(allocation_id)


def _read_redis(allocation_id: int) -> DemandCounts:
    counters, tried, admitted, away, at_limit = gate.demand_keys(allocation_id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.hgetall(counters)
    for key in (tried, admitted, away, at_limit):
        pipe.scard(key)
    values, n_tried, n_admitted, n_away, n_limit = pipe.execute()
    return DemandCounts(
        epoch=values.get("epoch", ""),
        attempts=int(values.get("attempts", 0)),
        admitted=int(values.get(ADMITTED, 0)),
        admitted_units=int(values.get("admitted_units", 0)),
        sold_out=int(values.get(SOLD_OUT, 0)),
        limit=int(values.get(LIMIT, 0)),
        not_live=int(values.get(NOT_LIVE, 0)),
        viewers_tried=n_tried,
        buyers=n_admitted,
        viewers_turned_away=n_away,
        viewers_at_limit=n_limit,
    )


def _read_rows(allocation_id: int) -> DemandCounts:
    # Aggregates named apart from the columns their filters read.
    totals = DemandViewer.objects.filter(allocation_id=allocation_id).aggregate(
        n_attempts=Sum("attempts"),
        n_admitted=Sum("admitted"),
        n_admitted_units=Sum("admitted_units"),
        n_sold_out=Sum("sold_out"),
        n_limit=Sum("at_limit"),
        n_not_live=Sum("not_live"),
        n_viewers_tried=Count("pk"),
        n_buyers=Count("pk", filter=Q(admitted__gt=0)),
        n_viewers_turned_away=Count("pk", filter=Q(sold_out__gt=0, admitted=0)),
        n_viewers_at_limit=Count("pk", filter=Q(at_limit__gt=0)),
    )
    return DemandCounts(
        epoch=DATABASE_EPOCH, **{name[2:]: value or 0 for name, value in totals.items()}
    )


def demand_turned_away_among(*, allocation_id: int, customer_ids: Iterable[int]) -> set[int]:
    """Which of these customers were turned away sold out (and never admitted)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return set()
    if gate.gate_enabled():
        away_key = gate.demand_keys(allocation_id)[3]
        flags = get_redis().smismember(away_key, ids)
        return {customer for customer, flag in zip(ids, flags, strict=True) if flag}
    return set(
        DemandViewer.objects.filter(
            allocation_id=allocation_id, customer_id__in=ids, sold_out__gt=0, admitted=0
        ).values_list("customer_id", flat=True)
    )


# Once an allocation's final figures are in the database, Redis keeps its counters for
# this long (a late flush finds them), then forgets them.
DEMAND_KEYS_TTL_SECONDS = 7 * 24 * 3600


def demand_retire(*, allocation_id: int) -> None:
    """The allocation's figures were flushed for good: let the Redis counters expire."""
    if gate.gate_enabled():
        pipe = get_redis().pipeline()
        for key in gate.demand_keys(allocation_id):
            pipe.expire(key, DEMAND_KEYS_TTL_SECONDS)
        pipe.execute()
