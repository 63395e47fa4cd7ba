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
