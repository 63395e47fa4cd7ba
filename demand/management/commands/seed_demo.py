"""Demo data for the embedded default: users whose credentials the README gives,
products with stock, a live stream, and a host's past stream with its recorded demand
and a scheduled one, so the readiness report has a history to read. It seeds every app,
so it lives in the one above them all. Idempotent: running it again changes nothing that
exists."""

from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from demand.models import DropDemand
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


# The host's past: an ended stream whose drops' demand was recorded (as the flush would
# have written it), and a scheduled one, so the readiness report has a history to read.
DEMO_PAST_STREAM = "spring-preview"
DEMO_PAST_DROPS = (
    # sku, units, viewers at pin, buyers, turned away, waitlist only, seconds to sell out
    ("SERUM-50ML", 10, 900, 10, 52, 6, 41),
    ("HOODIE-S", 8, 1100, 8, 71, 9, 26),
    ("WAFFLE-MINI", 30, 1000, 30, 38, 4, 95),
)
DEMO_NEXT_STREAM = "summer-drop"
DEMO_NEXT_VIEWERS = 1500
DEMO_NEXT_DROPS = (
    # sku, units on stage, drop price, per-viewer limit
    ("WAFFLE-MINI", 60, "14.99", 2),
    ("HOODIE-L", 5, "35.00", 1),
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

    def _seed_history(self) -> None:
        if Stream.objects.filter(slug=DEMO_PAST_STREAM).exists():
            return
        host = get_user_model().objects.get(username="host")
        past = live.stream_create(host=host, title="Spring preview", slug=DEMO_PAST_STREAM)
        live.stream_start(stream_id=past.pk, actor=host)
        drops = [
            live.drop_create(
                stream_id=past.pk,
                variant_id=Variant.objects.get(sku=sku).pk,
                quantity=units,
                price=Variant.objects.get(sku=sku).price,
                per_viewer_limit=1,
                actor=host,
            )
            for sku, units, *_ in DEMO_PAST_DROPS
        ]
        live.stream_end(stream_id=past.pk, actor=host)
        # Ending the stream flushes each drop's (empty) demand once the transaction
        # commits: the recorded history is written after that, not overwritten by it.
        transaction.on_commit(lambda: self._record_past_demand(drops))
        upcoming = live.stream_create(
            host=host,
            title="Summer drop",
            slug=DEMO_NEXT_STREAM,
            scheduled_start=timezone.now() + timedelta(days=2),
            expected_viewers=DEMO_NEXT_VIEWERS,
        )
        for sku, units, price, limit in DEMO_NEXT_DROPS:
            live.drop_create(
                stream_id=upcoming.pk,
                variant_id=Variant.objects.get(sku=sku).pk,
                quantity=units,
                price=Decimal(price),
                per_viewer_limit=limit,
                actor=host,
            )

    @staticmethod
    def _record_past_demand(drops) -> None:
        pinned_at = timezone.now() - timedelta(days=14)
        for drop, (_, units, viewers, buyers, away, waitlist_only, seconds) in zip(
            drops, DEMO_PAST_DROPS, strict=True
        ):
            DropDemand.objects.update_or_create(
                drop=drop,
                defaults={
                    "supply": units,
                    "sold": units,
                    "attempts": buyers + away * 2,
                    "viewers_tried": buyers + away,
                    "admitted": buyers,
                    "admitted_units": units,
                    "buyers": buyers,
                    "turned_away_sold_out": away * 2,
                    "viewers_turned_away": away,
                    "waitlist_joined": waitlist_only + away // 4,
                    "waitlist_only": waitlist_only,
                    "viewers_at_pin": viewers,
                    "peak_viewers": int(viewers * 1.3),
                    "pinned_at": pinned_at,
                    "opened_at": pinned_at,
                    "sold_out_at": pinned_at + timedelta(seconds=seconds),
                    "closed_at": pinned_at + timedelta(minutes=20),
                    "final": True,
                },
            )

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
        self._seed_history()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: users ops (staff), host, viewer; password {DEMO_PASSWORD}"
            )
        )
