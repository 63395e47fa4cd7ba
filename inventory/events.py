"""Domain events of the inventory: its only way out to whoever keeps a copy of it.

``inventory`` knows nothing of streams or websockets: ``livestream`` subscribes here
(in its ``AppConfig.ready``) and turns these into broadcasts, ``demand`` counts them.
The Redis gate mirrors the units too: ``inventory.services.gate_sync`` subscribes (in
``InventoryConfig.ready``) to the events that move them, so no service writes the gate
by hand.

Subscribers are told after commit, never on rollback. One that must stamp its own
record of a change in the same commit (the gate's version, see ``inventory.gate``)
subscribes in the transaction instead: it sees the events as they are emitted, under
the transaction's row locks, and does its own after-commit work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction

logger = logging.getLogger(__name__)


# ``version``: the allocation's version the change was committed at (bumped once per
# transaction under the allocation's lock, see ``inventory.services._common``). A copy
# that has a change of a higher version already drops this one: events sent after
# commit by different processes may arrive in any order.


@dataclass(frozen=True)
class ReservationChanged:
    """A reservation as its transaction left it."""

    reservation_id: int
    customer_id: int
    allocation_id: int
    status: str
    version: int
    quantity: int
    expires_at: datetime | None
    unit_price: Decimal
    currency: str
    reject_reason: str
    created_at: datetime

    @classmethod
    def of(cls, reservation, *, version: int) -> ReservationChanged:
        """The event telling of ``reservation`` (a row) as it stands."""
        return cls(
            reservation_id=reservation.pk,
            customer_id=reservation.customer_id,
            allocation_id=reservation.allocation_id,
            status=reservation.status,
            version=version,
            quantity=reservation.quantity,
            expires_at=reservation.expires_at,
            unit_price=reservation.unit_price,
            currency=reservation.currency,
            reject_reason=reservation.reject_reason,
            created_at=reservation.created_at,
        )


@dataclass(frozen=True)
class AllocationChanged:
    """An allocation's figures as its transaction left them."""

    allocation_id: int
    status: str
    quantity: int
    held: int
    sold: int
    version: int

    @property
    def remaining(self) -> int:
        return self.quantity - self.held - self.sold


@dataclass(frozen=True)
class WaitlistChanged:
    """A customer's place in line changed: joined, moved up, offered, claimed, left..."""

    entry_id: int
    customer_id: int
    allocation_id: int
    status: str
    position: int | None  # 1 = next in line; None once no longer waiting
    reservation_id: int | None


# --- how units moved, for whoever mirrors them (the gate) ----------------------------


@dataclass(frozen=True)
class UnitsReturned:
    """Units a customer no longer takes: a hold released or expired, a sale refunded,
    or a request refused at settle (``reservation_id`` None: it never held).
    ``back_on_sale`` False: they left the allocation for stock (it is closed)."""

    allocation_id: int
    customer_id: int
    quantity: int
    reservation_id: int | None = None
    back_on_sale: bool = True


@dataclass(frozen=True)
class HoldsPlaced:
    """Pending requests became holds, each until its expiry (epoch seconds)."""

    allocation_id: int
    expiries: tuple[tuple[int, float], ...]  # (reservation id, expires at)


@dataclass(frozen=True)
class HoldsSold:
    """Holds were paid for: their units stay taken, their expiries no longer matter."""

    allocation_id: int
    reservation_ids: tuple[int, ...]


@dataclass(frozen=True)
class AllocationRecounted:
    """The allocation's units changed in a way no delta above tells (opened, closed,
    offered to the line, a late payment held again): a copy counts them afresh from
    the rows. Rare next to the moves above."""

    allocation_id: int


Event = (
    ReservationChanged
    | AllocationChanged
    | WaitlistChanged
    | UnitsReturned
    | HoldsPlaced
    | HoldsSold
    | AllocationRecounted
)
Subscriber = Callable[[list[Event]], None]

_subscribers: list[Subscriber] = []
_in_transaction: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    """Deliver every committed batch of events to ``subscriber``."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)


def subscribe_in_transaction(subscriber: Subscriber) -> None:
    """Show ``subscriber`` every batch as it is emitted, inside its transaction and
    under its locks; an exception it raises rolls the transaction back."""
    if subscriber not in _in_transaction:
        _in_transaction.append(subscriber)


def unsubscribe(subscriber: Subscriber) -> None:
    for subscribers in (_subscribers, _in_transaction):
        if subscriber in subscribers:
            subscribers.remove(subscriber)


def emit_on_commit(events: Iterable[Event]) -> None:
    """Deliver events once the current transaction commits (never if it rolls back),
    after showing them to the in-transaction subscribers now."""
    batch = list(events)
    if not batch:
        return
    for subscriber in list(_in_transaction):
        subscriber(batch)
    transaction.on_commit(lambda: _deliver(batch))


def _deliver(batch: list[Event]) -> None:
    for subscriber in list(_subscribers):
        try:
            subscriber(batch)
        except Exception:  # a failing listener must not undo or block a committed sale
            logger.exception("inventory event subscriber %r failed", subscriber)
