"""Draw drops for the tests, made through the services as a host would, and the draw
rule of the public contract written out again here, independently of the product's code
(``draws.rule`` is never called by the checks)."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

from draws.models import Draw, Entry
from inventory.models import Allocation, WaitlistEntry
from livestream import services as live
from tests.factories import host_user, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants


def draw_drop(
    *,
    quantity: int,
    per_viewer_limit: int | None = None,
    entry_seconds: int = 60,
    pin: bool = True,
    price: Decimal = Decimal("49.00"),
):
    """A drop sold by draw on a live stream (its host: ``drop.stream.host``); pinned, so
    taking entries, unless ``pin`` is False."""
    host = host_user()
    stream = live.stream_create(host=host, title="Sneaker draw")
    live.stream_start(stream_id=stream.pk, actor=host)
    variant = stocked_variant(on_hand=quantity + 5)
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=quantity,
        price=price,
        per_viewer_limit=per_viewer_limit,
        mode="draw",
        entry_seconds=entry_seconds,
        actor=host,
    )
    if pin:
        drop = live.drop_pin(drop_id=drop.pk, actor=host)
    return drop


# --- the contract's rule, from its text -----------------------------------------------


def commitment_of(seed: str) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()


def expected_order(seed: str, entry_ids) -> list[int]:
    def key(entry_id: int) -> str:
        return hmac.new(
            seed.encode("utf-8"), str(entry_id).encode("utf-8"), hashlib.sha256
        ).hexdigest()

    return sorted(entry_ids, key=key)


def expected_winners(seed: str, quantities: dict[int, int], units: int) -> list[int]:
    """Entry ids in draw order, each taking its quantity while it fits; an entry that
    no longer fits is skipped."""
    winners = []
    for entry_id in expected_order(seed, quantities):
        if quantities[entry_id] <= units:
            winners.append(entry_id)
            units -= quantities[entry_id]
    return winners


def assert_draw_follows_its_rows(draw: Draw, *, units: int) -> dict[int, Entry]:
    """A drawn draw against its entry rows, by the rule above: one entry per viewer,
    none after the close, the winners in the rule's order, the units held exactly the
    winners' (so never more than ``units``), the losers in the drop's line in draw
    order, and the inventory's invariants. Returns the rows by id."""
    rows = {row.pk: row for row in Entry.objects.filter(draw=draw)}
    assert len({row.customer_id for row in rows.values()}) == len(rows)
    assert all(row.entered_at < draw.entries_close_at for row in rows.values())
    assert draw.entry_count == len(rows)
    winners = expected_winners(draw.seed, {pk: row.quantity for pk, row in rows.items()}, units)
    assert draw.winners == winners
    allocation = Allocation.objects.get(pk=draw.drop.allocation_id)
    assert allocation.held == sum(rows[pk].quantity for pk in winners) <= units
    losers = sorted((r for r in rows.values() if r.status == "lost"), key=lambda r: r.rank)
    line = WaitlistEntry.objects.filter(allocation=allocation).order_by("id")
    assert [e.customer_id for e in line] == [r.customer_id for r in losers]
    assert_inventory_invariants()
    return rows
