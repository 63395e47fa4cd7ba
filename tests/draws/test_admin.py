"""The ops admin of draws: read-only, the commitment always and the seed only once
drawn; closing entries early draws at once."""

from __future__ import annotations

import pytest
from django.test import Client

from draws.models import Draw
from draws.services import entry_submit
from tests.draws.helpers import draw_drop
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_the_seed_shows_only_once_drawn_and_an_early_close_draws(ops):
    drop = draw_drop(quantity=1)
    draw = Draw.objects.get(drop=drop)
    entry_submit(drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1)
    pages = ["/admin/draws/draw/", f"/admin/draws/draw/{draw.pk}/change/", "/admin/draws/entry/"]

    for page in pages:
        response = ops.get(page)
        assert response.status_code == 200
        assert draw.seed.encode() not in response.content
    assert draw.seed_commitment.encode() in ops.get(pages[0]).content
    assert ops.get("/admin/draws/draw/add/").status_code == 403
    assert ops.get("/admin/draws/entryrules/").status_code == 200

    response = ops.post(
        "/admin/draws/draw/", {"action": "close_entries_now", "_selected_action": [draw.pk]}
    )

    assert response.status_code == 302
    draw.refresh_from_db()
    assert draw.status == "drawn" and len(draw.winners) == 1
    assert draw.seed.encode() in ops.get(pages[1]).content


def test_only_the_host_or_staff_close_entries_early():
    from draws.services import draw_close_early
    from livestream.exceptions import NotStreamHost

    drop = draw_drop(quantity=1)

    with pytest.raises(NotStreamHost):
        draw_close_early(drop_id=drop.pk, actor=UserFactory())
    assert Draw.objects.get(drop=drop).status == "open"


@pytest.mark.django_db(transaction=True)
def test_ops_see_refusals_by_reason_live_and_kept_by_the_draw_and_crowded_addresses(ops, gate_mode):
    from prometheus_client import REGISTRY

    from draws.exceptions import EntriesClosed, NotEligible
    from draws.services import draw_close_early, entry_rules_set
    from livestream import services as live

    def decided(outcome: str) -> float:
        name = "liveshop_draw_entry_decisions_total"
        return REGISTRY.get_sample_value(name, {"outcome": outcome}) or 0.0

    before = {o: decided(o) for o in ("entered", "again", "address_cap", "entries_closed")}
    drop = draw_drop(quantity=1, pin=False)
    host = drop.stream.host
    entry_rules_set(drop_id=drop.pk, actor=host, max_entries_per_address=3)
    live.drop_pin(drop_id=drop.pk, actor=host)
    draw = Draw.objects.get(drop=drop)
    page = f"/admin/draws/draw/{draw.pk}/change/"
    crowd = [UserFactory() for _ in range(3)]
    for viewer in crowd:
        entry_submit(drop_id=drop.pk, customer_id=viewer.pk, quantity=1, client_address="10.9.9.9")
    entry_submit(drop_id=drop.pk, customer_id=crowd[0].pk, quantity=1, client_address="10.9.9.9")
    entry_submit(
        drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1, client_address="10.1.1.1"
    )
    for _ in range(2):
        with pytest.raises(NotEligible):
            entry_submit(
                drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1, client_address="10.9.9.9"
            )

    live_page = ops.get(page).content.decode()
    assert "address_cap: 2" in live_page
    assert "10.9.9.9: 3 accounts" in live_page and "10.1.1.1" not in live_page

    draw_close_early(drop_id=drop.pk, actor=host)
    with pytest.raises(EntriesClosed):
        entry_submit(drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1)

    draw.refresh_from_db()
    assert draw.refusals == {"address_cap": 2}  # as it stood at the draw
    assert "address_cap: 2" in ops.get(page).content.decode()
    assert {o: decided(o) - before[o] for o in before} == {
        "entered": 4,
        "again": 1,
        "address_cap": 2,
        "entries_closed": 1,
    }
