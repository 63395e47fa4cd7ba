"""The ops admin: pages load, counters stay read-only, every change goes through a
service and lands on the ledger, and refused changes leave everything as it was."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from inventory import services
from inventory.models import Allocation, Reservation, StockItem, StockMovement
from shop.models import Product, Variant
from tests.factories import UserFactory, open_allocation, stocked_variant

Reason = StockMovement.Reason


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _held_reservation(allocation: Allocation, *, key: str, capture) -> Reservation:
    """A settled hold of one unit (the reserve task runs eagerly on commit)."""
    customer = UserFactory()
    with capture(execute=True):
        reservation = services.reservation_request(
            customer_id=customer.pk,
            allocation_id=allocation.pk,
            quantity=1,
            idempotency_key=key,
            unit_price=Decimal("9.99"),
            currency="USD",
        )
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
    return reservation


# --- every page loads ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url_name",
    [
        "admin:shop_product_changelist",
        "admin:shop_variant_changelist",
        "admin:inventory_stockitem_changelist",
        "admin:inventory_stockmovement_changelist",
        "admin:inventory_allocation_changelist",
        "admin:inventory_reservation_changelist",
    ],
)
def test_changelist_loads(admin_client, gate_off, django_capture_on_commit_callbacks, url_name):
    allocation = open_allocation(quantity=3, on_hand=5)
    _held_reservation(allocation, key="k1", capture=django_capture_on_commit_callbacks)

    response = admin_client.get(reverse(url_name))

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


@pytest.mark.django_db
def test_change_pages_load(admin_client, gate_off, django_capture_on_commit_callbacks):
    allocation = open_allocation(quantity=3, on_hand=5)
    reservation = _held_reservation(
        allocation, key="k1", capture=django_capture_on_commit_callbacks
    )
    item = allocation.stock_item
    movement = StockMovement.objects.filter(stock_item=item).first()

    for url in [
        reverse("admin:shop_product_change", args=[item.variant.product_id]),
        reverse("admin:shop_variant_change", args=[item.variant_id]),
        reverse("admin:inventory_stockitem_change", args=[item.pk]),
        reverse("admin:inventory_stockmovement_change", args=[movement.pk]),
        reverse("admin:inventory_allocation_change", args=[allocation.pk]),
        reverse("admin:inventory_reservation_change", args=[reservation.pk]),
        reverse("admin:inventory_stockitem_adjust_stock", args=[item.pk]),
        reverse("admin:inventory_stockitem_import"),
        reverse("admin:inventory_stockitem_export"),
    ]:
        assert admin_client.get(url).status_code == 200, url


# --- shop ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_variant_admin_shows_stock_and_searches_by_sku(admin_client):
    variant = stocked_variant(on_hand=7)
    stocked_variant(on_hand=1)

    response = admin_client.get(reverse("admin:shop_variant_changelist"), {"q": variant.sku})

    assert [v.pk for v in response.context["cl"].result_list] == [variant.pk]
    variant_admin = admin.site._registry[Variant]
    row = response.context["cl"].result_list[0]
    assert (
        variant_admin.on_hand(row),
        variant_admin.reserved(row),
        variant_admin.available(row),
    ) == (
        7,
        0,
        7,
    )
    assert set(variant_admin.readonly_fields) == {"on_hand", "reserved", "available"}


@pytest.mark.django_db
def test_adding_a_variant_in_the_product_admin_creates_its_empty_stock_item(admin_client):
    response = admin_client.post(
        reverse("admin:shop_product_add"),
        {
            "name": "Tee",
            "slug": "tee",
            "description": "",
            "image_url": "",
            "is_active": "on",
            "variants-TOTAL_FORMS": "1",
            "variants-INITIAL_FORMS": "0",
            "variants-MIN_NUM_FORMS": "0",
            "variants-MAX_NUM_FORMS": "1000",
            "variants-0-sku": "TEE-M",
            "variants-0-name": "M",
            "variants-0-price": "12.50",
            "variants-0-currency": "USD",
            "variants-0-is_active": "on",
        },
    )

    assert response.status_code == 302
    variant = Variant.objects.get(sku="TEE-M")
    assert variant.product == Product.objects.get(slug="tee")
    assert (variant.stock.on_hand, variant.stock.reserved) == (0, 0)
    assert not StockMovement.objects.exists()


# --- stock items: list, read-only counters ----------------------------------------------


@pytest.mark.django_db
def test_stockitem_list_flags_and_filters_low_stock(admin_client):
    low = stocked_variant(on_hand=3).stock
    at_threshold = stocked_variant(on_hand=5).stock  # available 5 <= threshold 5: low
    plenty = stocked_variant(on_hand=50).stock
    url = reverse("admin:inventory_stockitem_changelist")

    everything = admin_client.get(url)
    only_low = admin_client.get(url, {"low_stock": "yes"})
    not_low = admin_client.get(url, {"low_stock": "no"})

    assert everything.content.count(b">LOW</span>") == 2
    assert [i.pk for i in only_low.context["cl"].result_list] == [low.pk, at_threshold.pk]
    assert [i.pk for i in not_low.context["cl"].result_list] == [plenty.pk]


@pytest.mark.django_db
def test_stockitem_counters_cannot_be_edited(admin_client):
    item = stocked_variant(on_hand=10).stock
    url = reverse("admin:inventory_stockitem_change", args=[item.pk])
    movements = StockMovement.objects.count()

    page = admin_client.get(url)
    response = admin_client.post(
        url, {"on_hand": "999", "reserved": "5", "low_stock_threshold": "2"}
    )

    assert list(page.context["adminform"].form.fields) == ["low_stock_threshold"]
    assert reverse("admin:inventory_stockitem_adjust_stock", args=[item.pk]) in page.text
    assert admin.site._registry[StockItem].list_editable == ()
    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.on_hand, item.reserved, item.low_stock_threshold) == (10, 0, 2)
    assert StockMovement.objects.count() == movements


# --- adjust stock -----------------------------------------------------------------------


@pytest.mark.django_db
def test_adjust_stock_changes_on_hand_by_delta_and_writes_the_ledger(admin_client, admin_user):
    item = stocked_variant(on_hand=10).stock
    url = reverse("admin:inventory_stockitem_adjust_stock", args=[item.pk])

    response = admin_client.post(url, {"delta": "5", "reason": "restock", "note": "found a box"})

    assert response.status_code == 302
    assert response.url == reverse("admin:inventory_stockitem_change", args=[item.pk])
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (15, 0)
    movement = StockMovement.objects.filter(stock_item=item).latest("id")
    assert (movement.reason, movement.on_hand_delta, movement.reserved_delta) == (
        Reason.RESTOCK,
        5,
        0,
    )
    assert (movement.actor, movement.note) == (admin_user, "found a box")
    assert _messages(response) == [
        f"Stock of {item.variant.sku} changed by +5: 15 on hand, 15 available."
    ]


@pytest.mark.django_db
def test_adjust_stock_refuses_to_remove_units_promised_to_allocations(admin_client):
    allocation = open_allocation(quantity=8, on_hand=10)
    item = allocation.stock_item
    movements = StockMovement.objects.count()
    url = reverse("admin:inventory_stockitem_adjust_stock", args=[item.pk])

    response = admin_client.post(url, {"delta": "-3", "reason": "damage", "note": "crushed"})

    assert response.status_code == 200
    assert response.context["form"].errors == {"__all__": ["Only 2 units are free to remove."]}
    assert "Only 2 units are free to remove." in response.text
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (10, 8)
    assert StockMovement.objects.count() == movements


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("delta", "error"),
    [
        ("1.5", "Enter a whole number."),
        ("ten", "Enter a whole number."),
        ("0", "delta must be a non-zero whole number."),
    ],
)
def test_adjust_stock_rejects_a_delta_that_is_not_a_nonzero_whole_number(
    admin_client, delta, error
):
    item = stocked_variant(on_hand=10).stock
    movements = StockMovement.objects.count()
    url = reverse("admin:inventory_stockitem_adjust_stock", args=[item.pk])

    response = admin_client.post(url, {"delta": delta, "reason": "adjustment", "note": ""})

    assert response.status_code == 200
    assert response.context["form"].errors == {"delta": [error]}
    item.refresh_from_db()
    assert item.on_hand == 10
    assert StockMovement.objects.count() == movements


@pytest.mark.django_db
def test_adjust_stock_rejects_a_reason_that_is_not_manual(admin_client):
    item = stocked_variant(on_hand=10).stock
    movements = StockMovement.objects.count()
    url = reverse("admin:inventory_stockitem_adjust_stock", args=[item.pk])

    response = admin_client.post(url, {"delta": "-1", "reason": "sale", "note": ""})

    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["reason"]
    item.refresh_from_db()
    assert item.on_hand == 10
    assert StockMovement.objects.count() == movements


# --- the ledger -------------------------------------------------------------------------


@pytest.mark.django_db
def test_ledger_admin_refuses_add_change_and_delete(admin_client):
    item = stocked_variant(on_hand=10).stock
    movement = StockMovement.objects.get(stock_item=item)
    change_url = reverse("admin:inventory_stockmovement_change", args=[movement.pk])

    add = admin_client.get(reverse("admin:inventory_stockmovement_add"))
    change_page = admin_client.get(change_url)
    change = admin_client.post(change_url, {"reason": "damage", "on_hand_delta": "-10"})
    delete = admin_client.post(
        reverse("admin:inventory_stockmovement_delete", args=[movement.pk]), {"post": "yes"}
    )
    changelist = admin_client.get(reverse("admin:inventory_stockmovement_changelist"))

    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert change_page.status_code == 200
    assert change_page.context["has_change_permission"] is False
    assert changelist.context["action_form"] is None  # no "delete selected" either
    movement.refresh_from_db()
    assert (movement.reason, movement.on_hand_delta) == (Reason.RESTOCK, 10)
    assert StockMovement.objects.count() == 1


# --- CSV export and import --------------------------------------------------------------


@pytest.mark.django_db
def test_csv_export_lists_stock_levels(admin_client):
    allocation = open_allocation(quantity=4, on_hand=10)
    carved = allocation.stock_item.variant
    empty = stocked_variant(on_hand=0)

    response = admin_client.post(
        reverse("admin:inventory_stockitem_export"),
        {
            "format": "0",
            "stocklevelresource_sku": "on",
            "stocklevelresource_on_hand": "on",
            "stocklevelresource_reserved": "on",
            "stocklevelresource_available": "on",
        },
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines() == [
        "sku,on_hand,reserved,available",
        f"{carved.sku},10,4,6",
        f"{empty.sku},0,0,0",
    ]


def _upload(admin_client, csv_text: str):
    """The import's first step: upload and dry run."""
    return admin_client.post(
        reverse("admin:inventory_stockitem_import"),
        {
            "format": "0",
            "import_file": SimpleUploadedFile(
                "stock.csv", csv_text.encode(), content_type="text/csv"
            ),
        },
    )


