"""The ops admin for streams and drops.

Status, pins and unit counters are read-only: they change through
``livestream.services`` only (the actions below call them), which keeps stock,
allocations and the ledger in step. Streams and drops are created by hosts through the
API (a drop carves stock), and never deleted (drops carry sales).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db import models

from inventory.exceptions import DomainError
from livestream import services
from livestream.models import Drop, Stream


def _apply_each(modeladmin, request, queryset, action, *, verb: str) -> None:
    """Run a service on each selected object (pk order, as locks are taken), log the
    successes and report both outcomes; a domain error skips that object only."""
    done, failed = [], []
    for obj in queryset.order_by("pk"):
        try:
            action(obj)
        except DomainError as exc:
            failed.append(f"{obj}: {exc.detail}")
        else:
            done.append(str(obj))
            modeladmin.log_change(request, obj, verb.capitalize())
    if done:
        modeladmin.message_user(
            request, f"{verb.capitalize()}: {', '.join(done)}.", messages.SUCCESS
        )
    if failed:
        modeladmin.message_user(request, f"Not {verb}: {'; '.join(failed)}", messages.ERROR)


class DropInline(admin.TabularInline):
    model = Drop
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["variant", "price", "currency", "quantity", "remaining", "sold", "is_pinned"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("variant__product", "allocation")

    # Drops change through services only (the Drop admin's actions).
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

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
class StreamAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "host", "status", "scheduled_start", "started_at", "ended_at"]
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

    @admin.action(description="End stream (unpin, return unsold units)", permissions=["change"])
    def end_streams(self, request, queryset):
        _apply_each(
            self,
            request,
            queryset,
            lambda stream: services.stream_end(stream_id=stream.pk, actor=request.user),
            verb="ended",
        )


@admin.register(Drop)
class DropAdmin(admin.ModelAdmin):
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

    # Creating a drop carves stock (drop_create); deleting one would orphan its sales.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_unpin_permission(self, request):
        # The form is read-only, but unpinning changes the drop.
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

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
        _apply_each(
            self,
            request,
            queryset,
            lambda drop: services.drop_unpin(drop_id=drop.pk, actor=request.user),
            verb="unpinned",
        )
