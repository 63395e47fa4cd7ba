"""Drops: creating one carves stock, pinning puts it on sale (one pinned drop per
stream), ending the stream closes every drop and returns the unsold units, reserving
goes to the inventory at the drop's price, and the snapshot clients see."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.exceptions import InvalidInput, NotFound
from inventory import services as inventory
from inventory.exceptions import (
    AllocationClosed,
    DropNotLive,
    InsufficientStock,
    LimitReached,
    SoldOut,
)
from inventory.models import Allocation, Reservation, StockItem, StockMovement
from livestream import broadcast, selectors, services
from livestream.exceptions import NotStreamHost, StreamEnded, StreamNotLive, VariantNotForSale
from livestream.models import Drop, Stream
from shop.models import Product
from tests.concurrency import run_together
from tests.factories import UserFactory, VariantFactory, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants

AStatus = Allocation.Status
Reason = StockMovement.Reason
PRICE = Decimal("14.50")
MISSING_ID = 987_654


@pytest.fixture(autouse=True)
def _fresh_routing_cache():
    # SQLite test databases reuse ids after each test's rollback.
    selectors.drop_routing_cache_clear()
    yield
    selectors.drop_routing_cache_clear()


@pytest.fixture
def frozen_now(monkeypatch):
    """Stop the clock the services read at one whole second."""
    instant = timezone.now().replace(microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: instant)
    return instant


def _host(**kwargs):
    user = UserFactory(**kwargs)
    group, _ = Group.objects.get_or_create(name="hosts")
    user.groups.add(group)
    return user


def _stream(host, *, live: bool = True, title: str = "Glow Live") -> Stream:
    stream = services.stream_create(host=host, title=title)
    if live:
        stream = services.stream_start(stream_id=stream.pk, actor=host)
    return stream


def _drop(stream, actor, *, variant=None, quantity=5, price=PRICE, limit=None, on_hand=20):
    variant = variant or stocked_variant(on_hand=on_hand)
    return services.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=quantity,
        price=price,
        per_viewer_limit=limit,
        actor=actor,
    )


def _rows() -> tuple:
    """Every row a drop service could touch."""
    return (
        list(
            Drop.objects.order_by("pk").values_list(
                "pk", "stream_id", "allocation_id", "price", "is_pinned", "pinned_at"
            )
        ),
        list(
            Allocation.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "held", "sold", "opened_at", "closed_at"
            )
        ),
        list(StockItem.objects.order_by("pk").values_list("pk", "on_hand", "reserved")),
        list(Stream.objects.order_by("pk").values_list("pk", "status", "ended_at")),
        list(Reservation.objects.order_by("pk").values_list("pk", "status", "quantity")),
        StockMovement.objects.count(),
    )


def _reserve(capture, drop, customer, *, key: str, quantity: int = 1) -> Reservation:
    """Reserve and let the on-commit work (the eager reserve task) settle the hold."""
    with capture(execute=True):
        reservation = services.drop_reserve(
            drop_id=drop.pk, customer_id=customer.pk, quantity=quantity, idempotency_key=key
        )
    reservation.refresh_from_db()
    return reservation


# --- create ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_creating_a_drop_carves_its_units_from_stock():
    host = _host()
    stream = _stream(host)
    variant = stocked_variant(on_hand=20)

    drop = services.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=5,
        price=Decimal("14.5"),
        per_viewer_limit=2,
        actor=host,
    )

    drop.refresh_from_db()
    assert drop.stream == stream
    assert drop.variant == variant
    assert drop.price == Decimal("14.50")
    assert drop.currency == "USD"
    assert drop.per_viewer_limit == 2
    assert drop.is_pinned is False
    assert drop.pinned_at is None
    assert drop.starts_at is None
    allocation = drop.allocation
    assert allocation.stock_item == variant.stock
    assert allocation.status == AStatus.READY
    assert (allocation.quantity, allocation.held, allocation.sold) == (5, 0, 0)
    assert allocation.per_customer_limit == 2
    assert allocation.label == f"glow-live: {variant.sku}"
    item = StockItem.objects.get(pk=variant.stock.pk)
    assert (item.on_hand, item.reserved) == (20, 5)
    carve = StockMovement.objects.get(allocation=allocation)
    assert (carve.reason, carve.reserved_delta, carve.actor) == (Reason.ALLOCATION_CARVE, 5, host)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_drop_may_be_created_before_the_stream_goes_live_with_a_countdown():
    host = _host()
    stream = _stream(host, live=False)
    starts_at = timezone.now().replace(microsecond=0) + timedelta(minutes=5)

    drop = services.drop_create(
        stream_id=stream.pk,
        variant_id=stocked_variant(on_hand=3).pk,
        quantity=3,
        price=Decimal("0"),
        per_viewer_limit=None,
        actor=host,
        starts_at=starts_at,
    )

    drop.refresh_from_db()
    assert drop.price == Decimal("0.00")
    assert drop.per_viewer_limit is None
    assert drop.allocation.per_customer_limit is None
    assert drop.starts_at == starts_at
    assert_inventory_invariants()


@pytest.mark.django_db
def test_staff_may_create_a_drop_on_anyones_stream():
    stream = _stream(_host())
    staff = UserFactory(is_staff=True)

    drop = _drop(stream, staff)

    assert drop.allocation.quantity == 5
    assert StockMovement.objects.get(allocation=drop.allocation).actor == staff


@pytest.mark.django_db
def test_another_user_cannot_create_a_drop_and_nothing_is_written():
    stream = _stream(_host())
    variant = stocked_variant(on_hand=20)
    before = _rows()

    with pytest.raises(NotStreamHost):
        _drop(stream, _host(), variant=variant)

    assert _rows() == before


@pytest.mark.django_db
def test_no_drop_on_an_ended_stream_and_nothing_is_written():
    host = _host()
    stream = _stream(host)
    services.stream_end(stream_id=stream.pk, actor=host)
    variant = stocked_variant(on_hand=20)
    before = _rows()

    with pytest.raises(StreamEnded) as excinfo:
        _drop(stream, host, variant=variant)

    assert (excinfo.value.code, excinfo.value.http_status) == ("stream_ended", 409)
    assert _rows() == before


@pytest.mark.django_db
def test_creating_a_drop_on_a_missing_stream_is_not_found():
    with pytest.raises(NotFound):
        services.drop_create(
            stream_id=MISSING_ID,
            variant_id=stocked_variant(on_hand=5).pk,
            quantity=1,
            price=PRICE,
            per_viewer_limit=None,
            actor=_host(),
        )
    assert Drop.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad",
    [
        {"price": Decimal("-0.01")},
        {"price": Decimal("1.999")},
        {"price": Decimal("NaN")},
        {"price": Decimal("sNaN")},
        {"price": Decimal("Infinity")},
        {"price": Decimal("1E+10")},
        {"price": Decimal("1E+30")},
        {"price": 1.5},
        {"price": "19.99"},
        {"price": None},
        {"price": True},
        {"quantity": 0},
        {"quantity": -3},
        {"quantity": 1.0},
        {"quantity": "3"},
        {"quantity": True},
        {"quantity": 1_000_001},
        {"per_viewer_limit": 0},
        {"per_viewer_limit": -1},
        {"per_viewer_limit": "2"},
        {"per_viewer_limit": False},
        {"starts_at": datetime(2030, 1, 1, 12, 0)},
        {"starts_at": "2030-01-01T12:00:00Z"},
    ],
    ids=repr,
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(bad):
    host = _host()
    stream = _stream(host)
    variant = stocked_variant(on_hand=20)
    before = _rows()
    arguments = {
        "stream_id": stream.pk,
        "variant_id": variant.pk,
        "quantity": 5,
        "price": PRICE,
        "per_viewer_limit": None,
        "actor": host,
        **bad,
    }

    with pytest.raises(InvalidInput) as excinfo:
        services.drop_create(**arguments)

    assert excinfo.value.data == {"field": next(iter(bad))}
    assert _rows() == before


@pytest.mark.django_db
def test_a_whole_number_price_is_accepted_as_that_many_units_of_currency():
    host = _host()
    drop = _drop(_stream(host), host, price=20)

    drop.refresh_from_db()
    assert drop.price == Decimal("20.00")


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["missing", "not_an_id", "inactive_variant", "inactive_product"])
def test_an_unknown_or_unsellable_variant_is_refused_and_nothing_is_written(case):
    host = _host()
    stream = _stream(host)
    variant = stocked_variant(on_hand=20)
    if case == "inactive_variant":
        variant.is_active = False
        variant.save()
    if case == "inactive_product":
        Product.objects.filter(pk=variant.product_id).update(is_active=False)
    variant_id = {"missing": MISSING_ID, "not_an_id": str(variant.pk)}.get(case, variant.pk)
    before = _rows()

    expected = {
        "missing": NotFound,
        "not_an_id": InvalidInput,
        "inactive_variant": VariantNotForSale,
        "inactive_product": VariantNotForSale,
    }[case]

    with pytest.raises(expected):
        services.drop_create(
            stream_id=stream.pk,
            variant_id=variant_id,
            quantity=5,
            price=PRICE,
            per_viewer_limit=None,
            actor=host,
        )

    assert _rows() == before


@pytest.mark.django_db
def test_more_units_than_are_free_is_insufficient_stock_and_nothing_is_written():
    host = _host()
    stream = _stream(host)
    variant = stocked_variant(on_hand=8)
    _drop(stream, host, variant=variant, quantity=3)
    before = _rows()

    with pytest.raises(InsufficientStock) as excinfo:
        _drop(stream, host, variant=variant, quantity=6)

    assert excinfo.value.data == {"available": 5}
    assert _rows() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_variant_without_a_stock_item_is_insufficient_stock():
    host = _host()
    stream = _stream(host)
    before = _rows()

    with pytest.raises(InsufficientStock) as excinfo:
        _drop(stream, host, variant=VariantFactory())

    assert excinfo.value.data == {"available": 0}
    assert _rows() == before


# --- pin, unpin ------------------------------------------------------------------------


@pytest.mark.django_db
def test_pinning_puts_the_drop_on_stage_and_opens_its_allocation(frozen_now):
    host = _host()
    drop = _drop(_stream(host), host)

    pinned = services.drop_pin(drop_id=drop.pk, actor=host)

    assert pinned.is_pinned is True
    assert pinned.allocation.status == AStatus.OPEN
    drop.refresh_from_db()
    assert drop.is_pinned is True
    assert drop.pinned_at == frozen_now
    assert drop.allocation.status == AStatus.OPEN
    assert drop.allocation.opened_at == frozen_now
    assert_inventory_invariants()


@pytest.mark.django_db
def test_pinning_a_pinned_drop_again_changes_nothing(monkeypatch):
    host = _host()
    drop = _drop(_stream(host), host)
    services.drop_pin(drop_id=drop.pk, actor=host)
    before = _rows()
    later = timezone.now().replace(year=2099)
    monkeypatch.setattr(timezone, "now", lambda: later)

    again = services.drop_pin(drop_id=drop.pk, actor=host)

    assert again.is_pinned is True
    assert _rows() == before


@pytest.mark.django_db
def test_pinning_b_unpins_a_whose_units_stay_on_sale():
    host = _host()
    stream = _stream(host)
    a, b = _drop(stream, host), _drop(stream, host)
    services.drop_pin(drop_id=a.pk, actor=host)

    services.drop_pin(drop_id=b.pk, actor=host)

    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.is_pinned, b.is_pinned) == (False, True)
    assert (a.allocation.status, b.allocation.status) == (AStatus.OPEN, AStatus.OPEN)
    assert list(Drop.objects.filter(is_pinned=True).values_list("pk", flat=True)) == [b.pk]


@pytest.mark.django_db
def test_pins_of_different_streams_do_not_interfere():
    host = _host()
    first, second = _stream(host, title="One"), _stream(host, title="Two")
    a, b = _drop(first, host), _drop(second, host)

    services.drop_pin(drop_id=a.pk, actor=host)
    services.drop_pin(drop_id=b.pk, actor=host)

    assert set(Drop.objects.filter(is_pinned=True).values_list("pk", flat=True)) == {a.pk, b.pk}


@pytest.mark.django_db
def test_the_database_allows_one_pinned_drop_per_stream():
    host = _host()
    stream = _stream(host)
    a, b = _drop(stream, host), _drop(stream, host)
    services.drop_pin(drop_id=a.pk, actor=host)

    with pytest.raises(IntegrityError), transaction.atomic():
        Drop.objects.filter(pk=b.pk).update(is_pinned=True, pinned_at=timezone.now())


@pytest.mark.django_db
@pytest.mark.parametrize("live", [False, True], ids=["scheduled", "ended"])
def test_a_drop_is_pinned_only_while_the_stream_is_live(live):
    host = _host()
    stream = _stream(host, live=live)
    drop = _drop(stream, host)
    if live:
        services.stream_end(stream_id=stream.pk, actor=host)
    before = _rows()

    with pytest.raises(StreamNotLive) as excinfo:
        services.drop_pin(drop_id=drop.pk, actor=host)

    assert (excinfo.value.code, excinfo.value.http_status) == ("stream_not_live", 409)
    assert _rows() == before


@pytest.mark.django_db
def test_a_drop_whose_allocation_was_closed_cannot_be_pinned():
    host = _host()
    drop = _drop(_stream(host), host)
    inventory.allocation_close(allocation_id=drop.allocation_id)
    before = _rows()

    with pytest.raises(AllocationClosed):
        services.drop_pin(drop_id=drop.pk, actor=host)

    assert _rows() == before


@pytest.mark.django_db
def test_only_the_host_or_staff_may_pin_or_unpin_and_nothing_changes_otherwise():
    host = _host()
    stream = _stream(host)
    a, b = _drop(stream, host), _drop(stream, host)
    services.drop_pin(drop_id=a.pk, actor=host)
    before = _rows()

    for outsider in [_host(), UserFactory()]:
        with pytest.raises(NotStreamHost):
            services.drop_pin(drop_id=b.pk, actor=outsider)
        with pytest.raises(NotStreamHost):
            services.drop_unpin(drop_id=a.pk, actor=outsider)
    assert _rows() == before

    staff = UserFactory(is_staff=True)
    services.drop_pin(drop_id=b.pk, actor=staff)
    services.drop_unpin(drop_id=b.pk, actor=staff)
    assert Drop.objects.filter(is_pinned=True).count() == 0


@pytest.mark.django_db
def test_pinning_or_unpinning_a_missing_drop_is_not_found():
    host = _host()

    with pytest.raises(NotFound):
        services.drop_pin(drop_id=MISSING_ID, actor=host)
    with pytest.raises(NotFound):
        services.drop_unpin(drop_id=MISSING_ID, actor=host)


@pytest.mark.django_db
def test_unpinning_keeps_the_units_on_sale(frozen_now):
    host = _host()
    drop = _drop(_stream(host), host)
    services.drop_pin(drop_id=drop.pk, actor=host)

    unpinned = services.drop_unpin(drop_id=drop.pk, actor=host)

    assert unpinned.is_pinned is False
    drop.refresh_from_db()
    assert drop.is_pinned is False
    assert drop.pinned_at == frozen_now  # when it was last pinned
    assert drop.allocation.status == AStatus.OPEN


@pytest.mark.django_db
def test_unpinning_a_drop_that_is_not_pinned_changes_nothing():
    host = _host()
    drop = _drop(_stream(host), host)
    before = _rows()

    again = services.drop_unpin(drop_id=drop.pk, actor=host)

    assert again.is_pinned is False
    assert _rows() == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_pins_leave_exactly_one_drop_pinned():
    host = _host()
    stream = _stream(host)
    variant = stocked_variant(on_hand=40)
    drops = [_drop(stream, host, variant=variant, quantity=4) for _ in range(8)]

    results = run_together(8, lambda i: services.drop_pin(drop_id=drops[i].pk, actor=host))

    assert all(isinstance(r, Drop) for r in results), results
    assert Drop.objects.filter(is_pinned=True).count() == 1
    assert set(Allocation.objects.values_list("status", flat=True)) == {AStatus.OPEN}
    assert_inventory_invariants()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_drop_created_while_the_stream_ends_never_keeps_units_carved():
    host = _host()
    stream = _stream(host)
    variants = [stocked_variant(on_hand=5) for _ in range(7)]

    def work(i: int):
        if i == 7:
            return services.stream_end(stream_id=stream.pk, actor=host)
        return _drop(stream, host, variant=variants[i], quantity=5)

    results = run_together(8, work)

    assert isinstance(results[7], Stream)
    assert all(isinstance(r, Drop | StreamEnded) for r in results[:7]), results
    assert set(Allocation.objects.values_list("status", "quantity")) <= {(AStatus.CLOSED, 0)}
    assert set(StockItem.objects.values_list("on_hand", "reserved")) == {(5, 0)}
    assert_inventory_invariants()


# --- end of stream ---------------------------------------------------------------------


@pytest.mark.django_db
def test_ending_the_stream_unpins_closes_every_allocation_and_returns_unsold_units(
    gate_mode, django_capture_on_commit_callbacks
):
    host = _host()
    stream = _stream(host)
    variant = stocked_variant(on_hand=20)
    a = _drop(stream, host, variant=variant, quantity=5)
    b = _drop(stream, host, variant=variant, quantity=4)
    with django_capture_on_commit_callbacks(execute=True):
        services.drop_pin(drop_id=a.pk, actor=host)
    hold = _reserve(django_capture_on_commit_callbacks, a, UserFactory(), key="k1", quantity=2)
    assert hold.status == Reservation.Status.HELD
    assert StockItem.objects.get(pk=variant.stock.pk).reserved == 9

    with django_capture_on_commit_callbacks(execute=True):
        services.stream_end(stream_id=stream.pk, actor=host)

    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.is_pinned, b.is_pinned) == (False, False)
    assert (a.allocation.status, a.allocation.quantity, a.allocation.held) == (
        AStatus.CLOSED,
        2,
        2,
    )
    assert (b.allocation.status, b.allocation.quantity, b.allocation.held) == (
        AStatus.CLOSED,
        0,
        0,
    )
    item = StockItem.objects.get(pk=variant.stock.pk)
    assert (item.on_hand, item.reserved) == (20, 2)  # only the open hold stays carved
    returns = StockMovement.objects.filter(reason=Reason.ALLOCATION_RETURN).order_by("pk")
    assert [(m.allocation_id, m.reserved_delta, m.actor) for m in returns] == [
        (a.allocation_id, -3, host),
        (b.allocation_id, -4, host),
    ]
    assert_inventory_invariants()
    # Nothing is on sale any more.
    with pytest.raises(DropNotLive):
        services.drop_reserve(
            drop_id=a.pk, customer_id=UserFactory().pk, quantity=1, idempotency_key="late"
        )


@pytest.mark.django_db
def test_another_user_cannot_end_the_stream_and_nothing_changes():
    host = _host()
    stream = _stream(host)
    drop = _drop(stream, host)
    services.drop_pin(drop_id=drop.pk, actor=host)
    before = _rows()

    with pytest.raises(NotStreamHost):
        services.stream_end(stream_id=stream.pk, actor=_host())

    assert _rows() == before


# --- reserve ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reservation_is_made_at_the_drop_price(gate_mode, django_capture_on_commit_callbacks):
    host = _host()
    drop = _drop(_stream(host), host, price=Decimal("9.90"))
    with django_capture_on_commit_callbacks(execute=True):
        services.drop_pin(drop_id=drop.pk, actor=host)
    customer = UserFactory()

    reservation = _reserve(django_capture_on_commit_callbacks, drop, customer, key="k1", quantity=2)

    assert reservation.status == Reservation.Status.HELD
    assert reservation.customer == customer
    assert reservation.allocation_id == drop.allocation_id
    assert reservation.quantity == 2
    assert reservation.unit_price == Decimal("9.90") == drop.price
    assert reservation.currency == "USD"
    assert reservation.idempotency_key == "k1"
    drop.allocation.refresh_from_db()
    assert (drop.allocation.held, drop.allocation.remaining) == (2, 3)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_the_per_viewer_limit_holds(gate_mode, django_capture_on_commit_callbacks):
    host = _host()
    drop = _drop(_stream(host), host, quantity=5, limit=2)
    with django_capture_on_commit_callbacks(execute=True):
        services.drop_pin(drop_id=drop.pk, actor=host)
    viewer, other = UserFactory(), UserFactory()
    first = _reserve(django_capture_on_commit_callbacks, drop, viewer, key="k1", quantity=2)
    assert first.status == Reservation.Status.HELD
    before = _rows()

    with pytest.raises(LimitReached):
        _reserve(django_capture_on_commit_callbacks, drop, viewer, key="k2")

    assert _rows() == before
    second = _reserve(django_capture_on_commit_callbacks, drop, other, key="k1", quantity=2)
    assert second.status == Reservation.Status.HELD
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_drop_that_was_never_pinned_is_not_on_sale(gate_mode):
    host = _host()
    drop = _drop(_stream(host), host)
    before = _rows()

    with pytest.raises(DropNotLive):
        services.drop_reserve(
            drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1, idempotency_key="k1"
        )

    assert _rows() == before


@pytest.mark.django_db
@pytest.mark.parametrize("drop_id", [MISSING_ID, "1", None, True])
def test_reserving_a_missing_drop_is_not_found_and_nothing_is_written(drop_id):
    customer = UserFactory()

    with pytest.raises(NotFound):
        services.drop_reserve(
            drop_id=drop_id, customer_id=customer.pk, quantity=1, idempotency_key="k1"
        )

    assert Reservation.objects.count() == 0


@pytest.mark.django_db
def test_drop_routing_is_read_once_per_process_once_its_rules_are_fixed(
    django_assert_num_queries,
):
    host = _host()
    drop = _drop(_stream(host), host, price=Decimal("3.25"))
    expected = selectors.DropRouting(
        allocation_id=drop.allocation_id,
        price=Decimal("3.25"),
        currency="USD",
        stream_id=drop.stream_id,
        mode="first_come",
        buyer_rules=False,
    )

    # Before its pin the host may still set entry rules: read afresh each time.
    with django_assert_num_queries(2):
        assert selectors.drop_routing(drop.pk) == selectors.drop_routing(drop.pk) == expected
    services.drop_pin(drop_id=drop.pk, actor=host)
    with django_assert_num_queries(1):
        first = selectors.drop_routing(drop.pk)
    with django_assert_num_queries(0):
        second = selectors.drop_routing(drop.pk)

    assert first == second == expected


@pytest.mark.django_db
def test_drop_routing_stays_bounded(monkeypatch, django_assert_num_queries):
    host = _host()
    stream = _stream(host)
    drops = [_drop(stream, host) for _ in range(3)]
    for drop in drops:  # on sale once each: their routing is fixed
        services.drop_pin(drop_id=drop.pk, actor=host)
    monkeypatch.setattr(selectors, "ROUTING_CACHE_SIZE", 2)

    for drop in drops:
        selectors.drop_routing(drop.pk)

    with django_assert_num_queries(0):
        selectors.drop_routing(drops[1].pk)
        selectors.drop_routing(drops[2].pk)
    with django_assert_num_queries(1):  # the oldest went out
        selectors.drop_routing(drops[0].pk)


@pytest.mark.redis
@pytest.mark.django_db
def test_a_sold_out_answer_from_the_gate_runs_no_sql(
    gate_on, django_capture_on_commit_callbacks, django_assert_num_queries
):
    host = _host()
    drop = _drop(_stream(host), host, quantity=1)
    with django_capture_on_commit_callbacks(execute=True):
        services.drop_pin(drop_id=drop.pk, actor=host)
    _reserve(django_capture_on_commit_callbacks, drop, UserFactory(), key="k1")
    latecomer = UserFactory()

    with django_assert_num_queries(0), pytest.raises(SoldOut):
        services.drop_reserve(
            drop_id=drop.pk, customer_id=latecomer.pk, quantity=1, idempotency_key="k1"
        )


# --- snapshot --------------------------------------------------------------------------


@pytest.mark.django_db
def test_stream_snapshot_is_the_api_shape(
    frozen_now, django_capture_on_commit_callbacks, django_assert_num_queries
):
    host = _host(username="glowhost")
    stream = services.stream_create(
        host=host,
        title="Glow Live",
        description="Serums.",
        scheduled_start=frozen_now,
        playback_url="https://video.example.com/live/1",
    )
    services.stream_start(stream_id=stream.pk, actor=host)
    serum = stocked_variant(on_hand=20, price=Decimal("24.00"))
    Product.objects.filter(pk=serum.product_id).update(
        name="Glow Serum", image_url="https://img.example.com/serum.jpg"
    )
    hoodie = stocked_variant(on_hand=10)
    a = _drop(stream, host, variant=serum, quantity=5, price=Decimal("19.99"), limit=2)
    b = services.drop_create(
        stream_id=stream.pk,
        variant_id=hoodie.pk,
        quantity=4,
        price=Decimal("30"),
        per_viewer_limit=None,
        actor=host,
        starts_at=frozen_now,
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.drop_pin(drop_id=a.pk, actor=host)
    _reserve(django_capture_on_commit_callbacks, a, UserFactory(), key="k1", quantity=2)
    now = frozen_now.strftime("%Y-%m-%dT%H:%M:%SZ")
    fetched = selectors.stream_get(slug="glow-live")

    with django_assert_num_queries(1):
        snapshot = selectors.stream_snapshot(stream=fetched)

    drop_a = {
        "id": a.pk,
        "variant": serum.pk,
        "sku": serum.sku,
        "product": "Glow Serum",
        "image_url": "https://img.example.com/serum.jpg",
        "price": "19.99",
        "currency": "USD",
        "quantity": 5,
        "remaining": 3,
        "sold": 0,
        "per_viewer_limit": 2,
        "pinned": True,
        "starts_at": None,
        "ends_at": None,
        "status": "open",
        "mode": "first_come",
    }
    drop_b = {
        "id": b.pk,
        "variant": hoodie.pk,
        "sku": hoodie.sku,
        "product": hoodie.product.name,
        "image_url": "",
        "price": "30.00",
        "currency": "USD",
        "quantity": 4,
        "remaining": 4,
        "sold": 0,
        "per_viewer_limit": None,
        "pinned": False,
        "starts_at": now,
        "ends_at": None,
        "status": "ready",
        "mode": "first_come",
    }
    assert snapshot == {
        "id": stream.pk,
        "slug": "glow-live",
        "title": "Glow Live",
        "description": "Serums.",
        "status": "live",
        "host": "glowhost",
        "scheduled_start": now,
        "started_at": now,
        "ended_at": None,
        "playback_url": "https://video.example.com/live/1",
        "pinned_drop": drop_a,
        "drops": [drop_a, drop_b],
        "viewers": 0,
        "seq": broadcast.current_seq(stream.pk),  # the pins were broadcast
    }
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert selectors.drop_snapshot(drop=selectors.drops_for_snapshot().get(pk=b.pk)) == drop_b


@pytest.mark.django_db
def test_a_stream_without_drops_has_no_pinned_drop():
    host = _host()
    snapshot = selectors.stream_snapshot(stream=_stream(host, live=False))

    assert (snapshot["status"], snapshot["pinned_drop"], snapshot["drops"]) == (
        "scheduled",
        None,
        [],
    )


@pytest.mark.django_db
def test_the_snapshot_reads_all_drops_in_one_query(django_assert_max_num_queries):
    host = _host()
    stream = _stream(host)
    for _ in range(6):
        _drop(stream, host)
    fetched = selectors.stream_get(slug=stream.slug)

    with django_assert_max_num_queries(1):
        snapshot = selectors.stream_snapshot(stream=fetched)

    assert len(snapshot["drops"]) == 6


@pytest.mark.django_db
def test_what_the_services_return_snapshots_without_queries(django_assert_num_queries):
    host = _host()
    drop = _drop(_stream(host), host)

    with django_assert_num_queries(0):
        selectors.drop_snapshot(drop=drop)
    pinned = services.drop_pin(drop_id=drop.pk, actor=host)
    with django_assert_num_queries(0):
        assert selectors.drop_snapshot(drop=pinned)["status"] == "open"
    unpinned = services.drop_unpin(drop_id=drop.pk, actor=host)
    with django_assert_num_queries(0):
        assert selectors.drop_snapshot(drop=unpinned)["pinned"] is False
