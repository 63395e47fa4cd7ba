"""The inventory's events are its only way out: subscribers in the transaction see them
as they are emitted, under its locks, the others after commit; the gate learns of the
units the services move from them alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.db import connection, transaction

from inventory import events, gate, services
from inventory.models import Allocation, Reservation
from tests.factories import UserFactory
from tests.inventory.helpers import open_primed, settled_hold

SERVICES = Path(services.__file__).parent


@pytest.fixture
def seen():
    """Every batch shown in the transaction, with whether a transaction was open, and
    every batch delivered after commit."""
    record: dict[str, list] = {"in_transaction": [], "after_commit": []}

    def inside(batch):
        record["in_transaction"].append((connection.in_atomic_block, batch))

    def after(batch):
        record["after_commit"].append(batch)

    events.subscribe_in_transaction(inside)
    events.subscribe(after)
    try:
        yield record
    finally:
        events.unsubscribe(inside)
        events.unsubscribe(after)


@pytest.mark.django_db
def test_an_in_transaction_subscriber_sees_the_batch_inside_it_the_others_after_commit(
    seen, django_capture_on_commit_callbacks
):
    allocation = open_primed(3)
    seen["in_transaction"].clear()  # the opening's own

    with django_capture_on_commit_callbacks(execute=True):
        services.allocation_close(allocation_id=allocation.pk)
        assert seen["after_commit"] == []
        assert [inside for inside, _ in seen["in_transaction"]] == [True]

    [(_, shown)] = seen["in_transaction"]
    assert seen["after_commit"] == [shown]
    assert events.AllocationRecounted(allocation_id=allocation.pk) in shown


@pytest.mark.django_db
def test_a_rolled_back_transaction_was_seen_inside_but_is_never_delivered(
    seen, django_capture_on_commit_callbacks
):
    allocation = open_primed(3)
    seen["in_transaction"].clear()  # the opening's own

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.allocation_close(allocation_id=allocation.pk)
        raise RuntimeError("abort")

    assert len(seen["in_transaction"]) == 1
    assert seen["after_commit"] == []
    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.OPEN


@pytest.mark.django_db
def test_an_in_transaction_subscriber_that_fails_rolls_the_change_back(
    django_capture_on_commit_callbacks,
):
    allocation = open_primed(3)

    def refuse(batch):
        raise RuntimeError("cannot stamp the change")

    events.subscribe_in_transaction(refuse)
    try:
        with pytest.raises(RuntimeError), django_capture_on_commit_callbacks(execute=True):
            services.allocation_close(allocation_id=allocation.pk)
    finally:
        events.unsubscribe(refuse)

    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.OPEN


@pytest.mark.django_db
@pytest.mark.redis
@pytest.mark.usefixtures("gate_on")
def test_a_release_reaches_the_gate_through_its_event(django_capture_on_commit_callbacks):
    allocation = open_primed(2)
    buyer = UserFactory()
    hold = settled_hold(django_capture_on_commit_callbacks, buyer.pk, allocation.pk, key="e")
    assert hold.status == Reservation.Status.HELD
    assert gate.gate_read(allocation_id=allocation.pk).remaining == 1
    version = Allocation.objects.get(pk=allocation.pk).version

    with django_capture_on_commit_callbacks(execute=True):
        services.reservation_release(reservation_id=hold.pk)

    # Stamped in the release's own transaction, applied once it committed.
    assert Allocation.objects.get(pk=allocation.pk).version == version + 1
    state = gate.gate_read(allocation_id=allocation.pk)
    assert state.remaining == 2
    assert state.customers.get(buyer.pk, 0) == 0
    assert hold.pk not in state.expiries


@pytest.mark.django_db
def test_every_change_of_one_transaction_carries_its_version_and_the_next_is_newer(
    seen, django_capture_on_commit_callbacks
):
    allocation = open_primed(2)
    first = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="a"
    )
    second = settled_hold(
        django_capture_on_commit_callbacks, UserFactory().pk, allocation.pk, key="b"
    )
    seen["after_commit"].clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.reservation_confirm(reservation_id=first.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.reservation_release(reservation_id=second.pk)

    confirmed, released = (
        {type(e): e for e in batch if hasattr(e, "version")} for batch in seen["after_commit"]
    )
    # One bump per transaction, shared by everything it changed in the allocation.
    assert confirmed[events.ReservationChanged].version == (
        confirmed[events.AllocationChanged].version
    )
    assert released[events.AllocationChanged].version == (
        confirmed[events.AllocationChanged].version + 1
    )
    assert Allocation.objects.get(pk=allocation.pk).version == (
        released[events.ReservationChanged].version
    )
    # What the transaction left, not a later read: the release's row as it was then.
    assert released[events.ReservationChanged].status == Reservation.Status.RELEASED
    assert released[events.AllocationChanged].held == 0
    assert released[events.AllocationChanged].sold == 1


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(
    "module", ["allocations", "awards", "holds", "offers", "settle", "stock", "waitlist"]
)
def test_the_services_that_move_units_never_write_the_gate_by_hand(module):
    imported = _imports(SERVICES / f"{module}.py")

    assert not imported & {"inventory.gate", "inventory.services.gate_sync"}, imported
