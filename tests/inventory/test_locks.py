"""The lock order of the stock code is checked as locks are taken: a path that takes a
lock out of order fails at once, every time it runs, instead of deadlocking under load."""

from __future__ import annotations

import pytest
from django.db import transaction

from inventory import locks, services
from inventory.locks import LockOrderViolation
from tests.factories import UserFactory, open_allocation
from tests.inventory.helpers import request_hold

pytestmark = pytest.mark.django_db


def test_the_order_customer_reservation_allocation_stock_item_is_accepted():
    allocation = open_allocation(quantity=2)
    hold = request_hold(UserFactory().pk, allocation.pk, key="k")

    with transaction.atomic():
        locks.lock_customer(hold.customer_id)
        assert locks.lock_reservation(hold.pk).pk == hold.pk
        assert locks.lock_allocation(allocation.pk).pk == allocation.pk
        locks.lock_stock_item(allocation.stock_item_id)
        # Taking a lock this transaction already holds is free, whatever came since.
        locks.lock_allocation(allocation.pk)
        assert locks.lock_active_entry(allocation_id=allocation.pk, customer_id=1) is None


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("allocation", "reservation"),
        ("stock_item", "allocation"),
        ("reservation", "customer"),
        ("stock_item", "reservation"),
    ],
)
def test_a_lock_against_the_order_is_refused(first, then):
    allocation = open_allocation(quantity=1)
    hold = request_hold(UserFactory().pk, allocation.pk, key="k")
    take = {
        "customer": lambda: locks.lock_customer(hold.customer_id),
        "reservation": lambda: locks.lock_reservation(hold.pk),
        "allocation": lambda: locks.lock_allocation(allocation.pk),
        "stock_item": lambda: locks.lock_stock_item(allocation.stock_item_id),
    }

    with transaction.atomic():
        take[first]()
        with pytest.raises(LockOrderViolation):
            take[then]()


def test_rows_of_one_kind_are_locked_in_key_order():
    low, high = open_allocation(quantity=1), open_allocation(quantity=1)

    with transaction.atomic():
        locks.lock_allocations([high.pk, low.pk])  # sorted for the caller
    with transaction.atomic():
        locks.lock_allocation(high.pk)
        with pytest.raises(LockOrderViolation):
            locks.lock_allocation(low.pk)


def test_waitlist_entries_are_locked_only_under_their_allocation():
    allocation = open_allocation(quantity=1)

    with transaction.atomic(), pytest.raises(LockOrderViolation):
        locks.lock_next_waiting(allocation.pk)


def test_each_transaction_starts_with_no_locks():
    low, high = open_allocation(quantity=1), open_allocation(quantity=1)
    with transaction.atomic():
        locks.lock_allocation(high.pk)

    with transaction.atomic():
        assert locks.lock_allocation(low.pk).pk == low.pk


def test_a_row_created_in_the_transaction_is_held_whatever_the_order():
    variant_allocation = open_allocation(quantity=1, on_hand=5)

    with transaction.atomic():
        created = services.allocation_create(
            stock_item_id=variant_allocation.stock_item_id, quantity=2
        )
        assert services.allocation_open(allocation_id=created.pk).status == "open"
