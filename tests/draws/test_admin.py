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
