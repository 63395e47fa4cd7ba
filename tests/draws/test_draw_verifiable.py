"""Anyone can check a draw: recomputed here from the revealed seed with this file's own
hashlib and hmac code (``tests.draws.helpers``, never ``draws.rule``), over many draws;
and over many draws with the same entrants, every entrant wins equally often."""

from __future__ import annotations

import random

import pytest
from rest_framework.test import APIClient

from draws import services
from draws.models import Entry
from inventory.models import Allocation, WaitlistEntry
from livestream.selectors import drop_snapshot, drops_for_snapshot
from tests.draws.helpers import commitment_of, draw_drop, expected_order, expected_winners
from tests.factories import UserFactory
from tests.inventory.invariants import assert_inventory_invariants

DRAWS = 20


def _public_draw(drop_id: int) -> dict:
    return APIClient().get(f"/api/drops/{drop_id}/draw/").json()


@pytest.mark.django_db(transaction=True)
def test_every_draw_recomputes_from_its_revealed_seed(gate_mode):
    rng = random.Random(20261203)
    viewers = [UserFactory() for _ in range(30)]
    for _ in range(DRAWS):
        units = rng.randint(1, 12)
        drop = draw_drop(quantity=units, per_viewer_limit=3)
        published = drop_snapshot(drop=drops_for_snapshot().get(pk=drop.pk))["seed_commitment"]
        entrants = rng.sample(viewers, rng.randint(1, len(viewers)))
        asked = {}
        for viewer in entrants:
            entry, created = services.entry_submit(
                drop_id=drop.pk, customer_id=viewer.pk, quantity=rng.randint(1, 3)
            )
            assert created
            asked[entry.pk] = entry.quantity
        services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)

        body = _public_draw(drop.pk)
        seed = body["seed"]
        assert body["seed_commitment"] == published == commitment_of(seed)
        assert {e["id"]: e["quantity"] for e in body["entry_list"]} == asked
        assert body["units"] == units
        assert body["winners"] == expected_winners(seed, asked, units)

        rows = list(Entry.objects.filter(draw__drop=drop))
        assert len({row.customer_id for row in rows}) == len(rows) == len(entrants)
        close = rows[0].draw.entries_close_at
        assert all(row.entered_at < close for row in rows)
        ranks = {row.pk: row.rank for row in rows}
        assert sorted(ranks, key=ranks.get) == expected_order(seed, asked)
        for row in rows:
            if row.pk in body["winners"]:
                assert row.status == "won"
                assert (row.reservation.quantity, row.reservation.status) == (row.quantity, "held")
            else:
                assert row.status == "lost" and row.reservation_id is None
        # Losers stand in line in draw order.
        line = WaitlistEntry.objects.filter(allocation_id=drop.allocation_id).order_by("id")
        losers = [row for row in sorted(rows, key=lambda r: r.rank) if row.status == "lost"]
        assert [e.customer_id for e in line] == [row.customer_id for row in losers]
        allocation = Allocation.objects.get(pk=drop.allocation_id)
        if sum(asked.values()) >= units:
            # Units the winners could not take whole went to the head of the line.
            assert allocation.held == units
        else:
            assert allocation.held == sum(asked.values())
    assert_inventory_invariants()


# Fairness. Eight entrants enter every draw for two units, one unit each: each should
# win a quarter of the draws. Pearson's statistic over the eight win counts is compared
# with the chi-square distribution's critical value for 8 - 1 = 7 degrees of freedom at
# a 0.001 significance level (24.322, from the standard table; scipy is not a dependency
# of the project). Each count is Binomial(draws, 1/4), whose variance (3/4 of the
# expected count) is below the multinomial's, so the statistic runs a little below the
# chi-square law: the test errs towards never failing a fair draw, and a biased one
# still lands far past the critical value (the check of the check below).
FAIRNESS_DRAWS = 240
ENTRANTS, UNITS = 8, 2
CHI_SQUARE_7_DF_P_0_001 = 24.322


def _chi_square(counts: list[int], expected: float) -> float:
    return sum((count - expected) ** 2 / expected for count in counts)


@pytest.mark.django_db
def test_over_many_draws_each_entrant_wins_equally_often(gate_off):
    entrants = [UserFactory() for _ in range(ENTRANTS)]
    wins = dict.fromkeys((v.pk for v in entrants), 0)
    by_first_id = dict.fromkeys(wins, 0)  # a biased rule over the same draws
    for _ in range(FAIRNESS_DRAWS):
        drop = draw_drop(quantity=UNITS)
        entries = {}
        for viewer in entrants:
            entry, _ = services.entry_submit(drop_id=drop.pk, customer_id=viewer.pk, quantity=1)
            entries[entry.pk] = viewer.pk
        draw = services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)
        assert len(draw.winners) == UNITS
        for entry_id in draw.winners:
            wins[entries[entry_id]] += 1
        for entry_id in sorted(entries)[:UNITS]:
            by_first_id[entries[entry_id]] += 1

    expected = FAIRNESS_DRAWS * UNITS / ENTRANTS
    assert sum(wins.values()) == FAIRNESS_DRAWS * UNITS
    assert _chi_square(list(wins.values()), expected) < CHI_SQUARE_7_DF_P_0_001, wins
    # The test can fail: first come by entry id, on the same draws, is far past it.
    assert _chi_square(list(by_first_id.values()), expected) > CHI_SQUARE_7_DF_P_0_001
