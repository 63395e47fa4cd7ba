"""The Celery tasks, called directly: thin, idempotent interfaces over the services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.redis import get_redis
from inventory import gate, services, tasks
from inventory.models import Allocation, Reservation, StockMovement
from tests.factories import UserFactory, open_allocation
from tests.inventory.helpers import MISSING_ID, PRICE, request_hold
from tests.inventory.invariants import assert_gate_agrees, assert_inventory_invariants

Status = Reservation.Status


def _pending_row(customer, allocation: Allocation, *, key: str, quantity: int = 1):
    """A pending reservation whose reserve task was lost (a broker hiccup)."""
    return Reservation.objects.create(
        customer=customer,
        allocation=allocation,
        quantity=quantity,
        unit_price=PRICE,
        currency="USD",
        idempotency_key=key,
    )


def _age(reservation: Reservation, seconds: float) -> None:
    Reservation.objects.filter(pk=reservation.pk).update(
        created_at=timezone.now() - timedelta(seconds=seconds)
    )


def _snapshot() -> tuple:
    return (
        list(Reservation.objects.order_by("pk").values_list("pk", "status", "expires_at")),
        list(Allocation.objects.order_by("pk").values_list("pk", "held", "sold")),
        StockMovement.objects.count(),
    )


# --- reserve ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_reserve_settles_a_pending_reservation_once(gate_mode, django_capture_on_commit_callbacks):
    allocation = open_allocation(quantity=5)
    customer = UserFactory()
    # Inside the test transaction the on-commit enqueue never fires: the row waits.
    pending = request_hold(customer.pk, allocation.pk, key="p", quantity=2)
    assert pending.status == Status.PENDING
    allocation.refresh_from_db()
    assert allocation.held == 0

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.reserve(pending.pk) == Status.HELD

    pending.refresh_from_db()
    assert pending.status == Status.HELD
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (2, 3)
    assert_gate_agrees(allocation.pk, status="open")
    before = _snapshot()

    # Redelivered (acks_late): nothing changes the second time.
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.reserve(pending.pk) == Status.HELD

    assert _snapshot() == before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_reserve_settles_the_pending_rows_queued_before_it(gate_off):
    allocation = open_allocation(quantity=5)
    rows = [_pending_row(UserFactory(), allocation, key=f"p{n}") for n in range(3)]

    assert tasks.reserve(rows[2].pk) == Status.HELD

    assert set(Reservation.objects.values_list("status", flat=True)) == {Status.HELD}
    allocation.refresh_from_db()
    assert allocation.held == 3
    # One ledger entry for the batch.
    hold = StockMovement.objects.get(reason=StockMovement.Reason.HOLD)
    assert hold.held_delta == 3
    assert hold.reference == f"holds:{rows[0].pk},{rows[1].pk},{rows[2].pk}"
    assert_inventory_invariants()


@pytest.mark.django_db
def test_reserve_rejects_what_the_allocation_can_no_longer_give(gate_off):
    allocation = open_allocation(quantity=1)
    first = _pending_row(UserFactory(), allocation, key="a")
    second = _pending_row(UserFactory(), allocation, key="b")

    assert tasks.reserve(second.pk) == Status.REJECTED

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status, second.reject_reason) == (
        Status.HELD,
        Status.REJECTED,
        "sold_out",
    )
    assert second.expires_at is None
    assert_inventory_invariants()


@pytest.mark.django_db
def test_reserve_of_a_missing_reservation_returns_none():
    assert tasks.reserve(MISSING_ID) is None


@pytest.mark.django_db
def test_reserve_through_delay_runs_eagerly_in_tests(gate_off):
    allocation = open_allocation(quantity=2)
    pending = _pending_row(UserFactory(), allocation, key="p")

    result = tasks.reserve.delay(pending.pk)

    assert result.get() == Status.HELD
    pending.refresh_from_db()
    assert pending.status == Status.HELD


# --- expire_holds ----------------------------------------------------------------------


@pytest.mark.django_db
def test_expire_holds_returns_how_many_holds_it_expired(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    allocation = open_allocation(quantity=5)
    with capture(execute=True):
        holds = [request_hold(UserFactory().pk, allocation.pk, key="h") for _ in range(3)]
    due = [h.pk for h in holds[:2]]
    Reservation.objects.filter(pk__in=due).update(expires_at=timezone.now() - timedelta(seconds=1))

    with capture(execute=True):
        assert tasks.expire_holds() == 2

    statuses = dict(Reservation.objects.values_list("pk", "status"))
    assert statuses == {due[0]: Status.EXPIRED, due[1]: Status.EXPIRED, holds[2].pk: Status.HELD}
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (1, 4)
    assert_gate_agrees(allocation.pk)
    assert tasks.expire_holds() == 0
    assert_inventory_invariants()


# --- reconcile -------------------------------------------------------------------------


@pytest.mark.django_db
def test_reconcile_settles_only_stale_pending_reservations(gate_off):
    lost = open_allocation(quantity=3)
    busy = open_allocation(quantity=3)
    stale = _pending_row(UserFactory(), lost, key="stale")
    _age(stale, tasks.STALE_PENDING_AFTER.total_seconds() + 1)
    fresh = _pending_row(UserFactory(), busy, key="fresh")

    assert tasks.reconcile() == {"stale_allocations": 1, "gates_repaired": 0}

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.status, fresh.status) == (Status.HELD, Status.PENDING)
    lost.refresh_from_db()
    busy.refresh_from_db()
    assert (lost.held, busy.held) == (1, 0)
    assert tasks.reconcile() == {"stale_allocations": 0, "gates_repaired": 0}
    assert_inventory_invariants()


@pytest.mark.django_db
def test_reconcile_counts_each_allocation_with_stale_rows_once(gate_off):
    allocation = open_allocation(quantity=1)
    rows = [_pending_row(UserFactory(), allocation, key=f"s{n}") for n in range(3)]
    for row in rows:
        _age(row, 120)

    assert tasks.reconcile() == {"stale_allocations": 1, "gates_repaired": 0}

    assert [r.status for r in Reservation.objects.order_by("id")] == [
        Status.HELD,
        Status.REJECTED,
        Status.REJECTED,
    ]
    assert_inventory_invariants()


@pytest.mark.django_db
def test_reconcile_with_nothing_to_do_changes_nothing(gate_off):
    allocation = open_allocation(quantity=3)
    request_hold(UserFactory().pk, allocation.pk, key="p")  # pending, but young
    before = _snapshot()

    assert tasks.reconcile() == {"stale_allocations": 0, "gates_repaired": 0}

    assert _snapshot() == before


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_reconcile_settles_stale_holds_and_repairs_the_gates_of_open_allocations(gate_on):
    lost = open_allocation(quantity=4)  # its gate will be lost, with a stale pending row
    drifted = open_allocation(quantity=4)
    healthy = open_allocation(quantity=4)
    closed = open_allocation(quantity=4)
    services.allocation_close(allocation_id=closed.pk)
    for allocation in (lost, drifted, healthy):
        request_hold(UserFactory().pk, allocation.pk, key="h")
    stale = _pending_row(UserFactory(), lost, key="stale", quantity=2)
    _age(stale, 60)
    gate.gate_delete(allocation_id=lost.pk)
    gate.gate_delete(allocation_id=closed.pk)
    get_redis().hset(f"gate:{{alloc:{drifted.pk}}}", "remaining", 0)
    healthy_gate = gate.gate_read(allocation_id=healthy.pk)

    assert tasks.reconcile() == {"stale_allocations": 1, "gates_repaired": 2}

    stale.refresh_from_db()
    assert stale.status == Status.HELD
    lost_state = gate.gate_read(allocation_id=lost.pk)
    assert (lost_state.remaining, sum(lost_state.customers.values())) == (1, 3)
    assert len(lost_state.expiries) == 2
    assert gate.gate_read(allocation_id=drifted.pk).remaining == 3
    assert gate.gate_read(allocation_id=healthy.pk) == healthy_gate
    assert gate.gate_read(allocation_id=closed.pk) is None  # not on sale: left alone
    assert tasks.reconcile() == {"stale_allocations": 0, "gates_repaired": 0}
    assert_inventory_invariants()
