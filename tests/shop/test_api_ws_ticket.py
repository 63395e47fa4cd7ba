"""``POST /api/auth/ws-ticket/``: a single-use, short-lived ticket for the websocket."""

import threading
import time

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.api import authentication
from core.api.authentication import ws_ticket_redeem
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _token_client(user) -> tuple[APIClient, str]:
    key = Token.objects.create(user=user).key
    return APIClient(HTTP_AUTHORIZATION=f"Token {key}"), key


def test_a_signed_in_user_gets_a_ticket_that_works_once():
    user = UserFactory()
    api, key = _token_client(user)

    response = api.post("/api/auth/ws-ticket/")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    assert body["expires_in"] == 30
    assert len(body["ticket"]) >= 40 and key not in body["ticket"]
    assert ws_ticket_redeem(body["ticket"]).pk == user.pk
    assert ws_ticket_redeem(body["ticket"]) is None  # used up


def test_each_call_makes_a_new_ticket():
    api, _ = _token_client(UserFactory())

    tickets = {api.post("/api/auth/ws-ticket/").json()["ticket"] for _ in range(3)}

    assert len(tickets) == 3


def test_anonymous_gets_no_ticket():
    response = APIClient().post("/api/auth/ws-ticket/")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_a_ticket_expires(monkeypatch):
    monkeypatch.setattr(authentication, "WS_TICKET_SECONDS", 1)
    api, _ = _token_client(UserFactory())
    ticket = api.post("/api/auth/ws-ticket/").json()["ticket"]

    time.sleep(1.5)

    assert ws_ticket_redeem(ticket) is None


def test_a_ticket_of_a_revoked_token_is_worthless():
    api, _ = _token_client(UserFactory())
    ticket = api.post("/api/auth/ws-ticket/").json()["ticket"]

    assert api.post("/api/auth/logout/").status_code == 204

    assert ws_ticket_redeem(ticket) is None


def test_a_session_ticket_holds_while_the_session_does():
    user = UserFactory()
    browser = Client()
    browser.force_login(user)
    kept = browser.post("/api/auth/ws-ticket/").json()["ticket"]
    ended = browser.post("/api/auth/ws-ticket/").json()["ticket"]
    assert ws_ticket_redeem(kept).pk == user.pk

    browser.post("/accounts/logout/")

    assert ws_ticket_redeem(ended) is None


def test_unknown_and_odd_tickets_are_nobody():
    assert ws_ticket_redeem("no-such-ticket") is None
    assert ws_ticket_redeem("") is None


@pytest.mark.postgres
@pytest.mark.redis
def test_two_racing_redemptions_of_one_ticket_admit_one():
    user = UserFactory()
    api, _ = _token_client(user)
    ticket = api.post("/api/auth/ws-ticket/").json()["ticket"]
    barrier = threading.Barrier(8)
    results = []

    def redeem():
        barrier.wait(5)
        results.append(ws_ticket_redeem(ticket))

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted((r.pk if r else 0) for r in results) == [0] * 7 + [user.pk]
