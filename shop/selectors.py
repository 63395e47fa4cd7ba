"""Reads of the catalog, and of orders (always scoped to their customer)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from shop.exceptions import NotFound
from shop.models import Order, Product, Variant


def product_list() -> QuerySet[Product]:
    """Active products, each with its active variants and their stock, in two queries
    (the variants land in ``product.active_variants``)."""
    active_variants = Variant.objects.filter(is_active=True).select_related("stock")
    return Product.objects.filter(is_active=True).prefetch_related(
        Prefetch("variants", queryset=active_variants, to_attr="active_variants")
    )


def order_list_for(*, customer_id: int) -> QuerySet[Order]:
    """The customer's orders, newest first, with their lines and variants."""
    return (
        Order.objects.filter(customer_id=customer_id)
        .prefetch_related("lines__variant")
        .order_by("-id")
    )


def order_get_for(*, customer_id: int, order_id: int) -> Order:
    """One of the customer's orders; another customer's (or none) is ``NotFound``."""
    order = order_list_for(customer_id=customer_id).filter(pk=order_id).first()
    if order is None:
        raise NotFound("No such order.")
    return order
