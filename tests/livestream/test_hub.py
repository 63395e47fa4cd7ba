"""The per-process hub: local fan-out, one Redis subscription per stream, resubscribe."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest
import redis
from django.conf import settings

from livestream import hub as hub_module
from livestream.broadcast import stream_channel
from livestream.hub import RESYNC_REQUIRED, Hub, get_hub
from tests.livestream.test_consumers import (
    _fresh_hub,  # noqa: F401 (autouse fixture)
    make_stream,
    receive_type,
    viewer,
)

pytestmark = pytest.mark.django_db(transaction=True)


class FakeConnection:
    """A connection as the hub sees it."""

    def __init__(self, name: str, *, room: int = 1000):
        self.conn_id = name
        self.is_host = False
        self.received: list[str] = []
        self.room = room

    def offer(self, text: str, seq: int | None = None) -> bool:
        if len(self.received) >= self.room:
            return False
        self.received.append(text)
        return True


def _sync_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def _numsub(client: redis.Redis, stream_id: int) -> int:
    return dict(client.pubsub_numsub(stream_channel(stream_id)))[stream_channel(stream_id)]


async def _until(predicate, *, timeout: float = 5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- embedded (no Redis): deliver --------------------------------------------------------


@pytest.fixture
def embedded(settings):
    settings.REDIS_URL = ""


async def test_deliver_reaches_every_viewer_of_the_stream_and_no_other_stream(embedded):
    watched, _, _ = await make_stream(title="Watched")
    other, _, _ = await make_stream(title="Other")

    async with (
        viewer(watched.slug) as (first, _),
        viewer(watched.slug) as (second, _),
        viewer(other.slug) as (elsewhere, _),
    ):
        assert get_hub().local_count(watched.pk) == 2
        assert get_hub().local_count(other.pk) == 1
        await receive_type(first, "viewers.changed")  # the second viewer arriving
        text = '{"seq":555,"type":"drop.pinned","drop":{"id":1}}'

        get_hub().deliver(watched.pk, text)

        assert await first.receive_from(timeout=5) == text
        # The second viewer may first get the viewer count its own arrival changed
        # (its snapshot can be one another viewer built a moment before).
        assert (await receive_type(second, "drop.pinned"))["seq"] == 555
        assert await elsewhere.receive_nothing(timeout=0.3)


async def test_deliver_from_another_thread_keeps_the_order(embedded):
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (communicator, _):
        texts = [f'{{"seq":{n},"type":"stock.changed"}}' for n in range(1000, 1020)]

        def publish_from_a_worker_thread():
            for text in texts:
                get_hub().deliver(stream.pk, text)

        thread = threading.Thread(target=publish_from_a_worker_thread)
        thread.start()
        await asyncio.to_thread(thread.join)
        assert [await communicator.receive_from(timeout=5) for _ in texts] == texts


async def test_deliver_before_any_viewer_in_the_process_is_dropped_silently():
    fresh = Hub()
    fresh.deliver(1, '{"seq":1,"type":"stock.changed"}')  # no loop known: nothing to do
    assert fresh.local_count(1) == 0


async def test_a_slow_connection_is_dropped_and_the_others_still_get_every_event(embedded):
    hub = get_hub()
    slow, fast = FakeConnection("slow", room=2), FakeConnection("fast")
    await hub.join(9, slow)
    await hub.join(9, fast)

    for n in range(5):
        hub.deliver(9, f"event-{n}")
    await _until(lambda: len(fast.received) == 5)

    assert fast.received == [f"event-{n}" for n in range(5)]
    assert slow.received == ["event-0", "event-1"]
    assert hub.local_count(9) == 1
    await hub.leave(9, slow)  # its disconnect arrives later: harmless
    await hub.leave(9, fast)
    assert hub.local_count(9) == 0


# --- Redis: one subscription per stream per process ---------------------------------------


@pytest.mark.redis
async def test_a_publish_on_the_stream_channel_reaches_the_viewer():
    stream, _, _ = await make_stream()
    other, _, _ = await make_stream(title="Other")
    async with viewer(stream.slug) as (communicator, _), viewer(other.slug) as (elsewhere, _):
        text = '{"seq":77,"type":"stock.changed","drop":3,"remaining":1,"sold":4}'
        client = _sync_redis()
        assert client.publish(stream_channel(stream.pk), text) == 1
        assert await communicator.receive_from(timeout=5) == text
        assert await elsewhere.receive_nothing(timeout=0.3)


@pytest.mark.redis
async def test_one_subscription_per_stream_per_process_and_none_after_the_last_leaves():
    stream, _, _ = await make_stream()
    client = _sync_redis()

    async with viewer(stream.slug), viewer(stream.slug), viewer(stream.slug):
        assert get_hub().local_count(stream.pk) == 3
        assert get_hub().listener_count() == 1
        assert _numsub(client, stream.pk) == 1

    assert get_hub().listener_count() == 0
    await _until(lambda: _numsub(client, stream.pk) == 0)


@pytest.mark.redis
async def test_after_losing_its_subscription_the_hub_resubscribes_and_asks_for_resync():
    stream, _, _ = await make_stream()
    client = _sync_redis()
    async with viewer(stream.slug) as (communicator, _):
        assert _numsub(client, stream.pk) == 1
        # Kill this process's hub connections on the server, as a Redis restart would.
        mine = [
            c["id"]
            for c in client.client_list(_type="pubsub")
            if c.get("name") == hub_module.client_name()
        ]
        assert mine
        for client_id in mine:
            client.client_kill_filter(_id=client_id)

        assert await receive_type(communicator, "resync.required") == json.loads(RESYNC_REQUIRED)
        assert get_hub().is_subscribed(stream.pk)
        text = '{"seq":88,"type":"drop.unpinned","drop":1}'
        client.publish(stream_channel(stream.pk), text)
        assert await communicator.receive_from(timeout=5) == text
        assert _numsub(client, stream.pk) == 1


def test_client_name_names_the_process():
    assert hub_module.client_name().endswith(f":{os.getpid()}")
