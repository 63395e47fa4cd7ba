"""Draw events through livestream's broadcast, as a subscriber of Redis sees them:
``draw.opened`` (the commitment, never the seed), ``draw.entries`` (the count),
``draw.closed`` (the seed and the number of winners) numbered in the stream's ``seq``,
and each entrant's own ``draw.result``; all after commit."""

from __future__ import annotations

import json
import time

import pytest

from core.redis import get_redis
from draws import services
from draws.models import Draw
from livestream import services as live
from livestream.topics import stream_channel, user_channel
from tests.draws.helpers import draw_drop
from tests.factories import UserFactory

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def _drain(pubsub, until: float = 0.5) -> list[tuple[str, dict]]:
    messages, deadline = [], time.monotonic() + until
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message and message["type"] == "message":
            messages.append((message["channel"], json.loads(message["data"])))
    return messages


def test_a_draw_is_heard_live_in_seq_with_each_entrants_result(gate_on):
    drop = draw_drop(quantity=1, pin=False)
    viewers = [UserFactory() for _ in range(3)]
    pubsub = get_redis().pubsub()
    pubsub.subscribe(stream_channel(drop.stream_id), *[user_channel(v.pk) for v in viewers])
    _drain(pubsub, 0.2)

    live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)
    seed = Draw.objects.get(drop=drop).seed
    for viewer in viewers:
        services.entry_submit(drop_id=drop.pk, customer_id=viewer.pk, quantity=1)
    before_draw = _drain(pubsub)
    draw = services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)
    after_draw = _drain(pubsub)

    assert all(seed not in json.dumps(body) for _, body in before_draw)
    stream_events = [b for c, b in before_draw + after_draw if c == stream_channel(drop.stream_id)]
    seqs = [event["seq"] for event in stream_events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    by_type = {}
    for event in stream_events:
        by_type.setdefault(event["type"], []).append(event)
    (opened,) = by_type["draw.opened"]
    assert (opened["drop"], opened["seed_commitment"]) == (drop.pk, draw.seed_commitment)
    assert opened["entries_close_at"] is not None
    assert [e["entries"] for e in by_type["draw.entries"]][-1] == 3
    (closed,) = by_type["draw.closed"]
    assert (closed["drop"], closed["seed"], closed["winners"], closed["entries"]) == (
        drop.pk,
        seed,
        1,
        3,
    )
    assert [e["type"] for e in stream_events].index("draw.opened") < [
        e["type"] for e in stream_events
    ].index("draw.closed")
    results = {
        channel: body["entry"] for channel, body in after_draw if body.get("type") == "draw.result"
    }
    assert set(results) == {user_channel(v.pk) for v in viewers}
    statuses = sorted(entry["status"] for entry in results.values())
    assert statuses == ["lost", "lost", "won"]
    winner = next(e for e in results.values() if e["status"] == "won")
    assert winner["id"] == draw.winners[0] and winner["reservation"]["status"] == "held"
    pubsub.close()


def test_nothing_is_sent_when_the_pin_rolls_back(gate_on):
    from django.db import transaction

    drop = draw_drop(quantity=1, pin=False)
    pubsub = get_redis().pubsub()
    pubsub.subscribe(stream_channel(drop.stream_id))
    _drain(pubsub, 0.2)

    with pytest.raises(RuntimeError), transaction.atomic():
        live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)
        raise RuntimeError("the pin's transaction fails")

    assert _drain(pubsub) == []
    assert not Draw.objects.exists()
    pubsub.close()
