"""Nothing the front door admitted is lost, whatever dies: a spike of reserve requests
through the real server (the door writes the pending rows of what it admits in
batches) with a real Celery worker settling, while the web process is killed, or while
Redis loses the gate. Every 202 has its row and is settled; no unit is sold twice or
lost once the reconcile has run."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from core.redis import get_redis
from inventory import gate, tasks
from inventory.models import Allocation, Reservation
from tests.factories import UserFactory, live_drop
from tests.inventory.invariants import assert_inventory_invariants
from tests.processes import asgi_server, burst_with_a_fault, celery_worker, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.server,
    pytest.mark.celery_worker,
]

UNITS = 60
BUYERS = 24
TRIES = 5  # requests per buyer


def _spike(base_url: str, drop_id: int, tokens: list[str], *, during) -> list[dict]:
    """Every buyer sends TRIES requests (a fresh key each) at once; ``during`` runs once
    some have been answered. Returns the 202 bodies received."""

    def reserve(http: httpx.Client, token: str) -> httpx.Response:
        return http.post(
            f"/api/drops/{drop_id}/reservations/",
            json={"quantity": 1},
            headers={"Authorization": f"Token {token}", "Idempotency-Key": uuid.uuid4().hex},
        )

    answers = burst_with_a_fault(base_url, tokens, reserve, tries=TRIES, during=during, timeout=10)
    statuses = {response.status_code for _, response in answers}
    assert all(status < 500 or status == 503 for status in statuses), statuses
    return [response.json() for _, response in answers if response.status_code == 202]


def _settled_and_reconciled(allocation_id: int) -> None:
    def pending():
        return Reservation.objects.filter(allocation_id=allocation_id, status="pending")

    try:
        wait_until(lambda: not pending().exists(), timeout=10)
    except AssertionError:
        # Rows whose task died with the web process (killed between the commit and the
        # task's publish) wait for the reconcile, which settles pending rows older than
        # STALE_PENDING_AFTER: make them that old rather than wait.
        pending().update(created_at=timezone.now() - tasks.STALE_PENDING_AFTER * 2)
    tasks.reconcile.delay()
    wait_until(lambda: not pending().exists(), timeout=60, message="admitted holds left pending")
    tasks.reconcile.delay()
    wait_until(
        lambda: (
            (state := gate.gate_read(allocation_id=allocation_id)) is not None
            and state.remaining == Allocation.objects.get(pk=allocation_id).remaining
        ),
        timeout=30,
        message="reconcile did not bring the gate back in line with the database",
    )


def _assert_nothing_lost(allocation_id: int, admitted: list[dict]) -> None:
    rows = Reservation.objects.in_bulk([body["id"] for body in admitted])
    assert len(rows) == len(admitted), "a 202 without its row"
    assert all(row.status in ("held", "rejected") for row in rows.values())
    allocation = Allocation.objects.get(pk=allocation_id)
    assert allocation.held <= UNITS
    assert allocation.held == sum(
        r.quantity for r in Reservation.objects.filter(allocation_id=allocation_id, status="held")
    )
    state = gate.gate_read(allocation_id=allocation_id)
    assert state.remaining + allocation.held + allocation.sold == UNITS
    assert_inventory_invariants()


def _buyers() -> list[str]:
    return [Token.objects.create(user=UserFactory()).key for _ in range(BUYERS)]


def test_a_web_process_killed_mid_spike_loses_no_admitted_request(celery_through_broker):
    drop = live_drop(quantity=UNITS)
    tokens = _buyers()

    with (
        celery_worker(concurrency=2),
        asgi_server(CELERY_TASK_ALWAYS_EAGER="false") as server,
    ):

        def kill_the_server():
            time.sleep(0.05)
            server.process.kill()  # mid-batch, mid-request: no shutdown of any kind

        admitted = _spike(server.base_url, drop.pk, tokens, during=kill_the_server)
        assert admitted, "nothing was admitted before the kill"
        _settled_and_reconciled(drop.allocation_id)

    _assert_nothing_lost(drop.allocation_id, admitted)


def test_the_gate_lost_mid_spike_at_the_door_never_oversells(celery_through_broker):
    drop = live_drop(quantity=UNITS)
    tokens = _buyers()
    redis = get_redis()

    def wipe_the_gate():
        keys = list(redis.scan_iter(match="gate:*"))
        if keys:
            redis.delete(*keys)  # Redis restarted without persistence

    with (
        celery_worker(concurrency=2),
        asgi_server(CELERY_TASK_ALWAYS_EAGER="false") as server,
    ):
        admitted = _spike(server.base_url, drop.pk, tokens, during=wipe_the_gate)
        _settled_and_reconciled(drop.allocation_id)

    assert len(admitted) >= UNITS // 2  # the spike went on through the rebuild
    _assert_nothing_lost(drop.allocation_id, admitted)