def _confirm(admin_client, dry_run_response):
    """The import's second step: post the confirm form the dry run rendered."""
    confirm_form = dry_run_response.context["confirm_form"]
    return admin_client.post(
        reverse("admin:inventory_stockitem_process_import"),
        {name: confirm_form.initial.get(name, "") for name in confirm_form.fields},
    )


@pytest.mark.django_db
def test_csv_import_sets_on_hand_through_the_ledger(admin_client, admin_user):
    more = stocked_variant(on_hand=10).stock
    fewer = stocked_variant(on_hand=4).stock
    same = stocked_variant(on_hand=7).stock
    csv_text = (
        "sku,on_hand,reserved\n"  # an edited export: reserved is ignored
        f"{more.variant.sku},15,99\n"
        f"{fewer.variant.sku},0,99\n"
        f"{same.variant.sku},7,99\n"
    )

    dry_run = _upload(admin_client, csv_text)

    assert dry_run.status_code == 200
    assert dry_run.context["confirm_form"] is not None
    assert not StockMovement.objects.filter(reason=Reason.IMPORT).exists()  # rolled back
    assert StockItem.objects.get(pk=more.pk).on_hand == 10

    response = _confirm(admin_client, dry_run)

    assert response.status_code == 302
    assert response.url == reverse("admin:inventory_stockitem_changelist")
    levels = dict(StockItem.objects.values_list("pk", "on_hand"))
    assert levels == {more.pk: 15, fewer.pk: 0, same.pk: 7}
    assert set(StockItem.objects.values_list("reserved", flat=True)) == {0}
    entries = list(
        StockMovement.objects.filter(reason=Reason.IMPORT)
        .order_by("id")
        .values_list("stock_item_id", "on_hand_delta", "reserved_delta", "actor", "note")
    )
    assert entries == [
        (more.pk, 5, 0, admin_user.pk, "CSV import"),
        (fewer.pk, -4, 0, admin_user.pk, "CSV import"),
    ]
    assert _messages(response) == [
        "Import finished: 0 new, 2 updated, 0 deleted and 1 skipped stock items."
    ]


