"""A drop's mode on livestream's side: a host creates a drop sold by draw with its entry
window, bad combinations are refused before anything is written, and a drop sold by
draw takes no reserves on any path."""

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from inventory.models import Allocation, Reservation, StockItem
from livestream.models import Drop, Stream
from tests.factories import UserFactory, stocked_variant

pytestmark = pytest.mark.django_db


def _client(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


@pytest.fixture
def host():
    user = UserFactory(username="drawhost")
    user.groups.add(Group.objects.get_or_create(name="hosts")[0])
    return user


@pytest.fixture
def live_stream(host):
    slug = (
        _client(host).post("/api/streams/", {"title": "Draw night"}, format="json").json()["slug"]
    )
    _client(host).post(f"/api/streams/{slug}/start/")
    return Stream.objects.get(slug=slug)


def _create(host, stream, **fields):
    variant = stocked_variant(on_hand=10)
    body = {"variant": variant.pk, "quantity": 3, "price": "25.00", **fields}
    return _client(host).post(f"/api/streams/{stream.slug}/drops/", body, format="json")


def test_a_drop_is_first_come_unless_asked(host, live_stream):
    response = _create(host, live_stream)

    assert response.status_code == 201
    body = response.json()
    assert body["mode"] == "first_come"
    assert "entries_close_at" not in body and "seed_commitment" not in body
    assert Drop.objects.get(pk=body["id"]).entry_seconds is None


def test_a_host_creates_a_drop_sold_by_draw(host, live_stream):
    response = _create(host, live_stream, mode="draw", entry_seconds=60, per_viewer_limit=2)

    assert response.status_code == 201
    body = response.json()
    assert (body["mode"], body["entry_seconds"]) == ("draw", 60)
    # Entries open at the pin: no close time and no commitment before it.
    assert (body["entries_close_at"], body["seed_commitment"]) == (None, None)
    drop = Drop.objects.get(pk=body["id"])
    assert (drop.mode, drop.entry_seconds) == ("draw", 60)
    assert drop.allocation.status == Allocation.Status.READY


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": "draw"}, "entry_seconds"),
        ({"mode": "draw", "entry_seconds": 9}, "entry_seconds"),
        ({"mode": "draw", "entry_seconds": 3601}, "entry_seconds"),
        ({"mode": "draw", "entry_seconds": "60"}, "entry_seconds"),
        ({"mode": "draw", "entry_seconds": 60.0}, "entry_seconds"),
        ({"mode": "first_come", "entry_seconds": 60}, "entry_seconds"),
        ({"entry_seconds": 60}, "entry_seconds"),
        ({"mode": "lottery", "entry_seconds": 60}, "mode"),
        ({"mode": None, "entry_seconds": 60}, "mode"),
        ({"mode": "draw", "entry_seconds": 60, "duration_seconds": 30}, "mode"),
        ({"mode": "draw", "entry_seconds": 60, "starts_at": "2030-01-01T12:00:00Z"}, "mode"),
    ],
)
def test_a_bad_mode_or_window_is_refused_and_nothing_is_written(host, live_stream, fields, field):
    response = _create(host, live_stream, **fields)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]
    assert not Drop.objects.exists()
    assert not Allocation.objects.exists()
    assert StockItem.objects.get().reserved == 0


def test_the_edges_of_the_entry_window_are_accepted(host, live_stream):
    assert _create(host, live_stream, mode="draw", entry_seconds=10).status_code == 201
    assert _create(host, live_stream, mode="draw", entry_seconds=3600).status_code == 201


def test_a_drop_sold_by_draw_takes_no_reserves(host, live_stream):
    drop_id = _create(host, live_stream, mode="draw", entry_seconds=60).json()["id"]
    buyer = UserFactory()

    for _ in range(2):  # the second answered from the routing cache
        response = _client(buyer).post(
            f"/api/drops/{drop_id}/reservations/",
            {"quantity": 1},
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"k-{_}",
        )
        assert response.status_code == 409
        assert response.json()["code"] == "drop_not_live"
    assert not Reservation.objects.exists()


def test_ops_cannot_open_a_draw_drop_first_come(host, live_stream):
    from inventory import services as inventory
    from inventory.exceptions import DropNotLive

    drop = Drop.objects.get(
        pk=_create(host, live_stream, mode="draw", entry_seconds=60).json()["id"]
    )

    with pytest.raises(DropNotLive):
        inventory.allocation_open_by_hand(allocation_id=drop.allocation_id, actor=host)
    assert Allocation.objects.get(pk=drop.allocation_id).status == Allocation.Status.READY
