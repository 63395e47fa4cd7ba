"""The ops admin for draws: read-only. The seed shows only once drawn (before, anyone
who reads it could know the winners ahead of everyone); the commitment always. Entries
close early through the service (the action below), which then draws at once."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from core.admin_tools import ReadOnlyAdminMixin, apply_each, has_model_change_permission
from draws import selectors, services
from draws.models import Draw, Entry, EntryRules


@admin.register(Draw)
class DrawAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "drop",
        "status",
        "entries_close_at",
        "entry_count",
        "units",
        "seed_commitment",
        "revealed_seed",
    ]
    list_filter = ["status"]
    # Never "seed" itself: only ``revealed_seed`` shows it, once drawn.
    fields = [
        "drop",
        "status",
        "entries_opened_at",
        "entries_close_at",
        "drawn_at",
        "seed_commitment",
        "revealed_seed",
        "entry_count",
        "units",
        "winners",
        "refused_by_reason",
        "crowded_addresses",
    ]
    readonly_fields = fields
    actions = ["close_entries_now"]

    @admin.display(description="seed")
    def revealed_seed(self, obj: Draw) -> str:
        return obj.seed if obj.status == Draw.Status.DRAWN else "(secret until the draw)"

    @admin.display(description="entries refused, by reason")
    def refused_by_reason(self, obj: Draw) -> str:
        counts = selectors.draw_refusals(obj)
        if not counts:
            return "none"
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li>{}: {}</li>", sorted(counts.items())),
        )

    @admin.display(description="addresses with several accounts")
    def crowded_addresses(self, obj: Draw) -> str:
        rows = selectors.crowded_addresses(draw_id=obj.pk)
        if not rows:
            return "none"
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li>{}: {} accounts</li>", rows),
        )

    @admin.action(description="Close entries now and draw", permissions=["close"])
    def close_entries_now(self, request, queryset):
        apply_each(
            self,
            request,
            queryset,
            lambda draw: services.draw_close_early(drop_id=draw.drop_id, actor=request.user),
            verb="drawn",
        )

    def has_close_permission(self, request) -> bool:
        return has_model_change_permission(request, self.opts)


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "draw",
        "customer",
        "quantity",
        "status",
        "rank",
        "entered_at",
        "client_address",
    ]
    list_filter = ["status"]
    list_select_related = ["customer"]
    search_fields = ["customer__username", "client_address"]
    fields = [
        "draw",
        "customer",
        "quantity",
        "status",
        "rank",
        "entered_at",
        "client_address",
        "reservation",
        "waitlist_entry",
    ]
    readonly_fields = fields


# Hosts set them through the API before entries open; ops read them here.
@admin.register(EntryRules)
class EntryRulesAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "drop",
        "min_account_age_seconds",
        "min_watch_seconds",
        "max_entries_per_address",
        "challenge_required",
        "updated_at",
    ]
    fields = list_display
    readonly_fields = fields