@pytest.mark.django_db
def test_csv_import_with_an_unknown_sku_changes_nothing(admin_client):
    item = stocked_variant(on_hand=10).stock
    movements = StockMovement.objects.count()

    response = _upload(admin_client, f"sku,on_hand\n{item.variant.sku},15\nNO-SUCH-SKU,3\n")

    assert response.status_code == 200
    assert "confirm_form" not in response.context
    result = response.context["result"]
    assert [(row.number, row.error_dict) for row in result.invalid_rows] == [
        (2, {"sku": ["Unknown sku 'NO-SUCH-SKU'."]})
    ]
    item.refresh_from_db()
    assert item.on_hand == 10
    assert StockMovement.objects.count() == movements
    assert not StockItem.objects.exclude(pk=item.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("on_hand", "error"),
    [
        ("-1", "on_hand must be a whole number from 0 to 1000000000."),
        ("2.5", "'2.5' is not a whole number."),
        ("abc", "'abc' is not a whole number."),
        ("", "'' is not a whole number."),
    ],
)
def test_csv_import_rejects_a_count_that_is_not_a_whole_number(admin_client, on_hand, error):
    item = stocked_variant(on_hand=10).stock
    movements = StockMovement.objects.count()

    response = _upload(admin_client, f"sku,on_hand\n{item.variant.sku},{on_hand}\n")

    assert response.status_code == 200
    assert "confirm_form" not in response.context
    result = response.context["result"]
    assert [(row.number, row.error_dict) for row in result.invalid_rows] == [
        (1, {"on_hand": [error]})
    ]
    item.refresh_from_db()
    assert item.on_hand == 10
    assert StockMovement.objects.count() == movements


