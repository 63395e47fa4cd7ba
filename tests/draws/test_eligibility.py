"""Entry rules set by the host: each refuses and admits exactly at its threshold
(account age, watch time, entries per client address, the challenge), a refusal is 409
``not_eligible`` with its ``reason`` and writes nothing, and the challenge provider's
failure is a clear 503. Rules are fixed once entries open."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from core.redis import get_redis
from draws import selectors
from draws.models import Entry
from inventory.models import Reservation
from livestream import presence
from livestream import selectors as live_selectors
from livestream import services as live
from tests.draws.helpers import draw_drop
from tests.factories import UserFactory, live_drop


def _client(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


def _enter(user, drop_id, address="10.0.0.1", **body):
    return _client(user).post(
        f"/api/drops/{drop_id}/entries/",
        {"quantity": 1, **body},
        format="json",
        REMOTE_ADDR=address,
    )


def _rules_drop(**rules):
    drop = draw_drop(quantity=5, pin=False)
    response = _client(drop.stream.host).put(
        f"/api/drops/{drop.pk}/entry-rules/", rules, format="json"
    )
    assert response.status_code == 200, response.json()
    return live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)


def _aged(seconds: float):
    user = UserFactory()
    joined = timezone.now() - timedelta(seconds=seconds)
    get_user_model().objects.filter(pk=user.pk).update(date_joined=joined)
    return user


def _refused(response, reason: str) -> None:
    assert response.status_code == 409, response.json()
    assert (response.json()["code"], response.json()["reason"]) == ("not_eligible", reason)


@pytest.mark.django_db
def test_an_account_is_admitted_from_the_minimum_age_and_refused_below_it():
    drop = _rules_drop(min_account_age_seconds=3600)

    _refused(_enter(_aged(3599), drop.pk), "account_too_new")
    assert not Entry.objects.exists()
    assert _enter(_aged(3600), drop.pk).status_code == 201
    assert _enter(_aged(86400), drop.pk).status_code == 201
    assert Entry.objects.count() == 2


@pytest.mark.parametrize("presence_mode", ["local", pytest.param("redis", marks=pytest.mark.redis)])
@pytest.mark.django_db
def test_a_viewer_enters_from_the_minimum_watch_time_and_not_a_second_before(
    presence_mode, settings, presence_clock
):
    if presence_mode == "local":
        settings.REDIS_URL = ""
    settings.PRESENCE_TTL_SECONDS = 30
    drop = _rules_drop(min_watch_seconds=60)
    stream_id = drop.stream_id
    if presence_mode == "redis":
        get_redis().delete(*presence.watch_keys(stream_id))
    viewer, late, never = UserFactory(), UserFactory(), UserFactory()
    heartbeat = async_to_sync(presence.presence_heartbeat)

    # The viewer's socket joins, then the hub's heartbeats see it every 25 s.
    async_to_sync(presence.presence_add)(stream_id, ["v1"], watchers=[viewer.pk])
    for _ in range(2):
        presence_clock.now += 25
        heartbeat(stream_id, ["v1"], watchers=[viewer.pk])
    async_to_sync(presence.presence_add)(stream_id, ["l1"], watchers=[late.pk])
    presence_clock.now += 9  # the viewer has watched 59 s, the late one 9 s

    refused = _enter(viewer, drop.pk)
    _refused(refused, "watch_too_short")
    assert (refused.json()["min_watch_seconds"], refused.json()["watched_seconds"]) == (60, 59)
    _refused(_enter(never, drop.pk), "watch_too_short")
    assert not Entry.objects.exists()

    presence_clock.now += 1  # 60 s
    assert _enter(viewer, drop.pk).status_code == 201
    _refused(_enter(late, drop.pk), "watch_too_short")
    # A break longer than the presence TTL starts the watch again.
    presence_clock.now += 31
    async_to_sync(presence.presence_add)(stream_id, ["l2"], watchers=[late.pk])
    presence_clock.now += 59
    _refused(_enter(late, drop.pk), "watch_too_short")
    assert list(Entry.objects.values_list("customer_id", flat=True)) == [viewer.pk]


@pytest.mark.django_db(transaction=True)
def test_an_address_enters_up_to_its_cap_and_no_further(gate_mode):
    drop = _rules_drop(max_entries_per_address=2)
    refused = UserFactory()

    assert _enter(UserFactory(), drop.pk, "10.0.0.1").status_code == 201
    assert _enter(UserFactory(), drop.pk, "10.0.0.1").status_code == 201
    _refused(_enter(refused, drop.pk, "10.0.0.1"), "address_cap")
    assert _enter(UserFactory(), drop.pk, "10.0.0.2").status_code == 201
    assert _enter(refused, drop.pk, "10.0.0.3").status_code == 201

    rows = Entry.objects.values_list("client_address", flat=True)
    assert sorted(rows) == ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"]


@pytest.mark.django_db
def test_the_challenge_refuses_a_missing_or_failed_token_and_admits_a_passed_one(settings):
    settings.DRAW_CHALLENGE_PROVIDER = "draws.challenge.TestChallengeProvider"
    drop = _rules_drop(challenge_required=True)
    viewer = UserFactory()

    _refused(_enter(viewer, drop.pk), "challenge_required")
    _refused(_enter(viewer, drop.pk, challenge_token="nope"), "challenge_failed")
    unavailable = _enter(viewer, drop.pk, challenge_token="unavailable")
    assert unavailable.status_code == 503
    assert unavailable.json()["code"] == "challenge_unavailable"
    assert not Entry.objects.exists()

    assert _enter(viewer, drop.pk, challenge_token="pass").status_code == 201
    # An entrant sending again without a fresh token still gets their entry.
    assert _enter(viewer, drop.pk).status_code == 200
    assert Entry.objects.count() == 1


@pytest.mark.django_db
def test_without_rules_anyone_signed_in_enters():
    drop = draw_drop(quantity=1)

    assert _enter(_aged(0), drop.pk).status_code == 201
    rules = _client().get(f"/api/drops/{drop.pk}/entry-rules/").json()
    assert rules == {
        "min_account_age_seconds": None,
        "min_watch_seconds": None,
        "max_entries_per_address": None,
        "challenge_required": False,
    }


@pytest.mark.django_db
def test_only_the_host_sets_rules_and_only_before_entries_open():
    drop = draw_drop(quantity=1, pin=False)
    path = f"/api/drops/{drop.pk}/entry-rules/"
    rules = {"min_account_age_seconds": 60}

    assert _client(UserFactory()).put(path, rules, format="json").status_code == 403
    assert _client().put(path, rules, format="json").status_code == 401
    for bad_rules in (
        {"min_account_age_seconds": 0},
        {"min_watch_seconds": 0},
        {"min_watch_seconds": 24 * 3600 + 1},
        {"min_watch_seconds": "60"},
        {"challenge_required": 0},
        {"challenge_required": "yes"},
    ):
        bad = _client(drop.stream.host).put(path, bad_rules, format="json")
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid"), bad_rules
    assert _client(drop.stream.host).put(path, rules, format="json").status_code == 200
    assert _client().get(path).json()["min_account_age_seconds"] == 60

    live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)
    fixed = _client(drop.stream.host).put(path, {}, format="json")
    assert (fixed.status_code, fixed.json()["code"]) == (409, "rules_fixed")
    assert _client().get(path).json()["min_account_age_seconds"] == 60

    assert _client().get("/api/drops/987654/entry-rules/").status_code == 404


# --- a first-come drop's buyers pass the same rules ---------------------------------------


def _reserve(user, drop_id, address="10.0.0.1", key="k", **body):
    return _client(user).post(
        f"/api/drops/{drop_id}/reservations/",
        {"quantity": 1, **body},
        format="json",
        REMOTE_ADDR=address,
        HTTP_IDEMPOTENCY_KEY=key,
    )


def _first_come_with_rules(quantity=10, **rules):
    drop = live_drop(quantity=quantity, pin=False)
    host = drop.stream.host
    response = _client(host).put(f"/api/drops/{drop.pk}/entry-rules/", rules, format="json")
    assert response.status_code == 200, response.json()
    return live.drop_pin(drop_id=drop.pk, actor=host)


@pytest.mark.django_db(transaction=True)
def test_a_first_come_drops_buyers_pass_its_account_age_and_address_cap(gate_mode):
    drop = _first_come_with_rules(min_account_age_seconds=3600, max_entries_per_address=2)
    first, second, third = _aged(3600), _aged(7200), _aged(3600)

    _refused(_reserve(_aged(3599), drop.pk), "account_too_new")
    assert _reserve(first, drop.pk, key="a").status_code == 202
    assert _reserve(second, drop.pk, key="b").status_code == 202
    _refused(_reserve(third, drop.pk, key="c"), "address_cap")
    # An account counted at the address buys again from it; another address is its own.
    assert _reserve(first, drop.pk, key="d").status_code == 202
    assert _reserve(third, drop.pk, "10.0.0.2", key="e").status_code == 202

    buyers = Reservation.objects.values_list("customer_id", flat=True)
    assert sorted(buyers) == sorted([first.pk, second.pk, first.pk, third.pk])
    refusals = selectors.refusals_of_drop(drop_id=drop.pk)
    assert refusals == {"account_too_new": 1, "address_cap": 1}


@pytest.mark.django_db
def test_a_first_come_drop_asks_for_the_challenge_and_without_rules_stays_at_the_door(settings):
    settings.DRAW_CHALLENGE_PROVIDER = "draws.challenge.TestChallengeProvider"
    drop = _first_come_with_rules(challenge_required=True)
    buyer = UserFactory()

    _refused(_reserve(buyer, drop.pk, key="a"), "challenge_required")
    _refused(_reserve(buyer, drop.pk, key="b", challenge_token="nope"), "challenge_failed")
    unavailable = _reserve(buyer, drop.pk, key="c", challenge_token="unavailable")
    assert (unavailable.status_code, unavailable.json()["code"]) == (503, "challenge_unavailable")
    assert not Reservation.objects.exists()
    assert _reserve(buyer, drop.pk, key="d", challenge_token="pass").status_code == 202
    assert Reservation.objects.count() == 1
    assert live_selectors.drop_routing(drop.pk).buyer_rules is True

    plain = live_drop(quantity=1)
    assert live_selectors.drop_routing(plain.pk).buyer_rules is False


@pytest.mark.django_db
def test_a_first_come_drops_rules_are_fixed_once_it_went_on_sale():
    pinned = live_drop(quantity=1)
    fixed = _client(pinned.stream.host).put(
        f"/api/drops/{pinned.pk}/entry-rules/", {"min_watch_seconds": 5}, format="json"
    )
    assert (fixed.status_code, fixed.json()["code"]) == (409, "rules_fixed")

    drop = live_drop(quantity=1, pin=False)
    path = f"/api/drops/{drop.pk}/entry-rules/"
    assert (
        _client(drop.stream.host).put(path, {"min_watch_seconds": 5}, format="json").status_code
        == 200
    )
    assert live_selectors.drop_routing(drop.pk).buyer_rules is True
    # Every rule off again: the drop goes back to the front door.
    assert _client(drop.stream.host).put(path, {}, format="json").status_code == 200
    assert live_selectors.drop_routing(drop.pk).buyer_rules is False
