"""Reads of the inventory's tables for other apps: every query another app makes of
reservations, allocations or the waitlist goes through here, so the inventory can
change its rows without touching its readers. (The inventory's own services read
under their locks and stay in ``inventory.services``.)"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.db.models import Count, Min, Q, QuerySet, Sum

from core.exceptions import NotFound
from inventory.models import Reservation, WaitlistEntry

Status = Reservation.Status
# A unit is taken while its hold lasts and once it is bought.
TAKEN = Reservation.SETTLED_STATUSES


def reservations_of(*, customer_id: int) -> QuerySet[Reservation]:
    """A customer's reservations (any status)."""
    return Reservation.objects.filter(customer_id=customer_id)


def reservation_of(*, customer_id: int, reservation_id: int) -> Reservation:
    """One of the customer's reservations, with its allocation's stock item; another
    customer's (or none) is ``NotFound``."""
    reservation = (
        reservations_of(customer_id=customer_id)
        .select_related("allocation__stock_item")
        .filter(pk=reservation_id)
        .first()
    )
    if reservation is None:
        raise NotFound("No such reservation.")
    return reservation


def reservation_get(*, reservation_id: int) -> Reservation:
    reservation = Reservation.objects.filter(pk=reservation_id).first()
    if reservation is None:
        raise NotFound("No such reservation.")
    return reservation


def reservations_with_ids(
    reservation_ids: Iterable[int], *, fields: Sequence[str]
) -> QuerySet[Reservation]:
    """Those reservations, loading only ``fields`` (and their allocation's id)."""
    return Reservation.objects.filter(pk__in=list(reservation_ids)).only("allocation_id", *fields)


def reservation_is_held(*, reservation_id: int) -> bool:
    return Reservation.objects.filter(pk=reservation_id, status=Status.HELD).exists()


def units_taken_since(*, allocation_ids: Sequence[int], since: datetime) -> dict[int, int]:
    """Units per allocation taken (held or bought) by reservations last changed since
    ``since``; allocations with none are left out."""
    return dict(
        Reservation.objects.filter(
            allocation_id__in=allocation_ids, status__in=TAKEN, updated_at__gte=since
        )
        .values("allocation_id")
        .annotate(units=Sum("quantity"))
        .values_list("allocation_id", "units")
    )


def units_taken_by_bucket(
    *, allocation_ids: Sequence[int], now: datetime, bucket_seconds: float, buckets: int
) -> dict[int, list[int]]:
    """Units per allocation taken (held or bought) in each of ``buckets`` windows of
    ``bucket_seconds`` before ``now``, newest first, by when each hold was made, in one
    query. The newest window has no upper bound: a hold made while this ran belongs to
    the present. Allocations with none are left out."""
    if not allocation_ids:
        return {}

    def window(k: int) -> Q:
        made = Q(created_at__gte=now - timedelta(seconds=(k + 1) * bucket_seconds))
        if k:
            made &= Q(created_at__lt=now - timedelta(seconds=k * bucket_seconds))
        return made

    rows = (
        Reservation.objects.filter(
            allocation_id__in=allocation_ids,
            status__in=TAKEN,
            created_at__gte=now - timedelta(seconds=buckets * bucket_seconds),
        )
        .values("allocation_id")
        .annotate(**{f"b{k}": Sum("quantity", filter=window(k)) for k in range(buckets)})
    )
    return {row["allocation_id"]: [row[f"b{k}"] or 0 for k in range(buckets)] for row in rows}


def units_bought_at(*, allocation_id: int) -> list[tuple[datetime, int]]:
    """``(when the hold was made, units)`` of each reservation of the allocation that
    became a sale."""
    return list(
        Reservation.objects.filter(
            allocation_id=allocation_id, status=Status.CONFIRMED
        ).values_list("created_at", "quantity")
    )


def waitlist_figures(*, allocation_id: int) -> tuple[dict[str, int], set[int]]:
    """The allocation's waitlist in figures (customers who joined, entries waiting,
    offers made, offers claimed), and the customers who joined it."""
    entries = WaitlistEntry.objects.filter(allocation_id=allocation_id)
    figures = entries.aggregate(
        joined=Count("customer", distinct=True),
        waiting=Count("pk", filter=Q(status=WaitlistEntry.Status.WAITING)),
        offers=Count("pk", filter=Q(reservation__isnull=False)),
        claimed=Count("pk", filter=Q(status=WaitlistEntry.Status.CLAIMED)),
    )
    return figures, set(entries.values_list("customer_id", flat=True))


def waiting_places(*, allocation_id: int) -> dict[int, int]:
    """Each waitlist entry still waiting in the allocation's line, by id: its place (1 =
    next in line)."""
    line = WaitlistEntry.objects.filter(
        allocation_id=allocation_id, status=WaitlistEntry.Status.WAITING
    ).order_by("id")
    return {pk: place for place, pk in enumerate(line.values_list("pk", flat=True), 1)}


def pending_by_allocation(*, allocation_ids: Sequence[int]) -> dict[int, tuple[int, datetime]]:
    """Per allocation with requests waiting to be settled: how many, and since when the
    oldest has waited; allocations with none are left out."""
    rows = (
        Reservation.objects.filter(allocation_id__in=allocation_ids, status=Status.PENDING)
        .order_by()
        .values("allocation_id")
        .annotate(waiting=Count("id"), oldest=Min("created_at"))
    )
    return {row["allocation_id"]: (row["waiting"], row["oldest"]) for row in rows}


def waiting_in_line_by_allocation(*, allocation_ids: Sequence[int]) -> dict[int, int]:
    """Per allocation, the customers waiting in its line; allocations with none left out."""
    rows = (
        WaitlistEntry.objects.filter(
            allocation_id__in=allocation_ids, status=WaitlistEntry.Status.WAITING
        )
        .order_by()
        .values("allocation_id")
        .annotate(waiting=Count("id"))
    )
    return {row["allocation_id"]: row["waiting"] for row in rows}
