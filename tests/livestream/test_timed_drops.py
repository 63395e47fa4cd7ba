"""Timed drops: a countdown before the start, the sale opening by itself at its start and
closing by itself at its end (a fixed end or a duration from the opening), unsold units
returned to stock with ledger entries, and the events viewers get."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from core.exceptions import InvalidInput
from inventory.exceptions import DropNotLive
from inventory.models import Allocation, StockItem, StockMovement
from livestream import broadcast, selectors, services
from livestream.models import Drop
from tests.factories import UserFactory, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = pytest.mark.django_db
AStatus = Allocation.Status


@pytest.fixture(autouse=True)
def _fresh_routing_cache():
    selectors.drop_routing_cache_clear()
    yield
    selectors.drop_routing_cache_clear()


@pytest.fixture
def published(monkeypatch):
    """Events published to streams, as (type, fields)."""
    seen: list[tuple[str, dict]] = []
    real = broadcast.publish

    def spy(stream_id, event_type, **fields):
        seen.append((event_type, fields))
        return real(stream_id, event_type, **fields)

    monkeypatch.setattr(broadcast, "publish", spy)
    return seen


def _live_stream():
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = services.stream_create(host=host, title="Countdown")
    return services.stream_start(stream_id=stream.pk, actor=host), host


def _timed_drop(stream, host, *, quantity=4, on_hand=10, **window) -> Drop:
    variant = stocked_variant(on_hand=on_hand)
    return services.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=quantity,
        price=Decimal("5.00"),
        per_viewer_limit=None,
        actor=host,
        **window,
    )


def _reserve(drop: Drop, key: str):
    return services.drop_reserve(
        drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1, idempotency_key=key
    )


def test_a_timed_drop_opens_and_closes_on_time(
    gate_mode, django_capture_on_commit_callbacks, published
):
    capture = django_capture_on_commit_callbacks
    stream, host = _live_stream()
    start = timezone.now() + timedelta(minutes=5)
    with capture(execute=True):
        drop = _timed_drop(stream, host, starts_at=start, duration_seconds=120)
        # Pinned before its start: on stage with a countdown, not on sale.
        services.drop_pin(drop_id=drop.pk, actor=host)
    drop.refresh_from_db()
    assert drop.allocation.status == AStatus.READY and drop.ends_at is None
    with pytest.raises(DropNotLive):
        _reserve(drop, "too-early")
    assert services.drops_run_schedule(now=start - timedelta(seconds=1)) == {
        "opened": 0,
        "closed": 0,
    }

    with capture(execute=True):
        assert services.drops_run_schedule(now=start) == {"opened": 1, "closed": 0}

    drop.refresh_from_db()
    allocation = drop.allocation
    assert allocation.status == AStatus.OPEN
    assert drop.ends_at == start + timedelta(seconds=120)
    opened = [f["drop"] for t, f in published if t == "drop.opened"]
    assert [d["id"] for d in opened] == [drop.pk] and opened[0]["status"] == "open"
    with capture(execute=True):
        sold = _reserve(drop, "on-time")
    sold.refresh_from_db()
    assert sold.status == "held"
    # Doubled runs change nothing.
    assert services.drops_run_schedule(now=start) == {"opened": 0, "closed": 0}
    stock_before = StockItem.objects.get(pk=allocation.stock_item_id)

    with capture(execute=True):
        assert services.drops_run_schedule(now=drop.ends_at) == {"opened": 0, "closed": 1}

    drop.refresh_from_db()
    allocation.refresh_from_db()
    assert allocation.status == AStatus.CLOSED and not drop.is_pinned
    # The three unsold units went back to stock, with their ledger entry.
    assert (allocation.quantity, allocation.held) == (1, 1)
    stock = StockItem.objects.get(pk=allocation.stock_item_id)
    assert stock.reserved == stock_before.reserved - 3
    returned = StockMovement.objects.filter(
        allocation=allocation, reason=StockMovement.Reason.ALLOCATION_RETURN
    ).get()
    assert returned.reserved_delta == -3
    types = [t for t, _ in published]
    assert "drop.closed" in types and "drop.unpinned" in types
    with pytest.raises(DropNotLive):
        _reserve(drop, "too-late")
    assert drop.demand.final
    assert_inventory_invariants()


def test_a_drop_with_a_fixed_end_closes_then_even_without_a_start(
    django_capture_on_commit_callbacks,
):
    stream, host = _live_stream()
    end = timezone.now() + timedelta(minutes=1)
    with django_capture_on_commit_callbacks(execute=True):
        drop = _timed_drop(stream, host, ends_at=end)
        services.drop_pin(drop_id=drop.pk, actor=host)
    assert Drop.objects.get(pk=drop.pk).allocation.status == AStatus.OPEN

    assert services.drops_run_schedule(now=end - timedelta(seconds=1))["closed"] == 0
    assert services.drops_run_schedule(now=end)["closed"] == 1
    assert Drop.objects.get(pk=drop.pk).allocation.status == AStatus.CLOSED
    assert_inventory_invariants()


def test_a_timed_drop_waits_for_the_stream_to_go_live():
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = services.stream_create(host=host, title="Later")
    start = timezone.now() + timedelta(seconds=30)
    drop = _timed_drop(stream, host, starts_at=start)

    assert services.drops_run_schedule(now=start)["opened"] == 0
    services.stream_start(stream_id=stream.pk, actor=host)
    assert services.drops_run_schedule(now=start)["opened"] == 1
    assert Drop.objects.get(pk=drop.pk).allocation.status == AStatus.OPEN


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"ends_at": "soon"}, "ends_at"),
        ({"duration_seconds": 0}, "duration_seconds"),
        ({"duration_seconds": 3.5}, "duration_seconds"),
        ({"duration_seconds": 24 * 3600 + 1}, "duration_seconds"),
        ({"ends_at": timezone.now() - timedelta(seconds=1)}, "ends_at"),
    ],
)
def test_a_bad_sale_window_is_refused_and_writes_nothing(window, field):
    stream, host = _live_stream()
    drops_before = Drop.objects.count()

    with pytest.raises(InvalidInput) as refused:
        _timed_drop(stream, host, **window)

    assert refused.value.data["field"] == field
    assert Drop.objects.count() == drops_before
    assert not Allocation.objects.exists()


def test_an_end_before_the_start_or_both_an_end_and_a_duration_are_refused():
    stream, host = _live_stream()
    start = timezone.now() + timedelta(minutes=5)
    with pytest.raises(InvalidInput):
        _timed_drop(stream, host, starts_at=start, ends_at=start - timedelta(seconds=1))
    with pytest.raises(InvalidInput):
        _timed_drop(stream, host, ends_at=start, duration_seconds=60)
    assert not Drop.objects.exists()


def test_the_api_takes_a_sale_window_and_shows_it(client):
    stream, host = _live_stream()
    variant = stocked_variant(on_hand=5)
    client.force_login(host)
    start = (timezone.now() + timedelta(minutes=2)).replace(microsecond=0)

    created = client.post(
        f"/api/streams/{stream.slug}/drops/",
        {
            "variant": variant.pk,
            "quantity": 2,
            "price": "3.00",
            "starts_at": start.isoformat(),
            "duration_seconds": 90,
        },
        content_type="application/json",
    )
    both = client.post(
        f"/api/streams/{stream.slug}/drops/",
        {
            "variant": variant.pk,
            "quantity": 1,
            "price": "3.00",
            "ends_at": start.isoformat(),
            "duration_seconds": 90,
        },
        content_type="application/json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["starts_at"] == start.isoformat().replace("+00:00", "Z")
    assert body["ends_at"] is None and body["status"] == "ready"
    assert both.status_code == 400 and both.json()["code"] == "invalid"
