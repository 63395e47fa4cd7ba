"""The readiness report read from the database: a host's own finished drops make its
history, and with none the report says it rests on the prior."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from demand import readers
from tests.factories import DropDemandFactory, StreamFactory, UserFactory, stream_drop


def _past_drop(host, *, viewers: int, buyers: int, turned_away: int = 0, **figures):
    past = StreamFactory(host=host)
    return DropDemandFactory(
        drop=stream_drop(stream=past, quantity=max(buyers, 1)),
        supply=max(buyers, 1),
        viewers_at_pin=viewers,
        buyers=buyers,
        admitted_units=buyers,
        viewers_turned_away=turned_away,
        **figures,
    )


@pytest.mark.django_db
def test_stream_readiness_from_the_host_history():
    host = UserFactory(is_staff=True)
    opened = timezone.now() - timedelta(days=3)
    for _ in range(6):
        # 1000 viewers, 50 bought (sold out), 50 more turned away: 10 % wanted it.
        _past_drop(
            host,
            viewers=1000,
            buyers=50,
            turned_away=50,
            opened_at=opened,
            sold_out_at=opened + timedelta(seconds=round(60 * math.log(2))),
        )
    _past_drop(UserFactory(), viewers=1000, buyers=1000)  # another host: not counted
    DropDemandFactory(drop=stream_drop(stream=StreamFactory(host=host), quantity=5), final=False)
    stream = StreamFactory(host=host, expected_viewers=2000)
    drop = stream_drop(stream=stream, quantity=100, on_hand=250)

    report = readers.stream_readiness(stream=stream)

    assert (report.rate.value, report.rate.basis, report.rate.drops) == (0.1, "history", 6)
    assert report.viewers.basis == "declared"
    assert report.decay.value == pytest.approx(60, abs=1)
    (row,) = report.drops
    assert (row.drop, row.quantity, row.stock_on_hand, row.stock_free) == (drop.pk, 100, 250, 150)
    body = row.as_dict()
    assert body["expected_demand"]["value"] == 200.0
    assert (body["verdict"], body["shortfall"]) == ("short", 100)
    assert body["cover"] == "Add 100 units to the drop; 150 free in stock."
    assert body["sell_out_seconds"] == 42


@pytest.mark.django_db
def test_stream_readiness_without_any_history_uses_the_prior_and_no_audience():
    stream = StreamFactory()
    stream_drop(stream=stream, quantity=10)

    report = readers.stream_readiness(stream=stream)

    assert (report.rate.basis, report.viewers.basis) == ("default", "unknown")
    assert report.drops[0].assessment.verdict == "unknown"
