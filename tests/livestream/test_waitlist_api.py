"""The waitlist over HTTP: queue for a sold-out drop, see your place, leave; clear errors
for everything else; and the viewer's own ``waitlist.updated`` events."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from inventory import services as inventory
from inventory.models import Reservation, WaitlistEntry
from livestream import broadcast, selectors, services
from tests.factories import UserFactory, live_drop

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_routing_cache():
    selectors.drop_routing_cache_clear()
    yield
    selectors.drop_routing_cache_clear()


@pytest.fixture
def drop(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return live_drop(quantity=1, on_hand=3, per_viewer_limit=1, price=Decimal("7.00"))


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _sell_out(drop, capture) -> Reservation:
    with capture(execute=True):
        return services.drop_reserve(
            drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1, idempotency_key="all"
        )


def test_queueing_seeing_and_leaving(drop, django_capture_on_commit_callbacks):
    viewer = UserFactory()
    client = _client(viewer)
    url = f"/api/drops/{drop.pk}/waitlist/"

    early = client.post(url, {}, format="json")
    _sell_out(drop, django_capture_on_commit_callbacks)
    joined = client.post(url, {}, format="json")
    again = client.post(url, {"quantity": 1}, format="json")
    seen = client.get(url)
    left = client.delete(url)
    after = client.get(url)
    left_again = client.delete(url)

    assert (early.status_code, early.json()["code"]) == (409, "not_sold_out")
    assert joined.status_code == 201, joined.json()
    body = joined.json()
    assert {k: body[k] for k in ("drop", "status", "position", "quantity", "reservation")} == {
        "drop": drop.pk,
        "status": "waiting",
        "position": 1,
        "quantity": 1,
        "reservation": None,
    }
    assert (again.status_code, again.json()["id"]) == (200, body["id"])
    assert seen.json()["position"] == 1
    assert left.status_code == 204
    assert (after.json()["status"], after.json()["position"]) == ("left", None)
    assert (left_again.status_code, left_again.json()["code"]) == (404, "not_on_waitlist")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"quantity": 0}, 400, "invalid"),
        ({"quantity": "1"}, 400, "invalid"),
        ({"quantity": 2}, 409, "limit_reached"),
    ],
)
def test_bad_requests_get_clear_errors_and_write_nothing(
    drop, django_capture_on_commit_callbacks, body, status, code
):
    _sell_out(drop, django_capture_on_commit_callbacks)

    answer = _client(UserFactory()).post(f"/api/drops/{drop.pk}/waitlist/", body, format="json")

    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert not WaitlistEntry.objects.exists()


def test_strangers_and_unknown_drops(drop):
    assert _client().post(f"/api/drops/{drop.pk}/waitlist/", {}, format="json").status_code == 401
    missing = _client(UserFactory()).get("/api/drops/987654/waitlist/")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    never = _client(UserFactory()).get(f"/api/drops/{drop.pk}/waitlist/")
    assert (never.status_code, never.json()["code"]) == (404, "not_on_waitlist")


def test_the_viewer_hears_their_place_and_their_offer(
    drop, django_capture_on_commit_callbacks, monkeypatch
):
    capture = django_capture_on_commit_callbacks
    sent: list[tuple[int, str, dict]] = []
    # Every personal event goes through send_personal_many, a reservation's by version.
    monkeypatch.setattr(broadcast, "send_personal_many", lambda events: sent.extend(events))
    monkeypatch.setattr(
        broadcast,
        "send_personal_versioned",
        lambda events: sent.extend((e.user_id, e.event_type, e.fields) for e in events),
    )
    hold = _sell_out(drop, capture)
    first, second = UserFactory(), UserFactory()
    with capture(execute=True):
        services.drop_waitlist_join(drop_id=drop.pk, customer_id=first.pk)
        services.drop_waitlist_join(drop_id=drop.pk, customer_id=second.pk)
    sent.clear()

    with capture(execute=True):
        inventory.reservation_release(reservation_id=hold.pk)

    offer = Reservation.objects.get(customer=first)
    places = {
        (user, fields["waitlist"]["status"], fields["waitlist"]["position"])
        for user, kind, fields in sent
        if kind == "waitlist.updated"
    }
    assert (first.pk, "offered", None) in places
    assert (second.pk, "waiting", 1) in places
    offered = next(
        fields["waitlist"]
        for user, kind, fields in sent
        if kind == "waitlist.updated" and user == first.pk
    )
    assert offered["reservation"] == offer.pk and offered["drop"] == drop.pk
    # The offer itself arrives like any hold.
    assert any(user == first.pk and kind == "reservation.updated" for user, kind, _ in sent)
