"""The ops admin of demand: the per-drop demand figures (read-only, with a CSV export),
and the readiness parts of the Stream admin (the "stock readiness" filter, the
readiness column and the report on the change page)."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from import_export.admin import ExportActionModelAdmin
from import_export.formats.base_formats import CSV

from core.admin_tools import ReadOnlyAdminMixin
from demand import estimator, readers
from demand.models import DropDemand
from demand.resources import DropDemandResource
from livestream.admin import StreamAdmin
from livestream.models import Stream


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
        found = readers.streams_with_problems(now=timezone.now())
        return queryset.filter(pk__in=[stream.pk for stream, _ in found])


# livestream sits below demand and never imports it, so its Stream admin cannot show
# readiness itself: this subclass adds the filter, the column and the report (each one
# last, where they always stood) and takes the Stream admin's place.
class ReadinessStreamAdmin(StreamAdmin):
    list_display = [*StreamAdmin.list_display, "readiness_warning"]
    list_filter = [*StreamAdmin.list_filter, ReadinessProblemFilter]
    readonly_fields = [*StreamAdmin.readonly_fields, "readiness_report"]

    @admin.display(description="readiness")
    def readiness_warning(self, obj):
        # Only a stream still to come can be made ready.
        if obj.status != Stream.Status.SCHEDULED:
            return ""
        problems = readers.stream_readiness(stream=obj).problems
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
        report = readers.stream_readiness(stream=obj)
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
            round(estimator.CONFIDENCE * 100),
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


admin.site.unregister(Stream)
admin.site.register(Stream, ReadinessStreamAdmin)


def _demand_text(estimate: estimator.Estimate) -> str:
    if estimate.value is None:
        return "unknown"
    return f"{round(estimate.value)} ({round(estimate.low)}-{round(estimate.high)})"


# Written by the demand flush only.
@admin.register(DropDemand)
class DropDemandAdmin(ReadOnlyAdminMixin, ExportActionModelAdmin):
    """What demand each drop met (flushed by ``demand.capture``): read-only, with a
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
        return "" if seconds is None else estimator.human_duration(seconds)
