"""The ops admin for stock, allocations, holds and the ledger.

Counters (``on_hand``, ``reserved``, ``quantity``, ``held``, ``sold``) are read-only
everywhere: every change goes through ``inventory.services``, which pairs it with a
ledger entry. The admin only collects input, calls a service and reports the outcome.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from import_export.admin import ImportExportModelAdmin
from import_export.formats.base_formats import CSV

from core.admin_tools import (
    EditedFieldsOnlyMixin,
    ReadOnlyAdminMixin,
    apply_each,
    has_model_change_permission,
)
from core.exceptions import DomainError
from inventory import services
from inventory.forms import StockAdjustForm
from inventory.models import Allocation, Reservation, StockItem, StockMovement, WaitlistEntry
from inventory.resources import StockLevelResource
from inventory.services.allocations import check_label
from inventory.services.stock import check_threshold

# --- stock items -----------------------------------------------------------------------


class LowStockFilter(admin.SimpleListFilter):
    title = "low stock"
    parameter_name = "low_stock"

    def lookups(self, request, model_admin):
        return [("yes", "yes"), ("no", "no")]

    def queryset(self, request, queryset):
        # Same rule as StockItem.is_low, computed in the database.
        queryset = queryset.alias(free_units=F("on_hand") - F("reserved"))
        if self.value() == "yes":
            return queryset.filter(free_units__lte=F("low_stock_threshold"))
        if self.value() == "no":
            return queryset.filter(free_units__gt=F("low_stock_threshold"))
        return queryset


@admin.register(StockItem)
class StockItemAdmin(EditedFieldsOnlyMixin, ImportExportModelAdmin):
    resource_classes = [StockLevelResource]
    # Stock levels travel as CSV only; one format keeps the import/export forms simple.
    formats = [CSV]

    list_display = ["sku", "on_hand", "reserved", "available", "low_stock", "low_stock_threshold"]
    list_filter = [LowStockFilter]
    list_select_related = ["variant"]
    search_fields = ["variant__sku", "variant__name", "variant__product__name"]
    fields = ["variant", "on_hand", "reserved", "available", "low_stock_threshold", "updated_at"]
    # The threshold is a setting, not a counter, so it is the one editable field.
    readonly_fields = ["variant", "on_hand", "reserved", "available", "updated_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(available_units=F("on_hand") - F("reserved"))

    def check_edited(self, edited):
        check_threshold(edited["low_stock_threshold"])

    def save_edited(self, request, obj, edited):
        services.stock_item_set_threshold(
            stock_item_id=obj.pk, low_stock_threshold=edited["low_stock_threshold"]
        )

    # Stock items come with their variants (stock_item_ensure) and carry the ledger:
    # they are neither added nor deleted by hand.
    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_import_permission(self, request):
        # An import changes stock levels: the same right as adjusting them.
        return self.has_change_permission(request)

    def get_import_data_kwargs(self, **kwargs):
        # All or nothing. The dry run offers no confirm button while any row is invalid,
        # but a row can turn invalid before the confirm (units carved meanwhile): then
        # the whole file is rolled back rather than half applied.
        return {**super().get_import_data_kwargs(**kwargs), "rollback_on_validation_errors": True}

    def process_result(self, result, request):
        if not (result.has_errors() or result.has_validation_errors()):
            return super().process_result(result, request)
        problems = [
            f"row {row.number}: " + " ".join(m for ms in row.error_dict.values() for m in ms)
            for row in result.invalid_rows
        ]
        problems += [f"row {number}: {errors[0].error}" for number, errors in result.row_errors()]
        problems += [str(error.error) for error in result.base_errors]
        self.message_user(request, f"Nothing was imported: {'; '.join(problems)}", messages.ERROR)
        return HttpResponseRedirect(
            reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_import",
                current_app=self.admin_site.name,
            )
        )

    @admin.display(description="sku", ordering="variant__sku")
    def sku(self, obj):
        return obj.variant.sku

    @admin.display(description="available", ordering="available_units")
    def available(self, obj):
        return obj.available

    @admin.display(description="low stock")
    def low_stock(self, obj):
        if not obj.is_low:
            return ""
        return format_html(
            '<span style="background:{};color:#fff;padding:1px 6px;border-radius:3px;'
            'font-weight:bold">{}</span>',
            "#ba2121",
            "LOW",
        )

    # --- "Adjust stock": the only way to change on_hand by hand ---

    def get_urls(self):
        adjust = path(
            "<path:object_id>/adjust-stock/",
            self.admin_site.admin_view(self.adjust_stock_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_adjust_stock",
        )
        return [adjust, *super().get_urls()]

    def adjust_stock_view(self, request, object_id):
        item = self.get_object(request, unquote(object_id))
        if item is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, item):
            raise PermissionDenied
        form = StockAdjustForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                item = services.stock_adjust(
                    stock_item_id=item.pk,
                    delta=form.cleaned_data["delta"],
                    reason=form.cleaned_data["reason"],
                    actor=request.user,
                    note=form.cleaned_data["note"],
                )
            except DomainError as exc:
                # Put the refusal next to the field it is about, else on top of the form.
                field = exc.data.get("field")
                form.add_error(field if field in form.fields else None, exc.detail)
            else:
                self.message_user(
                    request,
                    f"Stock of {item.variant.sku} changed by {form.cleaned_data['delta']:+}: "
                    f"{item.on_hand} on hand, {item.available} available.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse(
                        f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                        args=[item.pk],
                        current_app=self.admin_site.name,
                    )
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust stock of {item.variant.sku}",
            "opts": self.opts,
            "original": item,
            "form": form,
            "has_view_permission": self.has_view_permission(request, item),
            "has_change_permission": True,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/inventory/stockitem/adjust_stock.html", context)


# --- the ledger ------------------------------------------------------------------------


@admin.register(StockMovement)
class StockMovementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The ledger is append-only: the services write it, nobody edits it."""

    list_display = [
        "created_at",
        "sku",
        "allocation",
        "reservation",
        "reason",
        "on_hand_delta",
        "reserved_delta",
        "held_delta",
        "sold_delta",
        "actor",
        "reference",
    ]
    list_filter = ["reason"]
    list_select_related = ["stock_item__variant", "allocation", "reservation", "actor"]
    search_fields = ["stock_item__variant__sku", "reference", "note"]
    date_hierarchy = "created_at"

    @admin.display(description="sku", ordering="stock_item__variant__sku")
    def sku(self, obj):
        return obj.stock_item.variant.sku


