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


# --- streams, drops and their demand (the readiness report's inputs) --------------------


class StreamFactory(factory.django.DjangoModelFactory):
    """A scheduled stream, written directly (tests of reports, not of ``stream_create``)."""

    class Meta:
        model = "livestream.Stream"

    host = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Stream {n}")
    slug = factory.Sequence(lambda n: f"stream-{n}")


def stream_drop(
    *,
    stream,
    quantity: int,
    on_hand: int | None = None,
    per_viewer_limit: int | None = None,
    price: Decimal = Decimal("9.99"),
):
    """A drop on ``stream`` carved from a new variant's stock (``on_hand`` defaults to the
    quantity), through the service, as its host."""
    from livestream import services as live

    variant = stocked_variant(on_hand=quantity if on_hand is None else on_hand)
    return live.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=quantity,
        price=price,
        per_viewer_limit=per_viewer_limit,
        actor=stream.host,
    )


class DropDemandFactory(factory.django.DjangoModelFactory):
    """Demand figures of a drop, as ``demand.capture`` would have flushed them."""

    class Meta:
        model = "demand.DropDemand"

    drop = factory.LazyFunction(lambda: stream_drop(stream=StreamFactory(), quantity=10))
    supply = 10
    final = True


def host_with_demand_history():
    """A host whose past (ended) streams say 10 % of viewers at pin want a drop."""
    from livestream.models import Stream

    host = UserFactory()
    for _ in range(5):
        past = StreamFactory(host=host)
        DropDemandFactory(
            drop=stream_drop(stream=past, quantity=10),
            viewers_at_pin=1000,
            buyers=10,
            admitted_units=10,
            viewers_turned_away=90,
        )
        Stream.objects.filter(pk=past.pk).update(status=Stream.Status.ENDED)
    return host


def host_user(**fields):
    """A user in the "hosts" group (who may create streams)."""
    from django.contrib.auth.models import Group

    user = UserFactory(**fields)
    user.groups.add(Group.objects.get_or_create(name="hosts")[0])
    return user


def live_drop(
    *,
    quantity: int,
    on_hand: int | None = None,
    per_viewer_limit: int | None = None,
    price: Decimal = Decimal("9.99"),
    pin: bool = True,
    title: str = "Live",
):
    """A drop on a live stream, through the services as its host (``drop.stream.host``),
    carved from a new variant's stock (``on_hand`` defaults to the quantity); pinned,
    so on sale, unless ``pin`` is False."""
    from livestream import services as live

    host = host_user()
    stream = live.stream_create(host=host, title=title)
    live.stream_start(stream_id=stream.pk, actor=host)
    drop = stream_drop(
        stream=stream,
        quantity=quantity,
        on_hand=on_hand,
        per_viewer_limit=per_viewer_limit,
        price=price,
    )
    if pin:
        drop = live.drop_pin(drop_id=drop.pk, actor=host)
    return drop
