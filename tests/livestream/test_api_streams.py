"""The host's HTTP interface: streams and drops."""

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from livestream.models import Drop, Stream
from tests.factories import UserFactory, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = pytest.mark.django_db


def _client(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


@pytest.fixture
def host():
    user = UserFactory(username="hostess")
    user.groups.add(Group.objects.get_or_create(name="hosts")[0])
    return user


@pytest.fixture
def live_stream(host):
    response = _client(host).post("/api/streams/", {"title": "Friday drop"}, format="json")
    slug = response.json()["slug"]
    _client(host).post(f"/api/streams/{slug}/start/")
    return Stream.objects.get(slug=slug)


def test_a_host_schedules_starts_and_ends_a_stream(host):
    api = _client(host)

    created = api.post(
        "/api/streams/",
        {"title": "Glow Friday", "playback_url": "https://video.example/live/1"},
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["slug"], body["status"], body["host"]) == ("glow-friday", "scheduled", "hostess")
    assert body["drops"] == [] and body["pinned_drop"] is None

    started = api.post("/api/streams/glow-friday/start/")
    assert (started.status_code, started.json()["status"]) == (200, "live")
    ended = api.post("/api/streams/glow-friday/end/")
    assert (ended.status_code, ended.json()["status"]) == (200, "ended")

    public = _client().get("/api/streams/glow-friday/")
    assert public.status_code == 200
    assert public.json()["status"] == "ended"
    assert [s["slug"] for s in _client().get("/api/streams/").json()["results"]] == ["glow-friday"]


def test_only_hosts_schedule_streams():
    response = _client(UserFactory()).post("/api/streams/", {"title": "x"}, format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not Stream.objects.exists()


def test_anonymous_users_cannot_control_anything(live_stream):
    anonymous = _client()

    assert anonymous.post("/api/streams/", {"title": "x"}, format="json").status_code == 401
    response = anonymous.post(f"/api/streams/{live_stream.slug}/end/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    live_stream.refresh_from_db()
    assert live_stream.status == "live"


def test_another_user_cannot_control_the_stream_but_staff_can(live_stream):
    stranger = _client(UserFactory())

    response = stranger.post(f"/api/streams/{live_stream.slug}/end/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    live_stream.refresh_from_db()
    assert live_stream.status == "live"

    staff = _client(UserFactory(is_staff=True))
    assert staff.post(f"/api/streams/{live_stream.slug}/end/").json()["status"] == "ended"


def test_the_host_creates_and_pins_drops(host, live_stream):
    variant = stocked_variant(on_hand=20)
    api = _client(host)

    created = api.post(
        f"/api/streams/{live_stream.slug}/drops/",
        {"variant": variant.pk, "quantity": 5, "price": "9.99", "per_viewer_limit": 2},
        format="json",
    )
    assert created.status_code == 201
    drop = created.json()
    assert {k: drop[k] for k in ("variant", "price", "quantity", "remaining", "sold")} == {
        "variant": variant.pk,
        "price": "9.99",
        "quantity": 5,
        "remaining": 5,
        "sold": 0,
    }
    assert (drop["per_viewer_limit"], drop["pinned"]) == (2, False)

    pinned = api.post(f"/api/drops/{drop['id']}/pin/")
    assert (pinned.status_code, pinned.json()["pinned"]) == (200, True)
    stream = _client().get(f"/api/streams/{live_stream.slug}/").json()
    assert stream["pinned_drop"]["id"] == drop["id"]

    unpinned = api.post(f"/api/drops/{drop['id']}/unpin/")
    assert (unpinned.status_code, unpinned.json()["pinned"]) == (200, False)
    assert_inventory_invariants()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quantity": 5, "price": "9.99"}, "variant"),
        ({"variant": "{v}", "quantity": 0, "price": "9.99"}, "quantity"),
        ({"variant": "{v}", "quantity": "5", "price": "9.99"}, "quantity"),
        ({"variant": "{v}", "quantity": 5.5, "price": "9.99"}, "quantity"),
        ({"variant": "{v}", "quantity": 5, "price": "-1"}, "price"),
        ({"variant": "{v}", "quantity": 5, "price": "9.999"}, "price"),
        ({"variant": "{v}", "quantity": 5, "price": "NaN"}, "price"),
        ({"variant": "{v}", "quantity": 5, "price": 9.99}, "price"),
        (
            {"variant": "{v}", "quantity": 5, "price": "9.99", "per_viewer_limit": 0},
            "per_viewer_limit",
        ),
    ],
)
def test_bad_drops_are_refused_and_nothing_is_carved(host, live_stream, body, field):
    variant = stocked_variant(on_hand=20)
    body = {k: (variant.pk if v == "{v}" else v) for k, v in body.items()}

    response = _client(host).post(f"/api/streams/{live_stream.slug}/drops/", body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not Drop.objects.exists()
    variant.stock.refresh_from_db()
    assert variant.stock.reserved == 0


def test_an_unknown_variant_is_a_404_and_a_taken_slug_a_409(host, live_stream):
    response = _client(host).post(
        f"/api/streams/{live_stream.slug}/drops/",
        {"variant": 999999, "quantity": 5, "price": "9.99"},
        format="json",
    )
    assert (response.status_code, response.json()["code"]) == (404, "not_found")

    taken = _client(host).post(
        "/api/streams/", {"title": "Again", "slug": live_stream.slug}, format="json"
    )
    assert (taken.status_code, taken.json()["code"]) == (409, "slug_taken")
    assert Stream.objects.count() == 1
    assert not Drop.objects.exists()


def test_a_drop_larger_than_free_stock_is_a_409(host, live_stream):
    variant = stocked_variant(on_hand=3)

    response = _client(host).post(
        f"/api/streams/{live_stream.slug}/drops/",
        {"variant": variant.pk, "quantity": 4, "price": "1.00"},
        format="json",
    )

    assert response.status_code == 409
    assert response.json()["code"] == "insufficient_stock"
    assert response.json()["available"] == 3
    assert not Drop.objects.exists()


def test_pinning_needs_a_live_stream(host):
    stream = _client(host).post("/api/streams/", {"title": "Later"}, format="json").json()
    variant = stocked_variant(on_hand=3)
    drop = _client(host).post(
        f"/api/streams/{stream['slug']}/drops/",
        {"variant": variant.pk, "quantity": 1, "price": "1.00"},
        format="json",
    )

    response = _client(host).post(f"/api/drops/{drop.json()['id']}/pin/")

    assert response.status_code == 409
    assert response.json()["code"] == "stream_not_live"
    assert not Drop.objects.filter(is_pinned=True).exists()
