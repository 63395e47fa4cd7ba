"""The ops admin for streams and drops.

Status, pins and unit counters are read-only: they change through
``livestream.services`` only (the actions below call them), which keeps stock,
allocations and the ledger in step. Streams and drops are created by hosts through the
API (a drop carves stock), and never deleted (drops carry sales).
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from import_export.admin import ExportActionModelAdmin
from import_export.formats.base_formats import CSV

from core.admin_tools import (
    EditedFieldsOnlyMixin,
    ReadOnlyAdminMixin,
    apply_each,
    has_model_change_permission,
)
from livestream import readiness, services
from livestream.models import Drop, DropDemand, Stream
from livestream.resources import DropDemandResource


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


class ReadinessProblemFilter(admin.SimpleListFilter):
    """Scheduled streams with a planned drop its stock will not cover (the same check as
    ``manage.py check_readiness``)."""

    title = "stock readiness"
    parameter_name = "readiness"

    def lookups(self, request, model_admin):
        return [("problems", "drops short of stock")]

    def queryset(self, request, queryset):
        if self.value() != "problems":
            return queryset
        found = readiness.streams_with_problems(now=timezone.now())
        return queryset.filter(pk__in=[stream.pk for stream, _ in found])


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
        "readiness_warning",
    ]
    list_filter = ["status", ReadinessProblemFilter]
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
        "readiness_report",
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def check_edited(self, edited):
        services.stream_details_check(**edited)

    def save_edited(self, request, obj, edited):
        services.stream_update_details(stream_id=obj.pk, actor=request.user, **edited)

    @admin.display(description="readiness")
    def readiness_warning(self, obj):
        # Only a stream still to come can be made ready.
        if obj.status != Stream.Status.SCHEDULED:
            return ""
        problems = readiness.stream_readiness(stream=obj).problems
        if not problems:
            return "ok"
        return format_html(
            '<span style="background:#ba2121;color:#fff;padding:1px 6px;border-radius:3px;">'
            "{} drop(s) short</span>",
            len({row.drop for row, _ in problems}),
        )

    @admin.display(description="readiness report")
    def readiness_report(self, obj):
        if obj is None or obj.pk is None:
            return ""
        report = readiness.stream_readiness(stream=obj)
        if not report.drops:
            return "No drops left to sell."
        viewers, rate = report.viewers, report.rate
        head = format_html(
            "<p>Expected viewers: {} ({}). Demand per viewer: {} ({}-{}, {}, {} past "
            "drops). Intervals at {} %. Method: docs/demand.md.</p>",
            "unknown" if viewers.value is None else round(viewers.value),
            viewers.basis,
            f"{rate.value:.3f}",
            f"{rate.low:.3f}",
            f"{rate.high:.3f}",
            rate.basis,
            rate.drops,
            round(readiness.CONFIDENCE * 100),
        )
        rows = format_html_join(
            "",
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td><strong>{}</strong></td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row.drop,
                    row.sku,
                    row.quantity,
                    row.stock_on_hand,
                    row.stock_free,
                    _demand_text(row.assessment.expected_units),
                    row.assessment.verdict,
                    row.assessment.message,
                    row.assessment.cover,
                )
                for row in report.drops
            ),
        )
        return format_html(
            "{}<table><thead><tr><th>drop</th><th>sku</th><th>quantity</th>"
            "<th>on hand</th><th>free</th><th>expected demand</th><th>verdict</th>"
            "<th>report</th><th>to cover it</th></tr></thead><tbody>{}</tbody></table>",
            head,
            rows,
        )

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


def _demand_text(estimate: readiness.Estimate) -> str:
    if estimate.value is None:
        return "unknown"
    return f"{round(estimate.value)} ({round(estimate.low)}-{round(estimate.high)})"


# Written by the demand flush only.
@admin.register(DropDemand)
class DropDemandAdmin(ReadOnlyAdminMixin, ExportActionModelAdmin):
    """What demand each drop met (flushed by ``livestream.demand``): read-only, with a
    CSV export of the selected rows (the same columns as the demand report API)."""

    resource_classes = [DropDemandResource]
    formats = [CSV]
    # One format: the action downloads at once instead of asking which.
    skip_export_form_from_action = True

    list_display = [
        "drop",
        "stream",
        "supply",
        "sold",
        "unmet",
        "sell_out_time",
        "viewers_at_pin",
        "peak_viewers",
        "final",
    ]
    list_filter = ["final", "drop__stream__status"]
    list_select_related = ["drop__stream"]
    search_fields = ["drop__stream__slug", "drop__variant__sku"]
    readonly_fields = [f.name for f in DropDemand._meta.fields] + [
        "unmet",
        "total",
        "sell_out_time",
    ]

    @admin.display(description="stream", ordering="drop__stream__slug")
    def stream(self, obj):
        return obj.drop.stream.slug

    @admin.display(description="unmet demand")
    def unmet(self, obj):
        return obj.unmet_demand

    @admin.display(description="total demand")
    def total(self, obj):
        return obj.total_demand

    @admin.display(description="time to sell out")
    def sell_out_time(self, obj):
        seconds = obj.seconds_to_sell_out
        return "" if seconds is None else readiness.human_duration(seconds)
