"""Reads of draws: the public draw, an entry as its viewer sees it, and what ops look at
(refusals by reason, addresses that many accounts entered from)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, Sum
from redis.exceptions import RedisError

from core.exceptions import NotFound
from draws import refusals, window
from draws.exceptions import NotEntered
from draws.models import Draw, Entry
from inventory import gate
from inventory import selectors as inventory_selectors
from livestream.models import Drop
from livestream.selectors import iso_time
from livestream.serializers import ReservationSerializer


def draw_public(*, drop_id: object) -> dict[str, Any]:
    """``GET /api/drops/{id}/draw/``: the seed and the winners only once drawn.

    ``entries`` counts the entries committed so far. Once drawn, ``units`` (the units
    the draw handed out) and ``entry_list`` (every entry's id and quantity) let anyone
    recompute the winners from the seed."""
    if isinstance(drop_id, bool) or not isinstance(drop_id, int):
        raise NotFound("No such drop.")
    drop = Drop.objects.filter(pk=drop_id).values("mode").first()
    if drop is None:
        raise NotFound("No such drop.")
    draw = Draw.objects.filter(drop_id=drop_id).first()
    body: dict[str, Any] = {
        "drop": drop_id,
        "mode": drop["mode"],
        "status": draw.status if draw else None,
        "entries": 0,
        "entries_close_at": None,
        "seed_commitment": None,
        "seed": None,
        "winners": [],
        "units": None,
        "entry_list": None,
    }
    if draw is None:
        return body
    drawn = draw.status == Draw.Status.DRAWN
    body.update(
        entries=draw.entry_count if drawn else entries_so_far(draw_id=draw.pk),
        entries_close_at=iso_time(draw.entries_close_at),
        seed_commitment=draw.seed_commitment,
    )
    if drawn:
        body.update(
            seed=draw.seed,
            winners=list(draw.winners),
            units=draw.units,
            entry_list=[
                {"id": pk, "quantity": quantity}
                for pk, quantity in Entry.objects.filter(draw_id=draw.pk)
                .order_by("id")
                .values_list("id", "quantity")
            ],
        )
    return body


def entries_so_far(*, draw_id: int) -> int:
    """A draw's entries while it takes them: Redis's count of those it accepted (written,
    or on their way: each is answered only once written) where it keeps the window, so
    that pages asking on every reload cost no count of the rows; the rows' count
    without Redis."""
    if gate.gate_enabled():
        try:
            counted = window.window_count(draw_id=draw_id)
        except RedisError:
            counted = None
        if counted is not None:
            return counted
    return Entry.objects.filter(draw_id=draw_id).count()


def entry_of(*, drop_id: object, customer_id: int) -> Entry:
    if isinstance(drop_id, bool) or not isinstance(drop_id, int):
        raise NotFound("No such drop.")
    entry = (
        Entry.objects.select_related("draw", "reservation", "waitlist_entry")
        .filter(draw__drop_id=drop_id, customer_id=customer_id)
        .first()
    )
    if entry is None:
        raise NotEntered()
    return entry


def entry_bodies(entries: list[Entry], *, drop_id: int) -> list[dict[str, Any]]:
    """Entries as their viewers see them (the API and ``draw.result``): a winner's
    ``reservation`` as the reservations API shows it, a loser's ``waitlist`` place. Load
    ``reservation`` and ``waitlist_entry`` with them; positions cost one query."""
    waiting = [e.waitlist_entry for e in entries if e.waitlist_entry is not None]
    positions: dict[int, int] = {}
    if waiting:
        positions = inventory_selectors.waiting_places(allocation_id=waiting[0].allocation_id)
    holds = [e.reservation for e in entries if e.reservation is not None]
    hold_bodies = {}
    if holds:  # an entry still waiting for its draw has none (the entry door's answers)
        hold_bodies = {
            body["id"]: body
            for body in ReservationSerializer(holds, many=True, context={"drop_id": drop_id}).data
        }
    bodies = []
    for entry in entries:
        line_entry = entry.waitlist_entry
        bodies.append(
            _entry_shape(
                entry_id=entry.pk,
                drop_id=drop_id,
                quantity=entry.quantity,
                entered_at=entry.entered_at,
                status=entry.status,
                rank=entry.rank,
                reservation=hold_bodies.get(entry.reservation_id),
                waitlist=None
                if line_entry is None
                else {
                    "id": line_entry.pk,
                    "status": line_entry.status,
                    "position": positions.get(line_entry.pk),
                    "reservation": line_entry.reservation_id,
                },
            )
        )
    return bodies


def _entry_shape(
    *,
    entry_id: int,
    drop_id: int,
    quantity: int,
    entered_at: datetime,
    status: str = Entry.Status.ENTERED,
    rank: int | None = None,
    reservation: dict[str, Any] | None = None,
    waitlist: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An entry as its viewer sees it (``EntrySerializer`` documents it)."""
    return {
        "id": entry_id,
        "drop": drop_id,
        "quantity": quantity,
        "status": status,
        "entered_at": iso_time(entered_at),
        "rank": rank,
        "reservation": reservation,
        "waitlist": waitlist,
    }


def entry_body(entry: Entry, *, drop_id: int) -> dict[str, Any]:
    return entry_bodies([entry], drop_id=drop_id)[0]


def waiting_entry_body(
    *, entry_id: int, drop_id: int, quantity: int, entered_at: datetime
) -> dict[str, Any]:
    """An entry still waiting for its draw, from what Redis keeps of it (no row read, no
    model built: the entry door answers repeats with it)."""
    return _entry_shape(
        entry_id=entry_id, drop_id=drop_id, quantity=quantity, entered_at=entered_at
    )


@dataclass(frozen=True)
class EntryFigures:
    """A drop's draw as demand: who entered (one entry per viewer), the units they asked
    for, how many the draw chose, and the entries refused."""

    entries: int = 0
    units: int = 0
    winners: int = 0
    refused: int = 0


def entry_figures(*, drop_id: int) -> EntryFigures:
    """The drop's draw in figures (all zero for a drop without a draw)."""
    draw = Draw.objects.filter(drop_id=drop_id).first()
    if draw is None:
        return EntryFigures()
    counts = Entry.objects.filter(draw_id=draw.pk).aggregate(
        entries=Count("pk"),
        units=Sum("quantity", default=0),
        winners=Count("pk", filter=Q(status=Entry.Status.WON)),
    )
    return EntryFigures(**counts, refused=sum(draw_refusals(draw).values()))


def entrants_among(*, drop_id: int, customer_ids: Iterable[int]) -> set[int]:
    """Which of these customers entered the drop's draw."""
    ids = sorted(set(customer_ids))
    if not ids:
        return set()
    return set(
        Entry.objects.filter(draw__drop_id=drop_id, customer_id__in=ids).values_list(
            "customer_id", flat=True
        )
    )


def refusals_of_drop(*, drop_id: int) -> dict[str, int]:
    """Entries to the drop's draw, or buyers of it, refused so far, by reason."""
    return refusals.refusals_of(drop_id=drop_id)


def draw_refusals(draw: Draw) -> dict[str, int]:
    """Entries refused by reason, counted live (late ones after the draw too); what the
    draw kept on its row where the live counts are gone (their keys expired)."""
    counted = refusals.refusals_of(drop_id=draw.drop_id)
    kept = draw.refusals or {}
    return {
        reason: max(counted.get(reason, 0), kept.get(reason, 0))
        for reason in refusals.REASONS
        if counted.get(reason) or kept.get(reason)
    }


def crowded_addresses(*, draw_id: int, least: int = 2, most: int = 20) -> list[tuple[str, int]]:
    """Client addresses that ``least`` or more accounts entered the draw from, the most
    crowded first (at most ``most`` of them): where one person may run many accounts."""
    rows = (
        Entry.objects.filter(draw_id=draw_id)
        .exclude(client_address="")
        .values("client_address")
        .annotate(accounts=Count("customer_id"))
        .filter(accounts__gte=least)
        .order_by("-accounts", "client_address")
        .values_list("client_address", "accounts")[:most]
    )
    return list(rows)
