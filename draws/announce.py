"""What each draw event says, sent through livestream's broadcast (numbered in the
stream's ``seq``; the entrants' results personal). The opening, the close and the results
are built inside the transaction that made them, after its last write, and sent once it
commits; the coalesced entry count reads the count at send time (it only grows, and the
viewer page keeps the highest it saw)."""

from __future__ import annotations

from collections.abc import Hashable

from draws.models import Draw, Entry
from draws.selectors import entries_so_far, entry_bodies
from livestream import broadcast
from livestream.selectors import iso_time


def draw_opened(draw: Draw) -> None:
    fields = {
        "drop": draw.drop_id,
        "entries_close_at": iso_time(draw.entries_close_at),
        "seed_commitment": draw.seed_commitment,
    }
    broadcast.on_commit(lambda: broadcast.publish(draw.drop.stream_id, "draw.opened", **fields))


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


def draw_drawn(draw: Draw, entries: list[Entry]) -> None:
    """``draw.closed`` for the stream, then each entrant's own ``draw.result`` (one
    pipelined round trip to Redis for all); ``entries`` as the draw left them, with
    their holds and places in line."""
    closed = {
        "drop": draw.drop_id,
        "seed": draw.seed,
        "winners": len(draw.winners),
        "entries": draw.entry_count,
    }
    results = [
        (entry.customer_id, "draw.result", {"entry": body})
        for entry, body in zip(entries, entry_bodies(entries, drop_id=draw.drop_id), strict=True)
    ]

    def send() -> None:
        broadcast.publish(draw.drop.stream_id, "draw.closed", **closed)
        broadcast.send_personal_many(results)

    broadcast.on_commit(send)
