"""The per-process hub: local fan-out, personal events, one pub/sub connection per
process for every channel, resubscribe."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest
import redis
from django.conf import settings

from core import redis as redis_clients
from livestream import broadcast, metrics, topics
from livestream.hub import BURST_MOST, RESYNC_REQUIRED, Hub, get_hub
from livestream.topics import stream_channel
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
        self.user_id = None
        self.received: list[str] = []
        self.runs: list[list[str]] = []  # what came through ``offer_many``
        self.personal_events: list[str] = []
        self.signed_out = False
        self.room = room

    def offer(self, text: str, seq: int | None = None) -> bool:
        if len(self.received) >= self.room:
            return False
        self.received.append(text)
        return True

    def offer_many(self, texts, seqs, least_seq) -> bool:
        self.runs.append(list(texts))
        return all(self.offer(text, seq) for text, seq in zip(texts, seqs, strict=True))

    def personal(self, text: str) -> None:
        self.personal_events.append(text)

    def logged_out(self) -> None:
        self.signed_out = True


def _sync_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def _numsub(client: redis.Redis, stream_id: int) -> int:
    return _subscribers(client, stream_channel(stream_id))


def _subscribers(client: redis.Redis, channel: str) -> int:
    return dict(client.pubsub_numsub(channel))[channel]


def _hub_connections(client: redis.Redis) -> list[dict]:
    """This process's hub connections in subscribe mode, as Redis lists them."""
    name = redis_clients.client_name()
    return [c for c in client.client_list(_type="pubsub") if c.get("name") == name]


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


async def test_personal_events_reach_every_connection_of_their_user_and_nobody_else(embedded):
    hub = get_hub()
    phone, laptop, stranger = FakeConnection("phone"), FakeConnection("laptop"), FakeConnection("x")
    await hub.join_user(5, phone)
    await hub.join_user(5, laptop)
    await hub.join_user(6, stranger)

    broadcast.send_personal(5, "reservation.updated", reservation={"id": 1})
    broadcast.user_signed_out(6)
    await _until(lambda: len(laptop.personal_events) == 1 and stranger.signed_out)

    text = '{"type":"reservation.updated","reservation":{"id":1}}'
    assert phone.personal_events == laptop.personal_events == [text]
    assert stranger.personal_events == []
    assert (phone.signed_out, laptop.signed_out) == (False, False)
    await hub.leave_user(5, phone)
    broadcast.send_personal(5, "reservation.updated", reservation={"id": 2})
    await _until(lambda: len(laptop.personal_events) == 2)
    assert len(phone.personal_events) == 1  # left: hears nothing more
    assert hub.user_connections(5) == {laptop}


