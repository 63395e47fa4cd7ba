"""The viewer's websocket, through the full websocket stack (origin check, session and
token auth, routing), with ``channels.testing.WebsocketCommunicator``."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
import redis
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from core.redis import close_async_redis
from livestream import broadcast, consumers, presence, services, topics
from livestream.hub import get_hub
from livestream.routing import websocket_urlpatterns
from livestream.selectors import stream_get, stream_snapshot
from livestream.ws_auth import websocket_stack
from tests.factories import UserFactory, stocked_variant

pytestmark = pytest.mark.django_db(transaction=True)

APPLICATION = websocket_stack(URLRouter(websocket_urlpatterns))
OUR_ORIGIN = (b"origin", b"http://localhost:8000")


# --- helpers (also used by test_hub and test_presence) ----------------------------------


@pytest.fixture(autouse=True)
async def _fresh_hub():
    """Each test runs on its own event loop: leave the hub and the loop's Redis client
    clean behind it."""
    yield
    await get_hub().aclose()
    if settings.REDIS_URL:
        await close_async_redis()


def _make_stream(*, title: str = "Launch", with_drop: bool = False):
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = services.stream_create(host=host, title=title)
    services.stream_start(stream_id=stream.pk, actor=host)
    drop = None
    if with_drop:
        drop = services.drop_create(
            stream_id=stream.pk,
            variant_id=stocked_variant(on_hand=10).pk,
            quantity=5,
            price=Decimal("9.00"),
            per_viewer_limit=2,
            actor=host,
        )
    return stream, host, drop


make_stream = database_sync_to_async(_make_stream)


@database_sync_to_async
def make_token(user=None) -> tuple[object, str]:
    user = user or UserFactory()
    return user, Token.objects.create(user=user).key


@asynccontextmanager
async def viewer(slug: str, *, query: str = "", headers=None, expect_state: bool = True):
    """A connected viewer; yields (communicator, its first stream.state or None)."""
    communicator = WebsocketCommunicator(
        APPLICATION,
        f"/ws/streams/{slug}/{query}",
        headers=[OUR_ORIGIN] if headers is None else headers,
    )
    connected, _ = await communicator.connect(timeout=5)
    try:
        assert connected
        state = None
        if expect_state:
            state = await communicator.receive_json_from(timeout=5)
            assert state["type"] == "stream.state"
        yield communicator, state
    finally:
        await communicator.disconnect(timeout=5)


async def receive_type(communicator, kind: str, *, timeout: float = 5) -> dict:
    """The next message of this type (other events, e.g. viewers.changed, skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await communicator.receive_json_from(timeout=max(deadline - loop.time(), 0.01))
        if message["type"] == kind:
            return message


async def receive_close(communicator, *, timeout: float = 5) -> int:
    """Skip sent texts until the server closes; return the close code."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        output = await communicator.receive_output(timeout=max(deadline - loop.time(), 0.01))
        if output["type"] == "websocket.close":
            return output.get("code")


def expected_state(stream_id: int, slug: str, *, viewers: int) -> dict:
    seq = broadcast.current_seq(stream_id)
    snapshot = stream_snapshot(stream=stream_get(slug=slug))
    snapshot.update(viewers=viewers, seq=seq)
    return json.loads(
        json.dumps({"type": "stream.state", "seq": seq, "stream": snapshot}, default=str)
    )


# --- connect and snapshot ---------------------------------------------------------------


async def test_connect_sends_the_full_snapshot_first_with_seq_and_viewers():
    stream, _, drop = await make_stream(with_drop=True)
    await database_sync_to_async(services.drop_pin)(drop_id=drop.pk, actor=stream.host)

    async with viewer(stream.slug) as (communicator, state):
        assert set(state) == {"type", "seq", "stream"}
        assert set(state["stream"]) == {
            "id", "slug", "title", "description", "status", "host", "scheduled_start",
            "started_at", "ended_at", "playback_url", "pinned_drop", "drops", "viewers", "seq",
        }  # fmt: skip
        assert state["seq"] == state["stream"]["seq"] == broadcast.current_seq(stream.pk) > 0
        assert state["stream"]["viewers"] == 1
        assert state["stream"]["status"] == "live"
        assert state["stream"]["pinned_drop"]["id"] == drop.pk
        assert state == await database_sync_to_async(expected_state)(
            stream.pk, stream.slug, viewers=1
        )
        assert await communicator.receive_nothing(timeout=0.2)


async def test_anonymous_viewer_watches_without_personal_events_or_host_rights():
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (_, state):
        assert state["stream"]["slug"] == stream.slug
        [connection] = get_hub()._streams[stream.pk].connections
        assert connection.is_host is False
        assert connection.user_id is None
        assert get_hub()._users == {}
        assert connection.scope["user"].is_authenticated is False


async def test_unknown_slug_is_closed_with_4404_and_not_counted():
    communicator = WebsocketCommunicator(APPLICATION, "/ws/streams/no-such-stream/")
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    assert await receive_close(communicator) == consumers.CLOSE_NOT_FOUND
    await communicator.disconnect()
    assert get_hub()._streams == {}


@pytest.mark.redis
async def test_an_ended_streams_viewer_gets_its_snapshot_and_holds_no_subscription():
    stream, host, _ = await make_stream()
    await database_sync_to_async(services.stream_end)(stream_id=stream.pk, actor=host)
    user, key = await make_token()
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)

    async with viewer(stream.slug, query=f"?token={key}") as (communicator, state):
        assert state["stream"]["status"] == "ended"
        assert get_hub().local_count(stream.pk) == 0
        assert get_hub().user_connections(user.pk) == set()
        assert get_hub().listener_count() == 0
        channel = topics.stream_channel(stream.pk)
        assert dict(client.pubsub_numsub(channel))[channel] == 0
        assert await database_sync_to_async(presence.presence_count)(stream.pk) == 0
        await communicator.send_json_to({"type": "resync"})  # still answered
        again = await communicator.receive_json_from(timeout=5)
        assert (again["type"], again["stream"]["status"]) == ("stream.state", "ended")


# --- authentication -------------------------------------------------------------------------


async def test_token_in_query_authenticates_and_gets_the_users_personal_events():
    stream, _, _ = await make_stream()
    user, key = await make_token()

    async with viewer(stream.slug, query=f"?token={key}") as (communicator, _):
        [connection] = get_hub()._streams[stream.pk].connections
        assert connection.scope["user"].pk == user.pk
        assert get_hub().user_connections(user.pk) == {connection}
        broadcast.send_personal(user.pk, "reservation.updated", reservation={"id": 7})
        assert await communicator.receive_from(timeout=5) == (
            '{"type":"reservation.updated","reservation":{"id":7}}'
        )


async def test_a_bad_token_watches_as_anonymous():
    stream, _, _ = await make_stream()
    user, key = await make_token()

    async with viewer(stream.slug, query=f"?token={key[:-1]}x") as (communicator, state):
        assert state["stream"]["viewers"] == 1
        [connection] = get_hub()._streams[stream.pk].connections
        assert connection.scope["user"].is_authenticated is False
        broadcast.send_personal(user.pk, "reservation.updated")
        assert await communicator.receive_nothing(timeout=0.3)


async def test_the_stream_host_is_marked_host_and_a_viewer_is_not():
    stream, host, _ = await make_stream()
    _, host_key = await make_token(host)
    _, viewer_key = await make_token()

    async with (
        viewer(stream.slug, query=f"?token={host_key}"),
        viewer(stream.slug, query=f"?token={viewer_key}"),
    ):
        hosts = get_hub().local_hosts(stream.pk)
        assert [c.scope["user"].pk for c in hosts] == [host.pk]
        assert get_hub().local_count(stream.pk) == 2


async def test_only_the_host_gets_host_stats(settings):
    settings.HOST_STATS_SECONDS = 0.2
    stream, host, drop = await make_stream(with_drop=True)
    _, host_key = await make_token(host)
    _, viewer_key = await make_token()

    async with (
        viewer(stream.slug, query=f"?token={host_key}") as (host_socket, _),
        viewer(stream.slug, query=f"?token={viewer_key}") as (viewer_socket, _),
    ):
        stats = await receive_type(host_socket, "host.stats")
        assert stats["stream"] == stream.pk
        assert [row["drop"] for row in stats["drops"]] == [drop.pk]
        assert stats["drops"][0]["remaining"] == 5
        await asyncio.sleep(0.8)  # several stats periods
        seen = []
        while not await viewer_socket.receive_nothing(timeout=0.05):
            seen.append((await viewer_socket.receive_json_from())["type"])
        assert "host.stats" not in seen


# --- origin ---------------------------------------------------------------------------------


async def test_a_foreign_origin_is_refused_and_not_counted():
    stream, _, _ = await make_stream()
    communicator = WebsocketCommunicator(
        APPLICATION, f"/ws/streams/{stream.slug}/", headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    assert connected is False
    assert get_hub().local_count(stream.pk) == 0
    assert await database_sync_to_async(presence.presence_count)(stream.pk) == 0


async def test_a_missing_origin_is_allowed():
    stream, _, _ = await make_stream()
    async with viewer(stream.slug, headers=[]) as (_, state):
        assert state["stream"]["id"] == stream.pk


async def test_a_csrf_trusted_origin_is_allowed(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.shop.example"]
    stream, _, _ = await make_stream()
    async with viewer(stream.slug, headers=[(b"origin", b"https://live.shop.example")]) as (
        _,
        state,
    ):
        assert state["stream"]["id"] == stream.pk
    communicator = WebsocketCommunicator(
        APPLICATION, f"/ws/streams/{stream.slug}/", headers=[(b"origin", b"http://shop.evil")]
    )
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    assert connected is False


# --- client messages ------------------------------------------------------------------------


async def test_ping_is_answered_with_pong():
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (communicator, _):
        await communicator.send_json_to({"type": "ping"})
        assert await communicator.receive_json_from() == {"type": "pong"}


async def test_unknown_type_and_invalid_json_get_error_events_and_the_socket_stays():
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (communicator, _):
        await communicator.send_json_to({"type": "buy-everything"})
        assert await communicator.receive_json_from() == {"type": "error", "code": "unknown_type"}
        await communicator.send_json_to([1, 2])
        assert await communicator.receive_json_from() == {"type": "error", "code": "unknown_type"}
        await communicator.send_to(text_data="{not json")
        assert await communicator.receive_json_from() == {"type": "error", "code": "invalid_json"}
        await communicator.send_to(bytes_data=b"\x00\x01")
        assert await communicator.receive_json_from() == {"type": "error", "code": "invalid_json"}
        await communicator.send_json_to({"type": "ping"})
        assert await communicator.receive_json_from() == {"type": "pong"}


async def test_resync_answers_a_fresh_stream_state():
    stream, host, drop = await make_stream(with_drop=True)
    async with viewer(stream.slug) as (communicator, state):
        assert state["stream"]["pinned_drop"] is None
        await database_sync_to_async(services.drop_pin)(drop_id=drop.pk, actor=host)
        pinned = await receive_type(communicator, "drop.pinned")
        assert pinned["seq"] == state["seq"] + 1

        await communicator.send_json_to({"type": "resync"})
        fresh = await receive_type(communicator, "stream.state")
        assert fresh["seq"] == fresh["stream"]["seq"] == broadcast.current_seq(stream.pk)
        assert fresh["seq"] >= pinned["seq"]
        assert fresh["stream"]["pinned_drop"]["id"] == drop.pk
        assert fresh == await database_sync_to_async(expected_state)(
            stream.pk, stream.slug, viewers=1
        )


async def test_an_oversize_message_closes_with_1009():
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (communicator, _):
        await communicator.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 5000}))
        assert await receive_close(communicator) == consumers.CLOSE_TOO_BIG


async def test_a_flooding_client_is_closed_and_another_viewer_is_unaffected():
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (calm, _), viewer(stream.slug) as (flood, _):
        for _ in range(consumers.RATE_BURST + 5):
            await flood.send_json_to({"type": "ping"})
        answered = []
        while (output := await flood.receive_output(timeout=5))["type"] == "websocket.send":
            answered.append(json.loads(output["text"])["type"])
        assert output == {"type": "websocket.close", "code": consumers.CLOSE_RATE_LIMITED}
        assert answered.count("pong") == consumers.RATE_BURST

        await calm.send_json_to({"type": "ping"})
        assert await receive_type(calm, "pong") == {"type": "pong"}
        get_hub().deliver(stream.pk, '{"seq":100000,"type":"test.event"}')
        assert await receive_type(calm, "test.event") == {"seq": 100000, "type": "test.event"}


async def test_a_viewer_whose_socket_stalls_is_closed_4008_and_the_others_keep_up():
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (stalled, _):
        [stalled_connection] = get_hub()._streams[stream.pk].connections
        async with viewer(stream.slug) as (fast, _):
            # Its socket takes no text any more: a send never completes (as when the
            # transport is paused for a reader that stopped reading). The close frame
            # still passes, so that the test can read its code.
            stall = asyncio.get_running_loop().create_future()
            real_send = stalled_connection.base_send

            async def stalled_send(message):
                if message["type"] == "websocket.send":
                    await stall
                await real_send(message)

            stalled_connection.base_send = stalled_send

            base, count = 10_000, consumers.SEND_BACKLOG_SIZE + 10
            for n in range(count):
                get_hub().deliver(stream.pk, f'{{"seq":{base + n},"type":"stock.changed"}}')
                if n % 8 == 7:
                    await asyncio.sleep(0.01)  # a healthy socket drains between events

            assert await receive_close(stalled) == consumers.CLOSE_SLOW
            seqs = [(await receive_type(fast, "stock.changed"))["seq"] for _ in range(count)]
            assert seqs == list(range(base, base + count))
            # The hub stopped writing to the slow one at once.
            assert get_hub().local_count(stream.pk) == 1


async def test_a_send_that_has_to_wait_keeps_the_order_of_what_follows():
    """Most sends complete at once (written without a task switch); one that must wait
    (a paused transport) finishes in the background, and later events queue behind it."""
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (communicator, _):
        [connection] = get_hub()._streams[stream.pk].connections
        real_send = connection.base_send
        paused = asyncio.get_running_loop().create_future()
        calls = 0

        async def send_pausing_once(message):
            nonlocal calls
            calls += 1
            if calls == 1:
                await paused  # the transport is paused for this one
            await real_send(message)

        connection.base_send = send_pausing_once
        base = 20_000
        for n in range(10):
            get_hub().deliver(stream.pk, f'{{"seq":{base + n},"type":"stock.changed"}}')
        await asyncio.sleep(0.05)
        assert await communicator.receive_nothing(timeout=0.1)

        paused.set_result(None)

        seqs = [(await receive_type(communicator, "stock.changed"))["seq"] for _ in range(10)]
        assert seqs == list(range(base, base + 10))
        assert calls == 10
        # Caught up: back on the direct path, holding no backlog and no task.
        assert connection._drain is None and connection._backlog is None
