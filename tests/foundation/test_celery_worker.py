"""A real Celery worker process runs a task sent through Redis."""

import pytest

from inventory.models import Reservation
from tests.factories import UserFactory, open_allocation
from tests.processes import celery_worker, wait_until


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_runs_the_reserve_task(celery_through_broker, gate_off):
    from decimal import Decimal

    from inventory import services

    allocation = open_allocation(quantity=2)
    buyer = UserFactory()

    with celery_worker():
        reservation = services.reservation_request(
            customer_id=buyer.pk,
            allocation_id=allocation.pk,
            quantity=1,
            idempotency_key="worker-1",
            unit_price=Decimal("10.00"),
            currency="USD",
        )
        assert reservation.status == Reservation.Status.PENDING
        wait_until(
            lambda: Reservation.objects.get(pk=reservation.pk).status == Reservation.Status.HELD,
            message="the worker never settled the hold",
        )

    allocation.refresh_from_db()
    assert allocation.held == 1


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_counter_sent_after_the_task_that_armed_it_still_reaches_viewers(
    celery_through_broker, gate_on
):
    """The coalesced trailing ``stock.changed`` runs in a worker thread after its task
    ended, with the database pool on as in production."""
    import json
    from decimal import Decimal

    from core.redis import get_redis
    from livestream import services as live
    from livestream import topics
    from tests.factories import live_drop

    drop = live_drop(quantity=5, price=Decimal("1.00"), title="Trailing")
    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(topics.stream_channel(drop.stream_id))

    def reserve(key: str) -> Reservation:
        reservation = live.drop_reserve(
            drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1, idempotency_key=key
        )
        wait_until(
            lambda: Reservation.objects.get(pk=reservation.pk).status == Reservation.Status.HELD,
            message="the worker never settled the hold",
        )
        return reservation

    with celery_worker(DB_POOL_MAX_SIZE="4", BROADCAST_COALESCE_MS="1500"):
        reserve("first")  # sent at once; opens a 1.5 s window in the worker
        reserve("second")  # folded into the window: the worker's timer sends it later
        remaining = wait_until(
            lambda: next(
                (
                    event["remaining"]
                    for message in iter(lambda: pubsub.get_message(timeout=0.2), None)
                    if (event := json.loads(message["data"]))["type"] == "stock.changed"
                    and event["remaining"] == 3
                ),
                None,
            ),
            timeout=10,
            message="the trailing stock.changed never came",
        )
    pubsub.close()
    assert remaining == 3


def test_worker_processes_use_plain_database_connections(settings):
    """Celery closes a prefork child's pool after every task, under any thread still
    using it; workers therefore drop the pool when they start, and keep their plain
    connection between tasks instead of opening one per task."""
    from celery.signals import worker_init

    settings.WORKER_CONN_MAX_AGE = 45
    settings.DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "CONN_MAX_AGE": 0,
            "OPTIONS": {"pool": {}},
        }
    }

    worker_init.send(sender=None)

    assert "pool" not in settings.DATABASES["default"]["OPTIONS"]
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 45


def _worker_backends() -> set[tuple[int, str]]:
    from django.db import connection

    from config.celery import WORKER_APP_NAME

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start::text FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [WORKER_APP_NAME],
        )
        return set(cursor.fetchall())


def _settled_through_the_worker(allocation, key: str):
    from decimal import Decimal

    from inventory import services

    reservation = services.reservation_request(
        customer_id=UserFactory().pk,
        allocation_id=allocation.pk,
        quantity=1,
        idempotency_key=key,
        unit_price=Decimal("10.00"),
        currency="USD",
    )
    wait_until(
        lambda: Reservation.objects.get(pk=reservation.pk).status == Reservation.Status.HELD,
        message="the worker never settled the hold",
    )


@pytest.mark.postgres
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_connection_between_tasks(celery_through_broker, gate_off):
    allocations = [open_allocation(quantity=5) for _ in range(4)]
    with celery_worker(concurrency=1, DB_POOL_MAX_SIZE="4"):
        _settled_through_the_worker(allocations[0], "first")
        opened = _worker_backends()
        for n, allocation in enumerate(allocations[1:]):
            _settled_through_the_worker(allocation, f"later-{n}")
        assert len(opened) == 1
        assert _worker_backends() == opened  # the same backend, never reopened


@pytest.mark.postgres
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_replaces_a_connection_the_database_dropped(celery_through_broker, gate_off):
    from django.db import connection

    allocation = open_allocation(quantity=5)
    with celery_worker(concurrency=1, DB_POOL_MAX_SIZE="4"):
        _settled_through_the_worker(allocation, "before")
        [(pid, _)] = _worker_backends()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(lambda: pid not in {p for p, _ in _worker_backends()})
        for n in range(3):  # the first pays a retry; the ones after it run at once
            _settled_through_the_worker(allocation, f"after-{n}")
        assert pid not in {p for p, _ in _worker_backends()}
