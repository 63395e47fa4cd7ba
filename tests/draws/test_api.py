"""The draws API: entering (each code and status), a viewer's entry before and after
the draw, the public draw with its commitment, and the seed kept secret until the draw."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from draws import services
from draws.models import Draw, Entry
from inventory.models import Reservation
from livestream import services as live
from tests.draws.helpers import commitment_of, draw_drop
from tests.factories import UserFactory, live_drop


def _client(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


def _enter(user, drop_id, body):
    return _client(user).post(f"/api/drops/{drop_id}/entries/", body, format="json")


@pytest.mark.django_db(transaction=True)
def test_a_viewer_enters_once_and_gets_the_same_entry_again(gate_mode):
    drop = draw_drop(quantity=2, per_viewer_limit=2)
    viewer = UserFactory()

    first = _enter(viewer, drop.pk, {"quantity": 2})
    again = _enter(viewer, drop.pk, {"quantity": 1})

    assert first.status_code == 201
    body = first.json()
    assert {k: body[k] for k in ("drop", "quantity", "status", "reservation", "waitlist")} == {
        "drop": drop.pk,
        "quantity": 2,
        "status": "entered",
        "reservation": None,
        "waitlist": None,
    }
    assert again.status_code == 200 and again.json() == body
    assert Entry.objects.get().pk == body["id"]
    mine = _client(viewer).get(f"/api/drops/{drop.pk}/entries/mine/")
    assert (mine.status_code, mine.json()) == (200, body)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"quantity": 0},
        {"quantity": 3},
        {"quantity": "1"},
        {"quantity": 1.0},
        {"quantity": None},
    ],
)
def test_a_bad_quantity_is_400_invalid_and_enters_no_one(gate_mode, body):
    drop = draw_drop(quantity=5, per_viewer_limit=2)

    response = _enter(UserFactory(), drop.pk, body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not Entry.objects.exists()


@pytest.mark.django_db
def test_without_a_limit_an_entry_may_ask_up_to_the_drops_quantity():
    drop = draw_drop(quantity=3)

    assert _enter(UserFactory(), drop.pk, {"quantity": 4}).status_code == 400
    assert _enter(UserFactory(), drop.pk, {"quantity": 3}).status_code == 201


@pytest.mark.django_db
def test_anonymous_viewers_cannot_enter():
    drop = draw_drop(quantity=2)

    response = _client().post(f"/api/drops/{drop.pk}/entries/", {"quantity": 1}, format="json")

    assert response.status_code == 401
    assert not Entry.objects.exists()
    assert _client().get(f"/api/drops/{drop.pk}/entries/mine/").status_code == 401


@pytest.mark.django_db
def test_entering_before_the_pin_or_a_first_come_drop_is_drop_not_live():
    unpinned = draw_drop(quantity=2, pin=False)
    first_come = live_drop(quantity=2)

    for drop in (unpinned, first_come):
        response = _enter(UserFactory(), drop.pk, {"quantity": 1})
        assert response.status_code == 409
        assert response.json()["code"] == "drop_not_live"
    assert not Entry.objects.exists()
    assert _enter(UserFactory(), 987_654, {"quantity": 1}).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_after_the_close_entries_are_closed_but_an_entrant_still_gets_theirs(gate_mode):
    drop = draw_drop(quantity=1)
    entrant = UserFactory()
    entered = _enter(entrant, drop.pk, {"quantity": 1}).json()
    services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)

    late = _enter(UserFactory(), drop.pk, {"quantity": 1})

    assert late.status_code == 409
    assert late.json()["code"] == "entries_closed"
    assert Entry.objects.count() == 1
    again = _enter(entrant, drop.pk, {"quantity": 1})
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["status"]) == (entered["id"], "won")


@pytest.mark.django_db(transaction=True)
def test_the_draw_then_shows_winners_offers_and_losers_places_in_line(gate_mode):
    drop = draw_drop(quantity=2)
    viewers = [UserFactory() for _ in range(5)]
    ids = {v.pk: _enter(v, drop.pk, {"quantity": 1}).json()["id"] for v in viewers}
    before = _client().get(f"/api/drops/{drop.pk}/draw/").json()
    assert (before["entries"], before["seed"], before["winners"]) == (5, None, [])

    services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)

    after = _client().get(f"/api/drops/{drop.pk}/draw/").json()
    assert after["mode"] == "draw" and after["status"] == "drawn"
    assert after["seed_commitment"] == before["seed_commitment"] == commitment_of(after["seed"])
    assert len(after["winners"]) == 2 and after["units"] == 2
    assert sorted(e["id"] for e in after["entry_list"]) == sorted(ids.values())
    places = []
    for viewer in viewers:
        mine = _client(viewer).get(f"/api/drops/{drop.pk}/entries/mine/").json()
        assert mine["id"] == ids[viewer.pk]
        if mine["id"] in after["winners"]:
            assert mine["status"] == "won" and mine["waitlist"] is None
            hold = mine["reservation"]
            assert (hold["status"], hold["quantity"], hold["drop"]) == ("held", 1, drop.pk)
            # The offer is the viewer's hold, as the reservations API shows it.
            listed = _client(viewer).get(f"/api/reservations/{hold['id']}/").json()
            assert listed == hold
        else:
            assert mine["status"] == "lost" and mine["reservation"] is None
            places.append((mine["rank"], mine["waitlist"]["position"]))
    # Losers stand in line in draw order.
    assert [position for _, position in sorted(places)] == [1, 2, 3]


@pytest.mark.django_db
def test_a_winner_checks_out_their_offer_like_any_hold():
    drop = draw_drop(quantity=1)
    winner = UserFactory()
    _enter(winner, drop.pk, {"quantity": 1})
    services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)
    hold = _client(winner).get(f"/api/drops/{drop.pk}/entries/mine/").json()["reservation"]

    order = _client(winner).post(f"/api/reservations/{hold['id']}/checkout/", format="json")

    assert order.status_code == 201, order.json()
    assert Reservation.objects.get(pk=hold["id"]).status in ("held", "confirmed")


@pytest.mark.django_db
def test_a_viewer_who_did_not_enter_has_no_entry():
    drop = draw_drop(quantity=1)

    response = _client(UserFactory()).get(f"/api/drops/{drop.pk}/entries/mine/")

    assert response.status_code == 404


@pytest.mark.django_db
def test_the_pin_publishes_the_commitment_and_the_close_never_the_seed(
    django_capture_on_commit_callbacks,
):
    drop = draw_drop(quantity=2, pin=False, entry_seconds=90)
    host = drop.stream.host

    with django_capture_on_commit_callbacks(execute=True):
        pinned = _client(host).post(f"/api/drops/{drop.pk}/pin/")

    draw = Draw.objects.get(drop=drop)
    body = pinned.json()
    assert body["seed_commitment"] == commitment_of(draw.seed)
    assert (draw.entries_close_at - draw.entries_opened_at).total_seconds() == 90
    assert body["entries_close_at"] == draw.entries_close_at.isoformat().replace("+00:00", "Z")
    # Nowhere before the draw: the pin, the stream, the public draw.
    public = [
        pinned.content,
        _client().get(f"/api/streams/{drop.stream.slug}/").content,
        _client().get(f"/api/drops/{drop.pk}/draw/").content,
    ]
    for content in public:
        assert draw.seed.encode() not in content
    assert json.loads(public[2])["seed"] is None
    # Pinning again keeps the draw it has.
    live.drop_unpin(drop_id=drop.pk, actor=host)
    repinned = _client(host).post(f"/api/drops/{drop.pk}/pin/").json()
    assert repinned["seed_commitment"] == body["seed_commitment"]
    assert Draw.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_ending_the_stream_draws_a_draw_still_taking_entries(gate_mode):
    drop = draw_drop(quantity=1)
    viewers = [UserFactory() for _ in range(3)]
    for viewer in viewers:
        assert _enter(viewer, drop.pk, {"quantity": 1}).status_code == 201

    live.stream_end(stream_id=drop.stream_id, actor=drop.stream.host)

    draw = Draw.objects.get(drop=drop)
    assert draw.status == "drawn" and len(draw.winners) == 1
    winner = Entry.objects.get(pk=draw.winners[0])
    assert (winner.status, winner.reservation.status) == ("won", "held")
    # The sale ended: the losers' line closed with it, and nothing else stays carved.
    losers = Entry.objects.exclude(pk=winner.pk)
    assert {e.status for e in losers} == {"lost"}
    assert {e.waitlist_entry.status for e in losers} == {"closed"}
    allocation = drop.allocation
    allocation.refresh_from_db()
    assert (allocation.status, allocation.quantity, allocation.held) == ("closed", 1, 1)
    late = _enter(UserFactory(), drop.pk, {"quantity": 1})
    assert (late.status_code, late.json()["code"]) == (409, "entries_closed")
