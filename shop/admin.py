"""The catalog admin. Stock is shown here but changed only in the inventory admin."""

from __future__ import annotations

from django.contrib import admin
from django.db import models

from inventory import services
from shop.models import Product, Variant


def _ensure_stock(variant: Variant) -> None:
    # Every variant gets its stock row at once, so ops can adjust or import its stock
    # without a separate step.
    services.stock_item_ensure(variant_id=variant.pk)


class VariantInline(admin.TabularInline):
    model = Variant
    fields = ["sku", "name", "price", "currency", "is_active"]
    extra = 0
    show_change_link = True


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug", "variants__sku"]
    prepopulated_fields = {"slug": ["name"]}
    # Image links are typed without a scheme; assume https (Django 6's default) today.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    inlines = [VariantInline]

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            if isinstance(obj, Variant):
                _ensure_stock(obj)


@admin.register(Variant)
class VariantAdmin(admin.ModelAdmin):
    list_display = [
        "sku",
        "product",
        "name",
        "price",
        "currency",
        "is_active",
        "on_hand",
        "reserved",
        "available",
    ]
    list_filter = ["is_active", "currency"]
    list_select_related = ["product", "stock"]
    search_fields = ["sku", "name", "product__name"]
    autocomplete_fields = ["product"]
    fields = [
        "product",
        "sku",
        "name",
        "price",
        "currency",
        "is_active",
        "on_hand",
        "reserved",
        "available",
    ]
    readonly_fields = ["on_hand", "reserved", "available"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            _ensure_stock(obj)

    # A variant without a stock row yet shows "-" rather than failing.
    @admin.display(description="on hand", ordering="stock__on_hand")
    def on_hand(self, obj):
        stock = getattr(obj, "stock", None)
        return stock.on_hand if stock else None

    @admin.display(description="reserved", ordering="stock__reserved")
    def reserved(self, obj):
        stock = getattr(obj, "stock", None)
        return stock.reserved if stock else None

    @admin.display(description="available")
    def available(self, obj):
        stock = getattr(obj, "stock", None)
        return stock.available if stock else None
