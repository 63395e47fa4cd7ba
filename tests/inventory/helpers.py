"""Shortcuts the inventory tests share: a primed allocation, a request, a settled hold,
and a snapshot of everything a change could touch."""

from __future__ import annotations

from decimal import Decimal

from inventory import events, gate, services
from inventory.models import Allocation, Reservation, StockItem, StockMovement
from tests.factories import open_allocation

PRICE = Decimal("9.99")
MISSING_ID = 987_654


def open_primed(
    quantity: int, *, on_hand: int | None = None, limit: int | None = None
) -> Allocation:
    """An open allocation whose gate (when the gate is on) is already built: the gate
    ``allocation_open`` primes on commit never runs inside a rolled-back test."""
    allocation = open_allocation(quantity=quantity, on_hand=on_hand, per_customer_limit=limit)
    services.gate_rebuild(allocation_id=allocation.pk)
    return allocation


def current_version(allocation_id: int) -> int:
    """The allocation's version as the last committed change left it."""
    return Allocation.objects.values_list("version", flat=True).get(pk=allocation_id)


def reservation_changed(reservation_id: int, *, status: str) -> events.ReservationChanged:
    """The event that tells of the reservation as its row stands now (in ``status``), at
    its allocation's current version: what the last transaction must have said."""
    row = Reservation.objects.get(pk=reservation_id)
    assert row.status == status, f"reservation {reservation_id} is {row.status}"
    return events.ReservationChanged.of(row, version=current_version(row.allocation_id))


def allocation_changed(
    allocation_id: int, *, status: str, quantity: int, held: int, sold: int
) -> events.AllocationChanged:
    """The event that tells of the allocation with these figures, at its current
    version: what the last transaction must have said."""
    return events.AllocationChanged(
        allocation_id=allocation_id,
        status=status,
        quantity=quantity,
        held=held,
        sold=sold,
        version=current_version(allocation_id),
    )


def request_hold(
    customer_id: int, allocation_id: int, *, key: str, quantity: int = 1
) -> Reservation:
    return services.reservation_request(
        customer_id=customer_id,
        allocation_id=allocation_id,
        quantity=quantity,
        idempotency_key=key,
        unit_price=PRICE,
        currency="USD",
    )


def settled_hold(
    capture, customer_id: int, allocation_id: int, *, key: str, quantity: int = 1
) -> Reservation:
    """Request, then let the on-commit work (the eager reserve task, gate updates) run;
    ``capture`` is pytest-django's ``django_capture_on_commit_callbacks``."""
    with capture(execute=True):
        reservation = request_hold(customer_id, allocation_id, key=key, quantity=quantity)
    reservation.refresh_from_db()
    return reservation


def _gates() -> dict[int, gate.GateState | None]:
    if not gate.gate_enabled():
        return {}
    return {
        pk: gate.gate_read(allocation_id=pk)
        for pk in Allocation.objects.values_list("pk", flat=True)
    }


def snapshot() -> tuple:
    """Every row and counter a request could touch, and the gates."""
    return (
        list(
            Reservation.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "expires_at", "idempotency_key"
            )
        ),
        list(
            Allocation.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "held", "sold"
            )
        ),
        list(StockItem.objects.order_by("pk").values_list("pk", "on_hand", "reserved")),
        StockMovement.objects.count(),
        _gates(),
    )


def last_movement() -> StockMovement:
    return StockMovement.objects.order_by("-id").first()