@pytest.mark.django_db
def test_csv_import_confirm_rolls_back_the_whole_file_if_a_row_turned_invalid(admin_client):
    fine = stocked_variant(on_hand=10).stock
    carved_later = stocked_variant(on_hand=10).stock
    dry_run = _upload(
        admin_client,
        f"sku,on_hand\n{fine.variant.sku},15\n{carved_later.variant.sku},2\n",
    )
    assert dry_run.context["confirm_form"] is not None
    # Between the dry run and the confirm, a drop carves 5 units: 2 on hand is now too few.
    services.allocation_create(stock_item_id=carved_later.pk, quantity=5)
    movements = StockMovement.objects.count()

    response = _confirm(admin_client, dry_run)

    assert response.status_code == 302
    assert response.url == reverse("admin:inventory_stockitem_import")
    assert _messages(response) == ["Nothing was imported: row 2: Only 5 units are free to remove."]
    assert dict(StockItem.objects.values_list("pk", "on_hand")) == {
        fine.pk: 10,
        carved_later.pk: 10,
    }
    assert StockMovement.objects.count() == movements


# --- allocations ------------------------------------------------------------------------


def _run_action(admin_client, url_name: str, action: str, pks: list[int]):
    return admin_client.post(
        reverse(url_name), {"action": action, "_selected_action": [str(pk) for pk in pks]}
    )


@pytest.mark.django_db
def test_allocation_counters_are_read_only(admin_client):
    allocation = open_allocation(quantity=4, on_hand=10)

    page = admin_client.get(reverse("admin:inventory_allocation_change", args=[allocation.pk]))

    assert list(page.context["adminform"].form.fields) == ["label"]


@pytest.mark.django_db
def test_open_action_puts_a_ready_allocation_on_sale(admin_client, gate_off):
    item = stocked_variant(on_hand=10).stock
    ready = services.allocation_create(stock_item_id=item.pk, quantity=4, label="drop A")

    response = _run_action(
        admin_client, "admin:inventory_allocation_changelist", "open_allocations", [ready.pk]
    )

    assert response.status_code == 302
    ready.refresh_from_db()
    assert ready.status == Allocation.Status.OPEN
    assert ready.opened_at is not None
    assert _messages(response) == ["Opened: drop A."]


@pytest.mark.django_db
def test_open_action_reports_a_closed_allocation_and_leaves_it_closed(admin_client, gate_off):
    allocation = open_allocation(quantity=4, on_hand=10)
    services.allocation_close(allocation_id=allocation.pk)

    response = _run_action(
        admin_client, "admin:inventory_allocation_changelist", "open_allocations", [allocation.pk]
    )

    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.CLOSED
    assert _messages(response) == [f"Not opened: {allocation}: The allocation is closed."]