# --- Redis: one pub/sub connection per process ---------------------------------------------


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
async def test_one_connection_carries_every_stream_and_user_and_none_is_left_after():
    """Anonymous sockets to many streams, and signed-in users, share ONE pub/sub
    connection per process (one per channel would drain the pool)."""
    hub, client = get_hub(), _sync_redis()
    viewers = [FakeConnection(f"v{n}") for n in range(40)]
    for n, connection in enumerate(viewers):
        await hub.join(1000 + n, connection)
        await hub.join_user(5000 + n, connection)

    assert hub.listener_count() == 1
    assert len(_hub_connections(client)) == 1
    assert all(hub.is_subscribed(1000 + n) for n in range(40))
    assert {_numsub(client, 1000 + n) for n in range(40)} == {1}
    assert {_subscribers(client, topics.user_channel(5000 + n)) for n in range(40)} == {1}
    client.publish(stream_channel(1007), '{"seq":1,"type":"stock.changed"}')
    client.publish(topics.user_channel(5011), '{"type":"reservation.updated"}')
    await _until(lambda: viewers[7].received and viewers[11].personal_events)
    assert viewers[7].received == ['{"seq":1,"type":"stock.changed"}']
    assert viewers[11].personal_events == ['{"type":"reservation.updated"}']
    assert sum(len(v.received) + len(v.personal_events) for v in viewers) == 2

    for n, connection in enumerate(viewers[:39]):
        await hub.leave(1000 + n, connection)
        await hub.leave_user(5000 + n, connection)
    # A channel is dropped with its last local connection, the connection with the last.
    await _until(lambda: _numsub(client, 1000) == 0)
    assert _subscribers(client, topics.user_channel(5000)) == 0
    assert _numsub(client, 1039) == 1
    assert len(_hub_connections(client)) == 1
    await hub.leave(1039, viewers[39])
    await hub.leave_user(5039, viewers[39])
    assert hub.listener_count() == 0
    await _until(lambda: not _hub_connections(client))


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
async def test_after_losing_its_connection_the_hub_resubscribes_all_and_every_stream_resyncs():
    hub, client = get_hub(), _sync_redis()
    other, buyer = FakeConnection("other"), FakeConnection("buyer")
    await hub.join(4242, other)
    await hub.join_user(77, buyer)
    stream, _, _ = await make_stream()
    async with viewer(stream.slug) as (communicator, _):
        assert _numsub(client, stream.pk) == 1
        # Kill this process's hub connection on the server, as a Redis restart would.
        [mine] = _hub_connections(client)
        client.client_kill_filter(_id=mine["id"])

        assert await receive_type(communicator, "resync.required") == json.loads(RESYNC_REQUIRED)
        assert get_hub().is_subscribed(stream.pk)
        text = '{"seq":88,"type":"drop.unpinned","drop":1}'
        client.publish(stream_channel(stream.pk), text)
        assert await communicator.receive_from(timeout=5) == text
        assert _numsub(client, stream.pk) == 1
        # Every channel came back on the one new connection: the other stream resynced
        # too, and the buyer's personal events flow again.
        await _until(lambda: RESYNC_REQUIRED in other.received)
        assert _numsub(client, 4242) == 1
        assert len(_hub_connections(client)) == 1
        client.publish(topics.user_channel(77), '{"type":"reservation.updated"}')
        await _until(lambda: buyer.personal_events == ['{"type":"reservation.updated"}'])


@pytest.mark.redis
async def test_events_waiting_together_reach_each_viewer_as_one_run_in_order():
    """A hub that fell behind (here: its loop held while the events are published) takes
    what waits of each stream together, up to BURST_MOST, and every event still arrives,
    in order, the other stream's and the user's in their own places."""
    hub, client = get_hub(), _sync_redis()
    one, two, other = FakeConnection("one"), FakeConnection("two"), FakeConnection("other")
    await hub.join(2101, one)
    await hub.join(2101, two)
    await hub.join(2102, other)
    await hub.join_user(2103, one)
    texts = [f'{{"seq":{n},"type":"stock.changed"}}' for n in range(1, 41)]
    # Published while this loop does not run, as when a fan-out keeps it busy.
    for text in texts[:20]:
        client.publish(stream_channel(2101), text)
    client.publish(topics.user_channel(2103), '{"type":"reservation.updated"}')
    client.publish(stream_channel(2102), texts[0])
    for text in texts[20:]:
        client.publish(stream_channel(2101), text)

    await _until(lambda: len(one.received) == 40 and len(two.received) == 40)
    await _until(lambda: other.received and one.personal_events)
    assert one.received == texts and two.received == texts
    assert other.received == [texts[0]]
    assert one.personal_events == ['{"type":"reservation.updated"}']
    # Some came as runs (so fewer handings than events), none longer than BURST_MOST.
    assert one.runs
    assert all(2 <= len(run) <= BURST_MOST for run in one.runs)
    assert one.runs == two.runs


async def test_a_run_counts_every_delivery_and_drops_a_viewer_that_overflows():
    hub = get_hub()
    hub._bind()
    keeps, slow = FakeConnection("keeps"), FakeConnection("slow", room=2)
    await hub.join(2201, keeps)
    await hub.join(2201, slow)
    texts = [f'{{"seq":{n},"type":"stock.changed"}}' for n in range(1, 4)]
    before = metrics.DELIVERIES._value.get()

    hub._fanout_run(2201, hub._streams[2201], texts)

    assert keeps.received == texts
    assert hub.local_count(2201) == 1  # the slow one is forgotten at once
    assert metrics.DELIVERIES._value.get() - before == 3
    assert hub.seen_seq(2201) == 3


def test_client_name_names_the_process():
    assert redis_clients.client_name().endswith(f":{os.getpid()}")
