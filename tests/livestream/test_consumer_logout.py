"""A websocket's rights end when its user logs out: by session or by revoking tokens."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from rest_framework.test import APIClient

from livestream import broadcast, consumers
from livestream.hub import get_hub
from tests.livestream.test_consumers import (
    OUR_ORIGIN,
    _fresh_hub,  # noqa: F401 (autouse fixture)
    make_stream,
    make_token,
    receive_close,
    viewer,
)

pytestmark = pytest.mark.django_db(transaction=True)

PERSONAL = '{"type":"reservation.updated","reservation":{"id":7}}'


async def _tell(user) -> None:
    broadcast.send_personal(user.pk, "reservation.updated", reservation={"id": 7})


async def _personal_events(communicator, *, within: float = 0.5) -> list[dict]:
    """The personal events the socket gets in that time (stream events skipped)."""
    got = []
    while not await communicator.receive_nothing(timeout=within):
        message = await communicator.receive_json_from()
        if message["type"] == "reservation.updated":
            got.append(message)
    return got


@database_sync_to_async
def _api_logout(key: str) -> int:
    return APIClient(HTTP_AUTHORIZATION=f"Token {key}").post("/api/auth/logout/").status_code


@database_sync_to_async
def _signed_in_browser(user) -> tuple[Client, list]:
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    return browser, [OUR_ORIGIN, (b"cookie", cookie)]


async def test_revoking_the_token_closes_the_hosts_socket_4001_and_its_rights_end():
    stream, host, _ = await make_stream()
    _, host_key = await make_token(host)
    someone, someone_key = await make_token()

    async with (
        viewer(stream.slug, query=f"?token={host_key}") as (hosting, _),
        viewer(stream.slug, query=f"?token={someone_key}") as (watching, _),
    ):
        assert [c.scope["user"].pk for c in get_hub().local_hosts(stream.pk)] == [host.pk]

        assert await _api_logout(host_key) == 204

        assert await receive_close(hosting) == consumers.CLOSE_LOGGED_OUT
        assert get_hub().local_hosts(stream.pk) == []
        # Another user's socket is untouched, personal events included.
        await _tell(someone)
        assert await _personal_events(watching) == [json.loads(PERSONAL)]

    # Reconnecting with the revoked token: an anonymous viewer, no host, nothing personal.
    async with viewer(stream.slug, query=f"?token={host_key}") as (again, state):
        assert state["stream"]["slug"] == stream.slug
        [connection] = get_hub()._streams[stream.pk].connections
        assert (connection.scope["user"].is_authenticated, connection.is_host) == (False, False)
        await _tell(host)
        assert await _personal_events(again) == []


async def test_a_session_logout_closes_the_users_sockets_and_a_reconnect_is_anonymous():
    stream, host, _ = await make_stream()
    browser, headers = await _signed_in_browser(host)

    async with viewer(stream.slug, headers=headers) as (hosting, _):
        assert [c.scope["user"].pk for c in get_hub().local_hosts(stream.pk)] == [host.pk]

        signed_out = await database_sync_to_async(browser.post)("/accounts/logout/")

        assert signed_out.status_code == 200
        assert await receive_close(hosting) == consumers.CLOSE_LOGGED_OUT
        assert get_hub().local_hosts(stream.pk) == []

    async with viewer(stream.slug, headers=headers) as (again, _):
        [connection] = get_hub()._streams[stream.pk].connections
        assert (connection.scope["user"].is_authenticated, connection.is_host) == (False, False)
        await _tell(host)
        assert await _personal_events(again) == []


@database_sync_to_async
def _change_password(user) -> None:
    user.set_password("a-new-password-for-the-test")
    user.save(update_fields=["password"])


async def test_a_session_from_before_a_password_change_watches_as_anonymous():
    """As Django's own check: a session whose auth hash no longer matches the user's
    signs nobody in, so a changed password ends the browser's old sessions here too."""
    stream, host, _ = await make_stream()
    _, headers = await _signed_in_browser(host)
    async with viewer(stream.slug, headers=headers):
        [connection] = get_hub()._streams[stream.pk].connections
        assert (connection.scope["user"].pk, connection.is_host) == (host.pk, True)

    await _change_password(host)

    async with viewer(stream.slug, headers=headers):
        [connection] = get_hub()._streams[stream.pk].connections
        assert (connection.scope["user"].is_authenticated, connection.is_host) == (False, False)


async def test_a_logout_reaches_every_socket_of_the_user_and_no_one_elses():
    stream, _, _ = await make_stream()
    user, key = await make_token()
    other, other_key = await make_token()
    # The same user on a second device, signed in by session.
    _, headers = await _signed_in_browser(user)

    async with (
        viewer(stream.slug, query=f"?token={key}") as (phone, _),
        viewer(stream.slug, headers=headers) as (laptop, _),
        viewer(stream.slug, query=f"?token={other_key}") as (bystander, _),
    ):
        assert await _api_logout(key) == 204

        assert await receive_close(phone) == consumers.CLOSE_LOGGED_OUT
        assert await receive_close(laptop) == consumers.CLOSE_LOGGED_OUT
        await _tell(other)
        assert await _personal_events(bystander) == [json.loads(PERSONAL)]
