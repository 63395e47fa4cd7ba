"""Entry rules on the real stack: a uvicorn server (its front door on), Redis presence
and PostgreSQL. Only the viewer's own socket on the stream counts toward the watch time:
entering before watching, or with someone else's (an anonymous) socket open, is refused;
watching long enough admits. A first-come drop with rules is never decided by the front
door: its buyers are checked first."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from rest_framework.authtoken.models import Token

from draws.models import Entry
from draws.services import entry_rules_set
from inventory.models import Reservation
from livestream import services as live
from tests.draws.helpers import draw_drop
from tests.factories import UserFactory, live_drop
from tests.processes import asgi_server, reserve_over_http

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.server]

MIN_WATCH = 2


def _enter(http: httpx.Client, drop_id: int, token: str) -> httpx.Response:
    return http.post(
        f"/api/drops/{drop_id}/entries/",
        json={"quantity": 1},
        headers={"Authorization": f"Token {token}"},
    )


def _reason(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("reason")


@pytest.mark.django_db(transaction=True)
def test_only_the_viewers_own_socket_watching_long_enough_lets_them_enter(gate_on):
    drop = draw_drop(quantity=3, pin=False)
    entry_rules_set(drop_id=drop.pk, actor=drop.stream.host, min_watch_seconds=MIN_WATCH)
    live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)
    watcher, lurker = UserFactory(), UserFactory()
    watcher_token = Token.objects.create(user=watcher).key
    lurker_token = Token.objects.create(user=lurker).key

    async def watch(server, query: str, then):
        url = f"{server.ws_url}/ws/streams/{drop.stream.slug}/{query}"
        async with websockets.connect(url, open_timeout=20) as ws:
            state = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
            assert state["type"] == "stream.state"
            return await asyncio.to_thread(then)

    with asgi_server() as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        never_watched = _enter(http, drop.pk, watcher_token)

        def while_both_watch():
            joined = time.monotonic()
            answers = [_enter(http, drop.pk, watcher_token), _enter(http, drop.pk, lurker_token)]
            time.sleep(max(0.0, joined + MIN_WATCH + 0.3 - time.monotonic()))
            answers += [_enter(http, drop.pk, watcher_token), _enter(http, drop.pk, lurker_token)]
            return answers

        async def both():
            # The watcher's socket is signed in; the lurker only keeps an anonymous one.
            return await watch(
                server,
                f"?token={watcher_token}",
                lambda: asyncio.run(watch(server, "", while_both_watch)),
            )

        too_soon, lurking, watched, still_lurking = asyncio.run(both())

    assert _reason(never_watched) == (409, "watch_too_short")
    assert never_watched.json()["watched_seconds"] == 0
    assert _reason(too_soon) == (409, "watch_too_short")
    assert _reason(lurking) == (409, "watch_too_short")
    assert watched.status_code == 201, watched.json()
    assert _reason(still_lurking) == (409, "watch_too_short")
    assert list(Entry.objects.values_list("customer_id", flat=True)) == [watcher.pk]


@pytest.mark.django_db(transaction=True)
def test_the_front_door_hands_a_first_come_drop_with_rules_to_its_checks(gate_on):
    drop = live_drop(quantity=3, pin=False)
    entry_rules_set(drop_id=drop.pk, actor=drop.stream.host, min_watch_seconds=MIN_WATCH)
    live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)
    buyer = UserFactory()
    token = Token.objects.create(user=buyer).key

    def reserve(server):
        return reserve_over_http(server, drop.pk, token)

    async def watch(server, then):
        url = f"{server.ws_url}/ws/streams/{drop.stream.slug}/?token={token}"
        async with websockets.connect(url, open_timeout=20) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), timeout=20))["type"]
            return await asyncio.to_thread(then)

    with asgi_server(FRONT_DOOR_ENABLED="true") as server:
        # The same plain request twice: the second would be the door's, were it allowed.
        before = [reserve(server), reserve(server)]

        def after_watching():
            time.sleep(MIN_WATCH + 0.3)
            return reserve(server)

        bought = asyncio.run(watch(server, after_watching))

    assert [_reason(r) for r in before] == [(409, "watch_too_short")] * 2
    assert bought.status_code == 202, bought.json()
    assert list(Reservation.objects.values_list("customer_id", flat=True)) == [buyer.pk]