@pytest.mark.django_db
def test_close_action_returns_unsold_units_to_stock(
    admin_client, admin_user, gate_off, django_capture_on_commit_callbacks
):
    allocation = open_allocation(quantity=5, on_hand=10)
    _held_reservation(allocation, key="k1", capture=django_capture_on_commit_callbacks)
    item = allocation.stock_item
    item.refresh_from_db()
    assert item.reserved == 5

    response = _run_action(
        admin_client, "admin:inventory_allocation_changelist", "close_allocations", [allocation.pk]
    )

    assert response.status_code == 302
    item.refresh_from_db()
    allocation.refresh_from_db()
    # Four unsold units go back; the one still held stays reserved until it ends.
    assert (item.on_hand, item.reserved) == (10, 1)
    assert allocation.status == Allocation.Status.CLOSED
    assert (allocation.quantity, allocation.held, allocation.sold) == (1, 1, 0)
    movement = StockMovement.objects.filter(allocation=allocation).latest("id")
    assert (movement.reason, movement.reserved_delta, movement.actor) == (
        Reason.ALLOCATION_RETURN,
        -4,
        admin_user,
    )


# --- reservations -----------------------------------------------------------------------


@pytest.mark.django_db
def test_release_action_releases_held_and_skips_the_rest(
    admin_client, admin_user, gate_off, django_capture_on_commit_callbacks
):
    allocation = open_allocation(quantity=5, on_hand=10)
    held = _held_reservation(allocation, key="k1", capture=django_capture_on_commit_callbacks)
    already = _held_reservation(allocation, key="k2", capture=django_capture_on_commit_callbacks)
    services.reservation_release(reservation_id=already.pk)
    movements = StockMovement.objects.count()

    response = _run_action(
        admin_client,
        "admin:inventory_reservation_changelist",
        "release_holds",
        [held.pk, already.pk],
    )

    assert response.status_code == 302
    held.refresh_from_db()
    already.refresh_from_db()
    allocation.refresh_from_db()
    assert (held.status, already.status) == (Reservation.Status.RELEASED,) * 2
    assert (allocation.quantity, allocation.held, allocation.sold) == (5, 0, 0)
    assert StockMovement.objects.count() == movements + 1
    movement = StockMovement.objects.latest("id")
    assert (movement.reason, movement.reservation, movement.held_delta, movement.actor) == (
        Reason.HOLD_RELEASE,
        held,
        -1,
        admin_user,
    )
    assert _messages(response) == [
        f"Released 1: #{held.pk}.",
        f"Skipped 1 not held: #{already.pk} (released).",
    ]


@pytest.mark.django_db
def test_reservation_admin_is_read_only_and_searchable(
    admin_client, gate_off, django_capture_on_commit_callbacks
):
    allocation = open_allocation(quantity=5, on_hand=10)
    held = _held_reservation(allocation, key="find-me", capture=django_capture_on_commit_callbacks)
    _held_reservation(allocation, key="other", capture=django_capture_on_commit_callbacks)
    url = reverse("admin:inventory_reservation_changelist")

    by_key = admin_client.get(url, {"q": "find-me"})
    by_user = admin_client.get(url, {"q": held.customer.username})
    add = admin_client.get(reverse("admin:inventory_reservation_add"))
    change = admin_client.post(
        reverse("admin:inventory_reservation_change", args=[held.pk]), {"status": "released"}
    )

    assert [r.pk for r in by_key.context["cl"].result_list] == [held.pk]
    assert [r.pk for r in by_user.context["cl"].result_list] == [held.pk]
    assert (add.status_code, change.status_code) == (403, 403)
    held.refresh_from_db()
    assert held.status == Reservation.Status.HELD


@pytest.mark.django_db
def test_ops_see_the_waitlist_read_only(admin_client, gate_off, django_capture_on_commit_callbacks):
    allocation = open_allocation(quantity=1, on_hand=2)
    _held_reservation(allocation, key="k1", capture=django_capture_on_commit_callbacks)
    entry, _ = services.waitlist_join(
        allocation_id=allocation.pk,
        customer_id=UserFactory().pk,
        unit_price=Decimal("1.00"),
        currency="USD",
    )

    listed = admin_client.get(reverse("admin:inventory_waitlistentry_changelist"))
    shown = admin_client.get(reverse("admin:inventory_waitlistentry_change", args=[entry.pk]))
    added = admin_client.get(reverse("admin:inventory_waitlistentry_add"))

    assert listed.status_code == 200 and listed.context["cl"].result_count == 1
    assert shown.status_code == 200
    assert added.status_code == 403
