"""The ops admin for streams and drops.

Status, pins and unit counters are read-only: they change through
``livestream.services`` only (the actions below call them), which keeps stock,
allocations and the ledger in step. Streams and drops are created by hosts through the
API (a drop carves stock), and never deleted (drops carry sales). The apps above may
extend these admins: ``demand`` adds stock readiness to the Stream admin.
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models

from core.admin_tools import (
    EditedFieldsOnlyMixin,
    ReadOnlyAdminMixin,
    apply_each,
    has_model_change_permission,
)
from livestream import services
from livestream.models import Drop, Stream


# Drops change through services only (the Drop admin's actions).
class DropInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Drop
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["variant", "price", "currency", "quantity", "remaining", "sold", "is_pinned"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("variant__product", "allocation")

    @admin.display(description="quantity")
    def quantity(self, obj):
        return obj.allocation.quantity

    @admin.display(description="remaining")
    def remaining(self, obj):
        return obj.allocation.remaining

    @admin.display(description="sold")
    def sold(self, obj):
        return obj.allocation.sold


@admin.register(Stream)
class StreamAdmin(EditedFieldsOnlyMixin, admin.ModelAdmin):
    list_display = [
        "title",
        "slug",
        "host",
        "status",
        "scheduled_start",
        "started_at",
        "ended_at",
    ]
    list_filter = ["status"]
    list_select_related = ["host"]
    search_fields = ["title", "slug", "host__username"]
    date_hierarchy = "created_at"
    actions = ["end_streams"]
    inlines = [DropInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    # Descriptive fields stay editable; who hosts, the slug (in URLs already shared) and
    # the status (services only) do not.
    readonly_fields = [
        "host",
        "slug",
        "status",
        "started_at",
        "ended_at",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def check_edited(self, edited):
        services.stream_details_check(**edited)

    def save_edited(self, request, obj, edited):
        services.stream_update_details(stream_id=obj.pk, actor=request.user, **edited)

    @admin.action(description="End stream (unpin, return unsold units)", permissions=["change"])
    def end_streams(self, request, queryset):
        apply_each(
            self,
            request,
            queryset,
            lambda stream: services.stream_end(stream_id=stream.pk, actor=request.user),
            verb="ended",
        )


# Creating a drop carves stock (drop_create); deleting one would orphan its sales.
@admin.register(Drop)
class DropAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "stream",
        "variant",
        "price",
        "currency",
        "quantity",
        "remaining",
        "sold",
        "per_viewer_limit",
        "is_pinned",
        "sale_status",
    ]
    list_filter = ["is_pinned", "stream__status"]
    list_select_related = ["stream", "variant__product", "allocation"]
    search_fields = ["stream__slug", "stream__title", "variant__sku"]
    actions = ["unpin_drops"]
    fields = [
        "stream",
        "variant",
        "allocation",
        "price",
        "currency",
        "per_viewer_limit",
        "quantity",
        "remaining",
        "sold",
        "sale_status",
        "is_pinned",
        "pinned_at",
        "starts_at",
        "created_at",
    ]
    readonly_fields = fields

    def has_unpin_permission(self, request):
        # The form is read-only, but unpinning changes the drop.
        return has_model_change_permission(request, self.opts)

    @admin.display(description="quantity")
    def quantity(self, obj):
        return obj.allocation.quantity

    @admin.display(description="remaining")
    def remaining(self, obj):
        return obj.allocation.remaining

    @admin.display(description="sold")
    def sold(self, obj):
        return obj.allocation.sold

    @admin.display(description="sale", ordering="allocation__status")
    def sale_status(self, obj):
        return obj.allocation.get_status_display()

    @admin.action(description="Unpin selected drops", permissions=["unpin"])
    def unpin_drops(self, request, queryset):
        apply_each(
            self,
            request,
            queryset,
            lambda drop: services.drop_unpin(drop_id=drop.pk, actor=request.user),
            verb="unpinned",
        )
