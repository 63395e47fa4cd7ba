"""The inventory's invariants, checked against the database rows, and the Redis gate's
agreement with those rows."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Sum

from inventory import gate
from inventory.models import Allocation, Reservation, StockItem, StockMovement, WaitlistEntry

Status = Reservation.Status


def _sums(field: str, by: str) -> dict[int, int]:
    return dict(
        StockMovement.objects.exclude(**{f"{by}__isnull": True})
        .values(by)
        .annotate(total=Sum(field))
        .values_list(by, "total")
    )


def assert_inventory_invariants() -> None:
    """Every promise the inventory makes, as assertions. Call after any change."""
    on_hand = _sums("on_hand_delta", "stock_item")
    reserved = _sums("reserved_delta", "stock_item")
    held = _sums("held_delta", "allocation")
    sold = _sums("sold_delta", "allocation")
    carved = _sums("reserved_delta", "allocation")

    carved_per_item: dict[int, int] = defaultdict(int)
    for allocation in Allocation.objects.all():
        a = allocation
        assert a.held >= 0 and a.sold >= 0, a
        assert a.held + a.sold <= a.quantity, f"{a} oversold: {a.held}+{a.sold}>{a.quantity}"
        assert held.get(a.pk, 0) == a.held, f"{a}: ledger held {held.get(a.pk)} != {a.held}"
        assert sold.get(a.pk, 0) == a.sold, f"{a}: ledger sold {sold.get(a.pk)} != {a.sold}"
        # Units carved for the allocation and not yet sold are still reserved in stock.
        assert carved.get(a.pk, 0) == a.quantity - a.sold, f"{a}: carve ledger disagrees"
        carved_per_item[a.stock_item_id] += a.quantity - a.sold

        rows = Reservation.objects.filter(allocation=a)
        held_rows = rows.filter(status=Reservation.Status.HELD).aggregate(t=Sum("quantity"))["t"]
        sold_rows = rows.filter(status=Reservation.Status.CONFIRMED).aggregate(t=Sum("quantity"))[
            "t"
        ]
        assert (held_rows or 0) == a.held, f"{a}: held rows {held_rows} != counter {a.held}"
        assert (sold_rows or 0) == a.sold, f"{a}: confirmed rows {sold_rows} != counter {a.sold}"
        if a.per_customer_limit is not None:
            per_customer = (
                rows.filter(status__in=(Reservation.Status.HELD, Reservation.Status.CONFIRMED))
                .values("customer_id")
                .annotate(units=Sum("quantity"))
            )
            for row in per_customer:
                assert row["units"] <= a.per_customer_limit, f"{a}: limit exceeded {row}"

        # First come, first served: no unit is free while anyone waits in line for it.
        if (
            a.status == Allocation.Status.OPEN
            and WaitlistEntry.objects.filter(allocation=a, status="waiting").exists()
        ):
            pending = rows.filter(status=Reservation.Status.PENDING).aggregate(t=Sum("quantity"))[
                "t"
            ]
            assert a.remaining - (pending or 0) <= 0, f"{a}: units free while viewers wait"

    for item in StockItem.objects.all():
        assert 0 <= item.reserved <= item.on_hand, f"{item}: {item.reserved}/{item.on_hand}"
        assert on_hand.get(item.pk, 0) == item.on_hand, f"{item}: ledger on_hand disagrees"
        assert reserved.get(item.pk, 0) == item.reserved, f"{item}: ledger reserved disagrees"
        assert carved_per_item[item.pk] == item.reserved, f"{item}: allocations disagree"


def gate_state_from_rows(allocation_id: int) -> gate.GateState | None:
    """The gate as the database says it must be (none for a missing allocation),
    computed here independently of the services' own rebuild."""
    allocation = Allocation.objects.filter(pk=allocation_id).first()
    if allocation is None:
        return None
    rows = Reservation.objects.filter(allocation=allocation)
    pending = sum(r.quantity for r in rows if r.status == Status.PENDING)
    customers: dict[int, int] = defaultdict(int)
    for r in rows:
        if r.status in (Status.PENDING, Status.HELD, Status.CONFIRMED):
            customers[r.customer_id] += r.quantity
    return gate.GateState(
        status="open" if allocation.status == Allocation.Status.OPEN else "closed",
        remaining=allocation.quantity - allocation.held - allocation.sold - pending,
        limit=allocation.per_customer_limit or 0,
        customers=dict(customers),
        expiries={r.pk: r.expires_at.timestamp() for r in rows if r.status == Status.HELD},
    )


def assert_gate_agrees(allocation_id: int, **fields) -> None:
    """With the gate on, at a quiet moment (no request of the allocation pending): the
    allocation's gate is exactly what its rows say it must be, and each field given
    (``status="open"``, ``remaining=0``) has that value. With the gate off there is no
    gate to check."""
    if not gate.gate_enabled():
        return
    pending = Reservation.objects.filter(allocation_id=allocation_id, status=Status.PENDING)
    assert not pending.exists(), f"allocation {allocation_id}: requests still pending"
    state = gate.gate_read(allocation_id=allocation_id)
    expected = gate_state_from_rows(allocation_id)
    assert state == expected, f"allocation {allocation_id}: gate {state} != rows {expected}"
    for name, value in fields.items():
        assert getattr(state, name) == value, f"allocation {allocation_id}: gate {name} {state}"
