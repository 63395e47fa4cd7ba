"""Inventory services: every write to stock, allocations, holds and the ledger.

Lock order, everywhere: reservation rows, then the allocation row, then the stock item.
The settle path locks the allocation and then only *pending* rows, which no other path
locks, so no cycle can form.

Rows are locked ``FOR NO KEY UPDATE`` (``no_key=True``): that still serialises writers
of the same row, but does not block the ``FOR KEY SHARE`` lock PostgreSQL takes on a
referenced row when a new reservation or ledger entry is inserted. A plain ``FOR
UPDATE`` on the allocation would make every incoming request wait for the settle in
progress.
"""

from inventory.services._common import MAX_QUANTITY
from inventory.services.allocations import allocation_close, allocation_create, allocation_open
from inventory.services.gate_sync import gate_rebuild, gate_reconcile
from inventory.services.holds import (
    reservation_confirm,
    reservation_refund,
    reservation_reinstate,
    reservation_release,
    reservations_expire,
)
from inventory.services.reservations import reservation_request
from inventory.services.settle import allocation_settle_pending, reservation_reserve
from inventory.services.stock import (
    stock_adjust,
    stock_item_ensure,
    stock_restock,
    stock_set_on_hand,
)
from inventory.services.waitlist import (
    offer_returned_units,
    waitlist_entry_for,
    waitlist_join,
    waitlist_leave,
    waitlist_position,
)

__all__ = [
    "MAX_QUANTITY",
    "allocation_close",
    "allocation_create",
    "allocation_open",
    "allocation_settle_pending",
    "gate_rebuild",
    "gate_reconcile",
    "offer_returned_units",
    "reservation_confirm",
    "reservation_refund",
    "reservation_reinstate",
    "reservation_release",
    "reservation_request",
    "reservation_reserve",
    "reservations_expire",
    "stock_adjust",
    "stock_item_ensure",
    "stock_restock",
    "stock_set_on_hand",
    "waitlist_entry_for",
    "waitlist_join",
    "waitlist_leave",
    "waitlist_position",
]
