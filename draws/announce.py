"""What each draw event says, built from the committed rows, sent through livestream's
broadcast (numbered in the stream's ``seq``; the entrants' results personal)."""

from __future__ import annotations

from collections.abc import Hashable

from draws.models import Draw, Entry
from draws.selectors import entries_so_far, entry_bodies
from livestream import broadcast
from livestream.selectors import iso_time


def _draw(draw_id: int) -> Draw:
    return Draw.objects.select_related("drop").get(pk=draw_id)


def draw_opened(draw_id: int) -> None:
    draw = _draw(draw_id)
    broadcast.publish(
        draw.drop.stream_id,
        "draw.opened",
        drop=draw.drop_id,
        entries_close_at=iso_time(draw.entries_close_at),
        seed_commitment=draw.seed_commitment,
    )


def _send_entries(draw_id: Hashable) -> None:
    row = Draw.objects.filter(pk=draw_id).values("drop_id", "drop__stream_id").first()
    if row is None:
        return
    broadcast.publish(
        row["drop__stream_id"],
        "draw.entries",
        drop=row["drop_id"],
        entries=entries_so_far(draw_id=draw_id),
    )


# A burst of entries sends a few counts a second, the last one always (as stock.changed).
entries_coalescer = broadcast.Coalescer(
    "draw-entries", _send_entries, window_setting="BROADCAST_COALESCE_MS"
)


def entries_changed(draw_id: int) -> None:
    entries_coalescer.touch(draw_id)


def draw_closed(draw_id: int) -> None:
    draw = _draw(draw_id)
    broadcast.publish(
        draw.drop.stream_id,
        "draw.closed",
        drop=draw.drop_id,
        seed=draw.seed,
        winners=len(draw.winners),
        entries=draw.entry_count,
    )


def draw_results(draw_id: int) -> None:
    """Each entrant's own result (one pipelined round trip to Redis for all)."""
    draw = _draw(draw_id)
    entries = list(
        Entry.objects.filter(draw_id=draw_id).select_related("reservation", "waitlist_entry")
    )
    bodies = entry_bodies(entries, drop_id=draw.drop_id)
    broadcast.send_personal_many(
        (entry.customer_id, "draw.result", {"entry": body})
        for entry, body in zip(entries, bodies, strict=True)
    )
