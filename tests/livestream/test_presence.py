"""Viewer counts: per connection, across processes, healing after a process dies."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from core.redis import get_redis
from livestream import broadcast, consumers, presence
from livestream.hub import get_hub
from tests.livestream.test_consumers import (
    _fresh_hub,  # noqa: F401 (autouse fixture)
    make_stream,
    make_token,
    receive_type,
    viewer,
)

pytestmark = pytest.mark.django_db(transaction=True)

MODES = ["local", pytest.param("redis", marks=pytest.mark.redis)]

count = database_sync_to_async(presence.presence_count)


@pytest.fixture
def mode(request, settings):
    if request.param == "local":
        settings.REDIS_URL = ""
    return request.param


async def _until_count(stream_id: int, expected: int, *, timeout: float = 5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await count(stream_id)) != expected:
        assert loop.time() < deadline, f"presence_count stayed {value}, expected {expected}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mode", MODES, indirect=True)
async def test_two_viewers_count_two_and_one_leaving_leaves_one(mode):
    stream, _, _ = await make_stream()

    async with viewer(stream.slug) as (first, first_state):
        assert first_state["stream"]["viewers"] == 1
        async with viewer(stream.slug) as (second, second_state):
            assert await count(stream.pk) == 2
            if second_state["stream"]["viewers"] != 2:
                # Its snapshot was one the first viewer built a moment before (shared
                # for a second): the count of its own arrival follows as an event.
                assert second_state["stream"]["viewers"] == 1
                assert (await receive_type(second, "viewers.changed"))["viewers"] == 2
            changed = await receive_type(first, "viewers.changed")
            assert changed["viewers"] == 2
        assert await count(stream.pk) == 1
        changed = await receive_type(first, "viewers.changed")
        assert changed["viewers"] == 1
    assert await count(stream.pk) == 0


@pytest.mark.parametrize("mode", MODES, indirect=True)
async def test_join_and_leave_publish_viewers_changed(mode):
    stream, _, _ = await make_stream()
    before = broadcast.current_seq(stream.pk)

    await consumers.viewer_joined(stream.pk, "conn-a")
    assert await count(stream.pk) == 1
    assert broadcast.current_seq(stream.pk) == before + 1  # one viewers.changed

    await consumers.viewer_joined(stream.pk, "conn-a")  # the same connection: still one
    await consumers.viewer_left(stream.pk, "conn-a")
    assert await count(stream.pk) == 0
    assert broadcast.current_seq(stream.pk) == before + 3


@pytest.mark.redis
async def test_a_member_whose_heartbeat_is_older_than_the_ttl_is_not_counted_and_is_pruned():
    stream, _, _ = await make_stream()
    key = presence.presence_key(stream.pk)
    now = time.time()
    # A process that died 31 s ago left its viewer behind; another one is alive.
    get_redis().zadd(key, {"dead-process-viewer": now - presence.ttl_seconds() - 1})
    get_redis().zadd(key, {"live-viewer": now})

    assert await count(stream.pk) == 1
    # Counting is a read: the next heartbeat of a live process prunes.
    assert get_redis().zcard(key) == 2
    await presence.presence_heartbeat(stream.pk, ["live-viewer"])
    assert get_redis().zrange(key, 0, -1) == ["live-viewer"]

    async with viewer(stream.slug) as (_, state):
        assert state["stream"]["viewers"] == 2


@pytest.mark.redis
async def test_the_hub_heartbeat_keeps_local_viewers_counted(settings):
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.05
    stream, _, _ = await make_stream()
    key = presence.presence_key(stream.pk)

    async with viewer(stream.slug):
        [conn_id] = get_hub().local_conn_ids(stream.pk)
        # Age the member as if no heartbeat had come for longer than the TTL...
        get_redis().zadd(key, {conn_id: time.time() - presence.ttl_seconds() - 5})
        # ...the next heartbeat refreshes it, so it is counted again.
        await _until_count(stream.pk, 1)
        assert get_redis().zscore(key, conn_id) > time.time() - 5
        assert get_redis().ttl(key) > 0  # the set itself expires if every process dies


@pytest.mark.redis
async def test_a_heartbeat_racing_a_leave_does_not_leave_a_ghost():
    stream, _, _ = await make_stream()

    class Gone:
        conn_id = "left-while-the-zadd-was-in-flight"
        is_host = False
        user_id = None

    # The heartbeat snapshot still had it; by the time the ZADD is done it left.
    await get_hub().heartbeat_stream(stream.pk, [Gone()])
    assert await count(stream.pk) == 0
    assert get_redis().zscore(presence.presence_key(stream.pk), Gone.conn_id) is None


# --- watch time: how long a signed-in viewer has watched, from their sockets only ------


@pytest.mark.parametrize("mode", MODES, indirect=True)
async def test_a_watch_lasts_through_heartbeats_and_breaks_after_the_ttl(
    mode, settings, presence_clock
):
    clock = presence_clock
    settings.PRESENCE_TTL_SECONDS = 30
    stream_id = 424_242
    if mode == "redis":
        get_redis().delete(*presence.watch_keys(stream_id), presence.presence_key(stream_id))
    began = clock.now

    await presence.presence_add(stream_id, ["a"], watchers=[7])
    clock.now += 25
    await presence.presence_heartbeat(stream_id, ["a"], watchers=[7])
    clock.now += 25  # seen 25 s ago: still watching, since the first join
    assert presence.watching_since(stream_id, 7) == began
    assert presence.watched_seconds(stream_id, 7) == 50
    assert presence.watching_since(stream_id, 8) is None  # never joined

    clock.now += 6  # 31 s unseen: the watch is over
    assert presence.watching_since(stream_id, 7) is None
    assert presence.watched_seconds(stream_id, 7) == 0

    await presence.presence_add(stream_id, ["b"], watchers=[7])  # back: a new watch
    assert presence.watching_since(stream_id, 7) == clock.now


@pytest.mark.redis
async def test_a_signed_in_viewer_s_socket_is_watching_an_anonymous_one_is_nobody(settings):
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.05
    stream, _, _ = await make_stream()
    user, key = await make_token()
    get_redis().delete(*presence.watch_keys(stream.pk))
    before = time.time()

    async with viewer(stream.slug, query=f"?token={key}"), viewer(stream.slug):
        began = presence.watching_since(stream.pk, user.pk)
        assert began is not None and before - 1 <= began <= time.time()
        seen_key = presence.watch_keys(stream.pk)[1]
        first_seen = float(get_redis().hget(seen_key, str(user.pk)))
        # The hub's heartbeat keeps the watch alive without moving its start.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while float(get_redis().hget(seen_key, str(user.pk))) <= first_seen:
            assert loop.time() < deadline, "the heartbeat never saw the watcher"
            await asyncio.sleep(0.02)
        assert presence.watching_since(stream.pk, user.pk) == began
        # Only signed-in viewers are recorded.
        assert set(get_redis().hkeys(seen_key)) == {str(user.pk)}
