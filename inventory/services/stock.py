"""Stock levels: restocks, corrections and counts, each one ledger entry."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import InvalidInput, NotFound
from inventory import locks
from inventory.exceptions import InsufficientStock
from inventory.models import StockItem, StockMovement
from inventory.services._common import MAX_ON_HAND, validate_quantity

Reason = StockMovement.Reason

# Reasons a person may give for changing on_hand by hand (admin, import, API).
MANUAL_REASONS = (
    Reason.RESTOCK,
    Reason.ADJUSTMENT,
    Reason.SHRINKAGE,
    Reason.DAMAGE,
    Reason.RETURN,
    Reason.IMPORT,
)


def stock_item_ensure(*, variant_id: int) -> StockItem:
    """The stock item of a variant, created empty the first time."""
    item, _ = StockItem.objects.get_or_create(variant_id=variant_id)
    return item


def stock_adjust(
    *,
    stock_item_id: int,
    delta: int,
    reason: str,
    actor=None,
    note: str = "",
    reference: str = "",
) -> StockItem:
    """Change ``on_hand`` by ``delta`` and write the ledger entry, atomically.

    Guarantee: ``on_hand`` never drops below the units carved into allocations (those
    are promised to drops); such a change raises ``InsufficientStock`` and writes
    nothing.
    """
    validate_quantity(delta, field="delta", allow_negative=True, maximum=MAX_ON_HAND)
    if reason not in MANUAL_REASONS:
        raise InvalidInput(f"reason must be one of {', '.join(MANUAL_REASONS)}.", field="reason")
    with transaction.atomic():
        locks.claim_stock_item(stock_item_id)
        changed = StockItem.objects.filter(
            pk=stock_item_id,
            on_hand__gte=F("reserved") - delta,
            on_hand__lte=MAX_ON_HAND - delta,
        ).update(on_hand=F("on_hand") + delta)
        if not changed:
            item = StockItem.objects.filter(pk=stock_item_id).first()
            if item is None:
                raise NotFound("No such stock item.")
            if item.on_hand + delta > MAX_ON_HAND:
                raise InvalidInput(f"on_hand would exceed {MAX_ON_HAND}.", field="delta")
            raise InsufficientStock(
                f"Only {item.available} units are free to remove.", available=item.available
            )
        StockMovement.objects.create(
            stock_item_id=stock_item_id,
            reason=reason,
            on_hand_delta=delta,
            actor=actor,
            note=note,
            reference=reference,
        )
        return StockItem.objects.get(pk=stock_item_id)


def stock_restock(*, stock_item_id: int, quantity: int, actor=None, note: str = "") -> StockItem:
    """Add received units."""
    validate_quantity(quantity)
    return stock_adjust(
        stock_item_id=stock_item_id, delta=quantity, reason=Reason.RESTOCK, actor=actor, note=note
    )


def stock_set_on_hand(
    *, stock_item_id: int, on_hand: int, actor=None, note: str = "", reason: str = Reason.IMPORT
) -> StockItem | None:
    """Bring ``on_hand`` to a counted level (a stock take, a CSV import) through one
    ``stock_adjust``. Returns None when the level is already right (nothing written)."""
    if isinstance(on_hand, bool) or not isinstance(on_hand, int) or not 0 <= on_hand <= MAX_ON_HAND:
        raise InvalidInput(
            f"on_hand must be a whole number from 0 to {MAX_ON_HAND}.", field="on_hand"
        )
    with transaction.atomic():
        # Lock the row so the delta is computed against the level it will be applied to.
        item = locks.lock_stock_item(stock_item_id)
        if item is None:
            raise NotFound("No such stock item.")
        delta = on_hand - item.on_hand
        if delta == 0:
            return None
        return stock_adjust(
            stock_item_id=stock_item_id, delta=delta, reason=reason, actor=actor, note=note
        )


def check_threshold(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ON_HAND:
        raise InvalidInput(
            f"low_stock_threshold must be a whole number from 0 to {MAX_ON_HAND}.",
            field="low_stock_threshold",
        )
    return value


def stock_item_set_threshold(*, stock_item_id: int, low_stock_threshold: int) -> StockItem:
    """Set when a stock item counts as low (ops' admin): writes the threshold and
    nothing else, so no counter read earlier is ever written back."""
    check_threshold(low_stock_threshold)
    with transaction.atomic():
        if not StockItem.objects.filter(pk=stock_item_id).update(
            low_stock_threshold=low_stock_threshold, updated_at=timezone.now()
        ):
            raise NotFound("No such stock item.")
        return StockItem.objects.get(pk=stock_item_id)
