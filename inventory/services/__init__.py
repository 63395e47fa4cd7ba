"""Inventory services: every write to stock, allocations, holds and the ledger.

Rows are locked through ``inventory.locks``, which owns the lock order (customer,
reservations, allocations, stock items) and checks it. The services tell how units
moved through ``inventory.events`` only; the Redis gate is written from the database
side only by ``gate_sync``, which subscribes to those events.

Each module here imports only modules below it: the shared helpers (``_common``), the
gate's upkeep (``gate_sync``), demand counting and stock at the bottom; then the
waitlist's offers (``offers``), which the services that move units call inside their
transactions; then allocations and holds; then what builds on holds (``settle``,
``waitlist``, ``reservations``). The tasks sit above this surface and are never
imported by it: the services have pending holds settled through
``inventory.settle_queue``.
"""

from inventory.services._common import MAX_QUANTITY, validate_quantity
from inventory.services.allocations import (
    allocation_close,
    allocation_close_by_hand,
    allocation_create,
    allocation_lock,
    allocation_open,
    allocation_open_by_hand,
    allocation_owner_register,
    allocation_set_label,
    allocations_close,
)
from inventory.services.gate_sync import gate_rebuild, gate_reconcile
from inventory.services.holds import (
    reservation_confirm,
    reservation_refund,
    reservation_reinstate,
    reservation_release,
    reservations_expire,
)
from inventory.services.offers import offer_returned_units
from inventory.services.reservations import (
    AdmittedRequest,
    reservation_request,
    reservations_create_pending,
)
from inventory.services.settle import allocation_settle_pending, reservation_reserve
from inventory.services.stock import (
    stock_adjust,
    stock_item_ensure,
    stock_item_set_threshold,
    stock_restock,
    stock_set_on_hand,
)
from inventory.services.waitlist import (
    waitlist_entry_for,
    waitlist_join,
    waitlist_leave,
    waitlist_position,
)

__all__ = [
    "MAX_QUANTITY",
    "AdmittedRequest",
    "allocation_close",
    "allocation_close_by_hand",
    "allocation_create",
    "allocation_lock",
    "allocation_open",
    "allocation_open_by_hand",
    "allocation_owner_register",
    "allocation_set_label",
    "allocation_settle_pending",
    "allocations_close",
    "gate_rebuild",
    "gate_reconcile",
    "offer_returned_units",
    "reservation_confirm",
    "reservation_refund",
    "reservation_reinstate",
    "reservation_release",
    "reservation_request",
    "reservation_reserve",
    "reservations_create_pending",
    "reservations_expire",
    "stock_adjust",
    "stock_item_ensure",
    "stock_item_set_threshold",
    "stock_restock",
    "stock_set_on_hand",
    "validate_quantity",
    "waitlist_entry_for",
    "waitlist_join",
    "waitlist_leave",
    "waitlist_position",
]
