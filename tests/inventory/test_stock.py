"""Stock levels: restocks, corrections and counts. Each change is exactly one ledger
entry; a refused change writes nothing and leaves the counters as they were."""

from __future__ import annotations

import pytest

from core.exceptions import InvalidInput, NotFound
from inventory import services
from inventory.exceptions import InsufficientStock
from inventory.models import StockItem, StockMovement
from inventory.services._common import MAX_ON_HAND, MAX_QUANTITY
from inventory.services.stock import MANUAL_REASONS
from tests.factories import UserFactory, VariantFactory, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants

Reason = StockMovement.Reason

MISSING_ID = 987_654


def _item(*, on_hand: int, carved: int = 0) -> StockItem:
    """A stock item with ``on_hand`` units, ``carved`` of them promised to an allocation."""
    item = stocked_variant(on_hand=on_hand).stock
    if carved:
        services.allocation_create(stock_item_id=item.pk, quantity=carved)
    item.refresh_from_db()
    return item


def _snapshot() -> tuple[list[tuple[int, int, int]], int]:
    return (
        list(StockItem.objects.order_by("pk").values_list("pk", "on_hand", "reserved")),
        StockMovement.objects.count(),
    )


def _last_movement() -> StockMovement:
    return StockMovement.objects.order_by("-id").first()


# --- stock_item_ensure -----------------------------------------------------------------


@pytest.mark.django_db
def test_stock_item_ensure_creates_an_empty_item_once():
    variant = VariantFactory()

    first = services.stock_item_ensure(variant_id=variant.pk)
    again = services.stock_item_ensure(variant_id=variant.pk)

    assert first.pk == again.pk
    assert (first.on_hand, first.reserved) == (0, 0)
    assert StockItem.objects.filter(variant=variant).count() == 1
    assert StockMovement.objects.count() == 0


# --- stock_restock ---------------------------------------------------------------------


@pytest.mark.django_db
def test_restock_adds_units_and_writes_one_ledger_entry():
    item = _item(on_hand=5)
    actor = UserFactory()
    movements_before = StockMovement.objects.count()

    result = services.stock_restock(
        stock_item_id=item.pk, quantity=7, actor=actor, note="pallet 42"
    )

    assert (result.pk, result.on_hand, result.reserved) == (item.pk, 12, 0)
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (12, 0)
    assert StockMovement.objects.count() == movements_before + 1
    movement = _last_movement()
    assert movement.stock_item_id == item.pk
    assert movement.reason == Reason.RESTOCK
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (7, 0, 0, 0)
    assert movement.actor == actor
    assert movement.note == "pallet 42"
    assert movement.allocation_id is None
    assert movement.reservation_id is None
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize("quantity", [0, -1, 1.5, "3", True, None, MAX_QUANTITY + 1])
def test_restock_rejects_a_quantity_that_is_not_a_positive_whole_number(quantity):
    item = _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.stock_restock(stock_item_id=item.pk, quantity=quantity)

    assert excinfo.value.data == {"field": "quantity"}
    assert _snapshot() == before


@pytest.mark.django_db
def test_restock_of_an_unknown_stock_item_is_not_found():
    _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(NotFound):
        services.stock_restock(stock_item_id=MISSING_ID, quantity=3)

    assert _snapshot() == before


# --- stock_adjust ----------------------------------------------------------------------


@pytest.mark.django_db
def test_adjust_removes_units_and_writes_one_ledger_entry_with_actor_reason_and_note():
    item = _item(on_hand=10)
    actor = UserFactory()
    movements_before = StockMovement.objects.count()

    result = services.stock_adjust(
        stock_item_id=item.pk,
        delta=-3,
        reason=Reason.DAMAGE,
        actor=actor,
        note="crushed in transit",
        reference="ticket-7",
    )

    assert (result.on_hand, result.reserved) == (7, 0)
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (7, 0)
    assert StockMovement.objects.count() == movements_before + 1
    movement = _last_movement()
    assert movement.stock_item_id == item.pk
    assert movement.reason == Reason.DAMAGE
    assert (
        movement.on_hand_delta,
        movement.reserved_delta,
        movement.held_delta,
        movement.sold_delta,
    ) == (-3, 0, 0, 0)
    assert movement.actor == actor
    assert movement.note == "crushed in transit"
    assert movement.reference == "ticket-7"
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize("reason", MANUAL_REASONS)
def test_adjust_accepts_every_manual_reason(reason):
    item = _item(on_hand=4)

    result = services.stock_adjust(stock_item_id=item.pk, delta=2, reason=reason)

    assert result.on_hand == 6
    movement = _last_movement()
    assert (movement.reason, movement.on_hand_delta) == (reason, 2)
    assert movement.actor is None
    assert movement.note == ""
    assert_inventory_invariants()


