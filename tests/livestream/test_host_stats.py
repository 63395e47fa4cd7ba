from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory import services as inventory
from inventory.models import Allocation
from livestream import selectors, services
from tests.factories import UserFactory, live_drop, stocked_variant


@pytest.mark.django_db(transaction=True)
def test_host_stats_give_sell_through_rate_and_projected_sell_out():
    drop = live_drop(quantity=10, on_hand=20, price=Decimal("3.00"), title="Stats")
    stream = drop.stream
    now = timezone.now()
    Allocation.objects.filter(pk=drop.allocation_id).update(opened_at=now - timedelta(minutes=2))
    holds = [
        services.drop_reserve(
            drop_id=drop.pk, customer_id=UserFactory().pk, quantity=2, idempotency_key=f"s{i}"
        )
        for i in range(3)
    ]
    inventory.reservation_confirm(reservation_id=holds[0].pk)

    stats = selectors.host_stats(stream=stream, viewers=42, now=now)

    assert (stats["type"], stats["stream"], stats["viewers"]) == ("host.stats", stream.pk, 42)
    assert stats["drops"] == [
        {
            "drop": drop.pk,
            "pinned": True,
            "quantity": 10,
            "held": 4,
            "sold": 2,
            "remaining": 4,
            "sell_through": 0.2,
            "units_per_minute": 3.0,  # 6 units taken in the 2 minutes since it opened
            # All 6 in the last 10 s of the 120 open, weighted towards now (half-life
            # 30 s): 6 / (10 * sum(2^(-k/3), k < 12)) = 0.132 a second.
            "live_units_per_minute": 7.92,
            "projected_sold_out_seconds": 30,  # 4 left at 0.132 a second
        }
    ]


@pytest.mark.django_db
def test_a_drop_nobody_buys_has_no_projection():
    host = UserFactory(is_staff=True)
    stream = services.stream_create(host=host, title="Quiet")
    drop = services.drop_create(
        stream_id=stream.pk,
        variant_id=stocked_variant(on_hand=5).pk,
        quantity=5,
        price=Decimal("1.00"),
        per_viewer_limit=None,
        actor=host,
    )

    row = selectors.host_stats(stream=stream, viewers=0)["drops"][0]

    assert (
        row["drop"],
        row["units_per_minute"],
        row["live_units_per_minute"],
        row["projected_sold_out_seconds"],
    ) == (drop.pk, 0.0, 0.0, None)
