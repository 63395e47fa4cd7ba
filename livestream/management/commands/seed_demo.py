"""Demo data for the embedded default: users whose credentials the README gives, and
products with stock. Idempotent: running it again changes nothing that exists."""

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from inventory import services
from livestream import services as live
from livestream.models import Stream
from shop.models import Product, Variant

DEMO_PASSWORD = "demo-pass-123"
DEMO_USERS = (
    # username, is_staff, is_superuser, groups
    ("ops", True, True, ()),
    ("host", False, False, ("hosts",)),
    ("viewer", False, False, ()),
)
DEMO_CATALOG = (
    # product, slug, image, [(sku, variant name, price, units on hand)]
    (
        "Glow Serum",
        "glow-serum",
        "https://picsum.photos/seed/serum/600/600",
        [("SERUM-30ML", "30 ml", "24.00", 120), ("SERUM-50ML", "50 ml", "36.00", 60)],
    ),
    (
        "Cloud Hoodie",
        "cloud-hoodie",
        "https://picsum.photos/seed/hoodie/600/600",
        [
            ("HOODIE-S", "S", "49.00", 40),
            ("HOODIE-M", "M", "49.00", 50),
            ("HOODIE-L", "L", "49.00", 8),
        ],
    ),
    (
        "Mini Waffle Maker",
        "mini-waffle-maker",
        "https://picsum.photos/seed/waffle/600/600",
        [("WAFFLE-MINI", "Mint", "19.99", 200)],
    ),
)


DEMO_STREAM = "launch-night"
DEMO_DROPS = (
    # sku, units on stage, drop price, per-viewer limit
    ("SERUM-30ML", 20, "19.00", 2),
    ("HOODIE-M", 10, "39.00", 1),
)


class Command(BaseCommand):
    help = f"Create demo users (password: {DEMO_PASSWORD}) and products with stock."

    def _seed_live_stream(self) -> None:
        """A live stream with two drops, the first pinned: both pages show something
        at once, and the API examples in the README work as written."""
        if Stream.objects.filter(slug=DEMO_STREAM).exists():
            return
        host = get_user_model().objects.get(username="host")
        stream = live.stream_create(host=host, title="Launch night", slug=DEMO_STREAM)
        live.stream_start(stream_id=stream.pk, actor=host)
        drops = [
            live.drop_create(
                stream_id=stream.pk,
                variant_id=Variant.objects.get(sku=sku).pk,
                quantity=units,
                price=Decimal(price),
                per_viewer_limit=limit,
                actor=host,
            )
            for sku, units, price, limit in DEMO_DROPS
        ]
        live.drop_pin(drop_id=drops[0].pk, actor=host)

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        for username, is_staff, is_superuser, groups in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"is_staff": is_staff, "is_superuser": is_superuser},
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
            for name in groups:
                group, _ = Group.objects.get_or_create(name=name)
                user.groups.add(group)
        for name, slug, image, variants in DEMO_CATALOG:
            product, _ = Product.objects.get_or_create(
                slug=slug, defaults={"name": name, "image_url": image}
            )
            for sku, variant_name, price, on_hand in variants:
                variant, created = Variant.objects.get_or_create(
                    sku=sku,
                    defaults={"product": product, "name": variant_name, "price": Decimal(price)},
                )
                item = services.stock_item_ensure(variant_id=variant.pk)
                if created:
                    services.stock_restock(
                        stock_item_id=item.pk, quantity=on_hand, note="demo data"
                    )
        self._seed_live_stream()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: users ops (staff), host, viewer; password {DEMO_PASSWORD}"
            )
        )