@pytest.mark.django_db
def test_adjust_may_remove_every_free_unit_but_never_a_carved_one():
    item = _item(on_hand=10, carved=6)

    result = services.stock_adjust(stock_item_id=item.pk, delta=-4, reason=Reason.SHRINKAGE)

    assert (result.on_hand, result.reserved, result.available) == (6, 6, 0)
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize(("delta", "available"), [(-5, 4), (-10, 4), (-11, 4)])
def test_adjust_below_the_carved_units_raises_insufficient_stock_and_writes_nothing(
    delta, available
):
    item = _item(on_hand=10, carved=6)
    before = _snapshot()

    with pytest.raises(InsufficientStock) as excinfo:
        services.stock_adjust(stock_item_id=item.pk, delta=delta, reason=Reason.SHRINKAGE)

    assert excinfo.value.data == {"available": available}
    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_adjust_below_zero_without_allocations_raises_insufficient_stock():
    item = _item(on_hand=3)
    before = _snapshot()

    with pytest.raises(InsufficientStock) as excinfo:
        services.stock_adjust(stock_item_id=item.pk, delta=-4, reason=Reason.ADJUSTMENT)

    assert excinfo.value.data == {"available": 3}
    assert _snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "delta", [0, 1.5, -1.5, "3", True, False, None, 10**10, -(10**10), MAX_ON_HAND + 1]
)
def test_adjust_rejects_a_delta_that_is_not_a_nonzero_whole_number(delta):
    item = _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.stock_adjust(stock_item_id=item.pk, delta=delta, reason=Reason.ADJUSTMENT)

    assert excinfo.value.data == {"field": "delta"}
    assert _snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "reason",
    [
        Reason.SALE,
        Reason.HOLD,
        Reason.HOLD_RELEASE,
        Reason.HOLD_EXPIRE,
        Reason.ALLOCATION_CARVE,
        Reason.ALLOCATION_RETURN,
        "",
        "bogus",
        None,
    ],
)
def test_adjust_rejects_a_reason_that_is_not_manual(reason):
    item = _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.stock_adjust(stock_item_id=item.pk, delta=1, reason=reason)

    assert excinfo.value.data == {"field": "reason"}
    assert _snapshot() == before


@pytest.mark.django_db
def test_adjust_beyond_the_on_hand_ceiling_is_invalid_and_writes_nothing():
    item = _item(on_hand=5)
    services.stock_set_on_hand(stock_item_id=item.pk, on_hand=MAX_ON_HAND)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.stock_adjust(stock_item_id=item.pk, delta=1, reason=Reason.RESTOCK)

    assert excinfo.value.data == {"field": "delta"}
    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_adjust_of_an_unknown_stock_item_is_not_found_and_writes_nothing():
    _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(NotFound):
        services.stock_adjust(stock_item_id=MISSING_ID, delta=-1, reason=Reason.ADJUSTMENT)

    assert _snapshot() == before


# --- stock_set_on_hand -----------------------------------------------------------------


@pytest.mark.django_db
def test_set_on_hand_up_writes_one_import_entry_for_the_difference():
    item = _item(on_hand=5)
    actor = UserFactory()
    movements_before = StockMovement.objects.count()

    result = services.stock_set_on_hand(
        stock_item_id=item.pk, on_hand=12, actor=actor, note="stock take"
    )

    assert (result.on_hand, result.reserved) == (12, 0)
    assert StockMovement.objects.count() == movements_before + 1
    movement = _last_movement()
    assert (movement.reason, movement.on_hand_delta, movement.reserved_delta) == (
        Reason.IMPORT,
        7,
        0,
    )
    assert movement.actor == actor
    assert movement.note == "stock take"
    assert_inventory_invariants()


@pytest.mark.django_db
def test_set_on_hand_down_writes_one_entry_with_the_given_reason():
    item = _item(on_hand=10, carved=4)
    movements_before = StockMovement.objects.count()

    result = services.stock_set_on_hand(stock_item_id=item.pk, on_hand=4, reason=Reason.SHRINKAGE)

    assert (result.on_hand, result.reserved) == (4, 4)
    assert StockMovement.objects.count() == movements_before + 1
    movement = _last_movement()
    assert (movement.reason, movement.on_hand_delta) == (Reason.SHRINKAGE, -6)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_set_on_hand_unchanged_returns_none_and_writes_nothing():
    item = _item(on_hand=5, carved=2)
    before = _snapshot()

    assert services.stock_set_on_hand(stock_item_id=item.pk, on_hand=5) is None

    assert _snapshot() == before


@pytest.mark.django_db
def test_set_on_hand_below_the_carved_units_raises_insufficient_stock_and_writes_nothing():
    item = _item(on_hand=10, carved=6)
    before = _snapshot()

    with pytest.raises(InsufficientStock) as excinfo:
        services.stock_set_on_hand(stock_item_id=item.pk, on_hand=5)

    assert excinfo.value.data == {"available": 4}
    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_set_on_hand_accepts_zero_and_the_ceiling():
    item = _item(on_hand=5)

    assert services.stock_set_on_hand(stock_item_id=item.pk, on_hand=MAX_ON_HAND).on_hand == (
        MAX_ON_HAND
    )
    assert services.stock_set_on_hand(stock_item_id=item.pk, on_hand=0).on_hand == 0

    deltas = list(
        StockMovement.objects.filter(stock_item=item)
        .order_by("id")
        .values_list("on_hand_delta", flat=True)
    )
    assert deltas == [5, MAX_ON_HAND - 5, -MAX_ON_HAND]
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize("on_hand", [-1, MAX_ON_HAND + 1, 10**10, 1.5, "5", True, None])
def test_set_on_hand_rejects_a_level_that_is_not_a_whole_number_in_range(on_hand):
    item = _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.stock_set_on_hand(stock_item_id=item.pk, on_hand=on_hand)

    assert excinfo.value.data == {"field": "on_hand"}
    assert _snapshot() == before


@pytest.mark.django_db
def test_set_on_hand_with_a_reason_that_is_not_manual_writes_nothing():
    item = _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(InvalidInput) as excinfo:
        services.stock_set_on_hand(stock_item_id=item.pk, on_hand=8, reason=Reason.SALE)

    assert excinfo.value.data == {"field": "reason"}
    assert _snapshot() == before


@pytest.mark.django_db
def test_set_on_hand_of_an_unknown_stock_item_is_not_found():
    _item(on_hand=5)
    before = _snapshot()

    with pytest.raises(NotFound):
        services.stock_set_on_hand(stock_item_id=MISSING_ID, on_hand=3)

    assert _snapshot() == before
