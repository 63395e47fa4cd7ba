"""Test data. Stock is always created through the services, so the ledger agrees."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from inventory import services
from inventory.models import Allocation
from shop.models import Product, Variant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save(update_fields=["password"])


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    name = factory.Sequence(lambda n: f"Product {n}")
    slug = factory.Sequence(lambda n: f"product-{n}")


class VariantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Variant

    product = factory.SubFactory(ProductFactory)
    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    name = "One size"
    price = Decimal("19.99")
    currency = "USD"


def stocked_variant(*, on_hand: int, price: Decimal = Decimal("19.99")) -> Variant:
    variant = VariantFactory(price=price)
    item = services.stock_item_ensure(variant_id=variant.pk)
    if on_hand:
        services.stock_restock(stock_item_id=item.pk, quantity=on_hand, note="test stock")
    return variant


def open_allocation(
    *, quantity: int, on_hand: int | None = None, per_customer_limit: int | None = None
) -> Allocation:
    """A variant with stock, and an open allocation of ``quantity`` units of it."""
    variant = stocked_variant(on_hand=quantity if on_hand is None else on_hand)
    allocation = services.allocation_create(
        stock_item_id=variant.stock.pk,
        quantity=quantity,
        per_customer_limit=per_customer_limit,
        label=f"drop of {variant.sku}",
    )
    return services.allocation_open(allocation_id=allocation.pk)
