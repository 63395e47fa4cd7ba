"""Inventory services: every write to stock, allocations, holds and the ledger."""

from inventory.services._common import MAX_QUANTITY
from inventory.services.allocations import allocation_close, allocation_create, allocation_open
from inventory.services.gate_sync import gate_rebuild, gate_reconcile
from inventory.services.reservations import (
    allocation_settle_pending,
    reservation_confirm,
    reservation_refund,
    reservation_reinstate,
    reservation_release,
    reservation_request,
    reservation_reserve,
    reservations_expire,
)
from inventory.services.stock import (
    stock_adjust,
    stock_item_ensure,
    stock_restock,
    stock_set_on_hand,
)

__all__ = [
    "MAX_QUANTITY",
    "allocation_close",
    "allocation_create",
    "allocation_open",
    "allocation_settle_pending",
    "gate_rebuild",
    "gate_reconcile",
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
]
