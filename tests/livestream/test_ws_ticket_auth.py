"""The websocket signed in by ``?ticket=`` (one connection per ticket)."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from livestream import broadcast
from livestream.hub import get_hub
from tests.livestream.test_consumers import (
    _fresh_hub,  # noqa: F401 (autouse fixture)
    make_stream,
    make_token,
    viewer,
)

pytestmark = pytest.mark.django_db(transaction=True)

PERSONAL = '{"type":"reservation.updated","reservation":{"id":7}}'


@database_sync_to_async
def _ticket(key: str) -> str:
    response = APIClient(HTTP_AUTHORIZATION=f"Token {key}").post("/api/auth/ws-ticket/")
    assert response.status_code == 201
    return response.json()["ticket"]


async def _personal_events(communicator, *, within: float = 0.5) -> list[dict]:
    got = []
    while not await communicator.receive_nothing(timeout=within):
        message = await communicator.receive_json_from()
        if message["type"] == "reservation.updated":
            got.append(message)
    return got


async def _tell(user) -> None:
    broadcast.send_personal(user.pk, "reservation.updated", reservation={"id": 7})


async def test_a_ticket_signs_the_socket_in_as_its_user_and_as_the_host():
    stream, host, _ = await make_stream()
    _, key = await make_token(host)
    ticket = await _ticket(key)

    async with viewer(stream.slug, query=f"?ticket={ticket}") as (socket, _):
        [connection] = get_hub()._streams[stream.pk].connections
        assert (connection.scope["user"].pk, connection.is_host) == (host.pk, True)
        await _tell(host)
        assert await _personal_events(socket) == [json.loads(PERSONAL)]


async def test_a_ticket_used_twice_signs_in_only_the_first_socket():
    stream, host, _ = await make_stream()
    _, key = await make_token(host)
    ticket = await _ticket(key)

    async with viewer(stream.slug, query=f"?ticket={ticket}"):
        pass
    async with viewer(stream.slug, query=f"?ticket={ticket}") as (again, state):
        assert state["stream"]["slug"] == stream.slug  # still watches, as anonymous
        [connection] = get_hub()._streams[stream.pk].connections
        assert (connection.scope["user"].is_authenticated, connection.is_host) == (False, False)
        await _tell(host)
        assert await _personal_events(again) == []


async def test_a_bogus_ticket_watches_as_anonymous_even_beside_a_valid_token():
    stream, _, _ = await make_stream()
    _, key = await make_token()

    # The ticket is what was meant: a bad one is not rescued by a token beside it.
    async with viewer(stream.slug, query=f"?ticket=made-up&token={key}"):
        [connection] = get_hub()._streams[stream.pk].connections
        assert connection.scope["user"].is_authenticated is False
