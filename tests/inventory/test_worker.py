"""The purchase path through a real Celery worker process, and its faults: a worker
killed mid-task, the gate's Redis data lost mid-load."""

import os
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.redis import get_redis
from inventory import gate, services, tasks
from inventory.exceptions import SoldOut
from inventory.models import Allocation, Reservation, StockMovement
from tests.concurrency import run_together
from tests.factories import UserFactory, open_allocation
from tests.inventory.invariants import assert_inventory_invariants
from tests.processes import celery_worker, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.celery_worker]

BUYERS = 60
UNITS = 7


def _request(buyer_id: int, allocation_id: int, key: str):
    try:
        return services.reservation_request(
            customer_id=buyer_id,
            allocation_id=allocation_id,
            quantity=1,
            idempotency_key=key,
            unit_price=Decimal("5.00"),
            currency="USD",
        )
    except SoldOut as exc:
        return exc


def _settled(allocation_id: int) -> bool:
    return not Reservation.objects.filter(
        allocation_id=allocation_id, status=Reservation.Status.PENDING
    ).exists()


@pytest.mark.django_db(transaction=True)
def test_last_unit_race_through_a_worker_process(gate_mode, celery_through_broker):
    allocation = open_allocation(quantity=UNITS, on_hand=UNITS)
    buyers = [UserFactory().pk for _ in range(BUYERS)]

    with celery_worker(concurrency=2):
        results = run_together(BUYERS, lambda i: _request(buyers[i], allocation.pk, f"w-{i}"))
        wait_until(lambda: _settled(allocation.pk), timeout=60, message="holds left pending")

    statuses = Counter(Reservation.objects.values_list("status", flat=True))
    turned_away = sum(isinstance(r, SoldOut) for r in results)
    assert statuses["held"] == UNITS
    assert statuses["held"] + statuses["rejected"] + turned_away == BUYERS
    if gate_mode == "gate_on":
        assert statuses["rejected"] == 0  # the gate turned every loser away up front
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (UNITS, 0)
    # The worker settles in batches: far fewer ledger entries than holds.
    assert 1 <= StockMovement.objects.filter(reason="hold").count() <= UNITS
    assert_inventory_invariants()


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_task_loses_and_doubles_nothing(gate_on, celery_through_broker):
    allocation = open_allocation(quantity=3)
    buyer = UserFactory()
    locked = threading.Event()
    release_lock = threading.Event()

    def hold_the_allocation_row():
        # Keep the allocation row locked so the worker's settle blocks inside its task.
        with transaction.atomic():
            # The same lock a settle takes: new reservation rows can still be inserted.
            Allocation.objects.select_for_update(no_key=True).get(pk=allocation.pk)
            locked.set()
            release_lock.wait(60)
        connection.close()

    locker = threading.Thread(target=hold_the_allocation_row)
    locker.start()
    assert locked.wait(10)
    try:
        # A short visibility timeout so the next worker redelivers the unacked task soon.
        with celery_worker(concurrency=1, CELERY_VISIBILITY_TIMEOUT="3") as doomed:
            reservation = _request(buyer.pk, allocation.pk, "killed")
            wait_until(lambda: _lock_waiters() >= 1, message="the task never reached the lock")
            os.killpg(doomed.pid, signal.SIGKILL)  # the whole worker, mid-transaction
            doomed.wait(10)
    finally:
        release_lock.set()
        locker.join(30)

    assert Reservation.objects.get(pk=reservation.pk).status == Reservation.Status.PENDING
    # A worker starting after the visibility timeout restores the unacknowledged task.
    time.sleep(4)
    with celery_worker(concurrency=1, CELERY_VISIBILITY_TIMEOUT="3"):
        # The broker redelivers the unacknowledged task; it runs to the end this time.
        wait_until(
            lambda: Reservation.objects.get(pk=reservation.pk).status == Reservation.Status.HELD,
            timeout=60,
            message="the task was not redelivered after its worker died",
        )
        # A duplicate delivery of the same task changes nothing.
        tasks.reserve.delay(reservation.pk)
        time.sleep(1)

    allocation.refresh_from_db()
    assert allocation.held == 1
    assert StockMovement.objects.filter(reason="hold").count() == 1
    assert gate.gate_read(allocation_id=allocation.pk).remaining == 2
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_gate_data_lost_mid_load_never_oversells_and_reconcile_restores_it(
    gate_on, celery_through_broker
):
    allocation = open_allocation(quantity=UNITS, on_hand=UNITS)
    buyers = [UserFactory().pk for _ in range(BUYERS)]
    redis = get_redis()

    def buy_or_wipe(i):
        if i == 0:
            time.sleep(0.02)
            keys = list(redis.scan_iter(match="gate:*"))
            if keys:
                redis.delete(*keys)  # Redis lost the gate (restart without persistence)
            return "wiped"
        return _request(buyers[i], allocation.pk, f"lost-{i}")

    with celery_worker(concurrency=2):
        run_together(BUYERS, buy_or_wipe)
        wait_until(lambda: _settled(allocation.pk), timeout=60, message="holds left pending")
        tasks.reconcile.delay()
        wait_until(
            lambda: (
                (state := gate.gate_read(allocation_id=allocation.pk)) is not None
                and state.remaining == Allocation.objects.get(pk=allocation.pk).remaining
            ),
            timeout=30,
            message="reconcile did not bring the gate back in line with the database",
        )

    allocation.refresh_from_db()
    assert allocation.held <= UNITS
    assert allocation.held == Reservation.objects.filter(status="held").count()
    state = gate.gate_read(allocation_id=allocation.pk)
    # No unit lost: what the gate offers plus what is held is exactly the allocation.
    assert state.remaining + allocation.held + allocation.sold == UNITS
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_tasks_lost_with_redis_are_settled_by_reconcile(gate_on, celery_through_broker):
    allocation = open_allocation(quantity=5)
    buyers = [UserFactory().pk for _ in range(3)]
    # Requests admitted while no worker runs: their tasks wait in the broker...
    pending = [_request(b, allocation.pk, f"flush-{b}") for b in buyers]
    assert {r.status for r in pending} == {"pending"}
    # ...and Redis loses everything, broker queue included.
    get_redis().flushdb()
    Reservation.objects.filter(pk__in=[r.pk for r in pending]).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )

    with celery_worker(concurrency=1):
        tasks.reconcile.delay()
        wait_until(lambda: _settled(allocation.pk), timeout=30, message="stale holds not settled")
        wait_until(lambda: gate.gate_read(allocation_id=allocation.pk) is not None, timeout=30)

    allocation.refresh_from_db()
    assert allocation.held == 3
    assert gate.gate_read(allocation_id=allocation.pk).remaining == 2
    assert_inventory_invariants()