# --- allocations -----------------------------------------------------------------------


@admin.register(Allocation)
class AllocationAdmin(EditedFieldsOnlyMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "sku",
        "status",
        "quantity",
        "held",
        "sold",
        "remaining",
        "per_customer_limit",
        "opened_at",
        "closed_at",
    ]
    list_filter = ["status"]
    list_select_related = ["stock_item__variant"]
    search_fields = ["label", "stock_item__variant__sku"]
    actions = ["open_allocations", "close_allocations"]
    # Only the label is free text; the limit is read-only too because the gate caches it.
    readonly_fields = [
        "stock_item",
        "status",
        "quantity",
        "held",
        "sold",
        "remaining",
        "per_customer_limit",
        "created_at",
        "opened_at",
        "closed_at",
    ]

    # Creating an allocation carves stock (allocation_create); a plain model form would
    # write a quantity no stock backs. Deleting one would orphan its ledger entries.
    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="sku", ordering="stock_item__variant__sku")
    def sku(self, obj):
        return obj.stock_item.variant.sku

    @admin.display(description="remaining")
    def remaining(self, obj):
        return obj.remaining

    def check_edited(self, edited):
        check_label(edited["label"])

    def save_edited(self, request, obj, edited):
        services.allocation_set_label(allocation_id=obj.pk, label=edited["label"])

    # An allocation a drop sells through opens and closes by the drop's rules (see
    # allocation_open_by_hand), the same as through the API.
    @admin.action(description="Open selected allocations", permissions=["change"])
    def open_allocations(self, request, queryset):
        apply_each(
            self,
            request,
            queryset,
            lambda allocation: services.allocation_open_by_hand(
                allocation_id=allocation.pk, actor=request.user
            ),
            verb="opened",
        )

    @admin.action(
        description="Close selected allocations (return unsold units)", permissions=["change"]
    )
    def close_allocations(self, request, queryset):
        apply_each(
            self,
            request,
            queryset,
            lambda allocation: services.allocation_close_by_hand(
                allocation_id=allocation.pk, actor=request.user
            ),
            verb="closed",
        )


# --- reservations ----------------------------------------------------------------------


# Holds are made and ended by the services only.
@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "customer",
        "allocation",
        "quantity",
        "unit_price",
        "currency",
        "status",
        "expires_at",
        "created_at",
    ]
    list_filter = ["status", "allocation"]
    list_select_related = ["customer", "allocation"]
    search_fields = ["customer__username", "idempotency_key"]
    actions = ["release_holds"]

    def has_release_permission(self, request):
        # The form is read-only, but releasing a hold changes the reservation.
        return has_model_change_permission(request, self.opts)

    @admin.action(description="Release selected holds", permissions=["release"])
    def release_holds(self, request, queryset):
        released, skipped = [], []
        for reservation in queryset.order_by("pk"):
            if reservation.status != Reservation.Status.HELD:
                skipped.append(f"#{reservation.pk} ({reservation.status})")
                continue
            try:
                # No customer_id: ops may release anyone's hold.
                services.reservation_release(reservation_id=reservation.pk, actor=request.user)
            except DomainError as exc:
                # It changed between the list and the click (confirmed, expired, ...).
                skipped.append(f"#{reservation.pk} ({exc.detail})")
            else:
                released.append(f"#{reservation.pk}")
        if released:
            self.message_user(
                request, f"Released {len(released)}: {', '.join(released)}.", messages.SUCCESS
            )
        if skipped:
            self.message_user(
                request,
                f"Skipped {len(skipped)} not held: {', '.join(skipped)}.",
                messages.WARNING,
            )


# --- the waitlist ----------------------------------------------------------------------


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who waits for which sold-out allocation, in order, and what became of their
    offers. Read-only: the line is kept by the services (ops act on the offer holds)."""

    list_display = [
        "id",
        "allocation",
        "customer",
        "quantity",
        "status",
        "reservation",
        "created_at",
        "offered_at",
    ]
    list_filter = ["status", "allocation"]
    list_select_related = ["customer", "allocation", "reservation"]
    search_fields = ["customer__username"]
    ordering = ["allocation_id", "id"]
