"""``GET /api/streams/{slug}/`` for anonymous readers, answered by the front door from the
snapshot Django last rendered: the same bytes and headers, exact after every event, at
most ``STREAM_SNAPSHOT_MAX_AGE_MS`` old, and one rebuild for a crowd, not one each."""

from __future__ import annotations

import time

import httpx
import pytest
from rest_framework.authtoken.models import Token

from core.redis import get_redis
from livestream import broadcast, services, snapshot_cache, topics
from livestream.models import Stream
from tests.factories import UserFactory, live_drop, stream_drop
from tests.processes import asgi_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.postgres]

VOLATILE = {"date", "server", "x-request-id"}  # the last: each request's own
MAX_AGE_MS = 1500


def _seen(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    return response.status_code, response.content, headers


def _retitle(stream_id: int, title: str) -> None:
    """A change no event announces (an ops edit straight in the database)."""
    Stream.objects.filter(pk=stream_id).update(title=title)


def _title(response) -> str:
    assert response.status_code == 200, response.content
    return response.json()["title"]


@pytest.mark.server
def test_the_door_answers_a_stream_read_as_django_does_and_at_most_max_age_late():
    drop = live_drop(quantity=3, title="First title")
    url = f"/api/streams/{drop.stream.slug}/"
    with (
        asgi_server(STREAM_SNAPSHOT_MAX_AGE_MS=str(MAX_AGE_MS)) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        built = http.get(url)  # Django builds and stores it
        _retitle(drop.stream_id, "Second title")
        stored = http.get(url)  # the door: the stored bytes, headers as Django's
        assert _seen(stored) == _seen(built)
        assert _title(stored) == "First title"

        # Anything the stored rendering is not the answer to goes to Django.
        token = Token.objects.create(user=UserFactory()).key
        for headers, params in [
            ({"Authorization": f"Token {token}"}, None),
            ({"Cookie": "sessionid=nothing"}, None),
            ({"Accept": "application/json; indent=2"}, None),
            ({}, {"format": "json"}),
        ]:
            assert _title(http.get(url, headers=headers, params=params)) == "Second title"

        time.sleep(MAX_AGE_MS / 1000)
        assert _title(http.get(url)) == "Second title"  # too old: Django again


@pytest.mark.server
def test_after_an_event_the_next_reader_gets_a_fresh_snapshot():
    drop = live_drop(quantity=3)
    url = f"/api/streams/{drop.stream.slug}/"
    with (
        asgi_server(STREAM_SNAPSHOT_MAX_AGE_MS="60000") as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        before = http.get(url).json()
        assert http.get(url).json() == before  # stored, and nothing happened
        second = stream_drop(stream=drop.stream, quantity=2)
        services.drop_pin(drop_id=second.pk, actor=drop.stream.host)  # drop.pinned: seq + 1
        after = http.get(url).json()
    assert after["seq"] > before["seq"]
    assert after["pinned_drop"]["id"] == second.pk


@pytest.mark.server
def test_an_unknown_stream_is_django_s_404_every_time():
    with (
        asgi_server() as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        answers = [http.get("/api/streams/no-such-stream/") for _ in range(3)]
    assert [a.status_code for a in answers] == [404] * 3
    assert {a.json()["code"] for a in answers} == {"not_found"}


def _read(slug: str) -> tuple[int, str | None]:
    result = get_redis().eval(
        snapshot_cache.READ_LUA,
        2,
        snapshot_cache.snapshot_key(slug),
        snapshot_cache.rebuild_key(slug),
        int(time.time() * 1000),
        MAX_AGE_MS,
    )
    return int(result[0]), (result[1] if len(result) > 1 else None)


def test_a_crowd_after_an_event_costs_one_rebuild(settings):
    settings.STREAM_SNAPSHOT_MAX_AGE_MS = MAX_AGE_MS
    stream_id, slug = 987_654, "crowded"
    assert _read(slug) == (0, None)  # nothing stored: this reader builds it
    assert _read(slug) == (2, None)  # and the others wait for that build
    seq = broadcast.current_seq(stream_id)
    snapshot_cache.snapshot_store(slug=slug, stream_id=stream_id, seq=seq, body=b'{"v":1}')
    assert [_read(slug) for _ in range(3)] == [(1, '{"v":1}')] * 3

    get_redis().incr(topics.seq_key(stream_id))  # an event
    crowd = [_read(slug) for _ in range(5)]
    assert crowd[0] == (0, None)  # one reader rebuilds
    assert crowd[1:] == [(1, '{"v":1}')] * 4  # the others get the stored one meanwhile

    snapshot_cache.snapshot_store(slug=slug, stream_id=stream_id, seq=seq + 1, body=b'{"v":2}')
    assert _read(slug) == (1, '{"v":2}')
    get_redis().delete(topics.seq_key(stream_id))


def test_past_half_its_age_one_reader_refreshes_it_before_it_expires(settings):
    settings.STREAM_SNAPSHOT_MAX_AGE_MS = MAX_AGE_MS
    stream_id, slug = 987_655, "ageing"
    snapshot_cache.snapshot_store(slug=slug, stream_id=stream_id, seq=0, body=b"{}")
    get_redis().hset(
        snapshot_cache.snapshot_key(slug), "at", int(time.time() * 1000) - MAX_AGE_MS * 0.6
    )
    assert [_read(slug) for _ in range(3)] == [(0, None), (1, "{}"), (1, "{}")]
    get_redis().hset(snapshot_cache.snapshot_key(slug), "at", int(time.time() * 1000) - MAX_AGE_MS)
    get_redis().delete(snapshot_cache.rebuild_key(slug))  # that rebuild never came
    assert [_read(slug) for _ in range(2)] == [(0, None), (2, None)]  # too old for anyone


def _hset_calls() -> int:
    return int(get_redis().info("commandstats").get("cmdstat_hset", {}).get("calls", 0))


@pytest.mark.server
def test_a_crowd_on_a_cold_stream_waits_for_one_build():
    """A stream nobody read for a while, pinned to a viral audience: the first readers
    arrive together and one of them builds the snapshot for all."""
    import asyncio

    drop = live_drop(quantity=3)
    url = f"/api/streams/{drop.stream.slug}/"
    with asgi_server(STREAM_SNAPSHOT_MAX_AGE_MS="3000") as server:

        async def crowd() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
                return await asyncio.gather(*(http.get(url) for _ in range(30)))

        before = _hset_calls()
        answers = asyncio.run(crowd())
        builds = _hset_calls() - before
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert builds == 1


def test_a_max_age_of_zero_leaves_every_read_to_django_without_asking_redis(settings, monkeypatch):
    import asyncio

    from livestream import front_door

    settings.STREAM_SNAPSHOT_MAX_AGE_MS = 0

    def no_redis():
        raise AssertionError("the door asked Redis")

    monkeypatch.setattr(front_door, "shared_connection", no_redis)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/streams/any/",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
    }
    assert asyncio.run(front_door.snapshot_answer(scope, "any")) is None
