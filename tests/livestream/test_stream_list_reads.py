"""``GET /api/streams/``: a read in a constant number of queries, and no Redis write."""

import time
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from core.redis import get_redis
from livestream import presence
from livestream import services as live
from tests.factories import UserFactory, stocked_variant

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def _streams(count: int) -> list:
    """Streams of every kind: scheduled, live with a pinned drop, ended."""
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    variant = stocked_variant(on_hand=10 * count)
    streams = []
    for i in range(count):
        stream = live.stream_create(host=host, title=f"Show {i}")
        if i % 3:
            live.stream_start(stream_id=stream.pk, actor=host)
            drop = live.drop_create(
                stream_id=stream.pk,
                variant_id=variant.pk,
                quantity=2,
                price=Decimal("9.00"),
                per_viewer_limit=None,
                actor=host,
            )
            live.drop_pin(drop_id=drop.pk, actor=host)
        if i % 3 == 2:
            live.stream_end(stream_id=stream.pk, actor=host)
        streams.append(stream)
    return streams


@pytest.mark.parametrize("count", [3, 60])
def test_the_list_runs_the_same_three_queries_however_many_streams(
    count, django_assert_num_queries
):
    _streams(count)

    # The page's count, the streams with their hosts, the drops of all of them.
    with django_assert_num_queries(3):
        response = APIClient().get("/api/streams/?limit=200")

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], len(body["results"])) == (count, count)
    drops = [len(s["drops"]) for s in reversed(body["results"])]
    assert drops == [0 if i % 3 == 0 else 1 for i in range(count)]


def _everything(redis) -> dict:
    return {key: redis.dump(key) for key in redis.scan_iter("*")}


def test_the_list_writes_nothing_to_redis_and_counts_only_live_viewers():
    streams = _streams(3)
    redis = get_redis()
    now = time.time()
    for stream in streams:
        # A viewer whose process died long ago, and one seen just now.
        redis.zadd(
            presence.presence_key(stream.pk),
            {"gone": now - presence.ttl_seconds() - 5, "here": now},
        )
    redis.set(f"stream:{streams[1].pk}:seq", 7)
    redis.set(f"stream:{streams[2].pk}:seq", 12)
    before = _everything(redis)

    response = APIClient().get("/api/streams/?limit=200")

    assert response.status_code == 200
    by_slug = {s["slug"]: s for s in response.json()["results"]}
    assert [(by_slug[s.slug]["viewers"], by_slug[s.slug]["seq"]) for s in streams] == [
        (1, 0),
        (1, 7),
        (1, 12),
    ]
    assert _everything(redis) == before
    assert redis.zcard(presence.presence_key(streams[0].pk)) == 2  # nothing pruned
    assert redis.exists(f"stream:{streams[0].pk}:seq") == 0  # nothing created


def test_a_stream_reads_the_same_alone_as_in_the_list():
    streams = _streams(3)

    listed = APIClient().get("/api/streams/?limit=200").json()["results"]

    assert [APIClient().get(f"/api/streams/{s.slug}/").json() for s in streams] == list(
        reversed(listed)
    )
