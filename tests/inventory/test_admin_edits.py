"""The ops admin writes only what was edited: a change form saved while a settle, a carve
or a stream's end commits never writes a counter or a status back as it was read."""

from __future__ import annotations

from unittest import mock

import pytest
from django.urls import reverse

from inventory import services
from inventory.models import Allocation, Reservation, StockItem
from inventory.tasks import settle
from tests.factories import UserFactory, open_allocation
from tests.inventory.helpers import request_hold
from tests.inventory.interleave import inside
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_renaming_an_allocation_while_a_settle_commits_keeps_the_settled_counters(
    admin_client, gate_off
):
    allocation = open_allocation(quantity=3)
    with mock.patch.object(settle, "delay"):
        pending = request_hold(UserFactory().pk, allocation.pk, key="k")
    url = reverse("admin:inventory_allocation_change", args=[allocation.pk])

    outcome = inside(
        lambda: admin_client.post(url, {"label": "Glow serum, encore", "_save": "Save"}),
        point="inventory.admin.AllocationAdmin.save_model",
        after=False,
        guest=lambda: services.allocation_settle_pending(allocation_id=allocation.pk),
    )

    assert outcome.host.status_code == 302
    assert not isinstance(outcome.guest, BaseException)
    allocation.refresh_from_db()
    assert (allocation.label, allocation.held, allocation.quantity) == ("Glow serum, encore", 1, 3)
    assert Reservation.objects.get(pk=pending.pk).status == Reservation.Status.HELD
    assert_inventory_invariants()


def test_changing_a_threshold_while_stock_is_carved_keeps_the_carve(admin_client, gate_off):
    allocation = open_allocation(quantity=2, on_hand=10)
    item_id = allocation.stock_item_id
    url = reverse("admin:inventory_stockitem_change", args=[item_id])

    outcome = inside(
        lambda: admin_client.post(url, {"low_stock_threshold": "7", "_save": "Save"}),
        point="inventory.admin.StockItemAdmin.save_model",
        after=False,
        guest=lambda: services.allocation_create(stock_item_id=item_id, quantity=5),
    )

    assert outcome.host.status_code == 302
    item = StockItem.objects.get(pk=item_id)
    assert (item.low_stock_threshold, item.on_hand, item.reserved) == (7, 10, 7)
    assert Allocation.objects.filter(stock_item_id=item_id).count() == 2
    assert_inventory_invariants()


def test_a_threshold_the_service_refuses_is_shown_on_the_form(admin_client, gate_off):
    allocation = open_allocation(quantity=1)
    url = reverse("admin:inventory_stockitem_change", args=[allocation.stock_item_id])

    response = admin_client.post(url, {"low_stock_threshold": "2000000000", "_save": "Save"})

    assert response.status_code == 200
    assert "low_stock_threshold must be a whole number" in response.content.decode()
    assert StockItem.objects.get(pk=allocation.stock_item_id).low_stock_threshold == 5