def _queued_tasks(app) -> Counter:
    """Task names waiting in the broker's default queue."""
    import json

    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return Counter(json.loads(m)["headers"]["task"] for m in client.lrange("celery", 0, -1))


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_one_settle_is_queued_per_allocation_until_a_worker_starts_it(
    gate_on, celery_through_broker
):
    first, second = open_allocation(quantity=10), open_allocation(quantity=10)
    for n in range(4):
        _request(UserFactory().pk, first.pk, f"a-{n}")
    _request(UserFactory().pk, second.pk, "b-0")
    assert _queued_tasks(celery_through_broker)["inventory.settle"] == 2

    with celery_worker():
        wait_until(lambda: _settled(first.pk) and _settled(second.pk))
        # Started and done: the next hold queues a settle of its own, which runs.
        late = _request(UserFactory().pk, first.pk, "a-late")
        wait_until(
            lambda: Reservation.objects.get(pk=late.pk).status == Reservation.Status.HELD,
            message="a hold after the settle started was never settled",
        )
    assert Reservation.objects.filter(allocation_id=first.pk, status="held").count() == 5
    assert_inventory_invariants()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_lost_settle_mark_only_costs_an_extra_task(gate_on, celery_through_broker):
    """Redis forgets the mark (flushed, failed over): the next hold queues another
    settle; the two settle once between them."""
    allocation = open_allocation(quantity=10)
    _request(UserFactory().pk, allocation.pk, "k-0")
    get_redis().delete(tasks._settle_queued_key(allocation.pk))
    _request(UserFactory().pk, allocation.pk, "k-1")
    assert _queued_tasks(celery_through_broker)["inventory.settle"] == 2

    with celery_worker():
        wait_until(lambda: _settled(allocation.pk))
    allocation.refresh_from_db()
    assert allocation.held == 2
    assert_inventory_invariants()
